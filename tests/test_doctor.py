"""``panel doctor`` and ``/admin/doctor`` (issue 12 section 1): each check, given a broken setup,
reports the problem with the right fix, and the command exits 1; a sound setup passes (exit 0).

Billing's checks (prices, the webhook endpoint) are in ``tests/billing/test_doctor_billing.py``,
the backends' own checks in each plugin's tests."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from corelib import add_user, login
from panel import doctor, hookimpl
from panel.doctor import Check, Problem
from panel.extensions import db
from panel.models import Operation, Plan, Service
from panel.models.base import utcnow


def stamp_head():
    """Record the newest migration in the test database (its tables come from ``create_all``)."""
    from flask_migrate import stamp

    stamp()


@pytest.fixture
def sound(app):
    """The core's app at the newest migration with one orderable plan: nothing to report."""
    stamp_head()
    db.session.add(Plan(slug="mem-free", name="Memory free", backend="memory", options={"size_mib": 128}))
    db.session.commit()
    return app


def problems_of(report, check):
    return [p for name, p in report.problems if name == check]


def run_cli(app, *args):
    from panel.cli import cli

    return app.test_cli_runner().invoke(cli, ["doctor", *args])


def test_a_sound_panel_has_no_problems_and_exits_0(sound):
    report = doctor.run()
    assert report.problems == [], report.lines()
    names = [r.name for r in report.results]
    assert names[:3] == ["database", "plans", "plugins"] and names[-4:] == ["services", "billing", "jobs", "mail"]
    result = run_cli(sound)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("panel doctor: no problems")
    assert "✓ database: reachable, at the newest migration" in result.output
    assert "- billing: skipped (billing is off" in result.output
    assert "jobs run in-process" in result.output


# --------------------------------------------------------------------------- database

def test_a_database_without_migrations_says_run_db_upgrade_and_stops(app):
    report = doctor.run()
    [problem] = problems_of(report, "database")
    assert "no migrations applied" in problem.message and problem.fix == "panel db upgrade"
    assert [r.name for r in report.results] == ["database"], "nothing else can be checked"
    result = run_cli(app)
    assert result.exit_code == 1
    assert "✗ database: the schema is not at the newest migration" in result.output
    assert "    fix: panel db upgrade" in result.output


def test_an_older_schema_names_both_revisions(app):
    from flask_migrate import stamp

    stamp(revision="0002")
    [problem] = problems_of(doctor.run(), "database")
    assert "at 0002, newest is" in problem.message and problem.fix == "panel db upgrade"


# --------------------------------------------------------------------------- plans

def test_plan_checks_name_each_plan_and_the_fix(sound):
    from panel.plugins import set_enabled

    db.session.add_all([Plan(slug="ghost-1", name="Ghost", backend="ghost", options={}),
                        Plan(slug="mem-broken", name="Broken", backend="memory", options={"size_mib": 0}),
                        Plan(slug="mem-paid", name="Paid", backend="memory", options={"size_mib": 64},
                             stripe_price="price_1Test"),
                        Plan(slug="old", name="Old", backend="ghost", options={}, active=False)])
    db.session.commit()
    set_enabled("memory", False)
    found = {p.message.split(":")[0]: p for p in problems_of(doctor.run(), "plans")}
    ghost = found["plan ghost-1 uses the backend ghost, which is not installed (installed"]
    assert ghost.severity == "error" and "install the plugin that provides ghost" in ghost.fix
    broken = next(p for k, p in found.items() if k == "plan mem-broken" and "no longer validate" in p.message)
    assert "size_mib: must be at least 1 MiB" in broken.message and "panel plans import" in broken.fix
    disabled = [p for k, p in found.items() if "is disabled" in p.message]
    assert disabled and disabled[0].severity == "warning" and "panel plugins enable memory" in disabled[0].fix
    billing = next(p for p in found.values() if "billing is off" in p.message)
    assert "mem-paid" in billing.message and "PANEL_STRIPE_SECRET_KEY" in billing.fix
    assert not any("old" == k.split(" ")[-1] for k in found), "inactive plans are not checked"


# --------------------------------------------------------------------------- plugin settings

@pytest.fixture
def pds_app(make_app):
    app = make_app(plugins=("pds",))
    with app.app_context():
        stamp_head()
        db.session.add(Plan(slug="pds-free", name="PDS free", backend="pds", options={}))
        db.session.commit()
        yield app


def test_missing_settings_name_each_setting_and_how_to_set_it(pds_app):
    problems = problems_of(doctor.run(), "plugins")
    api_url = next(p for p in problems if "api_url" in p.message)
    assert api_url.message.startswith("pds is not configured: api_url")
    assert "panel plugins set pds api_url VALUE" in api_url.fix and "PANEL_PLUGIN_PDS_API_URL" in api_url.fix
    assert "/admin/plugins" in api_url.fix


def test_a_failing_connection_test_is_a_problem_with_the_backends_words(pds_app):
    from panel.plugins import set_setting
    from panel.testing import free_port

    set_setting("pds", "api_url", f"http://127.0.0.1:{free_port()}")
    set_setting("pds", "api_token", "a-token-that-is-long-enough")
    set_setting("pds", "hostname_domain", "pds.example.com")
    [problem] = problems_of(doctor.run(), "plugins")
    assert problem.message.startswith("pds: the connection test failed:")
    assert "a-token-that-is-long-enough" not in problem.message, "never a secret"
    assert "panel plugins test pds" in problem.fix


# --------------------------------------------------------------------------- the doctor_checks hook

class DoctorPlugin:
    """A plugin adding doctor checks: one for the memory backend, one that fails, one that raises."""

    seen: list = []

    @hookimpl
    def doctor_checks(self):
        def nodes(backend, specs):
            DoctorPlugin.seen.append((type(backend).__name__, [s.external_id for s in specs],
                                      [dict(s.secrets) for s in specs]))
            return [Problem("node 7 is gone", "panel memory node-remove 7", "warning")]

        def broken():
            raise RuntimeError("the remote said 418")

        return [Check("memory nodes", nodes, backend="memory"), Check("extra broken", broken),
                Check("ghost thing", lambda backend, specs: [], backend="ghost")]


def test_plugin_checks_run_with_the_backend_and_plain_specs(make_app):
    from memory_backend import MemoryPlugin
    from panel.orders import place_order

    app = make_app(EXTRA_PLUGINS=[MemoryPlugin(), DoctorPlugin()])
    with app.app_context():
        stamp_head()
        db.session.add(Plan(slug="mem-free", name="Memory free", backend="memory", options={"size_mib": 128}))
        db.session.commit()
        customer = add_user("alice@example.com")
        service = place_order(customer, "mem-free", {"name": "one"}, actor="test").service
        from corelib import wait_jobs

        wait_jobs(app)
        DoctorPlugin.seen.clear()
        report = doctor.run()
        [node] = problems_of(report, "memory nodes")
        assert node.message == "node 7 is gone" and node.severity == "warning"
        assert DoctorPlugin.seen == [("MemoryBackend", [service.external_id], [{}])], "specs carry no secrets"
        [broken] = problems_of(report, "extra broken")
        assert "could not run: the remote said 418" in broken.message
        ghost = next(r for r in report.results if r.name == "ghost thing")
        assert ghost.skipped == "ghost is not installed" and not ghost.problems
        result = run_cli(app)
        assert result.exit_code == 1  # the broken check is an error
        assert "! memory nodes: node 7 is gone\n    fix: panel memory node-remove 7" in result.output
        warn_only = run_cli(app)
        assert "- ghost thing: skipped (ghost is not installed)" in warn_only.output


# --------------------------------------------------------------------------- services

def test_services_on_a_plan_of_another_backend_or_an_uninstalled_backend(sound):
    customer = add_user("alice@example.com")
    ghost_plan = Plan(slug="ghost-plan", name="Ghost", backend="ghost", options={}, active=False)
    moved = Plan(slug="moved", name="Moved", backend="memory", options={"size_mib": 5}, active=False)
    db.session.add_all([ghost_plan, moved])
    db.session.flush()
    a = Service(user=customer, plan=moved, backend="memory", status="active", params={"name": "a"})
    b = Service(user=customer, plan=ghost_plan, backend="ghost", status="suspended", params={})
    gone = Service(user=customer, plan=ghost_plan, backend="ghost", status="terminated", params={})
    db.session.add_all([a, b, gone])
    db.session.commit()
    moved.backend = "other"
    db.session.commit()
    problems = problems_of(doctor.run(), "services")
    texts = [p.message for p in problems]
    assert f"service {a.id} is a memory service but its plan moved now belongs to other" in texts
    assert f"service {b.id}: its backend ghost is not installed, so it cannot be suspended or terminated" in texts
    assert not any(f"service {gone.id}" in t for t in texts), "terminated services are left alone"
    assert any(f"/admin/services/{a.id}" in p.fix for p in problems)


def test_a_service_whose_plan_no_longer_exists(sound):
    customer = add_user("alice@example.com")
    plan = Plan(slug="doomed", name="Doomed", backend="memory", options={"size_mib": 5})
    db.session.add(plan)
    db.session.flush()
    svc = Service(user=customer, plan=plan, backend="memory", status="active", params={"name": "x"})
    db.session.add(svc)
    db.session.commit()
    svc_id, plan_id = svc.id, plan.id
    with db.engine.connect() as conn:  # what a hand-run DELETE without foreign keys leaves behind
        conn.execute(text("PRAGMA foreign_keys=OFF"))
        conn.execute(text("DELETE FROM plans WHERE slug = 'doomed'"))
        conn.commit()
    db.session.expunge_all()
    [problem] = problems_of(doctor.run(), "services")
    assert problem.message == f"service {svc_id} points at plan id {plan_id}, which no longer exists"
    assert "panel plans import" in problem.fix and f"terminate service {svc_id}" in problem.fix


# --------------------------------------------------------------------------- jobs

def test_overdue_work_is_reported_with_what_to_start(sound, customer):
    svc = Service(user=customer, plan=Plan.by_slug("mem-free"), backend="memory", status="provisioning",
                  params={"name": "late"})
    db.session.add(svc)
    db.session.flush()
    op = Operation(service=svc, action="provision", state="queued", due_at=utcnow() - timedelta(hours=2), payload={})
    db.session.add(op)
    db.session.commit()
    [problem] = problems_of(doctor.run(), "jobs")
    assert problem.message.startswith("operations: 1 overdue by more than 300 s (PANEL_SWEEP_AFTER)")
    assert f"the oldest {op.id}" in problem.message
    assert "start panel worker" in problem.fix and "panel sweep" in problem.fix


@pytest.fixture
def redis_app(make_app, redis_server):
    import redis

    url = redis_server.url.rsplit("/", 1)[0] + "/5"
    redis.Redis.from_url(url).flushdb()
    app = make_app(REDIS_URL=url)
    with app.app_context():
        stamp_head()
        yield app
    redis.Redis.from_url(url).flushdb()


def test_with_redis_no_worker_and_no_periodic_loop_are_problems(redis_app):
    problems = problems_of(doctor.run(), "jobs")
    texts = {p.message: p.fix for p in problems}
    assert "no panel worker is running (none is registered in Redis)" in texts
    assert "panel worker" in texts["no panel worker is running (none is registered in Redis)"]
    loop = next(m for m in texts if m.startswith("the periodic loop"))
    assert "no heartbeat" in loop and "--sweep-interval 0" in texts[loop]


def test_with_a_live_worker_and_the_heartbeat_the_jobs_check_passes_until_the_queue_stalls(redis_app):
    from rq import Worker

    from panel import dispatch

    worker = Worker([dispatch.queue()], connection=dispatch.redis_connection(), name="doctor-test-worker")
    worker.register_birth()
    try:
        doctor.heartbeat()  # what panel worker's periodic loop writes
        result = next(r for r in doctor.run().results if r.name == "jobs")
        assert result.problems == [] and result.note.startswith("1 worker(s), 0 job(s) queued")
        dispatch.queue().enqueue("panel.jobs.sample_usage", job_id="op-stalled-1")
        redis_app.config["SWEEP_AFTER"] = 0
        [stalled] = problems_of(doctor.run(), "jobs")
        assert stalled.message.startswith("the queue holds 1 job(s), the oldest waiting")
        assert "start more panel worker processes" in stalled.fix
        dispatch.redis_connection().set(doctor.HEARTBEAT_KEY, "1000")  # a loop that stopped long ago
        assert any(p.message.startswith("the periodic loop last ran") for p in problems_of(doctor.run(), "jobs"))
    finally:
        worker.register_death()
        dispatch.queue().empty()


# --------------------------------------------------------------------------- the page and the command

def test_strict_fails_on_warnings_only(sound):
    from panel.plugins import set_enabled

    set_enabled("memory", False)
    relaxed = run_cli(sound)
    assert relaxed.exit_code == 0 and "! plans: plan mem-free: its backend memory is disabled" in relaxed.output
    assert run_cli(sound, "--strict").exit_code == 1


def test_the_doctor_page_shows_problems_and_fixes_to_operators_only(sound, client, customer):
    db.session.add(Plan(slug="ghost-1", name="Ghost", backend="ghost", options={}))
    db.session.commit()
    login(client, customer.email)
    assert client.get("/admin/doctor").status_code == 404
    client.post("/logout")
    add_user("ops@example.com", role="operator")
    login(client, "ops@example.com")
    page = client.get("/admin/doctor")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-check="plans" data-severity="error"' in html
    assert "plan ghost-1 uses the backend ghost, which is not installed" in html
    assert "install the plugin that provides ghost" in html
    assert 'data-check="database"' in html and "reachable, at the newest migration" in html
