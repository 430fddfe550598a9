"""``panel reconcile docker --adopt`` against a real Docker Engine and PostgreSQL (issue 12 section 2,
seed 002's backfill): containers that carry our labels but have no service record (the panel's
database was restored from an old backup) become services of the customer they name, with the plan
matched from their memory and CPU limits and the event log backfilled from the remote state; a
second run adopts and inserts nothing.
"""
from __future__ import annotations

import os

import pytest

from panel.testing import after_provision, make_spec, plugin_app

from docker_backend_testkit import new_space


@pytest.fixture
def panel_app(tmp_path, monkeypatch, base_settings, make_backend):
    """A panel app with only the Docker plugin, configured like ``make_backend``'s backends."""
    from panel.extensions import db

    for key in list(os.environ):
        if key.startswith("PANEL_"):
            monkeypatch.delenv(key)
    app = plugin_app(tmp_path / "panel.db", "docker", base_settings,
                     users=[("alice@example.com", "customer"), ("carol@example.com", "customer")],
                     plans=[{"slug": "pz-small", "name": "Postiz small", "backend": "docker",
                             "options": {"memory_mib": 256, "cpus": 0.5}},
                            {"slug": "pz-big", "name": "Postiz big", "backend": "docker",
                             "options": {"memory_mib": 1024, "cpus": 1.0}}])
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


def _made_earlier(backend, *, email, memory_mib=256, cpus=0.5):
    """A container the panel made before its database was lost: provisioned through the backend."""
    spec = make_spec(backend, options={"memory_mib": memory_mib, "cpus": cpus}, params={"space": new_space("ad")},
                     email=email)
    return after_provision(spec, backend.provision(spec))


def test_adopt_makes_records_backfills_and_a_second_run_adopts_nothing(panel_app, make_backend, tmp_path):
    from panel.cli import cli
    from panel.extensions import db
    from panel.models import AuditEntry, Service

    backend = make_backend()
    running = _made_earlier(backend, email="alice@example.com")
    stopped = _made_earlier(backend, email="Alice@Example.com")
    backend.suspend(stopped)
    big = _made_earlier(backend, email="nobody@example.com", memory_mib=1024, cpus=1.0)  # no such account
    odd = _made_earlier(backend, email="alice@example.com", memory_mib=512, cpus=0.5)     # no plan has 512 MiB
    runner = panel_app.test_cli_runner()

    first = runner.invoke(cli, ["reconcile", "docker", "--adopt"])
    assert first.exit_code == 1, first.output  # something was skipped
    assert "docker: examined 4 / adopted 2 / events inserted 5 / skipped 2" in first.output
    assert f"{big.external_id}" in first.output and "no account with the email nobody@example.com" in first.output
    assert f"{odd.external_id}" in first.output and "memory_mib=512" in first.output and "give --plan" in first.output

    svc = db.session.scalar(db.select(Service).where(Service.external_id == running.external_id))
    assert svc.status == "active" and svc.user.email == "alice@example.com" and svc.plan.slug == "pz-small"
    assert svc.resource_id == running.resource_id and svc.params == {"space": running.params["space"]}
    assert svc.claim_key == running.params["space"]
    assert svc.backend_data["container"] == running.backend_data["container"]
    kinds = [e.kind for e in svc.events]
    assert kinds == ["created", "adopted"]
    created = svc.events[0]
    assert created.at is not None and created.at <= svc.events[1].at
    assert "matched by its resources" in svc.events[1].detail
    from panel import lifecycle

    assert set(lifecycle.spec_for(svc).secrets) >= {"database_password", "jwt_secret"}, \
        "the tenant's secrets are read back from the container's environment"

    paused = db.session.scalar(db.select(Service).where(Service.external_id == stopped.external_id))
    assert paused.status == "suspended" and paused.suspension_reason == "operator"
    assert [e.kind for e in paused.events] == ["created", "suspended", "adopted"]
    assert paused.events[1].at >= paused.events[0].at

    entry = db.session.scalar(db.select(AuditEntry).where(AuditEntry.action == "reconcile.adopt"))
    assert entry is not None and entry.after["events"] == 5 and len(entry.after["adopted"]) == 2

    # the adopted services work through the backend: suspend the active one for real
    lifecycle.request(svc, "suspend", actor="operator:ops@example.com", payload={"reason": "operator"})
    from panel import dispatch

    assert dispatch.inprocess_runner().wait_idle(60)
    db.session.expire_all()
    assert svc.status == "suspended"
    assert backend._find_container(backend._client(), running.external_id).status == "exited"

    # a second run: nothing new; with a mapping file the two skipped ones are adopted
    second = runner.invoke(cli, ["reconcile", "docker", "--adopt"])
    assert "examined 2 / adopted 0 / events inserted 0 / skipped 2" in second.output
    mapping = tmp_path / "map.csv"
    mapping.write_text(f"remote,email,plan\n# the old customer moved\n{big.external_id},carol@example.com,\n"
                       f"{odd.params['space']},alice@example.com,pz-big\n")
    third = runner.invoke(cli, ["reconcile", "docker", "--adopt", "--mapping", str(mapping)])
    assert third.exit_code == 0, third.output
    assert "examined 2 / adopted 2 / events inserted 4 / skipped 0" in third.output
    moved = db.session.scalar(db.select(Service).where(Service.external_id == big.external_id))
    assert moved.user.email == "carol@example.com" and moved.plan.slug == "pz-big"
    assert "customer carol@example.com from the mapping file" in moved.events[-1].detail
    last = runner.invoke(cli, ["reconcile", "docker", "--adopt", "--mapping", str(mapping)])
    assert last.exit_code == 0 and "examined 0 / adopted 0 / events inserted 0 / skipped 0" in last.output
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 4


def test_a_bad_mapping_file_names_the_line_and_adopts_nothing(panel_app, make_backend, tmp_path):
    from panel.cli import cli
    from panel.extensions import db
    from panel.models import Service

    _made_earlier(make_backend(), email="alice@example.com")
    mapping = tmp_path / "map.csv"
    mapping.write_text("remote,email\nhp-x,not-an-email\n")
    result = panel_app.test_cli_runner().invoke(cli, ["reconcile", "docker", "--adopt", "--mapping", str(mapping)])
    assert result.exit_code == 2 and "line 2: give a remote name and an email address" in result.output
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 0
