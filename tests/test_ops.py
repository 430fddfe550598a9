"""Health, readiness and Prometheus metrics against real PostgreSQL and Redis; JSON logs; the CLI's
one-line message before `panel db upgrade`."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from corelib import BASE_CONFIG, add_user, login, token_for

from panel.extensions import db

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def panel_cli(*args, db_url, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANEL_")}
    env.update({"PANEL_SECRET_KEY": "ops-test-secret-key-01234", "PANEL_PLUGINS": "", "PANEL_DATABASE_URL": db_url},
               **extra)
    return subprocess.run([sys.executable, "-m", "panel.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def pg_redis_app(postgres_server, redis_server, monkeypatch):
    """A migrated PostgreSQL database and real Redis (jobs go to RQ; no worker runs)."""
    import redis
    from memory_backend import REMOTE, MemoryPlugin

    from panel import create_app

    for key in list(os.environ):
        if key.startswith("PANEL_"):
            monkeypatch.delenv(key, raising=False)
    redis.Redis.from_url(redis_server.url).flushall()
    url = postgres_server.create_database()
    assert panel_cli("db", "upgrade", db_url=url).returncode == 0
    REMOTE.__init__()
    app = create_app(BASE_CONFIG | {"DATABASE_URL": url, "REDIS_URL": redis_server.url, "PLUGINS": [],
                                    "EXTRA_PLUGINS": [MemoryPlugin()], "METRICS_TOKEN": "metrics-token-123456"})
    with app.app_context():
        from panel.plugins import set_enabled

        set_enabled("memory", True)
        yield app
        db.session.remove()
        db.engine.dispose()


def test_healthz_and_readyz_on_postgresql_and_redis(pg_redis_app):
    client = pg_redis_app.test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.get_json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok", "migrations": "ok"}}


def test_readyz_reports_missing_migrations_and_redis_down(postgres_server, make_app):
    from panel.testing import free_port

    url = postgres_server.create_database()
    app = make_app(create_tables=False, DATABASE_URL=url, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    checks = r.get_json()["checks"]
    assert checks["database"] == "ok"
    assert checks["migrations"] == "no migrations applied: run `panel db upgrade`"
    assert checks["redis"].startswith("unreachable")
    assert app.test_client().get("/healthz").status_code == 200  # the process itself is fine


def test_readyz_when_the_database_is_down(make_app):
    from panel.testing import free_port

    app = make_app(create_tables=False, DATABASE_URL=f"postgresql://u:secretpw@127.0.0.1:{free_port()}/x")
    r = app.test_client().get("/readyz")
    assert r.status_code == 503 and r.get_json()["checks"]["database"].startswith("unreachable")
    assert "secretpw" not in r.get_data(as_text=True)


def test_metrics_need_the_token_and_count_what_happened(pg_redis_app):
    from panel.models import Plan
    from panel.orders import place_order

    client = pg_redis_app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    user = add_user("m@example.com")
    db.session.add(Plan(slug="f", name="F", backend="memory", options={"size_mib": 1}))
    db.session.commit()
    place_order(user, "f", {"name": "m1"}, actor="t")  # enqueued to Redis; no worker runs
    login(client, user.email)
    client.get("/services")
    client.get("/nowhere")
    r = client.get("/metrics", headers={"Authorization": "Bearer metrics-token-123456"})
    assert r.status_code == 200 and r.mimetype == "text/plain"
    text = r.get_data(as_text=True)
    assert 'panel_http_requests_total{endpoint="customer.services",method="GET",status="200"}' in text
    assert 'panel_http_requests_total{endpoint="unmatched",method="GET",status="404"}' in text
    assert 'panel_http_request_duration_seconds_bucket{endpoint="customer.services"' in text
    assert 'panel_services{backend="memory",status="provisioning"} 1.0' in text
    assert 'panel_operations{backend="memory",state="queued"} 1.0' in text
    assert "panel_queue_depth 1.0" in text
    assert "metrics-token-123456" not in text


def test_metrics_route_is_absent_without_a_token(client):
    assert client.get("/metrics").status_code == 404


def test_webhook_outcomes_and_operation_latency(make_app):
    import hashlib
    import hmac
    import time

    from memory_backend import REMOTE

    from panel.models import Plan
    from panel.orders import place_order

    REMOTE.__init__()
    secret = "whsec_" + "m" * 24
    app = make_app(STRIPE_SECRET_KEY="sk_test_" + "m" * 20, STRIPE_WEBHOOK_SECRET=secret,
                   STRIPE_API_BASE="http://127.0.0.1:9", METRICS_TOKEN="tok-0123456789")
    client = app.test_client()
    with app.app_context():
        user = add_user("w@example.com")
        db.session.add(Plan(slug="f", name="F", backend="memory", options={"size_mib": 1}))
        db.session.commit()
        place_order(user, "f", {"name": "lat"}, actor="t")
    app.extensions["panel_runner"].wait_idle(30)
    body = json.dumps({"id": "evt_m1", "type": "customer.created", "created": int(time.time()),
                       "data": {"object": {"id": "cus_1"}}})
    ts = int(time.time())
    sig = f"t={ts},v1={hmac.new(secret.encode(), f'{ts}.{body}'.encode(), hashlib.sha256).hexdigest()}"
    headers = {"Content-Type": "application/json", "Stripe-Signature": sig}
    assert client.post("/stripe/webhook", data=body, headers=headers).status_code == 200  # ignored type
    paid = json.dumps({"id": "evt_m2", "type": "invoice.paid", "created": int(time.time()),
                       "data": {"object": {"id": "in_1", "object": "invoice", "subscription": "sub_unknown"}}})
    paid_sig = f"t={ts},v1={hmac.new(secret.encode(), f'{ts}.{paid}'.encode(), hashlib.sha256).hexdigest()}"
    for _ in range(2):  # accepted, then a duplicate
        assert client.post("/stripe/webhook", data=paid, headers=headers | {"Stripe-Signature": paid_sig}).status_code == 200
    app.extensions["panel_runner"].wait_idle(30)
    assert client.post("/stripe/webhook", data=body, headers=headers | {"Stripe-Signature": "t=1,v1=00"}).status_code == 400
    text = client.get("/metrics", headers={"Authorization": "Bearer tok-0123456789"}).get_data(as_text=True)

    def value(line_start):
        return float(next(line for line in text.splitlines() if line.startswith(line_start)).rsplit(" ", 1)[1])

    # counters are process-wide (other tests may have added to them): compare with what we sent
    assert value('panel_stripe_webhooks_total{outcome="rejected"}') >= 1
    assert value('panel_stripe_webhooks_total{outcome="ignored"}') >= 1
    assert value('panel_stripe_webhooks_total{outcome="accepted"}') >= 1
    assert value('panel_stripe_webhooks_total{outcome="duplicate"}') >= 1
    assert value('panel_operation_duration_seconds{action="provision",backend="memory",quantile="0.5"}') >= 0
    assert 'panel_operations{backend="memory",state="succeeded"} 1.0' in text
    assert "panel_queue_depth 0.0" in text


def test_json_logs(make_app, capsys):
    app = make_app(TESTING=False, LOG_FORMAT="json")
    root = logging.getLogger()
    try:
        logging.getLogger("panel.test").warning("hello %s", "json")
        lines = [line for line in capsys.readouterr().err.splitlines() if '"hello json"' in line]
        record = json.loads(lines[-1])
        assert record["message"] == "hello json" and record["level"] == "WARNING" and record["name"] == "panel.test"
    finally:
        for handler in list(root.handlers):
            if getattr(handler, "_panel", False):
                root.removeHandler(handler)
    assert app


def test_a_bad_log_format_stops_the_start(make_app):
    from panel.config import ConfigError

    with pytest.raises(ConfigError, match="PANEL_LOG_FORMAT"):
        make_app(LOG_FORMAT="xml")


def test_commands_before_db_upgrade_say_so_in_one_line(tmp_path):
    url = f"sqlite:///{tmp_path}/empty.db"
    done = panel_cli("users", "create", "ops@example.com", "--password", "longenough1", db_url=url)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: the database has no panel tables yet: run `panel db upgrade` first"
    done = panel_cli("plans", "list", db_url="postgresql://u:pw-secret@127.0.0.1:1/x")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "cannot use the database" in done.stderr and "pw-secret" not in done.stderr
