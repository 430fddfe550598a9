"""The PDS client area: URL and hostname, the admin password as a credential, and the
reset-admin-password action against the stand-in's POST /api/v1/service/{id}/admin-password."""
from __future__ import annotations

import dataclasses

import pytest

from panel.backends import Connect, Credentials, HowTo, NotSupportedError, PermanentBackendError, Resources, ServiceSpec


def _provisioned_spec(pds, **params):
    spec = ServiceSpec(service_id=7, external_id="hp-pds-ca", plan="pds-free", options={"disksize_gb": 5},
                       params=params, customer_id=3, customer_email="ada@example.com")
    result = pds.provision(spec)
    return dataclasses.replace(spec, resource_id=result.resource_id, backend_data=dict(result.data),
                               secrets={k: v for k, v in result.secrets.items()})


def test_client_area_shows_url_hostname_credential_and_storage(pds, standin):
    spec = _provisioned_spec(pds, username="ada")
    sections = pds.client_area(spec)
    connect = next(s for s in sections if isinstance(s, Connect))
    assert [(i.label, i.value, i.kind) for i in connect.items] == [
        ("PDS URL", "https://ada.pds.example.test", "url"), ("Hostname", "ada.pds.example.test", "hostname")]
    creds = next(s for s in sections if isinstance(s, Credentials))
    assert creds.credentials[0].name == "admin_password" and creds.credentials[0].username == "admin"
    assert next(s for s in sections if isinstance(s, Resources)).items[0].limit == 5.0
    assert "https://ada.pds.example.test" in next(s for s in sections if isinstance(s, HowTo)).text
    password = standin.deploys()[0]["password"]
    assert password not in repr(sections)
    assert pds.reveal_credential(spec, "admin_password").reveal() == password
    assert pds.own_domains() == ("pds.example.test",) and pds.hostname_params == ("hostname",)


def test_reset_admin_password_sets_a_new_one_on_the_host(pds, standin):
    spec = _provisioned_spec(pds, username="bob")
    old = standin.deploys()[0]["password"]
    assert [a.name for a in pds.actions(spec)] == ["reset_admin_password"]
    result = pds.run_action(spec, "reset_admin_password", {})
    new = result.secrets["admin_password"].reveal()
    assert new != old and len(new) >= 24
    assert standin.service(spec.resource_id)["password"] == new
    assert new not in repr(result) and "old one no longer works" in result.message
    assert standin.requests()[-1] == {"method": "POST", "path": f"/api/v1/service/{spec.resource_id}/admin-password",
                                      "status": 200}


def test_reset_admin_password_on_a_host_without_the_endpoint_is_not_supported(pds, standin):
    spec = _provisioned_spec(pds, username="carl")
    standin.set_faults(unsupported=["admin_password"])
    with pytest.raises(NotSupportedError, match="does not support resetting the admin password"):
        pds.run_action(spec, "reset_admin_password", {})


def test_reset_admin_password_of_a_gone_service_is_permanent(pds, standin):
    spec = _provisioned_spec(pds, username="dora")
    pds.terminate(spec)
    with pytest.raises(PermanentBackendError, match="does not exist"):
        pds.run_action(spec, "reset_admin_password", {})


def test_no_credential_and_a_hint_when_the_password_is_unknown(pds, standin):
    spec = dataclasses.replace(_provisioned_spec(pds, username="eve"), secrets={})
    sections = pds.client_area(spec)
    assert not any(isinstance(s, Credentials) for s in sections)
    assert "Reset admin password" in next(s for s in sections if isinstance(s, HowTo)).text
