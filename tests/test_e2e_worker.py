"""End to end with real components: PostgreSQL, Redis, real ``panel worker`` subprocesses, and
the PDS backend plugin talking HTTP to its loopback stand-in of the PDS deploy API."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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
    yield from _stack(redis_server, postgres_server, monkeypatch, tmp_path)


@pytest.fixture
def own_redis():
    """A Redis server of this test alone (it is restarted)."""
    from panel.testing import RedisServer

    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def private_stack(own_redis, postgres_server, monkeypatch, tmp_path):
    yield from _stack(own_redis, postgres_server, monkeypatch, tmp_path, PANEL_SWEEP_INTERVAL="0.5")


def _stack(redis_server, postgres_server, monkeypatch, tmp_path, **extra_env):
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
        "PANEL_LEASE_SECONDS": "3",
        "PANEL_INSTANCE_PATH": str(tmp_path),
        "PANEL_PLUGIN_PDS_API_URL": standin.url,
        "PANEL_PLUGIN_PDS_API_TOKEN": TOKEN,
        "PANEL_PLUGIN_PDS_HOSTNAME_DOMAIN": "pds.example.com",
        # the limiter stays on (its storage is this Redis, which some tests restart), with room for
        # the few orders each test places from one account
        "PANEL_ORDER_LIMIT": "100 per hour",
        "PANEL_API_LIMIT": "1000 per minute",
        **extra_env,
    })
    for key in list(os.environ):
        if key.startswith("PANEL_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("PANEL_"):
            monkeypatch.setenv(key, value)
    app = create_app({"TESTING": True, "WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False})
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
    assert "details" not in svc  # raw details are for operators; customers get the client area
    assert any(section["kind"] == "connect" for section in svc["client_area"])
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


def test_422_ends_failed_with_plain_words_for_the_customer_and_the_detail_for_operators(stack):
    stack.standin.set_faults(deploy=[422])
    sid = stack.order()
    stack.worker()
    svc = stack.service(sid)
    assert svc["status"] == "failed"
    assert "422" not in svc["status_detail"] and "could not finish setting up" in svc["status_detail"]
    assert stack.standin.services() == []
    with stack.app.app_context():
        from panel.extensions import db
        from panel.models import Service, User

        service = db.session.get(Service, sid)
        owner, detail = service.user, service.status_detail
        assert "HTTP 422" in detail  # the operator's detail is kept
        operator = User(email="ops-e2e@example.com", role="operator")
        operator.set_password("password123")
        db.session.add(operator)
        db.session.commit()
        with stack.app.test_client() as browser:
            browser.post("/login", data={"email": owner.email, "password": "password123"})
            page = browser.get(f"/services/{sid}").get_data(as_text=True)
        from flask import g

        g.pop("_login_user", None)  # the requests share this app context (and Flask-Login's cache in g)
        with stack.app.test_client() as browser:
            browser.post("/login", data={"email": operator.email, "password": "password123"})
            admin = browser.get(f"/admin/services/{sid}").get_data(as_text=True)
    unescape = lambda html: html.replace("&#34;", '"').replace("&#39;", "'")  # noqa: E731
    assert "HTTP 422" not in page and "We could not finish setting up your service." in page
    assert detail in unescape(admin), admin[admin.find("<main"):][:1500]


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

    def swept() -> bool:  # once the killed run's lease (3 s) has run out, the sweep hands it over
        run = subprocess.run([sys.executable, "-m", "panel.cli", "sweep"], cwd=ROOT,
                             env=stack.env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        return "handed over 1 item(s): op-" in run.stdout

    assert wait_for(swept, 60, 0.5), "the sweep never handed over the lost operation"
    stack.worker()
    svc = stack.service(sid)
    assert svc["status"] == "active", svc
    assert len(stack.standin.services()) == 1, "the retried provision made a second PDS service"
    assert [r["status"] for r in deploys()] == [201, 409], "the retry did not adopt the killed attempt's deploy"
    with stack.app.app_context():
        from panel.extensions import db
        from panel.models import Operation

        op = db.session.scalar(db.select(Operation).where(Operation.service_id == sid))
        assert (op.attempts, op.lost_runs) == (1, 1), "the killed run must not count as an attempt"


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
    sweep = subprocess.run([sys.executable, "-m", "panel.cli", "sweep"], cwd=ROOT,
                           env=stack.env, capture_output=True, text=True, timeout=60)
    assert "handed over 1 item(s)" in sweep.stdout, sweep.stdout + sweep.stderr
    stack.worker()
    assert stack.service(sid)["status"] == "active"
    assert len(stack.standin.services()) == 1


def _wait_status(stack, sid, status, timeout=60):
    from panel.testing import wait_for

    assert wait_for(lambda: stack.service(sid)["status"] == status, timeout=timeout, interval=0.2), \
        f"service {sid} is {stack.service(sid)['status']}, not {status}"


def test_panel_worker_survives_a_redis_restart_and_orders_during_it_are_not_lost(private_stack, own_redis):
    """Two ``panel worker`` processes keep running through a Redis restart without persistence:
    they reconnect with backoff, and the sweep hands over what the empty queue forgot."""
    stack = private_stack
    workers = [subprocess.Popen([sys.executable, "-m", "panel.cli", "worker"], cwd=ROOT, env=stack.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        first = stack.order({"username": "before"})
        _wait_status(stack, first, "active")
        stack.standin.set_faults(latency_ms=3000)  # both workers will be inside a job when Redis dies
        busy = [stack.order({"username": f"busy{i}"}) for i in range(2)]
        from panel.testing import wait_for

        def running():
            with stack.app.app_context():
                from panel.extensions import db
                from panel.models import Operation

                db.session.expire_all()
                return db.session.scalar(db.select(db.func.count()).select_from(Operation).where(
                    Operation.service_id.in_(busy), Operation.state == "running")) == 2

        assert wait_for(running, timeout=30), "the workers never started the slow jobs"
        own_redis.proc.terminate()
        own_redis.proc.wait(10)
        during = stack.order({"username": "during"})  # 201 while Redis is down (nothing enqueued)
        # a worker (re)started while Redis is down waits for it instead of exiting
        workers.append(subprocess.Popen([sys.executable, "-m", "panel.cli", "worker"], cwd=ROOT, env=stack.env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        time.sleep(15)  # longer than redis-py retries a command: the workers must rebuild themselves
        stack.standin.set_faults(latency_ms=0)
        own_redis.restart()
        for sid in (*busy, during):
            _wait_status(stack, sid, "active")
        after = stack.order({"username": "after"})
        _wait_status(stack, after, "active")
        assert [w.poll() for w in workers] == [None, None, None], "a worker exited when Redis went away"
        assert sorted(s["hostname"] for s in stack.standin.services()) == [
            "after.pds.example.com", "before.pds.example.com", "busy0.pds.example.com",
            "busy1.pds.example.com", "during.pds.example.com"]
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
        codes = [w.wait(30) for w in workers]
    logs = "".join(w.stderr.read() for w in workers)
    assert codes == [0, 0, 0], logs[-3000:]
    assert "reconnecting to Redis" in logs or "could not connect to Redis" in logs, logs[-3000:]
