"""End to end with real components: PostgreSQL, Redis, real ``panel worker`` subprocesses, and
the PDS backend plugin talking HTTP to its loopback stand-in of the PDS deploy API."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import panel_pds.standin as standin_mod
import pytest

from panel.testing import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "e2e-deploy-token-123"


@dataclass
class Stack:
    app: object
    client: object
    auth: dict
    standin: object
    env: dict

    def worker(self, *args, timeout=120):
        proc = subprocess.run([sys.executable, "-m", "panel.cli", "worker", "--burst", *args], cwd=ROOT,
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    def order(self, params=None):
        r = self.client.post("/api/v1/orders", json={"plan": "pds-free", "params": params or {}}, headers=self.auth)
        assert r.status_code == 201, r.get_json()
        return r.get_json()["service"]["id"]

    def service(self, sid):
        from panel.extensions import db

        db.session.expire_all()  # requests share the fixture's app context (and session) here
        return self.client.get(f"/api/v1/services/{sid}", headers=self.auth).get_json()["service"]


@pytest.fixture
def stack(redis_server, postgres_server, monkeypatch, tmp_path):
    import redis
    from flask_migrate import upgrade

    from panel import create_app
    from panel.catalog import import_catalog
    from panel.extensions import db
    from panel.models import ApiToken, User
    from panel.plugins import set_enabled

    redis.Redis.from_url(redis_server.url).flushall()
    standin = standin_mod.PdsStandIn(token=TOKEN).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANEL_")}
    env.update({
        "PANEL_SECRET_KEY": "e2e-secret-key-0123456789",
        "PANEL_DATABASE_URL": postgres_server.create_database(),
        "PANEL_REDIS_URL": redis_server.url,
        "PANEL_PLUGINS": "pds",
        "PANEL_JOB_BACKOFF": "0",
        "PANEL_JOB_RETRIES": "3",
        "PANEL_INSTANCE_PATH": str(tmp_path),
        "PANEL_PLUGIN_PDS_API_URL": standin.url,
        "PANEL_PLUGIN_PDS_API_TOKEN": TOKEN,
        "PANEL_PLUGIN_PDS_HOSTNAME_DOMAIN": "pds.example.com",
    })
    for key in list(os.environ):
        if key.startswith("PANEL_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("PANEL_"):
            monkeypatch.setenv(key, value)
    app = create_app({"TESTING": True, "WTF_CSRF_ENABLED": False})
    with app.app_context():
        upgrade()
        set_enabled("pds", True)
        import_catalog("plans: [{slug: pds-free, name: Free, backend: pds, options: {disksize_gb: 5}}]")
        user = User(email="e2e@example.com")
        user.set_password("password123")
        db.session.add(user)
        _, plain = ApiToken.issue(user)
        db.session.commit()
        yield Stack(app, app.test_client(), {"Authorization": f"Bearer {plain}"}, standin, env)
        db.session.remove()
        db.engine.dispose()
    standin.stop()


def test_free_order_ends_active_with_exactly_one_deploy(stack):
    sid = stack.order({"username": "Alice_01"})
    assert stack.service(sid)["status"] == "provisioning"
    stack.worker()
    svc = stack.service(sid)
    assert svc["status"] == "active", svc
    deploys = stack.standin.deploys()
    assert len(deploys) == 1
    body = deploys[0]
    assert body["username"] == "alice-01" and body["hostname"] == "alice-01.pds.example.com"
    assert body["email"] == "e2e@example.com" and body["disksize"] == 5
    assert len(body["password"]) >= 16 and "=" not in body["password"]
    assert svc["details"]["encrypted_config"]["adminPassword"] == "••••••••"  # nested, as the PDS host nests it
    assert svc["details"]["hostname"] == "alice-01.pds.example.com"
    assert body["password"] not in str(svc)
    events = stack.client.get(f"/api/v1/services/{sid}/events", headers=stack.auth).get_json()["events"]
    assert [e["to"] for e in events][-1] == "active"


def test_two_500s_then_success_ends_active_after_retries(stack):
    stack.standin.set_faults(deploy=[500, 500])
    sid = stack.order()
    stack.worker()
    svc = stack.service(sid)
    assert svc["status"] == "active", svc
    assert len(stack.standin.services()) == 1
    assert [r["status"] for r in stack.standin.requests() if r["path"].endswith("/deploy")] == [500, 500, 201]
    kinds = [e["kind"] for e in stack.client.get(f"/api/v1/services/{sid}/events", headers=stack.auth).get_json()["events"]]
    assert kinds.count("retrying") == 2


def test_422_ends_failed_with_the_message_in_the_api_and_on_the_page(stack):
    stack.standin.set_faults(deploy=[422])
    sid = stack.order()
    stack.worker()
    svc = stack.service(sid)
    assert svc["status"] == "failed"
    assert "422" in svc["status_detail"]
    assert stack.standin.services() == []
    with stack.app.app_context():
        from panel.extensions import db
        from panel.models import Service

        owner = db.session.get(Service, sid).user
        with stack.app.test_client() as browser:
            browser.post("/login", data={"email": owner.email, "password": "password123"})
            page = browser.get(f"/services/{sid}").get_data(as_text=True)
    assert svc["status_detail"] in page.replace("&#34;", '"').replace("&#39;", "'")


def test_a_worker_killed_mid_job_then_the_sweeper_still_makes_one_deploy(stack):
    """The worker dies while its deploy request is in flight; the PDS host finishes that deploy
    anyway. The sweeper re-enqueues the lost operation and the retry adopts the PDS service the
    killed attempt made (HTTP 409 with its id) instead of deploying a second one."""
    deploys = lambda: [r for r in stack.standin.requests() if r["path"] == "/api/v1/deploy"]  # noqa: E731
    stack.standin.set_faults(hold=True)  # the stand-in holds every API call until released
    sid = stack.order()
    worker = subprocess.Popen([sys.executable, "-m", "panel.cli", "worker", "--sweep-interval", "0"],
                              cwd=ROOT, env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        arrived = wait_for(lambda: any(r["path"] == "/api/v1/deploy" for r in stack.standin.received()), 60)
        assert arrived, "the worker's deploy request never reached the stand-in"
        horses = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True).stdout.split()
        for pid in [worker.pid, *map(int, horses)]:
            os.kill(int(pid), signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
        stack.standin.set_faults(hold=False)  # the PDS host finishes the orphaned deploy
    assert wait_for(lambda: len(stack.standin.services()) == 1, 30), "the killed attempt's deploy never finished"
    assert [r["status"] for r in deploys()] == [201]
    assert stack.service(sid)["status"] == "provisioning", "the killed worker recorded a result"

    def swept() -> bool:  # once the killed job's heartbeat is stale, the sweeper re-enqueues it
        run = subprocess.run([sys.executable, "-m", "panel.cli", "sweep", "--older-than", "2"], cwd=ROOT,
                             env=stack.env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        return "re-enqueued 1 operation" in run.stdout

    assert wait_for(swept, 60, 0.5), "the sweeper never re-enqueued the lost operation"
    stack.worker()
    svc = stack.service(sid)
    assert svc["status"] == "active", svc
    assert len(stack.standin.services()) == 1, "the retried provision made a second PDS service"
    assert [r["status"] for r in deploys()] == [201, 409], "the retry did not adopt the killed attempt's deploy"


def test_redis_down_at_order_time_loses_nothing(stack, redis_server):
    """The order is committed even when Redis is unreachable; the sweeper enqueues it later."""
    stack.app.config["REDIS_URL"] = "redis://127.0.0.1:1/0"
    stack.app.extensions.pop("panel_redis", None)
    try:
        sid = stack.order()
    finally:
        stack.app.config["REDIS_URL"] = redis_server.url
        stack.app.extensions.pop("panel_redis", None)
    assert stack.service(sid)["status"] == "provisioning"
    sweep = subprocess.run([sys.executable, "-m", "panel.cli", "sweep", "--older-than", "0"], cwd=ROOT,
                           env=stack.env, capture_output=True, text=True, timeout=60)
    assert "re-enqueued 1 operation" in sweep.stdout, sweep.stdout + sweep.stderr
    stack.worker()
    assert stack.service(sid)["status"] == "active"
    assert len(stack.standin.services()) == 1
