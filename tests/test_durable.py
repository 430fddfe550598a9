"""Durable work, in-process against the in-memory backend: leases, fencing, the retry budget,
the provision intent and what happens when a provision's answer is lost."""
import threading
from datetime import timedelta

import pytest
from corelib import wait_jobs
from memory_backend import REMOTE
from sqlalchemy import text

from panel import dispatch, jobs, lifecycle, work
from panel.backends import TransientBackendError
from panel.extensions import db
from panel.models import Operation
from panel.models.base import utcnow
from panel.orders import place_order


def order(customer, name="web1"):
    return place_order(customer, "mem-free", {"name": name}, actor="test").service


def provision_of(service) -> Operation:
    db.session.expire_all()
    return next(op for op in service.operations if op.action == "provision")


def test_a_lost_answer_that_never_recovers_ends_needs_reconcile_with_the_resource_recorded(app, customer, plans):
    # The backend makes the object, the answer is lost, every later try fails too.
    REMOTE.fail_next("provision", "lost", "transient", "transient", "transient")
    svc = order(customer)
    wait_jobs(app)
    assert svc.status == "needs_reconcile"
    assert svc.resource_id == f"m-{svc.external_id}", "what the lookup found must be recorded"
    op = provision_of(svc)
    assert (op.state, op.attempts, op.lost_runs) == ("failed", 4, 0)
    assert "gave up after 4 attempts" in svc.reconcile_reason and "retry adopts it" in svc.reconcile_reason
    assert "HTTP" not in svc.status_detail and "our team" in svc.status_detail.lower()  # plain words
    assert ("list", "") in REMOTE.calls
    lifecycle.retry(svc, actor="operator:ops")  # the operator retries: provision adopts it
    wait_jobs(app)
    assert svc.status == "active" and len(REMOTE.objects) == 1


def test_a_permanent_error_on_the_first_try_fails_without_a_lookup(app, customer, plans):
    REMOTE.fail_next("provision", "permanent")
    svc = order(customer)
    wait_jobs(app)
    assert svc.status == "failed" and svc.resource_id is None
    assert ("list", "") not in REMOTE.calls


def test_transient_errors_that_made_nothing_fail_after_the_lookup_says_so(app, customer, plans):
    REMOTE.fail_next("provision", *["transient"] * 4)
    svc = order(customer)
    wait_jobs(app)
    assert svc.status == "failed" and "gave up after 4 attempts" in svc.status_detail
    assert ("list", "") in REMOTE.calls and REMOTE.objects == {}


def test_when_the_backend_cannot_tell_the_service_needs_reconcile(app, customer, plans):
    REMOTE.fail_next("provision", "lost", "permanent")
    REMOTE.list_error = TransientBackendError("memory: listing timed out")
    svc = order(customer)
    wait_jobs(app)
    assert svc.status == "needs_reconcile" and svc.resource_id is None
    assert "cannot tell" in svc.reconcile_reason and "listing timed out" in svc.reconcile_reason
    kinds = [e.kind for e in svc.events]
    assert kinds[-1] == "needs_reconcile" and "failed" not in kinds


def test_the_provision_intent_is_committed_before_the_backend_is_called(app, customer, plans):
    seen = []

    def peek(method, spec):  # read what other connections see, while the backend call runs
        with db.engine.connect() as conn:
            seen.append(conn.execute(text("SELECT create_attempted_at FROM services WHERE id = :id"),
                                     {"id": spec.service_id}).scalar())

    REMOTE.on_call = peek
    REMOTE.fail_next("provision", "transient")
    svc = order(customer)
    wait_jobs(app)
    REMOTE.on_call = None
    assert svc.status == "active"
    assert len(seen) == 2 and all(seen), "create_attempted_at must be committed before each call"
    assert seen[0] == seen[1], "the first attempt's time is kept"


def test_a_completion_whose_lease_was_taken_over_is_refused(app, customer, plans):
    def take_over(method, spec):  # another worker claims it meanwhile (this run looked dead)
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE operations SET lease_token = lease_token + 1, lease_owner = 'other:1:1' "
                              "WHERE service_id = :id"), {"id": spec.service_id})

    REMOTE.on_call = take_over
    svc = order(customer)
    wait_jobs(app)
    REMOTE.on_call = None
    op = provision_of(svc)
    assert svc.status == "provisioning", "the stale run must not record its success"
    assert (op.state, op.attempts, op.lease_owner) == ("running", 0, "other:1:1")
    assert "succeeded" not in [e.kind for e in svc.events]
    assert svc.resource_id is None


def test_runs_that_died_do_not_spend_the_retry_budget(app, customer, plans):
    svc = lifecycle.create_service(customer, plans["paid"], {"name": "dies"}, actor="test")
    past = utcnow() - timedelta(minutes=1)
    # three runs died without reporting (the last one holds an expired lease), then a real failure
    op = Operation(service=svc, action="provision", state="running", payload={}, due_at=past, attempts=0,
                   lost_runs=2, lease_owner="dead:1:1", lease_expires_at=past, lease_token=3)
    svc.status = "provisioning"
    db.session.add(op)
    db.session.commit()
    REMOTE.fail_next("provision", "transient", "transient")
    assert dispatch.sweep() == [f"op-{op.id}"]
    wait_jobs(app)
    assert svc.status == "active"
    db.session.refresh(op)
    assert (op.attempts, op.lost_runs, op.lease_token) == (3, 3, 6)


def test_too_many_lost_runs_give_up_without_calling_the_backend(make_app, customer_email="lost@example.com"):
    from corelib import add_user

    from panel.models import Plan

    REMOTE.__init__()
    app = make_app(JOB_MAX_LOST_RUNS=1)
    with app.app_context():
        user = add_user(customer_email)
        plan = Plan(slug="p", name="P", backend="memory", options={"size_mib": 1}, stripe_price="price_x")
        db.session.add(plan)
        db.session.commit()
        svc = lifecycle.create_service(user, plan, {"name": "poison"}, actor="test")
        past = utcnow() - timedelta(minutes=1)
        op = Operation(service=svc, action="provision", state="running", payload={}, due_at=past,
                       lost_runs=1, lease_owner="dead:1:1", lease_expires_at=past, lease_token=2)
        svc.status, svc.create_attempted_at = "provisioning", past
        db.session.add(op)
        db.session.commit()
        assert jobs.run_operation(op.id) == "failed"
        db.session.expire_all()
        assert svc.status == "failed" and "stopped 2 times without reporting" in svc.status_detail
        assert ("provision", svc.external_id) not in REMOTE.calls and ("list", "") in REMOTE.calls


def test_a_terminate_waiting_behind_a_failing_provision_still_runs(app, customer, plans):
    def customer_cancels(method, spec):  # the customer cancels while the provision runs
        def cancel():
            with app.app_context():
                from panel.models import Service

                lifecycle.request(db.session.get(Service, spec.service_id), "terminate", actor="customer")
                db.session.remove()
        thread = threading.Thread(target=cancel)
        thread.start()
        thread.join(10)

    REMOTE.on_call = customer_cancels
    REMOTE.fail_next("provision", "permanent")
    svc = order(customer)
    wait_jobs(app)
    wait_jobs(app)
    REMOTE.on_call = None
    db.session.expire_all()
    assert [(op.action, op.state) for op in svc.operations] == [("provision", "failed"), ("terminate", "succeeded")]
    assert svc.status == "terminated"


def test_one_provision_operation_per_service(app, customer, plans):
    from sqlalchemy.exc import IntegrityError

    svc = order(customer)
    wait_jobs(app)
    db.session.add(Operation(service=svc, action="provision", state="pending", payload={}))
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()


def queued_claimed(customer, plan, name):
    """A paid order with a provision operation due now, claimed by this test: ``(op, lease)``."""
    svc = lifecycle.create_service(customer, plan, {"name": name}, actor="test")
    op = Operation(service=svc, action="provision", state="queued", payload={}, due_at=utcnow())
    db.session.add(op)
    db.session.commit()
    lease = work.claim(Operation, op.id)
    db.session.commit()
    return op, lease


def test_claim_takes_work_from_its_due_time_on_and_not_under_a_live_lease(app, customer, plans):
    """``work.due``: an item is claimable from its due time on (``due_at <= now``: that instant
    included), never before it; and not while a lease runs, which is live up to and including
    its expiry instant (``lease_expires_at < now`` has run out)."""
    svc = lifecycle.create_service(customer, plans["paid"], {"name": "due"}, actor="test")
    now = utcnow()
    op = Operation(service=svc, action="provision", state="queued", payload={}, due_at=now + timedelta(seconds=30))
    db.session.add(op)
    db.session.commit()
    assert work.claim(Operation, op.id, now=now) is None, "due in 30 s: not yet"
    db.session.rollback()
    op.due_at, op.lease_expires_at = now, now
    db.session.commit()
    assert work.claim(Operation, op.id, now=now) is None, "a lease that runs until now is still live"
    db.session.rollback()
    lease = work.claim(Operation, op.id, now=now + timedelta(microseconds=1))
    assert lease is not None and lease.token == 1, "due now and the lease has run out"
    db.session.rollback()
    op.lease_expires_at = None
    db.session.commit()
    assert work.claim(Operation, op.id, now=now) is not None, "due at exactly now: claimable"
    db.session.commit()


def test_claim_is_exclusive_and_fence_refuses_a_stale_token(app, customer, plans):
    op, first = queued_claimed(customer, plans["paid"], "fence")
    assert first is not None and first.token == 1 and not first.took_over
    assert work.claim(Operation, op.id) is None, "a live lease cannot be claimed twice"
    assert work.renew(db.engine, first, 60)
    # the lease runs out; another worker takes over
    db.session.execute(db.update(Operation).where(Operation.id == op.id)
                       .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    second = work.claim(Operation, op.id)
    db.session.commit()
    assert second.token == 2 and second.took_over and second.lost_runs == 1
    assert not work.renew(db.engine, first, 60), "the first run's heartbeat must learn it lost the lease"
    with pytest.raises(work.StaleLease):
        work.fence(first)
    db.session.rollback()
    work.fence(second)
    db.session.commit()
    db.session.refresh(op)
    assert op.lease_owner is None and op.lease_expires_at is None


def test_the_heartbeat_notices_a_lost_lease(app, customer, plans):
    from panel.testing import wait_for

    op, lease = queued_claimed(customer, plans["paid"], "beat")
    claimed_until = _expiry(op.id)
    with work.Heartbeat(lease, seconds=0.9) as beat:
        assert wait_for(lambda: _expiry(op.id) != claimed_until, timeout=20), "the lease was never renewed"
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE operations SET lease_token = lease_token + 1 WHERE id = :id"), {"id": op.id})
        assert wait_for(lambda: beat.lost, timeout=20)


def _expiry(op_id):
    with db.engine.connect() as conn:
        return conn.execute(text("SELECT lease_expires_at FROM operations WHERE id = :id"), {"id": op_id}).scalar()


def test_operators_see_needs_reconcile_with_the_reason_and_overdue_work(app, client, customer, operator, plans):
    from corelib import login

    REMOTE.fail_next("provision", "lost", "permanent")
    REMOTE.list_error = TransientBackendError("memory: listing timed out")
    svc = order(customer, name="unsure")
    wait_jobs(app)
    assert svc.status == "needs_reconcile"
    stale = lifecycle.create_service(customer, plans["paid"], {"name": "nobody"}, actor="test")
    db.session.add(Operation(service=stale, action="provision", state="queued", payload={},
                             due_at=utcnow() - timedelta(hours=1)))
    db.session.commit()
    login(client, operator.email)
    page = client.get("/admin/").get_data(as_text=True)
    card = page[page.index('id="needs-reconcile"'):page.index('id="stuck"')]
    assert f"service {svc.id}" in card and "listing timed out" in card and "cannot tell" in card
    assert f'data-service="{svc.id}"' in page and "Retry</button>" in page
    stuck = page[page.index('id="stuck"'):]
    assert f"service {stale.id}" in stuck and "provision queued" in stuck
    detail = client.get(f"/admin/services/{svc.id}").get_data(as_text=True)
    assert 'id="reconcile-reason"' in detail and 'id="retry"' in detail
    login(client, customer.email)
    mine = client.get(f"/services/{svc.id}").get_data(as_text=True)
    status_line = mine[mine.index('id="status-detail"'):mine.index("</p>", mine.index('id="status-detail"'))]
    assert "our team has been told" in status_line.lower() and "listing timed out" not in status_line


def test_the_sweep_starts_an_operation_left_waiting_behind_one_that_finished(app, customer, plans):
    svc = order(customer, name="waits")
    wait_jobs(app)
    # a crash between the provision's commit and the promotion of the suspend behind it
    db.session.add(Operation(service=svc, action="suspend", state="pending", payload={"reason": "operator"}))
    db.session.commit()
    dispatch.sweep()
    wait_jobs(app)
    assert svc.status == "suspended" and [op.state for op in svc.operations] == ["succeeded", "succeeded"]


def test_the_in_process_runner_drops_what_waits_for_its_delay_and_runs_the_rest(app):
    """``cancel_delayed`` (an app going away) drops a submit still waiting for its timer, so
    nothing waits out a retry's backoff; work submitted for now still runs."""
    import threading

    from panel import dispatch

    runner = dispatch.InProcessRunner(app, workers=1)
    ran = []
    done = threading.Event()
    try:
        assert runner.submit("later-1", ran.append, "later", delay=30)
        assert runner.waiting_keys() == {"later-1"}
        assert runner.cancel_delayed() == 1
        assert runner.waiting_keys() == set() and runner.wait_idle(0.5)
        assert runner.submit("now-1", lambda arg: (ran.append(arg), done.set()), "now")
        assert done.wait(10) and runner.wait_idle(10)
        assert ran == ["now"] and runner.cancel_delayed() == 0
    finally:
        runner.pool.shutdown(wait=True)
