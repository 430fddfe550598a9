"""details, usage, suspend/resume/delete, test_connection and error mapping over real HTTP."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import subprocess
import sys
import urllib.request

import pluggy
import pytest

import panel.hookspecs
import panel_pds
from panel.backends import (MASK, NotSupportedError, PermanentBackendError, Secret,
                            TransientBackendError)
from panel.testing import after_provision, free_port, make_spec
from panel_pds.backend import PREVIEW_CHARS, PdsBackend
from pds_testlib import TOKEN, make_backend, wait_for


@pytest.fixture
def live(standin, pds):
    """A provisioned, recorded spec and its stand-in record."""
    spec = make_spec(pds, options={"disksize_gb": 25})
    spec = after_provision(spec, pds.provision(spec))
    return spec, standin.service(spec.resource_id)


# --------------------------------------------------------------------------- details

@pytest.mark.parametrize("double", [False, True])
def test_details_shape_and_masking(standin, pds, live, double):
    spec, record = live
    standin.set_faults(double_encoded=double)
    details = pds.details(spec)
    text = json.dumps(details)
    assert details["id"] == record["id"] and details["state"] == "running"
    assert details["service"] == record["service"] and details["namespace"] == record["namespace"]
    assert details["kubeconfig_id"] == 1 and details["hostname"] == record["hostname"]
    assert details["storage"] == "25Gi" and details["storage_gb"] == 25.0
    assert details["email"]["adminEmail"] == record["email"]
    assert details["install_cmd"].startswith("helm upgrade --install")
    assert details["created_at"] and details["updated_at"]
    assert details["encrypted_config"]["adminPassword"] == MASK
    assert record["password"] not in text and TOKEN not in text
    assert "smtps://pds:" + MASK + "@smtp.standin.test:465" == details["email"]["emailSmtpUrl"]


def test_double_encoded_details_equal_plain_ones(standin, pds, live):
    spec, _ = live
    plain = pds.details(spec)
    standin.set_faults(double_encoded=True)
    assert pds.details(spec) == plain
    raw = urllib.request.urlopen(urllib.request.Request(
        f"{standin.url}/api/v1/service/{spec.resource_id}", headers={"Authorization": f"Bearer {TOKEN}"}),
        timeout=5).read()
    assert isinstance(json.loads(raw), str), "the stand-in must really encode twice"


def test_details_sends_the_seeds_headers(standin, pds, live, monkeypatch):
    spec, _ = live
    seen = {}
    session = pds._session("GET")
    real = session.request

    def spy(method, url, **kwargs):
        seen.update(kwargs["headers"], **session.headers)
        return real(method, url, **kwargs)

    monkeypatch.setattr(session, "request", spy)
    pds.details(spec)
    assert seen["Accept"] == "application/json" and seen["X-Requested-With"] == "XMLHttpRequest"
    assert seen["Authorization"] == f"Bearer {TOKEN}"


def test_details_without_id_says_so_without_calling(standin, pds):
    details = pds.details(make_spec(pds))
    assert details["state"] == "not deployed" and standin.requests() == []


@pytest.mark.parametrize("fault, error, fragments", [
    ("nojson", PermanentBackendError, ["HTTP 200", "non-JSON", "text/html", "Upstream says 200"]),
    ("nojson:502", TransientBackendError, ["HTTP 502", "Upstream says 502"]),
    (500, TransientBackendError, ["HTTP 500", "stand-in fault 500"]),
    (403, PermanentBackendError, ["HTTP 403", "api_token"]),
    (400, PermanentBackendError, ["HTTP 400", "GET /api/v1/service/"]),
])
def test_details_upstream_errors_are_typed_and_clear(standin, pds, live, fault, error, fragments):
    spec, _ = live
    standin.set_faults(service=[fault])
    with pytest.raises(error) as info:
        pds.details(spec)
    assert type(info.value) is error
    for fragment in fragments:
        assert fragment in str(info.value)


def test_details_of_a_missing_service_is_permanent(standin, pds):
    spec = dataclasses.replace(make_spec(pds), resource_id="99999")
    with pytest.raises(PermanentBackendError, match="99999 was not found.*HTTP 404"):
        pds.details(spec)


def test_error_preview_is_short_and_never_carries_secrets(standin, pds, live):
    spec, record = live
    body = {"message": "x" * 1000, "echo": f"Authorization: Bearer {TOKEN}", "note": f"token={TOKEN}",
            "dsn": f"postgres://u:{TOKEN}@db/x", "again": record["password"], "adminPassword": record["password"]}
    standin.set_faults(service=[{"status": 500, "body": body}])
    with pytest.raises(TransientBackendError) as info:
        pds.details(spec)
    message = str(info.value) + repr(info.value)
    assert TOKEN not in message and record["password"] not in message
    assert "HTTP 500" in message and "x" * (PREVIEW_CHARS + 1) not in message
    preview = str(info.value).split("HTTP 500: ", 1)[1]
    assert len(preview) <= PREVIEW_CHARS


def test_deploy_error_echoing_the_password_is_scrubbed(standin, pds):
    spec = dataclasses.replace(make_spec(pds), secrets={"admin_password": Secret("echoed-password-123")})
    standin.set_faults(deploy=[{"status": 400, "body": {"received": "echoed-password-123", "why": "bad"}}])
    with pytest.raises(PermanentBackendError) as info:
        pds.provision(spec)
    assert "echoed-password-123" not in str(info.value) and "HTTP 400" in str(info.value)


def test_no_secret_in_logs(standin, pds, caplog):
    caplog.set_level(logging.DEBUG)
    spec = make_spec(pds)
    result = pds.provision(spec)
    pds.details(after_provision(spec, result))
    password = standin.deploys()[0]["password"]
    assert "PDS deploy of" in caplog.text
    assert TOKEN not in caplog.text and password not in caplog.text


# --------------------------------------------------------------------------- usage

def test_usage_reports_storage_and_state(standin, pds, live):
    spec, _ = live
    usage = pds.usage(spec)
    metrics = {m.name: m for m in usage.metrics}
    assert (metrics["storage_allocated"].value, metrics["storage_allocated"].unit,
            metrics["storage_allocated"].limit) == (25.0, "GiB", 25.0)
    assert (metrics["running"].value, metrics["running"].unit) == (1.0, "count")
    pds.suspend(spec)
    assert {m.name: m for m in pds.usage(spec).metrics}["running"].value == 0.0
    assert "state: suspended" in pds.usage(spec).note


# --------------------------------------------------------------------------- suspend / resume / delete

def test_suspend_resume_change_remote_state(standin, pds, live):
    spec, record = live
    pds.suspend(spec)
    assert standin.service(record["id"])["state"] == "suspended"
    pds.unsuspend(spec)
    assert standin.service(record["id"])["state"] == "running"
    paths = [r["path"] for r in standin.requests() if r["method"] == "POST"]
    assert paths[-2:] == [f"/api/v1/service/{record['id']}/suspend", f"/api/v1/service/{record['id']}/resume"]


@pytest.mark.parametrize("op, method, status", [
    ("suspend", "suspend", 405), ("suspend", "suspend", 404), ("resume", "unsuspend", 405),
    ("resume", "unsuspend", 404), ("delete", "terminate", 405), ("delete", "terminate", 404),
])
def test_unsupported_lifecycle_calls_say_so(standin, pds, live, op, method, status):
    spec, record = live
    standin.set_faults(unsupported={op: status})
    with pytest.raises(NotSupportedError) as info:
        getattr(pds, method)(spec)
    assert f"this PDS host does not support {op} (HTTP {status}" in str(info.value)
    assert standin.service(record["id"]) is not None


def test_terminate_of_a_gone_service_succeeds(standin, pds, live):
    spec, record = live
    pds.terminate(dataclasses.replace(spec))  # deletes it
    assert standin.service(record["id"]) is None
    pds.terminate(spec)  # DELETE -> 404, GET -> 404: already gone
    assert [r["status"] for r in standin.requests()][-2:] == [404, 404]


def test_suspend_of_a_gone_service_is_permanent_not_unsupported(standin, pds, live):
    spec, _ = live
    pds.terminate(spec)
    with pytest.raises(PermanentBackendError) as info:
        pds.suspend(spec)
    assert not isinstance(info.value, NotSupportedError)
    assert "does not exist" in str(info.value)


def test_lifecycle_without_an_id(standin, pds):
    spec = make_spec(pds)
    with pytest.raises(PermanentBackendError, match="no PDS service id"):
        pds.suspend(spec)
    pds.terminate(spec)  # nothing recorded and nothing with its hostname: nothing to delete
    assert [(r["method"], r["path"]) for r in standin.requests()] == [("GET", "/api/v1/services")]


# --------------------------------------------------------------------------- lookup and listing

def test_a_deploy_whose_answer_was_lost_is_found_by_hostname_and_terminated(standin, pds):
    spec = make_spec(pds, params={"username": "lost1"})
    standin.set_faults(random={"rate": 1, "kinds": ["lost"], "operations": ["deploy"]})
    with pytest.raises(TransientBackendError):
        pds.provision(spec)  # the host made it; the answer never came
    standin.set_faults(random=None)
    made = standin.services()
    assert len(made) == 1 and standin.requests()[-1]["fault"] == "lost"
    found = pds.lookup(spec)
    assert found is not None and found.resource_id == str(made[0]["id"])
    assert (found.name, found.state, found.external_id) == (made[0]["hostname"], "active", spec.external_id)
    assert standin.requests()[-1]["path"] == "/api/v1/services"  # asked by hostname, not listed whole
    pds.terminate(spec)  # no id recorded: found by hostname and deleted
    assert standin.services() == [] and pds.lookup(spec) is None


def test_lookup_ignores_another_accounts_pds_with_the_hostname(standin, pds):
    mine = make_spec(pds, params={"username": "alice", "hostname": "shared.pds.example.com"})
    theirs = make_spec(pds, params={"username": "mallory", "hostname": "shared.pds.example.com"})
    pds.provision(theirs)
    assert pds.lookup(mine) is None
    assert pds.lookup(theirs) is not None


def test_list_resources_lists_every_pds_by_id_and_hostname(standin, pds):
    specs = [make_spec(pds, params={"username": f"list{i}"}) for i in range(3)]
    made = [pds.provision(spec) for spec in specs]
    pds.suspend(after_provision(specs[0], made[0]))
    listed = {r.resource_id: r for r in pds.list_resources()}
    assert set(listed) == {m.resource_id for m in made}
    assert listed[made[0].resource_id].state == "suspended" and listed[made[1].resource_id].state == "active"
    assert {r.name for r in listed.values()} == {m.data["hostname"] for m in made}
    assert all(r.external_id == "" for r in listed.values())  # a PDS carries no external id of ours


def test_a_host_without_a_listing_says_so(standin, pds):
    standin.set_faults(services=[404, 405])
    with pytest.raises(NotSupportedError, match="does not list its services"):
        pds.list_resources()
    with pytest.raises(NotSupportedError, match="HTTP 405"):
        pds.lookup(make_spec(pds))
    standin.set_faults(services=[503])
    with pytest.raises(TransientBackendError, match="HTTP 503"):
        pds.lookup(make_spec(pds))


def test_lifecycle_5xx_is_transient(standin, pds, live):
    spec, _ = live
    standin.set_faults(suspend=[502], delete=[503])
    with pytest.raises(TransientBackendError, match="HTTP 502"):
        pds.suspend(spec)
    with pytest.raises(TransientBackendError, match="HTTP 503"):
        pds.terminate(spec)


# --------------------------------------------------------------------------- connection

def test_test_connection(standin, pds):
    assert "token accepted, 0 service(s)" in pds.test_connection()
    standin.set_faults(services=[404])
    assert "GET /api/v1/health" in pds.test_connection()
    standin.set_faults(services=[404], health=[405])
    with pytest.raises(NotSupportedError, match="neither"):
        pds.test_connection()


def test_test_connection_errors_are_typed(standin, unreachable_pds):
    with pytest.raises(TransientBackendError, match="cannot reach the PDS deploy API"):
        unreachable_pds.test_connection()
    rejected = make_backend(standin.url, token="not-the-token")
    with pytest.raises(PermanentBackendError) as info:
        rejected.test_connection()
    assert "rejected the api_token (HTTP 401" in str(info.value) and "not-the-token" not in str(info.value)


def test_read_timeout_is_transient(standin, live):
    spec, _ = live
    slow = make_backend(standin.url, timeout_seconds=1)
    standin.set_faults(hold=True)  # the stand-in holds the call until released: the client times out
    before = len(standin.requests())
    with pytest.raises(TransientBackendError, match="did not answer GET"):
        slow.details(spec)
    standin.set_faults(hold=False)
    assert wait_for(lambda: len(standin.requests()) > before, 10)  # the late answer ends in this test


def test_only_gets_retry_connection_errors(pds):
    reads = pds._session("GET").get_adapter(pds.settings["api_url"]).max_retries
    writes = pds._session("POST").get_adapter(pds.settings["api_url"]).max_retries
    assert reads.connect == 2 and reads.allowed_methods == frozenset({"GET"})
    assert not reads.status_forcelist and reads.read is False
    assert writes.total == 0 and writes.connect == 0
    assert pds._session("DELETE") is pds._session("POST") is not pds._session("GET")


def test_every_operation_against_nothing_is_transient(unreachable_pds):
    spec = dataclasses.replace(make_spec(unreachable_pds), resource_id="5")
    for call in (unreachable_pds.details, unreachable_pds.usage, unreachable_pds.suspend,
                 unreachable_pds.unsuspend, unreachable_pds.terminate):
        with pytest.raises(TransientBackendError):
            call(spec)


# --------------------------------------------------------------------------- packaging

def test_entry_point_and_hook_register_the_backend():
    [entry] = [e for e in importlib.metadata.entry_points(group="panel") if e.name == "pds"]
    assert entry.value == "panel_pds" and entry.load() is panel_pds
    pm = pluggy.PluginManager("panel")
    pm.add_hookspecs(panel.hookspecs)
    pm.register(panel_pds, name="pds-test")
    registered = []
    try:
        pm.hook.register_backends(register=registered.append)
    finally:
        pm.unregister(name="pds-test")
    assert registered == [PdsBackend]


def test_standin_command_line(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "panel_pds.standin", "--port", str(port), "--token", "cli-token"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"STAND-IN (not a real PDS host) on http://127.0.0.1:{port}" in line
        backend = make_backend(f"http://127.0.0.1:{port}", token="cli-token")
        assert "token accepted" in backend.test_connection()
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0


def test_standin_binds_loopback_only():
    from panel_pds.standin import PdsStandIn

    with pytest.raises(ValueError, match="127.0.0.1"):
        PdsStandIn(host="0.0.0.0")
    with PdsStandIn(token="t-1234") as standin:
        assert standin.url.startswith("http://127.0.0.1:")
        assert "t-1234" not in repr(standin)
    with pytest.raises(OSError):
        urllib.request.urlopen(standin.url + "/", timeout=2)


class _RecordingProxy:
    """An HTTP proxy stand-in on loopback: records each request line and answers 502."""

    def __init__(self):
        import http.server
        import threading

        lines = self.lines = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                lines.append(self.requestline)
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_the_environments_proxy_is_used_and_no_proxy_bypasses_it(standin, monkeypatch):
    """The proxy settings are read once per session (not per request), and still apply."""
    proxy = _RecordingProxy()
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        with pytest.raises((TransientBackendError, PermanentBackendError)):
            make_backend(standin.url).test_connection()
        assert proxy.lines and proxy.lines[0].startswith(f"GET {standin.url}/api/v1/")
        seen = len(proxy.lines)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert "token accepted" in make_backend(standin.url).test_connection()
        assert len(proxy.lines) == seen
    finally:
        proxy.stop()
