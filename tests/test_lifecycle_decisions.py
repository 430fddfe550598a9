"""Lifecycle branches the flow tests do not reach (found by the mutation run): a terminate racing a
worker's claim, restarting several services' pending work after a crash, a reconcile that keeps or
forgets the remote id, a provision that needs reconciling.

The services are built as the lifecycle leaves them (rows in SQLite, the memory backend's objects);
jobs run in-process.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from corelib import wait_jobs
from memory_backend import REMOTE

from panel import dispatch, lifecycle
from panel.extensions import db
from panel.models import Operation, Service
from panel.models.base import utcnow


def live(customer, plans, name: str, status: str = "active") -> Service:
    svc = Service(user=customer, plan=plans["free"], backend="memory", params={"name": name}, status=status,
                  status_detail="")
    db.session.add(svc)
    db.session.flush()
    svc.resource_id = f"m-{svc.external_id}"
    REMOTE.objects[svc.external_id] = {"state": "suspended" if status == "suspended" else "active", "size": 128}
    db.session.commit()
    return svc


def reload(op: Operation) -> Operation:
    db.session.rollback()
    return db.session.get(Operation, op.id, populate_existing=True)


# --------------------------------------------------------------------------- terminate vs a claim

def test_terminate_does_not_cancel_what_a_worker_has_just_claimed(app, customer, plans):
    """A queued suspend a worker holds the lease of (claimed, not yet marked running): the guarded
    UPDATE leaves it alone, and the terminate waits behind it instead of running beside it."""
    svc = live(customer, plans, "claimed")
    claimed = Operation(service=svc, action="suspend", state="queued", payload={"prior_status": "active"},
                        lease_owner="worker-7", lease_expires_at=utcnow() + timedelta(seconds=30), lease_token=1,
                        due_at=utcnow())
    db.session.add(claimed)
    db.session.commit()
    lifecycle.request(svc, "terminate", actor="ops")
    claimed = reload(claimed)
    assert (claimed.state, claimed.lease_owner, claimed.last_error) == ("queued", "worker-7", None)
    terminate = [op for op in db.session.get(Service, svc.id).operations if op.action == "terminate"]
    assert [op.state for op in terminate] == ["pending"]  # it runs once the claimed one finished


def test_terminate_cancels_an_unclaimed_queued_operation(app, customer, plans):
    svc = live(customer, plans, "unclaimed")
    waiting = Operation(service=svc, action="suspend", state="queued", payload={"prior_status": "active"},
                        due_at=utcnow() + timedelta(seconds=60))
    db.session.add(waiting)
    db.session.commit()
    lifecycle.request(svc, "terminate", actor="ops")
    waiting = reload(waiting)
    assert (waiting.state, waiting.due_at, waiting.last_error) == ("cancelled", None, "superseded by terminate")
    wait_jobs(app)
    assert db.session.get(Service, svc.id).status == "terminated"


def test_terminate_cancels_only_its_own_services_waiting_operation(app, customer, plans):
    svc, other = live(customer, plans, "own"), live(customer, plans, "neighbour")
    mine = Operation(service=svc, action="suspend", state="queued", payload={"prior_status": "active"},
                     due_at=utcnow() + timedelta(seconds=60))
    theirs = Operation(service=other, action="suspend", state="queued", payload={"prior_status": "active"},
                       due_at=utcnow() + timedelta(seconds=60))
    db.session.add_all([mine, theirs])
    db.session.commit()
    lifecycle.request(svc, "terminate", actor="ops")
    assert reload(mine).state == "cancelled"
    theirs = reload(theirs)
    assert (theirs.state, theirs.last_error) == ("queued", None) and theirs.due_at is not None


def test_an_operation_that_finished_meanwhile_is_not_cancelled(app, customer, plans):
    """The caller read the operation as queued; a worker finished it since (lease released): the
    guarded UPDATE leaves the finished row alone and the object is read again."""
    svc = live(customer, plans, "finished-meanwhile")
    op = Operation(service=svc, action="suspend", state="queued", payload={"prior_status": "active"},
                   due_at=utcnow())
    db.session.add(op)
    db.session.commit()
    with db.engine.begin() as conn:  # the worker's completion, on its own connection
        conn.execute(db.update(Operation).where(Operation.id == op.id).values(state="succeeded", due_at=None))
    assert op.state == "queued"  # what the caller still holds
    lifecycle._cancel_unstarted(op, "ops", "superseded by terminate")
    assert op.state == "succeeded" and op.last_error is None
    db.session.commit()
    assert reload(op).state == "succeeded"


# --------------------------------------------------------------------------- unblock_pending

def test_unblock_pending_starts_every_service_that_waits_and_only_those(app, customer, plans):
    """After a crash between a completion and the promotion of the next operation: each service
    whose pending operation has nothing left before it is started, whichever comes first; one with a
    running operation keeps waiting; a failed service starts only a terminate."""
    fresh = live(customer, plans, "only-pending")      # its only operation is pending
    first = Operation(service=fresh, action="suspend", state="pending", payload={"prior_status": "active"})
    busy = live(customer, plans, "busy")                # a running operation owns it
    running = Operation(service=busy, action="unsuspend", state="running", payload={}, lease_owner="w",
                        lease_expires_at=utcnow() + timedelta(seconds=60))
    behind = Operation(service=busy, action="suspend", state="pending", payload={})
    failed = live(customer, plans, "failed-terminate", status="failed")
    end = Operation(service=failed, action="terminate", state="pending", payload={"prior_status": "failed"})
    stuck = live(customer, plans, "failed-suspend", status="failed")
    no = Operation(service=stuck, action="suspend", state="pending", payload={})
    second = live(customer, plans, "second")
    later = Operation(service=second, action="suspend", state="pending", payload={"prior_status": "active"})
    db.session.add_all([first, running, behind, end, no, later])
    db.session.commit()
    started = lifecycle.unblock_pending()
    assert sorted(op.id for op in started) == sorted([first.id, end.id, later.id])
    assert reload(behind).state == "pending" and reload(no).state == "pending"
    for op in started:
        dispatch.hand_over("op", op.id)
    wait_jobs(app)
    assert [db.session.get(Service, s.id).status for s in (fresh, failed, second)] == [
        "suspended", "terminated", "suspended"]


# --------------------------------------------------------------------------- reconcile's verdicts

def test_a_lost_object_forgets_its_remote_id(app, customer, plans):
    svc = live(customer, plans, "lost")
    lifecycle.mark_lost(svc, "reconcile: the memory backend has no object for this service", actor="operator:ops")
    svc = db.session.get(Service, svc.id)
    assert (svc.status, svc.resource_id) == ("failed", None)


def test_a_remote_failure_keeps_the_remote_id_and_adds_a_provision_operation_when_there_is_none(
        app, customer, plans):
    """An adopted service has no provision operation: one is recorded (failed, by the actor, from
    the status it had) so the operator's Retry has something to run."""
    svc = live(customer, plans, "remote-failed")
    rid = svc.resource_id
    op = lifecycle.mark_failed_remotely(svc, "Ready=False: ImagePullBackOff", actor="operator:reconcile")
    svc = db.session.get(Service, svc.id)
    assert (svc.status, svc.resource_id, svc.status_detail) == ("failed", rid, "Ready=False: ImagePullBackOff")
    op = reload(op)
    assert (op.action, op.state, op.actor, op.attempts, op.lost_runs, op.due_at) == (
        "provision", "failed", "operator:reconcile", 0, 0, None)
    assert op.payload == {"prior_status": "active"} and op.last_error == "Ready=False: ImagePullBackOff"
    assert [o.id for o in svc.operations] == [op.id]
    event = svc.events[-1]
    assert (event.kind, event.actor, event.operation_id) == ("failed", "operator:reconcile", op.id)


def test_a_remote_failure_fails_the_existing_provision_operation_again_keeping_its_payload(app, customer, plans):
    svc = live(customer, plans, "remote-failed-again")
    done = Operation(service=svc, action="provision", state="succeeded", attempts=2, lost_runs=1,
                     payload={"addons": ["backups"]})
    db.session.add(done)
    db.session.commit()
    op = lifecycle.mark_failed_remotely(svc, "install failed", actor="operator:reconcile")
    assert op.id == done.id
    op = reload(op)
    assert (op.state, op.attempts, op.lost_runs, op.last_error) == ("failed", 0, 0, "install failed")
    assert op.payload == {"addons": ["backups"], "prior_status": "active"}
    assert op.finished_at is not None


def test_a_provision_that_needs_reconciling_is_recorded_by_the_worker(app, customer, plans):
    svc = Service(user=customer, plan=plans["free"], backend="memory", params={"name": "unknown"},
                  status="provisioning", status_detail="")
    db.session.add(svc)
    db.session.flush()
    op = Operation(service=svc, action="provision", state="running", attempts=2, payload={"prior_status": "pending_payment"})
    db.session.add(op)
    db.session.commit()
    lifecycle.needs_reconcile(op, "the answer was lost and the lookup timed out", resource_id="m-42")
    svc = db.session.get(Service, svc.id)
    assert (svc.status, svc.resource_id) == ("needs_reconcile", "m-42")
    event = svc.events[-1]
    assert (event.kind, event.actor, event.operation_id, event.to_status) == (
        "needs_reconcile", "worker", op.id, "needs_reconcile")
    assert event.detail == "provision needs an operator after 2 attempt(s): the answer was lost and the lookup timed out"
    op = reload(op)
    assert (op.state, op.due_at, op.last_error) == ("failed", None, "the answer was lost and the lookup timed out")


# --------------------------------------------------------------------------- a backend still working

def test_a_provision_still_installing_waits_without_spending_attempts(app, customer, plans):
    """``InProgress`` twice, then done: asked again after its ``retry_after``, one ``waiting`` event
    for the one message (not one per poll), the remote id recorded while it waits, no attempt spent."""
    from panel.orders import place_order

    REMOTE.fail_next("provision", "installing", "installing")
    svc = place_order(customer, "mem-free", {"name": "installing"}, actor="customer").service
    wait_jobs(app)
    svc = db.session.get(Service, svc.id)
    assert svc.status == "active"
    op = next(o for o in svc.operations if o.action == "provision")
    assert (op.state, op.attempts) == ("succeeded", 1)
    assert [c for c in REMOTE.calls if c[0] == "provision"] == [("provision", svc.external_id)] * 3
    waits = [e for e in svc.events if e.kind == "waiting"]
    assert [(e.actor, e.detail, e.operation_id) for e in waits] == [
        ("worker", "provision in progress on the backend: memory: provision is installing", op.id)]
    assert op.payload["waiting"] == "memory: provision is installing" and "waiting_since" in op.payload


def test_waiting_records_when_and_what(app, customer, plans):
    """``lifecycle.waiting`` itself: due after the delay (never before now), the first wait's time
    kept across polls, the message on the service, the remote id of a provision kept."""
    svc = Service(user=customer, plan=plans["free"], backend="memory", params={"name": "w"}, status="provisioning",
                  status_detail="")
    db.session.add(svc)
    db.session.flush()
    op = Operation(service=svc, action="provision", state="running", attempts=0, payload={"prior_status": "pending_payment"})
    db.session.add(op)
    db.session.commit()
    before = utcnow()
    lifecycle.waiting(op, "server 12 is installing", 30, resource_id="12")
    op = reload(op)
    assert op.state == "queued" and before + timedelta(seconds=30) <= op.due_at.replace(tzinfo=before.tzinfo)
    assert op.due_at.replace(tzinfo=before.tzinfo) <= utcnow() + timedelta(seconds=30)
    since = op.payload["waiting_since"]
    assert before <= datetime.fromisoformat(since) <= utcnow()  # when the wait began, ISO 8601
    svc = db.session.get(Service, svc.id)
    assert (svc.resource_id, svc.status_detail) == ("12", "Provisioning… (server 12 is installing)")
    lifecycle.waiting(op, "server 12 is installing", -5)  # a negative delay is "now", not the past
    op = reload(op)
    assert op.payload["waiting_since"] == since
    assert before <= op.due_at.replace(tzinfo=before.tzinfo) <= utcnow()  # due at once
    assert len([e for e in db.session.get(Service, svc.id).events if e.kind == "waiting"]) == 1
    lifecycle.waiting(op, "server 12 is starting", 1)
    assert [e.detail for e in db.session.get(Service, svc.id).events if e.kind == "waiting"] == [
        "provision in progress on the backend: server 12 is installing",
        "provision in progress on the backend: server 12 is starting"]


# --------------------------------------------------------------------------- retries and failures

def running_op(customer, plans, action: str, payload: dict | None = None, attempts: int = 1) -> Operation:
    svc = live(customer, plans, f"r-{action}")
    op = Operation(service=svc, action=action, state="running", attempts=attempts,
                   payload={"prior_status": "active", **(payload or {})})
    db.session.add(op)
    db.session.commit()
    return op


def test_a_retry_is_queued_after_its_delay_with_the_error_kept(app, customer, plans):
    op = running_op(customer, plans, "suspend", attempts=2)
    before = utcnow()
    lifecycle.retrying(op, "memory: suspend timed out (HTTP 503)", 15)
    op = reload(op)
    tz = before.tzinfo
    assert op.state == "queued" and op.last_error == "memory: suspend timed out (HTTP 503)"
    assert before + timedelta(seconds=15) <= op.due_at.replace(tzinfo=tz) <= utcnow() + timedelta(seconds=15)
    svc = db.session.get(Service, op.service_id)
    assert svc.status_detail == "Suspending… (attempt 2 failed: memory: suspend timed out (HTTP 503); retrying in 15 s)"
    assert [(e.kind, e.actor, e.detail) for e in svc.events if e.kind == "retrying"] == [
        ("retrying", "worker", "attempt 2 failed: memory: suspend timed out (HTTP 503)")]
    lifecycle.retrying(op, "again", -3)  # never due in the past, and due at once
    assert before <= reload(op).due_at.replace(tzinfo=tz) <= utcnow()


def test_a_failed_custom_action_names_the_action_and_keeps_the_status(app, customer, plans):
    op = running_op(customer, plans, "run_action", {"name": "restart"}, attempts=3)
    lifecycle.fail(op, "memory: restart refused")
    svc = db.session.get(Service, op.service_id)
    assert svc.status == "active" and svc.status_detail == ""
    assert [e.detail for e in svc.events if e.kind == "failed"] == [
        "action restart failed after 3 attempt(s): memory: restart refused"]


def test_a_failed_purge_is_named_by_its_action_recorded_by_the_worker_on_its_operation(app, customer, plans):
    op = running_op(customer, plans, "purge", attempts=2)
    lifecycle.fail(op, "memory: purge refused")
    svc = db.session.get(Service, op.service_id)
    assert svc.status == "active"
    assert [(e.detail, e.actor, e.operation_id) for e in svc.events if e.kind == "failed"] == [
        ("purge failed after 2 attempt(s): memory: purge refused", "worker", op.id)]


def test_a_failed_suspend_fails_the_service_with_the_message(app, customer, plans):
    op = running_op(customer, plans, "suspend", attempts=5)
    lifecycle.fail(op, "memory: suspend rejected")
    svc = db.session.get(Service, op.service_id)
    assert (svc.status, svc.status_detail) == ("failed", "memory: suspend rejected")
    assert [e.detail for e in svc.events if e.kind == "failed"] == [
        "suspend failed after 5 attempt(s): memory: suspend rejected"]


def test_a_name_taken_without_a_claim_names_the_params(app):
    from panel.orders import _taken

    error = _taken(None)
    assert (error.status, error.code, error.fields) == (422, "invalid_params", {"params": "this name is already in use"})
    assert _taken(("hostname", "alice.example.com")).fields == {"hostname": "alice.example.com is already in use"}


# --------------------------------------------------------------------------- the lease

def test_a_heartbeat_renews_only_its_own_lease(app, customer, plans):
    from panel import work

    svc = live(customer, plans, "lease")
    op = Operation(service=svc, action="suspend", state="queued", payload={}, due_at=utcnow(), lease_token=0,
                   lost_runs=0)
    db.session.add(op)
    db.session.commit()
    lease = work.claim(Operation, op.id)
    db.session.commit()
    # the same worker holds another item whose token happens to be the same number (tokens count per row)
    neighbour = Operation(service=svc, action="unsuspend", state="running", payload={}, lease_owner=lease.owner,
                          lease_token=lease.token, lease_expires_at=utcnow() + timedelta(seconds=5), lost_runs=0)
    db.session.add(neighbour)
    db.session.commit()
    neighbour_expiry = neighbour.lease_expires_at
    before = utcnow()
    assert work.renew(db.engine, lease, 120) is True
    assert reload(neighbour).lease_expires_at == neighbour_expiry  # only this item's lease
    row = reload(op)
    tz = before.tzinfo
    assert before + timedelta(seconds=120) <= row.lease_expires_at.replace(tzinfo=tz) <= utcnow() + timedelta(seconds=120)
    kept = row.lease_expires_at
    other = work.Lease(Operation, op.id, lease.token + 1, lease.owner, 0, False)  # a later claim's token
    assert work.renew(db.engine, other, 600) is False
    stranger = work.Lease(Operation, op.id, lease.token, "someone-else", 0, False)
    assert work.renew(db.engine, stranger, 600) is False
    assert reload(op).lease_expires_at == kept


# --------------------------------------------------------------------------- an operator's retry

def test_a_retry_goes_back_to_the_prior_status_or_active_when_none_was_recorded(app, customer, plans):
    """A failed suspend recorded before prior statuses were kept: the retry puts the service back
    to ``active`` (where a suspend runs), resets the budget and forgets an old wait."""
    svc = live(customer, plans, "retry-noprior", status="failed")
    op = Operation(service=svc, action="suspend", state="failed", attempts=5, lost_runs=2,
                   payload={"waiting": "x", "waiting_since": "2026-11-01T00:00:00+00:00", "reason": "operator"},
                   last_error="memory: suspend timed out")
    db.session.add(op)
    db.session.commit()
    REMOTE.fail_next("suspend", "permanent")  # the retried job fails again: we look at the retry itself
    retried = lifecycle.retry(db.session.get(Service, svc.id), actor="operator:ops")
    assert retried.id == op.id
    event = [e for e in db.session.get(Service, svc.id).events if e.kind == "retry"][-1]
    assert (event.from_status, event.to_status, event.actor, event.detail) == (
        "failed", "active", "operator:ops", "suspend retried by operator:ops")
    wait_jobs(app)
    row = reload(op)
    assert (row.state, row.attempts, row.lost_runs) == ("failed", 1, 0)  # a fresh budget: one try, refused
    assert "waiting" not in row.payload and "waiting_since" not in row.payload and row.payload["reason"] == "operator"


def test_a_retry_goes_back_to_the_recorded_prior_status(app, customer, plans):
    svc = live(customer, plans, "retry-prior", status="failed")
    op = Operation(service=svc, action="unsuspend", state="failed", attempts=5,
                   payload={"prior_status": "suspended"}, last_error="memory: unsuspend timed out")
    db.session.add(op)
    db.session.commit()
    REMOTE.objects[svc.external_id]["state"] = "suspended"
    lifecycle.retry(db.session.get(Service, svc.id), actor="operator:ops")
    event = [e for e in db.session.get(Service, svc.id).events if e.kind == "retry"][-1]
    assert (event.from_status, event.to_status) == ("failed", "suspended")
    wait_jobs(app)
    assert db.session.get(Service, svc.id).status == "active"


# --------------------------------------------------------------------------- what a provision stores

def test_new_secrets_are_merged_with_the_ones_stored_before(app, customer, plans):
    from panel import crypto
    from panel.backends import Provisioned, Secret
    from panel.lifecycle import _store_result

    svc = live(customer, plans, "secrets")
    svc.secrets_encrypted = crypto.encrypt_json({"root_password": "first", "api_key": "kept"})
    _store_result(svc, Provisioned(resource_id=7, data={"host": "h.test"},
                                   secrets={"root_password": Secret("second"), "db_password": "third"}))
    assert crypto.decrypt_json(svc.secrets_encrypted) == {"root_password": "second", "api_key": "kept",
                                                          "db_password": "third"}
    assert (svc.resource_id, svc.backend_data) == ("7", {"host": "h.test"})
    _store_result(svc, None)  # a call that returns nothing changes nothing
    assert svc.resource_id == "7"


def test_giving_up_cancels_what_waits_except_a_terminate_which_starts(app, customer, plans):
    """After a provision needs an operator, a waiting suspend no longer applies (cancelled, saying
    the status in words) while a waiting terminate starts (it applies to any service)."""
    op = running_op(customer, plans, "provision")
    svc = db.session.get(Service, op.service_id)
    suspend = Operation(service=svc, action="suspend", state="pending", payload={})
    terminate = Operation(service=svc, action="terminate", state="pending", payload={})
    db.session.add_all([suspend, terminate])
    db.session.commit()
    lifecycle.needs_reconcile(op, "lost answer")
    wait_jobs(app)
    suspend, terminate = reload(suspend), db.session.get(Operation, terminate.id)
    assert (suspend.state, suspend.last_error) == ("cancelled", "no longer applies: the service is needs reconcile")
    assert (terminate.state, terminate.last_error) == ("succeeded", None)
    cancelled = [e for e in db.session.get(Service, svc.id).events if e.kind == "cancelled"]
    assert [(e.actor, e.operation_id) for e in cancelled] == [("system", suspend.id)]


def test_a_retry_decides_on_the_services_status_as_stored_not_as_loaded(app, customer, plans):
    """Another operator's retry went through meanwhile: the stale object still says ``failed``, the
    row says ``provisioning``; this retry reads the row under its lock and is refused."""
    svc = live(customer, plans, "retried-twice", status="failed")
    db.session.add(Operation(service=svc, action="provision", state="failed", attempts=3, payload={}))
    db.session.commit()
    with db.engine.begin() as conn:  # the other retry, on its own connection
        conn.execute(db.update(Service).where(Service.id == svc.id).values(status="provisioning"))
    assert svc.status == "failed"
    with pytest.raises(lifecycle.LifecycleError, match=r"this one is provisioning"):
        lifecycle.retry(svc, actor="operator:second")


@pytest.mark.parametrize("delay,queued", [(30, 0), (0, 1)])
def test_with_redis_a_retry_due_later_is_left_to_the_sweep(make_app, redis_server, customer, delay, queued):
    """A transient failure retried in 30 s waits in the database (the sweep hands it over when it is
    due); one due now is queued at once."""
    import redis

    from panel.models import Plan

    redis.Redis.from_url(redis_server.url).flushall()
    app = make_app(REDIS_URL=redis_server.url)
    with app.app_context():
        from corelib import add_user

        user = add_user(f"retry-{delay}@example.com")
        plan = Plan(slug=f"r{delay}", name="R", backend="memory", options={"size_mib": 1})
        db.session.add(plan)
        db.session.commit()
        svc = Service(user=user, plan=plan, backend="memory", params={"name": f"r{delay}"}, status="active")
        db.session.add(svc)
        db.session.flush()
        op = Operation(service=svc, action="suspend", state="running", attempts=1, payload={"prior_status": "active"})
        db.session.add(op)
        db.session.commit()
        q = dispatch.queue(app)
        q.connection.delete(q.key)
        lifecycle.retrying(op, "memory: timed out", delay)
        db.session.commit()
        assert q.connection.llen(q.key) == queued


def test_cancelling_an_order_decides_on_the_status_as_stored(app, customer, plans):
    """The order was paid meanwhile (the row says ``provisioning``): a cancel with the stale object
    reads the row under its lock and is refused."""
    svc = live(customer, plans, "paid-meanwhile", status="pending_payment")
    with db.engine.begin() as conn:
        conn.execute(db.update(Service).where(Service.id == svc.id).values(status="provisioning"))
    assert svc.status == "pending_payment"
    with pytest.raises(lifecycle.LifecycleError, match=r"this one is provisioning"):
        lifecycle.cancel(svc, actor="customer")


def test_a_request_decides_on_the_status_as_stored(app, customer, plans):
    """An operator terminated the service meanwhile (the row says ``terminating``): a suspend asked
    with the stale object reads the row under its lock and is refused."""
    svc = live(customer, plans, "ended-meanwhile")
    with db.engine.begin() as conn:
        conn.execute(db.update(Service).where(Service.id == svc.id).values(status="terminating"))
    assert svc.status == "active"
    with pytest.raises(lifecycle.LifecycleError, match=r"terminating"):
        lifecycle.request(svc, "suspend", actor="operator:late")
    assert db.session.scalars(db.select(Operation).where(Operation.service_id == svc.id)).all() == []


def test_a_request_names_the_stripe_event_that_asked_for_it(app, customer, plans):
    svc = live(customer, plans, "asked-by-stripe")
    lifecycle.request(svc, "suspend", actor="stripe", stripe_event_id="evt_dec_asked")
    assert [(op.action, op.stripe_event_id) for op in svc.operations] == [("suspend", "evt_dec_asked")]


def test_a_wait_without_a_remote_id_keeps_the_one_recorded(app, customer, plans):
    """Only a remote id the backend gave is recorded; a wait that names none leaves the service's."""
    op = running_op(customer, plans, "provision")
    svc = db.session.get(Service, op.service_id)
    rid = svc.resource_id
    lifecycle.waiting(op, "still installing", 10)
    assert db.session.get(Service, svc.id).resource_id == rid
    other = running_op(customer, plans, "suspend")
    lifecycle.waiting(other, "suspending", 10, resource_id="99")  # not a provision: no remote id change
    assert db.session.get(Service, other.service_id).resource_id != "99"
