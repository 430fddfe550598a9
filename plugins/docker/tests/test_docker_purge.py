"""Retained data of terminated Docker services (issue 12 section 3), on a real Docker Engine and
PostgreSQL through a real panel app: an operator's "Purge retained data" runs ``DockerBackend.purge``
as an operation, and the worker's periodic loop calls ``purge_expired`` (every
``PANEL_PURGE_INTERVAL`` seconds), which drops what passed its retention window and records a
``purged`` event on the service."""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import psycopg2
import pytest
from psycopg2 import sql

from docker_backend_testkit import new_space


@pytest.fixture
def panel_app(tmp_path, monkeypatch, base_settings, make_backend):
    from panel.extensions import db
    from panel.testing import plugin_app

    for key in list(os.environ):
        if key.startswith("PANEL_"):
            monkeypatch.delenv(key)
    app = plugin_app(tmp_path / "panel.db", "docker", {**base_settings, "retention_days": 30, "admin_signup_path": ""},
                     users=[("alice@example.com", "customer"), ("ops@example.com", "operator")],
                     plans=[{"slug": "pz-small", "name": "Postiz small", "backend": "docker",
                             "options": {"memory_mib": 256, "cpus": 0.5}}], DOMAIN_CHECK_INTERVAL=0)
    make_backend()  # its fixture removes what the test leaves on the engine and in PostgreSQL
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


def _terminated(app):
    from panel import dispatch, lifecycle
    from panel.extensions import db
    from panel.models import User
    from panel.orders import place_order

    service = place_order(User.by_email("alice@example.com"), "pz-small", {"space": new_space("pg")},
                          actor="customer:alice@example.com").service
    assert dispatch.inprocess_runner().wait_idle(120)
    db.session.expire_all()
    assert service.status == "active", service.status_detail
    lifecycle.request(service, "terminate", actor="operator:ops@example.com")
    assert dispatch.inprocess_runner().wait_idle(120)
    db.session.expire_all()
    assert service.status == "terminated"
    return service


def _volumes(docker_client, service):
    return docker_client.volumes.list(filters={"label": f"panel.service={service.external_id}"})


def _role(postgres_server, service):
    conn = psycopg2.connect(postgres_server.admin_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles "
                        "WHERE shobj_description(oid, 'pg_authid') LIKE %s", (f"panel.service={service.external_id}%",))
            return cur.fetchone()
    finally:
        conn.close()


def test_an_operator_purges_retained_data_now(panel_app, docker_client, postgres_server):
    from panel import dispatch
    from panel.extensions import db
    from panel.models import AuditEntry

    service = _terminated(panel_app)
    assert _volumes(docker_client, service), "retention keeps the volumes"
    assert _role(postgres_server, service) is not None, "and the database role"
    client = panel_app.test_client()
    client.post("/login", data={"email": "ops@example.com", "password": "password123"})
    page = client.get(f"/admin/services/{service.id}").get_data(as_text=True)
    assert 'id="purge"' in page
    r = client.post(f"/admin/services/{service.id}/purge")
    assert r.status_code == 303
    assert dispatch.inprocess_runner().wait_idle(120)
    db.session.expire_all()
    assert _volumes(docker_client, service) == [] and _role(postgres_server, service) is None
    op = service.operations[-1]
    assert op.action == "purge" and op.state == "succeeded"
    assert service.status == "terminated" and service.events[-1].detail == "retained data purged"
    entry = db.session.scalar(db.select(AuditEntry).where(AuditEntry.action == "service.purge"))
    assert entry.target_id == str(service.id) and entry.actor == "operator:ops@example.com"


def test_the_periodic_loop_purges_what_passed_its_retention(panel_app, docker_client, postgres_server):
    from panel import dispatch
    from panel.extensions import db

    assert "retention" in dispatch.registry(panel_app).periodic
    kept, expired = _terminated(panel_app), _terminated(panel_app)
    role, comment = _role(postgres_server, expired)
    long_ago = (datetime.now(timezone.utc) - timedelta(days=31)).isoformat()
    conn = psycopg2.connect(postgres_server.admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:  # as if it was terminated 31 days ago (retention 30 days)
        cur.execute(sql.SQL("COMMENT ON ROLE {} IS %s").format(sql.Identifier(role)),
                    (f"panel.service={expired.external_id};panel.terminated_at={long_ago}",))
    conn.close()
    dispatch.run_periodic_once(panel_app, 5)  # one round of panel worker's periodic thread
    db.session.expire_all()
    assert _volumes(docker_client, expired) == [] and _role(postgres_server, expired) is None
    assert _volumes(docker_client, kept) and _role(postgres_server, kept) is not None, "still within retention"
    event = expired.events[-1]
    assert event.kind == "purged" and event.actor == "retention"
    assert "retention window on docker passed" in event.detail
    assert kept.events[-1].kind != "purged"
