"""The client area through the plugin boundary: sections, credentials revealed after re-entering the
password, actions run as operations (customer, operator and API), plugin hooks, and customer words
for failures, suspensions and the history (operators keep the detail)."""
from __future__ import annotations

import re
import threading

import pytest
from corelib import BASE_CONFIG, add_user, login, token_for, wait_jobs
from memory_backend import REMOTE

from panel import hookimpl, lifecycle
from panel.backends import Action, ActionResult, HowTo
from panel.extensions import db
from panel.models import Service
from panel.testing import wait_for
from sqlalchemy import text


def _order(client, app, name="site1"):
    r = client.post("/order/mem-free", data={"param_name": name})
    assert r.status_code == 302, r.get_data(as_text=True)[:500]
    sid = int(re.search(r"/services/(\d+)", r.headers["Location"]).group(1))
    wait_jobs(app)
    return db.session.get(Service, sid)


def _memory_app(make_app, email, **config):
    """An app (own config) with the free memory plan and a signed-in customer: ``(app, client)``;
    the caller holds ``app.app_context()`` open."""
    app = make_app(**config)
    ctx = app.app_context()
    ctx.push()
    from panel.models import Plan

    db.session.add(Plan(slug="mem-free", name="Memory free", backend="memory", options={"size_mib": 128}))
    db.session.commit()
    REMOTE.__init__()
    user = add_user(email)
    client = app.test_client()
    login(client, user.email)
    return app, client, ctx


def test_sections_render_and_no_secret_reaches_the_page(client, app, customer, plans):
    login(client, customer.email)
    svc = _order(client, app)
    html = client.get(f"/services/{svc.id}").get_data(as_text=True)
    assert 'data-section="connect"' in html and 'data-copy="site1.test"' in html
    assert 'href="https://site1.test/"' in html
    assert 'data-credential="root_password"' in html and "s3cret-root-pw" not in html
    assert 'data-section="resources"' in html and "128 MiB" in html
    assert "Sign in with the root password." in html and "<li>Open the URL</li>" in html
    # raw details (the backend's keys) stay on the operator page
    assert 'data-key="password"' not in html


def test_reveal_needs_the_password_is_logged_and_never_cached(client, app, customer, plans):
    login(client, customer.email)
    svc = _order(client, app)
    url = f"/services/{svc.id}/credentials/root_password"
    wrong = client.post(url, data={"password": "not-it"}, headers={"Accept": "application/json"})
    assert wrong.status_code == 403
    assert wrong.get_json()["error"]["fields"]["password"]
    assert "s3cret-root-pw" not in wrong.get_data(as_text=True)
    right = client.post(url, data={"password": "password123"}, headers={"Accept": "application/json"})
    assert right.status_code == 200 and right.get_json()["value"] == "s3cret-root-pw"
    assert "no-store" in right.headers["Cache-Control"]
    page = client.post(url, data={"password": "password123"})  # without script: a small page
    assert page.status_code == 200 and "s3cret-root-pw" in page.get_data(as_text=True)
    assert "no-store" in page.headers["Cache-Control"]
    db.session.expire_all()
    kinds = [e.kind for e in db.session.get(Service, svc.id).events]
    assert kinds.count("reveal") == 2 and kinds.count("reveal_refused") == 1
    history = client.get(f"/services/{svc.id}").get_data(as_text=True)
    assert "Root password viewed" in history and "Wrong password: Root password was not shown" in history
    assert client.post(f"/services/{svc.id}/credentials/nope", data={"password": "password123"}).status_code == 404


def test_another_customer_cannot_reveal_or_act(client, app, customer, other_customer, plans):
    login(client, customer.email)
    svc = _order(client, app)
    client.post("/logout")
    login(client, other_customer.email)
    assert client.post(f"/services/{svc.id}/credentials/root_password", data={"password": "password123"}).status_code == 404
    assert client.post(f"/services/{svc.id}/actions/restart").status_code == 404


def test_reveals_are_rate_limited(make_app):
    app, client, ctx = _memory_app(make_app, "rl@example.com", RATELIMIT_ENABLED=True, REVEAL_LIMIT="2 per minute")
    try:
        svc = _order(client, app)
        url = f"/services/{svc.id}/credentials/root_password"
        codes = [client.post(url, data={"password": "wrong"}).status_code for _ in range(3)]
        assert codes == [403, 403, 429]
        assert client.post(url, data={"password": "password123"}).status_code == 429
    finally:
        ctx.pop()


def test_an_action_runs_as_an_operation_and_lands_in_the_history(client, app, customer, plans):
    login(client, customer.email)
    svc = _order(client, app)
    html = client.get(f"/services/{svc.id}").get_data(as_text=True)
    assert 'id="action-restart"' in html and 'data-confirm="Reset the root password?"' in html
    r = client.post(f"/services/{svc.id}/actions/restart")
    assert r.status_code == 303
    wait_jobs(app)
    db.session.expire_all()
    svc = db.session.get(Service, svc.id)
    op = svc.operations[-1]
    assert (op.action, op.state, op.payload["name"], op.actor) == ("run_action", "succeeded", "restart",
                                                                     "customer:alice@example.com")
    assert REMOTE.objects[svc.external_id]["restarts"] == 1 and svc.status == "active"
    page = client.get(f"/services/{svc.id}").get_data(as_text=True)
    assert "Restart done: Restarted." in page and "Restart requested" in page


def test_an_action_can_store_a_new_secret(client, app, customer, plans):
    login(client, customer.email)
    svc = _order(client, app)
    client.post(f"/services/{svc.id}/actions/rotate_password")
    wait_jobs(app)
    r = client.post(f"/services/{svc.id}/credentials/root_password", data={"password": "password123"},
                    headers={"Accept": "application/json"})
    assert r.get_json()["value"].startswith("new-pw-")
    db.session.expire_all()
    assert db.session.get(Service, svc.id).backend_data["password_reset"] is True


def test_action_params_are_validated(client, app, customer, plans):
    login(client, customer.email)
    svc = _order(client, app)
    client.post(f"/services/{svc.id}/actions/signal", data={"param_signal": "kill"})
    wait_jobs(app)
    db.session.expire_all()
    assert [op.action for op in db.session.get(Service, svc.id).operations] == ["provision"]
    client.post(f"/services/{svc.id}/actions/signal", data={"param_signal": "usr1"})
    wait_jobs(app)
    assert REMOTE.objects[svc.external_id]["signal"] == "usr1"


def test_a_failed_action_leaves_the_service_running_and_says_so(client, app, customer, plans):
    login(client, customer.email)
    svc = _order(client, app)
    REMOTE.fail_next("run_action", "permanent")
    client.post(f"/services/{svc.id}/actions/restart")
    wait_jobs(app)
    db.session.expire_all()
    svc = db.session.get(Service, svc.id)
    assert svc.status == "active" and svc.operations[-1].state == "failed"
    page = client.get(f"/services/{svc.id}").get_data(as_text=True)
    assert "Restart did not work" in page
    assert "hostname is already taken" not in page  # the upstream text is for operators


def test_actions_are_not_offered_while_not_live_or_busy(client, app, customer, plans):
    login(client, customer.email)
    svc = _order(client, app)
    lifecycle.request(svc, "suspend", actor="operator:ops@example.com", payload={"reason": "operator"})
    wait_jobs(app)
    db.session.expire_all()
    svc = db.session.get(Service, svc.id)
    assert svc.status == "suspended"
    r = client.post(f"/services/{svc.id}/actions/restart", follow_redirects=True)
    assert "not available while the service is suspended" in r.get_data(as_text=True)
    client.post(f"/services/{svc.id}/actions/rotate_password")  # offered while suspended
    wait_jobs(app)
    db.session.expire_all()
    assert db.session.get(Service, svc.id).operations[-1].state == "succeeded"


def test_actions_are_rate_limited(make_app):
    app, client, ctx = _memory_app(make_app, "act@example.com", RATELIMIT_ENABLED=True, ACTION_LIMIT="2 per minute")
    try:
        svc = _order(client, app)
        codes = []
        for _ in range(3):
            codes.append(client.post(f"/services/{svc.id}/actions/restart").status_code)
            wait_jobs(app)
        assert codes == [303, 303, 429]
    finally:
        ctx.pop()


def test_operators_get_the_same_buttons_and_a_suspend_reason(client, app, customer, operator, plans):
    login(client, customer.email)
    svc = _order(client, app)
    client.post("/logout")
    login(client, operator.email)
    html = client.get(f"/admin/services/{svc.id}").get_data(as_text=True)
    assert f'action="/admin/services/{svc.id}/actions/restart"' in html
    assert 'data-poll="/admin/services/' in html  # live status on the operator's page too
    client.post(f"/admin/services/{svc.id}/actions/restart")
    wait_jobs(app)
    db.session.expire_all()
    assert db.session.get(Service, svc.id).operations[-1].actor == "operator:ops@example.com"
    client.post(f"/admin/services/{svc.id}/suspend", data={"note": "Abuse report 42: spam from this host"})
    wait_jobs(app)
    status = client.get(f"/admin/services/{svc.id}/status.json").get_json()
    assert status["status"] == "suspended" and "details" in status
    client.post("/logout")
    login(client, customer.email)
    page = client.get(f"/services/{svc.id}").get_data(as_text=True)
    assert "Suspended by our team" in page and "Abuse report 42: spam from this host" in page
    assert "ops@example.com" not in page  # staff identities never reach customers
    assert "our team" in page


@pytest.mark.parametrize("who,path", [("customer", "/services/{}"), ("operator", "/admin/services/{}")])
def test_a_service_page_reads_its_status_and_operation_together(client, app, customer, operator, plans, who, path):
    """A suspend finishes while the page asks the backend for its sections. The page still shows the
    status and the operation it read together (active, suspending: the spinner, so its script polls),
    not the old status without the operation (a page that never updates: the CI flake of stop 19)."""
    login(client, customer.email)
    svc = _order(client, app)
    read, done = threading.Event(), threading.Event()

    def race(method, spec):
        if method == "suspend":
            read.wait(10)  # the job holds until the page has read the service
        elif method == "client_area" and not read.is_set():
            read.set()
            if wait_for(lambda: stored_status(spec.service_id) == "suspended", timeout=10):  # the job's success committed
                done.set()

    def stored_status(service_id):
        with db.engine.connect() as conn:
            return conn.execute(text("SELECT status FROM services WHERE id = :id"), {"id": service_id}).scalar()

    REMOTE.on_call = race
    try:
        lifecycle.request(svc, "suspend", actor="test", detail="suspend by test")
        if who == "operator":
            client.post("/logout")
            login(client, operator.email)
        sid = svc.id
        db.session.remove()  # the request shares this app context: let it read afresh
        html = client.get(path.format(sid)).get_data(as_text=True)
    finally:
        read.set()
        REMOTE.on_call = None
    wait_jobs(app)
    assert done.is_set(), "the suspend did not finish during the page's backend call"
    assert 'data-status="active"' in html
    assert '<span id="progress" class="spinner" ></span>' in html, "no spinner: the page would never poll"
    status = client.get(path.format(sid) + "/status.json").get_json()
    assert status["status"] == "suspended" and status["operation"] is None


def test_a_failed_service_tells_the_customer_plainly_and_the_operator_everything(client, app, customer, operator, plans):
    REMOTE.fail_next("provision", "permanent")
    login(client, customer.email)
    r = client.post("/order/mem-free", data={"param_name": "broken"})
    sid = int(re.search(r"/services/(\d+)", r.headers["Location"]).group(1))
    wait_jobs(app)
    page = client.get(f"/services/{sid}").get_data(as_text=True)
    assert "We could not finish setting up your service." in page
    assert "hostname is already taken" not in page and "memory:" not in page
    status = client.get(f"/services/{sid}/status.json").get_json()
    assert "hostname is already taken" not in str(status) and status["message"]["tone"] == "bad"
    api = client.get(f"/api/v1/services/{sid}/events").get_json()["events"]
    assert all("already taken" not in e["detail"] for e in api)
    assert {e["actor"] for e in api} <= {"you", "automatic", "our team", "billing"}
    client.post("/logout")
    login(client, operator.email)
    admin = client.get(f"/admin/services/{sid}").get_data(as_text=True)
    assert "memory: provision rejected: hostname is already taken" in admin


def test_support_contact_is_shown_with_a_failure(make_app):
    app, client, ctx = _memory_app(make_app, "sup@example.com", SUPPORT_URL="https://help.example.com/",
                                   SUPPORT_EMAIL="help@example.com")
    try:
        REMOTE.fail_next("provision", "permanent")
        r = client.post("/order/mem-free", data={"param_name": "x1"})
        sid = int(re.search(r"/services/(\d+)", r.headers["Location"]).group(1))
        wait_jobs(app)
        page = client.get(f"/services/{sid}").get_data(as_text=True)
        assert 'id="support-contact"' in page and "https://help.example.com/" in page and "help@example.com" in page
    finally:
        ctx.pop()


def test_history_speaks_the_customers_words(client, app, customer, plans):
    login(client, customer.email)
    svc = _order(client, app)
    page = client.get(f"/services/{svc.id}").get_data(as_text=True)
    history = page[page.index('id="history"'):].split("</ol>")[0]
    assert "Service ready" in history and "Ordered Memory free" in history
    kinds = re.findall(r'data-kind="(\w+)"', history)
    assert kinds == ["succeeded", "queued", "created"]  # newest first; no requested/started steps
    for internal in ("pending_payment", "provisioning", "worker", "customer:", "alice@example.com"):
        assert internal not in history


def test_the_api_gives_customers_sections_and_actions_and_runs_actions(client, app, customer, operator, plans):
    auth = token_for(customer)
    r = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "api1"}}, headers=auth)
    sid = r.get_json()["service"]["id"]
    wait_jobs(app)
    svc = client.get(f"/api/v1/services/{sid}", headers=auth).get_json()["service"]
    assert {a["name"] for a in svc["actions"]} == {"restart", "rotate_password", "signal"}
    assert client.post(f"/api/v1/services/{sid}/actions/signal", json={"params": {"signal": "nope"}},
                       headers=auth).status_code == 422
    assert client.post(f"/api/v1/services/{sid}/actions/nope", headers=auth).status_code == 404
    r = client.post(f"/api/v1/services/{sid}/actions/restart", headers=auth)
    assert r.status_code == 202
    wait_jobs(app)
    events = client.get(f"/api/v1/services/{sid}/events", headers=auth).get_json()["events"]
    assert events[-1]["detail"].startswith("Restart done") and events[-1]["actor"] == "you"
    ops = client.get(f"/api/v1/services/{sid}/events", headers=token_for(operator)).get_json()["events"]
    assert any(e["actor"] == f"api:{customer.email}" for e in ops)  # operators keep the raw log
    detail = client.get(f"/api/v1/services/{sid}", headers=token_for(operator)).get_json()["service"]
    assert detail["details"]["password"] == "••••••••"


class ExtraArea:
    """A plugin that adds a section and an action to every service, without the core changing."""

    def __init__(self):
        self.ran = []

    @hookimpl
    def client_area_sections(self, service, spec):
        return [HowTo(f"Backups of {service.external_id} run nightly.", title="Backups")]

    @hookimpl
    def service_actions(self, service, spec):
        def handler(spec, params):
            self.ran.append(spec.external_id)
            return ActionResult("Backup started.", data={"last_backup": "now"})

        return [Action("backup_now", "Back up now", handler=handler)]


def test_plugins_add_sections_and_actions_through_hooks(make_app):
    from memory_backend import MemoryPlugin

    extra = ExtraArea()
    app, client, ctx = _memory_app(make_app, "hooks@example.com", EXTRA_PLUGINS=[MemoryPlugin(), extra])
    try:
        svc = _order(client, app, "hooked")
        page = client.get(f"/services/{svc.id}").get_data(as_text=True)
        assert "Backups" in page and f"Backups of {svc.external_id} run nightly." in page
        assert 'id="action-backup_now"' in page
        client.post(f"/services/{svc.id}/actions/backup_now")
        wait_jobs(app)
        db.session.expire_all()
        assert extra.ran == [svc.external_id]
        assert db.session.get(Service, svc.id).backend_data["last_backup"] == "now"
    finally:
        ctx.pop()


def test_action_names_are_checked():
    with pytest.raises(ValueError):
        Action("Bad Name", "x")
    assert Action("ok_name", "OK").statuses == ("active",)


def test_csrf_failure_gets_a_styled_page(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    r = app.test_client().post("/login", data={"email": "a@example.com", "password": "x"})
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and "This form has expired" in html and 'class="card narrow error-page"' in html


def test_error_pages_are_styled_and_api_errors_stay_json(client):
    r = client.get("/no/such/page")
    assert r.status_code == 404 and "Page not found" in r.get_data(as_text=True)
    assert client.get("/api/v1/nope").get_json()["error"]["code"] == "not_found"
    r = client.put("/plans")
    assert r.status_code == 405 and "Not possible here" in r.get_data(as_text=True)


def test_config_checks_the_new_settings(make_app):
    from panel.config import ConfigError

    with pytest.raises(ConfigError, match="PANEL_SUPPORT_URL"):
        make_app(create_tables=False, SUPPORT_URL="help.example.com")
    with pytest.raises(ConfigError, match="PANEL_DNS_RESOLVERS"):
        make_app(create_tables=False, DNS_RESOLVERS="not-an-ip")
    assert BASE_CONFIG["TESTING"]
