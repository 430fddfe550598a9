"""The Pterodactyl client area and actions against the stand-in: power signals through the client
API (ptlc_ key), reinstall and the panel password through the application API, errors as the real
panel answers them (409 while suspended or installing, 422 for a bad signal, Wings down)."""
from __future__ import annotations

import dataclasses

import pytest

from panel.backends import (Connect, Credentials, Links, PermanentBackendError, Resources,
                            TransientBackendError)
from panel.testing import after_provision, make_spec, provision_until_done
from panel_pterodactyl.standin import CLIENT_KEY


def _live(backend, standin, plan, email="gamer@example.com"):
    spec = make_spec(backend, options=dict(plan), params={"server_name": "Survival"}, email=email)
    spec = after_provision(spec, provision_until_done(backend, spec))  # polled until the install finished
    return spec


def test_client_area_has_the_address_panel_link_and_limits(make_backend, standin, plan):
    ptero = make_backend(client_api_key=CLIENT_KEY)
    spec = _live(ptero, standin, plan)
    sections = ptero.client_area(spec)
    connect = next(s for s in sections if isinstance(s, Connect))
    items = {i.label: i for i in connect.items}
    assert items["Server address"].value == "10.0.0.1:25565" and items["Server address"].kind == "address"
    assert items["Game panel"].value == standin.url
    link = next(s for s in sections if isinstance(s, Links)).links[0]
    server = standin.servers[int(spec.resource_id)]
    assert link.url == f"{standin.url}/server/{server['identifier']}" and link.kind == "deep_link"
    limits = {i.label: (i.limit, i.unit) for i in next(s for s in sections if isinstance(s, Resources)).items}
    assert limits["Memory"] == (1024.0, "MiB") and limits["Disk"] == (4096.0, "MiB") and limits["CPU"] == (100.0, "%")
    assert not any(isinstance(s, Credentials) for s in sections)  # no panel password until one is set
    assert [a.name for a in ptero.actions(spec)] == ["start", "stop", "restart", "kill", "reinstall", "reset_password"]


def test_power_signals_go_to_the_client_api(make_backend, standin, plan):
    ptero = make_backend(client_api_key=CLIENT_KEY)
    spec = _live(ptero, standin, plan)
    identifier = standin.servers[int(spec.resource_id)]["identifier"]
    assert ptero.run_action(spec, "restart", {}).message == "Your server is restarting."
    ptero.run_action(spec, "kill", {})
    assert standin.power_log == [(identifier, "restart"), (identifier, "kill")]
    calls = standin.calls("POST", f"/api/client/servers/{identifier}/power")
    assert [c["key"] for c in calls] == ["client", "client"] and calls[0]["body"] == {"signal": "restart"}


def test_power_on_a_suspended_or_installing_server_is_refused_with_the_panels_words(make_backend, standin, plan):
    ptero = make_backend(client_api_key=CLIENT_KEY)
    spec = _live(ptero, standin, plan)
    ptero.suspend(spec)
    with pytest.raises(PermanentBackendError, match="currently suspended"):
        ptero.run_action(spec, "start", {})
    ptero.unsuspend(spec)
    standin.set_status(int(spec.resource_id), "installing")
    with pytest.raises(PermanentBackendError, match="not yet completed its installation"):
        ptero.run_action(spec, "start", {})


def test_wings_down_on_power_is_transient(make_backend, standin, plan):
    ptero = make_backend(client_api_key=CLIENT_KEY)
    spec = _live(ptero, standin, plan)
    standin.fail_next_power(1, status=504)
    with pytest.raises(TransientBackendError):
        ptero.run_action(spec, "stop", {})
    assert standin.power_log == []


def test_without_a_client_key_there_are_no_power_buttons(ptero, standin, plan):
    spec = _live(ptero, standin, plan)
    assert [a.name for a in ptero.actions(spec)] == ["reinstall", "reset_password"]


def test_reinstall_uses_the_application_api(ptero, standin, plan):
    spec = _live(ptero, standin, plan)
    ptero.run_action(spec, "reinstall", {})
    server = standin.servers[int(spec.resource_id)]
    assert server["status"] == "installing" and server["_reinstalls"] == 1
    assert standin.calls("POST", f"/api/application/servers/{spec.resource_id}/reinstall")


def test_reset_password_patches_the_user_and_becomes_a_credential(ptero, standin, plan):
    spec = _live(ptero, standin, plan, email="pw@example.com")
    result = ptero.run_action(spec, "reset_password", {})
    uid = spec.backend_data["pterodactyl_user_id"]
    new = result.secrets["panel_password"].reveal()
    assert standin.user_passwords[uid] == new and new not in repr(result)
    patch = standin.calls("PATCH", f"/api/application/users/{uid}")[0]["body"]
    assert patch["email"] == "pw@example.com" and patch["username"] and patch["first_name"]
    spec = dataclasses.replace(spec, backend_data={**spec.backend_data, **result.data},
                               secrets={**spec.secrets, **result.secrets})
    creds = next(s for s in ptero.client_area(spec) if isinstance(s, Credentials)).credentials
    assert creds[0].name == "panel_password" and creds[0].username == spec.backend_data["panel_username"]
    assert ptero.reveal_credential(spec, "panel_password").reveal() == new


def test_a_bad_signal_is_a_field_error(make_backend, standin, plan):
    """The stand-in answers like SendPowerRequest's rules (a direct request, not through an action)."""
    ptero = make_backend(client_api_key=CLIENT_KEY)
    spec = _live(ptero, standin, plan)
    identifier = standin.servers[int(spec.resource_id)]["identifier"]
    with pytest.raises(PermanentBackendError) as exc:
        ptero.client.request("POST", f"servers/{identifier}/power", json={"signal": "explode"}, api="client")
    assert exc.value.fields == {"signal": "The selected signal is invalid."}
