"""provision over real HTTP against the stand-in: the deploy body, id extraction, redeploy rules,
409 adoption, retries of deploys without an id, and typed deploy errors."""
from __future__ import annotations

import dataclasses
import http.client
import json
import re
import urllib.error
import urllib.request

import pytest

from panel.backends import PermanentBackendError, Secret, TransientBackendError
from panel.testing import after_provision, make_spec
from panel_pds.backend import SERVICE_ID_PATHS, extract_service_id
from panel_pds.standin import ID_SHAPES
from pds_testlib import TOKEN, make_backend, wait_for


def deploy_posts(standin) -> int:
    return sum(1 for r in standin.requests() if r["method"] == "POST" and r["path"] == "/api/v1/deploy")


# --------------------------------------------------------------------------- deploy body

def test_deploy_body_and_generated_password(standin, pds):
    spec = make_spec(pds, params={"username": "Alice", "hostname": "alice.pds.example.org"},
                     options={"disksize_gb": 25}, email="alice@example.org")
    result = pds.provision(spec)
    [body] = standin.deploys()
    assert set(body) == {"username", "password", "email", "hostname", "disksize"}
    assert (body["username"], body["email"], body["hostname"], body["disksize"]) == (
        "alice", "alice@example.org", "alice.pds.example.org", 25)
    assert isinstance(body["disksize"], int)
    assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", body["password"]), "password must be base64url"
    assert result.secrets["admin_password"] == Secret(body["password"])
    assert body["password"] not in json.dumps(dict(result.data)) + repr(result)
    assert result.resource_id == str(standin.services()[0]["id"])
    assert result.data["pds_service_id"] == result.resource_id
    assert result.data["status"] == "provisioning" and result.data["adopted"] is False


def test_passwords_differ_between_services(standin, pds):
    pds.provision(make_spec(pds))
    pds.provision(make_spec(pds))
    first, second = standin.deploys()
    assert first["password"] != second["password"]


def test_password_is_reused_from_spec_secrets(standin, pds):
    spec = dataclasses.replace(make_spec(pds), backend_data={"status": "deploy_failed"},
                               secrets={"admin_password": Secret("kept-password-from-before")})
    result = pds.provision(spec)
    assert standin.deploys()[0]["password"] == "kept-password-from-before"
    assert result.secrets["admin_password"] == Secret("kept-password-from-before")


# --------------------------------------------------------------------------- service id extraction

@pytest.mark.parametrize("body, expected", [
    ({"service_id": 1, "serviceId": 2, "id": 3, "service": {"id": 4}, "data": {"id": 5, "serviceId": 6}}, "1"),
    ({"serviceId": 2, "id": 3, "service": {"id": 4}, "data": {"id": 5, "serviceId": 6}}, "2"),
    ({"id": 3, "service": {"id": 4}, "data": {"id": 5, "serviceId": 6}}, "3"),
    ({"service": {"id": 4}, "data": {"id": 5, "serviceId": 6}}, "4"),
    ({"data": {"id": 5, "serviceId": 6}}, "5"),
    ({"data": {"serviceId": 6}}, "6"),
    ({"serviceId": "abc-7"}, "abc-7"),
    ({"serviceId": 800.0}, "800"),
    ({"service_id": None, "id": True, "serviceId": "../etc", "data": {"serviceId": 9}}, "9"),
    ({"status": "deploying"}, None),
    ({"service": "pds-x", "data": []}, None),
    ([1, 2], None),
])
def test_extract_service_id_order(body, expected):
    assert extract_service_id(body) == expected


def test_id_paths_are_the_seeds_order():
    assert [".".join(p) for p in SERVICE_ID_PATHS] == list(ID_SHAPES) == [
        "service_id", "serviceId", "id", "service.id", "data.id", "data.serviceId"]


@pytest.mark.parametrize("shape", ID_SHAPES)
def test_id_found_in_every_place_over_http(standin, pds, shape):
    standin.set_faults(id_shape=shape)
    result = pds.provision(make_spec(pds))
    assert result.resource_id == str(standin.services()[0]["id"])
    assert result.data["adopted"] is False


# --------------------------------------------------------------------------- redeploy rules

@pytest.mark.parametrize("status", ["provisioning", "deploy_failed", "deploy_succeeded_no_id", None])
def test_never_redeploys_once_an_id_is_recorded(standin, pds, status):
    spec = dataclasses.replace(make_spec(pds), resource_id="4242",
                               backend_data={"status": status, "hostname": "x.example.test"},
                               secrets={"admin_password": Secret("old-password-1234")})
    result = pds.provision(spec)
    assert standin.deploys() == [] and standin.requests() == []
    assert result.resource_id == "4242"
    assert result.secrets["admin_password"] == Secret("old-password-1234")
    assert result.data["status"] == "provisioning"


def test_id_in_backend_data_alone_is_adopted(standin, pds):
    spec = dataclasses.replace(make_spec(pds), backend_data={"pds_service_id": 77, "status": "deploy_failed"})
    result = pds.provision(spec)
    assert standin.deploys() == []
    assert result.resource_id == "77"


@pytest.mark.parametrize("status", ["deploy_failed", "deploy_succeeded_no_id"])
def test_redeploys_after_failed_or_id_less_deploy(standin, pds, status):
    spec = dataclasses.replace(make_spec(pds), backend_data={"status": status})
    result = pds.provision(spec)
    assert len(standin.deploys()) == 1
    assert result.resource_id == str(standin.services()[0]["id"])


def test_deploy_without_id_is_transient_and_the_retry_adopts(standin, pds):
    standin.set_faults(no_id=1)
    spec = make_spec(pds)
    with pytest.raises(TransientBackendError) as info:
        pds.provision(spec)
    assert "deploy succeeded but returned no service id" in str(info.value)
    assert "HTTP 201" in str(info.value)
    [made] = standin.services()  # the deploy did happen
    result = pds.provision(spec)  # the job's retry: 409 with the id -> adopt
    assert result.resource_id == str(made["id"])
    assert result.data["adopted"] is True
    assert len(standin.services()) == 1 and len(standin.deploys()) == 2
    # the admin password of the service that exists is recovered, not the retry's new one
    assert result.secrets["admin_password"] == Secret(made["password"])
    assert standin.deploys()[1]["password"] != made["password"]


def test_failed_deploys_are_transient_and_never_auto_retried(standin, pds):
    standin.set_faults(deploy=[500, 503])
    spec = make_spec(pds)
    for status in (500, 503):
        before = deploy_posts(standin)
        with pytest.raises(TransientBackendError) as info:
            pds.provision(spec)
        assert f"HTTP {status}" in str(info.value)
        assert deploy_posts(standin) == before + 1, "a POST deploy was retried automatically"
    result = pds.provision(spec)
    assert len(standin.services()) == 1 and result.resource_id == str(standin.services()[0]["id"])


def test_deploy_429_is_transient_with_retry_after(standin, pds):
    standin.set_faults(deploy=[429])
    with pytest.raises(TransientBackendError) as info:
        pds.provision(make_spec(pds))
    assert info.value.retry_after == 2.0 and "HTTP 429" in str(info.value)


def test_deploy_non_json_2xx_is_transient_with_preview(standin, pds):
    standin.set_faults(deploy=["nojson"])
    with pytest.raises(TransientBackendError) as info:
        pds.provision(make_spec(pds))
    message = str(info.value)
    assert "HTTP 200" in message and "non-JSON" in message and "text/html" in message
    assert "Upstream says 200" in message


def test_deploy_422_is_permanent_with_fields(standin, pds):
    standin.set_faults(deploy=[422])
    with pytest.raises(PermanentBackendError) as info:
        pds.provision(make_spec(pds))
    assert "HTTP 422" in str(info.value)
    assert info.value.fields == {"hostname": "rejected by a stand-in fault"}


def test_hostname_taken_by_another_user_is_permanent(standin, pds):
    pds.provision(make_spec(pds, params={"username": "first", "hostname": "shared.example.test"}))
    with pytest.raises(PermanentBackendError) as info:
        pds.provision(make_spec(pds, params={"username": "second", "hostname": "shared.example.test"}))
    assert "already in use" in str(info.value) and "HTTP 409" in str(info.value)
    assert "hostname" in info.value.fields
    assert len(standin.services()) == 1


def test_same_username_other_email_is_not_adopted(standin, pds):
    params = {"username": "same", "hostname": "same.example.test"}
    pds.provision(make_spec(pds, params=params, email="one@example.test"))
    with pytest.raises(PermanentBackendError, match="already in use"):
        pds.provision(make_spec(pds, params=params, email="two@example.test"))


def test_409_naming_another_accounts_service_is_not_adopted(standin, pds):
    other = pds.provision(make_spec(pds, email="owner@example.test"))
    standin.set_faults(deploy=[{"status": 409, "body": {"error": "exists", "serviceId": int(other.resource_id)}}])
    spec = make_spec(pds, params={"hostname": other.data["hostname"]}, email="intruder@example.test")
    with pytest.raises(PermanentBackendError, match="another account"):
        pds.provision(spec)


def test_409_with_another_hostname_is_not_adopted(standin, pds):
    other = pds.provision(make_spec(pds))
    standin.set_faults(deploy=[{"status": 409, "body": {"error": "exists", "serviceId": int(other.resource_id)}}])
    with pytest.raises(PermanentBackendError, match="another hostname"):
        pds.provision(make_spec(pds))


def test_deploy_after_terminate_makes_a_new_service(standin, pds):
    spec = make_spec(pds)
    first = pds.provision(spec)
    pds.terminate(after_provision(spec, first))
    second = pds.provision(spec)
    assert second.resource_id != first.resource_id and len(standin.services()) == 1


def test_deploy_timeout_is_transient_and_sent_once(standin):
    slow = make_backend(standin.url, timeout_seconds=1)
    standin.set_faults(hold=True)  # the stand-in holds the deploy until released: the client times out
    with pytest.raises(TransientBackendError, match="did not answer POST /api/v1/deploy within 1 s"):
        slow.provision(make_spec(slow))
    standin.set_faults(hold=False)
    assert wait_for(standin.requests, 10)  # the late answer: let it finish in this test
    assert len(standin.deploys()) == 1
    assert [r["path"] for r in standin.received()] == ["/api/v1/deploy"]  # sent once, not retried


# --------------------------------------------------------------------------- the stand-in's own checks

def _post(url, body, token=TOKEN):
    request = urllib.request.Request(url + "/api/v1/deploy", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


GOOD = {"username": "zed", "password": "p" * 20, "email": "zed@example.test", "hostname": "zed.example.test",
        "disksize": 10}


@pytest.mark.parametrize("change, field, message", [
    ({"hostname": "https://zed.example.test"}, "hostname", "no scheme, path or port"),
    ({"hostname": "zed.example.test/path"}, "hostname", "no scheme, path or port"),
    ({"disksize": "ten"}, "disksize", "must be a number"),
    ({"email": None}, "email", "is required"),
    ({"username": "Not A Label"}, "username", "DNS label"),
])
def test_standin_validates_deploys(standin, change, field, message):
    status, headers, body = _post(standin.url, {**GOOD, **change})
    assert status == 422 and headers["X-Stand-In"] == "pds-deploy-api"
    assert message in body["errors"][field]
    assert standin.services() == []


def test_standin_requires_the_token_and_labels_itself(standin):
    status, headers, body = _post(standin.url, GOOD, token="nope")
    assert status == 401 and body["error"] == "unauthorized" and headers["X-Stand-In"] == "pds-deploy-api"
    with urllib.request.urlopen(standin.url + "/", timeout=5) as response:
        page = response.read().decode()
        assert response.headers["X-Stand-In"] == "pds-deploy-api"
    assert "STAND-IN" in page and "not a real PDS host" in page
    status, _, body = _post(standin.url, GOOD)
    assert (status, body["status"]) == (201, "deploying") and isinstance(body["serviceId"], int)
    status, _, again = _post(standin.url, GOOD)
    assert (status, again) == (409, {"error": "exists", "serviceId": body["serviceId"],
                                     "message": "zed.example.test is already deployed"})


def _control(url, method, path, body=None):
    """A call to the stand-in's control API; the decoded JSON answer."""
    request = urllib.request.Request(url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_standin_control_api_over_http(standin):
    def control(method, path, body=None):
        return _control(standin.url, method, path, body)

    faults = control("POST", "/_standin/faults", {"deploy": [500], "latency_ms": 5, "no_id": 1})
    assert faults["queues"] == {"deploy": [500]} and faults["latency_ms"] == 5 and faults["no_id"] == 1
    assert _post(standin.url, GOOD)[0] == 500
    assert control("GET", "/_standin/deploys")["deploys"] == [GOOD]
    assert _post(standin.url, GOOD)[0] == 201
    assert [s["hostname"] for s in control("GET", "/_standin/services")["services"]] == ["zed.example.test"]
    assert [r["status"] for r in control("GET", "/_standin/requests")["requests"]] == [500, 201]
    control("POST", "/_standin/reset")
    assert control("GET", "/_standin/deploys") == {"deploys": []}
    assert control("GET", "/_standin/faults")["latency_ms"] == 0
    with pytest.raises(urllib.error.HTTPError) as info:
        control("POST", "/_standin/faults", {"bogus": 1})
    assert info.value.code == 400


def test_standin_random_faults_5xx_timeout_and_lost_answers(standin):
    def control(method, path, body=None):
        return _control(standin.url, method, path, body)

    control("POST", "/_standin/faults", {"random": {"rate": 1, "kinds": ["5xx"], "operations": ["deploy"]}})
    assert _post(standin.url, GOOD)[0] == 503 and standin.services() == []  # 5xx: nothing done
    standin.set_faults(random={"rate": 1, "kinds": ["lost"], "operations": ["deploy"]})
    with pytest.raises((ConnectionError, urllib.error.URLError, http.client.HTTPException)):
        _post(standin.url, GOOD)  # lost: the work is done, no answer
    assert [s["hostname"] for s in standin.services()] == ["zed.example.test"]
    standin.set_faults(random={"rate": 1, "kinds": ["timeout"], "hold_ms": 1500, "operations": ["delete"]})
    slow = make_backend(standin.url, timeout_seconds=1)
    spec = dataclasses.replace(make_spec(slow), resource_id=str(standin.services()[0]["id"]))
    with pytest.raises(TransientBackendError, match="did not answer DELETE"):
        slow.terminate(spec)  # timeout: the host deletes it after the client gave up
    assert wait_for(lambda: standin.services() == [], timeout=5)
    assert control("GET", "/_standin/injected")["injected"] == {"5xx": 1, "lost": 1, "timeout": 1}
    assert control("GET", "/_standin/creations")["creations"] == {"zed.example.test": 1}
    standin.set_faults(random=None)
    assert _post(standin.url, GOOD)[0] == 201
    assert standin.creations() == {"zed.example.test": 2}  # made again after the delete: counted
    with pytest.raises(ValueError):
        standin.set_faults(random={"rate": 2})
