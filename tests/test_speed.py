"""Speed work that must not cost correctness: the database connection pool without a ping per
checkout, the plugin settings cache, the one-statement claim, the threaded ``panel worker``.

Nothing here is timed: each test checks a behaviour (a dead connection is replaced, a cached
setting is forgotten when it changes, two jobs run at once, a hung job is taken over)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from corelib import add_user
from sqlalchemy import text

from panel.extensions import db

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def own_postgres():
    """A PostgreSQL cluster of this test alone (it is restarted)."""
    from panel.testing import PostgresServer

    server = PostgresServer()
    yield server
    server.stop()


@pytest.mark.parametrize("ping_after, survives", [(0.2, True), (0, False)])
def test_a_connection_that_sat_idle_through_a_database_restart_is_replaced(make_app, own_postgres, ping_after,
                                                                           survives):
    from sqlalchemy.exc import OperationalError

    app = make_app(DATABASE_URL=own_postgres.create_database(), DB_PING_AFTER=ping_after)
    with app.app_context():
        assert "pool_pre_ping" not in app.config["SQLALCHEMY_ENGINE_OPTIONS"]
        db.session.execute(text("SELECT 1"))
        db.session.remove()  # the connection goes back to the pool, idle
        own_postgres.restart()
        import time

        time.sleep(0.3)  # longer than PANEL_DB_PING_AFTER: the next checkout pings it
        if survives:
            assert db.session.execute(text("SELECT 2")).scalar() == 2
        else:  # without the idle ping (0 turns it off) the dead connection reaches the request
            with pytest.raises(OperationalError):
                db.session.execute(text("SELECT 2"))
        db.session.remove()


def test_plugin_settings_are_cached_and_forgotten_when_they_change(make_app):
    from panel.models import PluginSetting
    from panel.plugins import get_backend, is_enabled, set_setting

    app = make_app(SETTINGS_CACHE_SECONDS=3600)
    with app.app_context():
        first = get_backend("memory")
        assert first.settings["region"] == "test-1" and is_enabled("memory")
        # another process changes the table: this one keeps its cached settings (for the TTL)
        db.session.add(PluginSetting(plugin="memory", key="region", value='"far-away"', secret=False))
        db.session.commit()
        assert get_backend("memory") is first and get_backend("memory").settings["region"] == "test-1"
        # a change made through this process takes effect at once
        set_setting("memory", "region", "eu-2")
        second = get_backend("memory")
        assert second is not first and second.settings["region"] == "eu-2"
        set_setting("memory", "_enabled", False)
        assert not is_enabled("memory")


def test_without_a_cache_every_lookup_reads_the_table(make_app):
    from panel.models import PluginSetting
    from panel.plugins import get_backend

    app = make_app(SETTINGS_CACHE_SECONDS=0)
    with app.app_context():
        assert get_backend("memory").settings["region"] == "test-1"
        db.session.add(PluginSetting(plugin="memory", key="region", value='"far-away"', secret=False))
        db.session.commit()
        assert get_backend("memory").settings["region"] == "far-away"


def test_the_claim_returns_the_row_and_tells_a_take_over_on_postgresql(make_app, postgres_server):
    from datetime import timedelta

    from panel import work
    from panel.models import Operation, Plan, Service
    from panel.models.base import utcnow

    app = make_app(DATABASE_URL=postgres_server.create_database())
    with app.app_context():
        user = add_user("claims@example.com")
        plan = Plan(slug="mem-free", name="Memory free", backend="memory", options={"size_mib": 128})
        service = Service(user=user, plan=plan, backend="memory", params={"name": "x"})
        op = Operation(service=service, action="provision", state="queued", due_at=utcnow(), payload={})
        db.session.add_all([plan, service, op])
        db.session.commit()
        lease = work.claim(Operation, op.id, values={"state": "running"})
        assert lease.item is db.session.get(Operation, op.id) and lease.item.state == "running"
        assert (lease.token, lease.lost_runs, lease.took_over) == (1, 0, False)
        db.session.commit()
        assert work.claim(Operation, op.id) is None, "a live lease cannot be claimed twice"
        db.session.execute(db.update(Operation).where(Operation.id == op.id)
                           .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        again = work.claim(Operation, op.id)
        assert (again.token, again.lost_runs, again.took_over) == (2, 1, True)
        work.fence(again)
        assert again.item.lease_owner is None  # what the fence wrote, without a select
        db.session.commit()
        assert db.session.scalar(db.select(Operation.lease_owner).where(Operation.id == op.id)) is None


# --------------------------------------------------------------------------- panel worker

def test_worker_threads_must_be_a_small_positive_number(make_app):
    from panel.config import ConfigError

    for bad in (0, "many", 1000):
        with pytest.raises(ConfigError, match="PANEL_WORKER_THREADS"):
            make_app(WORKER_THREADS=bad)


@pytest.fixture
def pds_stack(redis_server, postgres_server, monkeypatch, tmp_path):
    sys.path.insert(0, ROOT)
    from test_e2e_worker import _stack

    yield from _stack(redis_server, postgres_server, monkeypatch, tmp_path, PANEL_SWEEP_INTERVAL="0.5",
                      PANEL_LEASE_SECONDS="1")


def _operations(stack):
    from panel.models import Operation

    with stack.app.app_context():
        db.session.expire_all()
        return db.session.scalars(db.select(Operation).order_by(Operation.id)).all()


def test_one_worker_process_runs_its_threads_jobs_at_the_same_time(pds_stack):
    from panel.testing import wait_for

    stack = pds_stack
    stack.standin.set_faults(latency_ms=1500)
    sids = [stack.order({"username": f"par{i}"}) for i in range(3)]
    worker = subprocess.Popen([sys.executable, "-m", "panel.cli", "worker", "--threads", "3"], cwd=ROOT,
                              env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: sum(op.state == "running" for op in _operations(stack)) == 3, timeout=30,
                        interval=0.1), "three jobs never ran at once in the one worker"
        owners = {op.lease_owner.split(":")[1] for op in _operations(stack) if op.lease_owner}
        assert owners == {str(worker.pid)}
        assert wait_for(lambda: all(stack.service(s)["status"] == "active" for s in sids), timeout=60)
    finally:
        worker.terminate()
        code = worker.wait(30)
    assert code == 0, worker.stderr.read()[-2000:]
    assert len(stack.standin.services()) == 3


def test_a_job_past_the_job_timeout_is_taken_over_and_its_thread_replaced(pds_stack):
    """A hung backend call cannot be killed in a thread: its lease stops being renewed after
    PANEL_JOB_TIMEOUT, the sweep hands the operation over again, a fresh thread runs it, and the
    hung run's late answer is refused."""
    from panel.testing import wait_for

    stack = pds_stack
    stack.env["PANEL_JOB_TIMEOUT"] = "2"
    stack.standin.set_faults(latency_ms=8000)  # the first deploy hangs (longer than the timeout)
    sid = stack.order({"username": "hung"})
    worker = subprocess.Popen([sys.executable, "-m", "panel.cli", "worker", "--threads", "1"], cwd=ROOT,
                              env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: any(op.state == "running" for op in _operations(stack)), timeout=30,
                        interval=0.1)
        import time

        time.sleep(0.7)  # the deploy request is in flight (the stand-in read its 8 s latency)
        stack.standin.set_faults(latency_ms=0)  # the second run's deploy answers at once
        assert wait_for(lambda: stack.service(sid)["status"] == "active", timeout=60, interval=0.2), \
            stack.service(sid)
    finally:
        worker.terminate()
        worker.wait(30)
    log = worker.stderr.read()
    assert "PANEL_JOB_TIMEOUT" in log and "a new thread takes this one's place" in log, log[-3000:]
    (op,) = _operations(stack)
    assert (op.state, op.lost_runs) == ("succeeded", 1)
    assert len(stack.standin.services()) == 1, "the take-over made a second PDS service"


def test_an_order_through_the_api_sends_a_bounded_number_of_statements(make_app, postgres_server, redis_server):
    """``POST /api/v1/orders`` for a free plan, as the provision benchmark sends it (bearer
    token, Redis queue): the SQL statements and transactions it costs, counted on PostgreSQL
    with caches warm (the second order). Issue 14: 17 statements before (a lock and a reload of the
    new service, the token's owner apart, the operation updated after its insert, the answer
    selecting service, customer and operations again after the commit)."""
    from corelib import token_for
    from querycount import recording

    from panel.models import Plan

    app = make_app(DATABASE_URL=postgres_server.create_database(), REDIS_URL=redis_server.url,
                   RATELIMIT_ENABLED=False)
    with app.app_context():
        user = add_user("orders@example.com")
        db.session.add(Plan(slug="mem-free", name="Memory free", backend="memory", options={"size_mib": 128}))
        db.session.commit()
        auth = token_for(user)
        client = app.test_client()
        seen = []
        for name in ("first", "second"):
            db.session.remove()
            with recording(db.engine) as one:
                r = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": name}}, headers=auth)
            assert r.status_code == 201, r.get_json()
            seen.append(one)
    # the token with its owner, the plan, the name checks (users, services), then one transaction:
    # the service, its events and operation (inserted due), the status, the counts
    # (the first order also records the token's last use and warms the caches)
    assert seen[1].count <= 10, seen[1].summary()
    assert seen[1].commits == 1 and seen[1].tables().count("services") == 3, seen[1].summary()
