"""The Docker/Postiz client area against a real Docker Engine: the instance URL, the first account
registered for the customer (so nobody else can claim a fresh instance), and the restart action."""
from __future__ import annotations

import json

import pytest

from panel.backends import Connect, Credentials, HowTo, Links, PermanentBackendError, Resources
from panel.testing import after_provision, make_spec

from docker_backend_testkit import new_space

pytestmark = pytest.mark.slow


def _spec(backend, space):
    return make_spec(backend, options={"memory_mib": 256, "cpus": 0.5}, params={"space": space},
                     email="owner@example.com")


def test_provision_registers_the_first_account_and_the_client_area_shows_it(make_backend, docker_client):
    backend = make_backend(admin_signup_path="/cgi-bin/register")
    space = new_space("ca")
    spec = _spec(backend, space)
    result = backend.provision(spec)
    password = result.secrets["admin_password"]
    assert result.data["admin_claimed"] is True and password not in repr(result)
    container = docker_client.containers.get(result.resource_id)
    registered = json.loads(container.exec_run(["/bin/busybox", "cat", "/tmp/registered.json"]).output)
    assert registered == {"email": "owner@example.com", "password": password, "company": space, "provider": "LOCAL"}
    spec = after_provision(spec, result)
    sections = backend.client_area(spec)
    url = f"https://{space}.communities.test"
    assert next(s for s in sections if isinstance(s, Connect)).items[0].value == url
    assert next(s for s in sections if isinstance(s, Links)).links[0].url == url
    cred = next(s for s in sections if isinstance(s, Credentials)).credentials[0]
    assert (cred.name, cred.username) == ("admin_password", "owner@example.com")
    assert backend.reveal_credential(spec, "admin_password").reveal() == password
    limits = {i.label: (i.limit, i.unit) for i in next(s for s in sections if isinstance(s, Resources)).items}
    assert limits == {"Memory": (256.0, "MiB"), "CPU": (0.5, "cores")}
    # a retry (adoption) keeps the password and does not register again
    again = backend.provision(spec)
    assert again.secrets["admin_password"] == password


def test_a_refused_registration_leaves_signing_up_to_the_customer(make_backend):
    backend = make_backend()  # the default /api/auth/register does not exist in the stand-in image
    spec = _spec(backend, new_space("nc"))
    result = backend.provision(spec)
    assert result.data["admin_claimed"] is False and "admin_password" not in result.secrets
    sections = backend.client_area(after_provision(spec, result))
    assert not any(isinstance(s, Credentials) for s in sections)
    assert "first account becomes the owner" in next(s for s in sections if isinstance(s, HowTo)).text


def test_restart_restarts_the_container_and_waits_until_it_answers(make_backend, docker_client):
    backend = make_backend(admin_signup_path="")
    spec = _spec(backend, new_space("rs"))
    spec = after_provision(spec, backend.provision(spec))
    container = docker_client.containers.get(spec.resource_id)
    started = container.attrs["State"]["StartedAt"]
    assert [a.name for a in backend.actions(spec)] == ["restart"]
    result = backend.run_action(spec, "restart", {})
    container.reload()
    assert container.status == "running" and container.attrs["State"]["StartedAt"] != started
    assert "restarted" in result.message
    container.remove(force=True)
    with pytest.raises(PermanentBackendError, match="no container"):
        backend.run_action(spec, "restart", {})
