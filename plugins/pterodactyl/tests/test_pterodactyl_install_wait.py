"""Provision waits for Pterodactyl's install (issue 12 section 2): ``provision`` never reports success
while the server is ``installing``; it raises ``InProgress`` and the core asks again later through
the operation's due time (no sleeping in the job). An install that fails ends ``failed`` with a
message naming server, egg and node; the operator's Retry (after a reinstall) finishes the service.

The stand-in simulates Wings: a new server is ``installing`` for ``install_reads`` reads, then shows
the outcome (``PterodactylStandin.install``)."""
from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest

from panel.backends import InProgress, PermanentBackendError
from panel.testing import make_spec
from panel_pterodactyl.standin import ADMIN_KEY

GAMES = {"minecraft": {"nest": 1, "egg": 39}}
NODES = [{"id": 1, "region": "us-east", "enabled": True, "headroom_memory": 1024, "headroom_disk": 1024}]
PLAN = {"game": "minecraft", "nest": 1, "egg": 39, "memory": 1024, "disk": 4096, "cpu": 100, "region": "us-east"}


def test_provision_reports_installing_until_the_install_finishes(standin, ptero, plan):
    standin.install(reads=2)
    spec = make_spec(ptero, options=plan, params={"server_name": "Survival"})
    with pytest.raises(InProgress) as first:
        ptero.provision(spec)
    server = standin.servers_with(spec.external_id)[0]
    assert first.value.resource_id == str(server["id"])
    assert "is installing" in str(first.value) and "egg 39" in str(first.value) and "node 1" in str(first.value)
    with pytest.raises(InProgress):  # read 1 of 2: still installing
        ptero.provision(spec)
    with pytest.raises(InProgress):  # read 2 of 2
        ptero.provision(spec)
    done = ptero.provision(spec)  # the next read shows it installed
    assert done.resource_id == str(server["id"])
    assert done.data["panel_username"], "the user name is filled in when the install finishes"
    assert len(standin.calls("POST", "/api/application/servers")) == 1, "polling never creates a second server"


def test_a_failed_install_is_permanent_and_names_server_egg_and_node(standin, ptero, plan):
    standin.install(reads=0, outcome="install_failed")
    spec = make_spec(ptero, options=plan, params={"server_name": "Broken"})
    with pytest.raises(InProgress):
        ptero.provision(spec)
    with pytest.raises(PermanentBackendError) as info:
        ptero.provision(spec)
    server = standin.servers_with(spec.external_id)[0]
    text = str(info.value)
    assert f"Pterodactyl server {server['id']} ({server['identifier']}) failed to install" in text
    assert 'egg 39 "egg 39" (nest 1)' in text and 'node 1 "node-a"' in text
    assert "reinstall the server in Pterodactyl" in text
    assert ptero.lookup(spec).state == "failed"


# --------------------------------------------------------------------------- through the core's jobs

@pytest.fixture
def make_panel_app(tmp_path, monkeypatch, standin):
    """``make_panel_app(**config)``: a panel app with only this plugin, configured against the
    stand-in (in-process jobs unless ``REDIS_URL`` is given), a customer and a plan."""
    from panel.extensions import db
    from panel.testing import plugin_app

    for key in list(os.environ):
        if key.startswith("PANEL_"):
            monkeypatch.delenv(key)
    made = []

    def make(**overrides):
        app = plugin_app(tmp_path / f"panel-{len(made)}.db", "pterodactyl",
                         {"panel_url": standin.url, "application_api_key": ADMIN_KEY, "nodes": NODES, "games": GAMES,
                          "timeout": 5, "install_poll_seconds": 0},
                         users=[("gamer@example.com", "customer")],
                         plans=[{"slug": "mc-free", "name": "Minecraft free", "backend": "pterodactyl",
                                 "options": dict(PLAN)}],
                         JOB_BACKOFF=[0], JOB_RETRIES=2, **overrides)
        made.append(app)
        return app

    yield make
    from panel import dispatch

    for app in made:
        with app.app_context():
            if not app.config.get("REDIS_URL"):
                dispatch.inprocess_runner().wait_idle(30)
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def panel_app(make_panel_app):
    app = make_panel_app()
    with app.app_context():
        yield app


def _order(app):
    from panel import dispatch
    from panel.extensions import db
    from panel.models import User
    from panel.orders import place_order

    service = place_order(User.by_email("gamer@example.com"), "mc-free", {"server_name": "Survival"},
                          actor="customer:gamer@example.com").service
    assert dispatch.inprocess_runner().wait_idle(60), "the jobs did not finish"
    db.session.expire_all()
    return service


def test_the_service_becomes_active_only_after_the_install(panel_app, standin):
    standin.install(reads=3)
    service = _order(panel_app)
    assert service.status == "active", service.status_detail
    op = service.operations[0]
    assert op.action == "provision" and op.state == "succeeded"
    assert op.attempts == 1, "asking again while it installs spends no attempt"
    kinds = [e.kind for e in service.events]
    assert kinds.count("waiting") == 1, "one event for the wait, not one per poll"
    waiting = next(e for e in service.events if e.kind == "waiting")
    assert "is installing" in waiting.detail
    assert kinds.index("waiting") < kinds.index("succeeded")
    assert service.resource_id == str(standin.servers_with(service.external_id)[0]["id"])
    assert service.backend_data["panel_username"]


def test_while_installing_the_job_returns_and_the_operation_is_due_later(make_panel_app, standin, redis_server):
    """The job does not sleep: with a real Redis and the job run here (as a worker's horse would),
    one run answers "waiting", the operation is due again later (left to the sweep, nothing is
    queued meanwhile), the service still provisioning with the reason in its status detail."""
    from panel import dispatch, jobs
    from panel.extensions import db
    from panel.models import User
    from panel.models.base import utcnow
    from panel.orders import place_order
    from panel.plugins import set_setting

    app = make_panel_app(REDIS_URL=redis_server.url.rsplit("/", 1)[0] + "/3")
    with app.app_context():
        dispatch.queue().empty()
        set_setting("pterodactyl", "install_poll_seconds", 600)
        standin.install(reads=None)  # stays installing
        service = place_order(User.by_email("gamer@example.com"), "mc-free", {"server_name": "Survival"},
                              actor="customer:gamer@example.com").service
        op = service.operations[0]
        dispatch.queue().empty()  # this test is the worker
        assert jobs.run_operation(op.id) == "waiting"
        db.session.expire_all()
        assert service.status == "provisioning" and op.state == "queued"
        due = op.due_at if op.due_at.tzinfo else op.due_at.replace(tzinfo=timezone.utc)
        assert due > datetime.now(timezone.utc), "the next ask waits for its due time"
        assert len(dispatch.queue()) == 0, "a wait is a due time, not a job in the queue"
        assert "is installing" in service.status_detail
        assert op.payload["waiting_since"] and op.attempts == 0
        assert jobs.run_operation(op.id) == "skipped", "nothing is owed before the due time"
        # once installed, the next run (made due now) finishes it
        standin.set_status(standin.servers_with(service.external_id)[0]["id"], None)
        op.due_at = utcnow()
        db.session.commit()
        assert jobs.run_operation(op.id) == "succeeded"
        db.session.expire_all()
        assert service.status == "active" and op.attempts == 1
        dispatch.queue().empty()


def test_a_failed_install_fails_the_service_and_retry_after_a_reinstall_finishes_it(panel_app, standin):
    from panel import dispatch, lifecycle
    from panel.extensions import db

    standin.install(reads=1, outcome="install_failed")
    service = _order(panel_app)
    server = standin.servers_with(service.external_id)[0]
    assert service.status == "failed"
    assert f"Pterodactyl server {server['id']}" in service.status_detail
    assert "egg 39" in service.status_detail and 'node 1 "node-a"' in service.status_detail
    assert service.resource_id == str(server["id"]), "the remote id is recorded for the operator"
    # the operator reinstalls it in Pterodactyl (this time the install works), then retries
    standin.install(reads=1)
    standin._begin_install(standin.servers[server["id"]])
    lifecycle.retry(service, actor="operator:ops@example.com")
    assert dispatch.inprocess_runner().wait_idle(60)
    db.session.expire_all()
    assert service.status == "active"
    assert len(standin.servers_with(service.external_id)) == 1


def test_an_install_that_never_ends_gives_up_after_the_max_wait(panel_app, standin):
    """With PANEL_JOB_MAX_WAIT passed the wait gives up like a transient error: the server exists,
    so the service needs reconciling, with the reason and the remote id."""
    panel_app.config["JOB_MAX_WAIT"] = 0
    standin.install(reads=None)
    service = _order(panel_app)
    server = standin.servers_with(service.external_id)[0]
    assert service.status == "needs_reconcile"
    assert "still not finished after" in service.reconcile_reason
    assert "PANEL_JOB_MAX_WAIT" in service.reconcile_reason
    assert service.resource_id == str(server["id"])
