"""What the lifecycle records: the exact event log (kind, actor, from, to, detail, operation), the
operation rows and the status sentence of each flow. The history is what customers and operators
read, and what an operator's retry and the sweeper act on, so its content is behaviour.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from corelib import wait_jobs
from memory_backend import REMOTE

from panel import dispatch, lifecycle
from panel.extensions import db
from panel.models import Operation
from panel.models.base import utcnow
from panel.orders import place_order


def log(svc, since: int = 0) -> list[tuple]:
    """(kind, actor, from, to, detail, operation id) of the service's events from ``since`` on."""
    db.session.refresh(svc)
    return [(e.kind, e.actor, e.from_status, e.to_status, e.detail, e.operation_id) for e in svc.events[since:]]


def step(app, svc, action, actor, **kwargs):
    """Request ``action``, let its job run; returns (its operation, the events it added without
    the operation id, which each of them must carry)."""
    n = len(svc.events)
    lifecycle.request(svc, action, actor=actor, **kwargs)
    wait_jobs(app)
    op = svc.operations[-1]
    events = log(svc, n)
    assert {e[5] for e in events} == {op.id}, "an event of the operation does not name it"
    return op, [e[:5] for e in events]


def active(customer, name="rec1"):
    svc = place_order(customer, "mem-free", {"name": name}, actor="customer:alice").service
    return svc


def test_a_whole_life_is_recorded_event_by_event(app, customer, plans):
    svc = active(customer)
    wait_jobs(app)
    provision = svc.operations[0]
    assert log(svc) == [
        ("created", "customer:alice", None, "pending_payment", "ordered plan mem-free", None),
        ("requested", "customer:alice", "pending_payment", "pending_payment", "free plan: no payment needed",
         provision.id),
        ("queued", "customer:alice", "pending_payment", "provisioning", "provision queued", provision.id),
        ("started", "worker", "provisioning", "provisioning", "provision started", provision.id),
        ("succeeded", "worker", "provisioning", "active", "provision succeeded", provision.id),
    ]
    assert (provision.state, provision.attempts, provision.last_error) == ("succeeded", 1, None)
    assert provision.started_at is not None and provision.finished_at is not None
    assert svc.status_detail == "" and svc.claim_key

    suspend, events = step(app, svc, "suspend", "ops", detail="abuse report", payload={"reason": "operator"})
    assert events == [("requested", "ops", "active", "active", "abuse report"),
                      ("started", "worker", "active", "active", "suspend started"),
                      ("succeeded", "worker", "active", "suspended", "suspend succeeded")]
    assert svc.suspension_reason == "operator" and suspend.payload["prior_status"] == "active"

    _, events = step(app, svc, "unsuspend", "ops")
    assert events == [("requested", "ops", "suspended", "suspended", "unsuspend requested"),
                      ("started", "worker", "suspended", "suspended", "unsuspend started"),
                      ("succeeded", "worker", "suspended", "active", "unsuspend succeeded")]
    assert svc.suspension_reason is None

    _, events = step(app, svc, "change_plan", "stripe", payload={"plan_id": plans["big"].id})
    assert events == [("requested", "stripe", "active", "active", "change plan requested"),
                      ("started", "worker", "active", "active", "change_plan started"),
                      ("succeeded", "worker", "active", "active", "plan changed from mem-free to mem-big")]

    _, events = step(app, svc, "terminate", "customer:alice", detail="cancelled by the customer")
    assert events == [("requested", "customer:alice", "active", "active", "cancelled by the customer"),
                      ("queued", "customer:alice", "active", "terminating", "terminate queued"),
                      ("started", "worker", "terminating", "terminating", "terminate started"),
                      ("succeeded", "worker", "terminating", "terminated", "terminate succeeded")]
    assert svc.claim_key is None  # the remote name is free again


def test_a_provision_records_what_the_backend_returned_and_the_hostname_it_gave(app, customer, plans):
    """The backend's non-secret data, its remote id and the host it answers on (``data["host"]``)
    are what the service shows; the memory backend gives ``<name>.test``."""
    svc = active(customer, name="shoprec")
    assert svc.hostname is None  # nothing at the order: the name is no DNS name
    wait_jobs(app)
    db.session.refresh(svc)
    assert svc.status == "active"
    assert (svc.resource_id, svc.backend_data) == (f"m-{svc.external_id}", {"host": "shoprec.test"})
    assert svc.hostname == "shoprec.test"


def test_an_unpaid_order_says_it_waits_for_payment(app, customer, plans):
    svc = lifecycle.create_service(customer, plans["paid"], {"name": "sentence"}, actor="test")
    assert svc.status_detail == "Waiting for payment"
    events = log(svc)
    assert events == [("created", "test", None, "pending_payment", "ordered plan mem-paid", None)]


def test_cancelling_an_unpaid_order_records_why_and_cancels_what_waits(app, customer, plans):
    svc = lifecycle.create_service(customer, plans["paid"], {"name": "unpaid"}, actor="test")
    waiting = Operation(service=svc, action="provision", state="pending", payload={})
    db.session.add(waiting)
    db.session.commit()
    n = len(svc.events)
    lifecycle.cancel(svc, actor="customer:alice")
    db.session.refresh(waiting)
    assert (waiting.state, waiting.last_error) == ("cancelled", "order cancelled")
    assert waiting.finished_at is not None
    assert log(svc, n) == [
        ("cancelled", "customer:alice", "pending_payment", "pending_payment", "provision cancelled: order cancelled",
         waiting.id),
        ("cancelled", "customer:alice", "pending_payment", "cancelled", "order cancelled", None),
    ]
    assert svc.status == "cancelled" and svc.status_detail == "Cancelled before payment"
    assert svc.claim_key is None and REMOTE.calls == []


def test_a_cancellation_with_a_reason_shows_the_reason(app, customer, plans):
    svc = lifecycle.create_service(customer, plans["paid"], {"name": "why"}, actor="test")
    n = len(svc.events)
    lifecycle.cancel(svc, actor="stripe", detail="checkout expired")
    assert log(svc, n) == [("cancelled", "stripe", "pending_payment", "cancelled", "checkout expired", None)]
    assert svc.status_detail == "checkout expired"
    with pytest.raises(lifecycle.LifecycleError, match=r"^only an unpaid order can be cancelled \(this one is cancelled\)$"):
        lifecycle.cancel(svc, actor="stripe")


def test_a_failure_and_the_operators_retry_are_recorded(app, customer, plans):
    svc = active(customer, "fail1")
    wait_jobs(app)
    lifecycle.request(svc, "suspend", actor="ops")
    wait_jobs(app)
    REMOTE.fail_next("unsuspend", "permanent")
    n = len(svc.events)
    lifecycle.request(svc, "unsuspend", actor="ops")
    wait_jobs(app)
    op = svc.operations[-1]
    message = "memory: unsuspend rejected: hostname is already taken"
    assert log(svc, n) == [
        ("requested", "ops", "suspended", "suspended", "unsuspend requested", op.id),
        ("started", "worker", "suspended", "suspended", "unsuspend started", op.id),
        ("failed", "worker", "suspended", "failed", f"unsuspend failed after 1 attempt(s): {message}", op.id),
    ]
    assert (op.state, op.last_error, op.attempts) == ("failed", message, 1) and op.finished_at is not None
    assert svc.status_detail == message
    with pytest.raises(lifecycle.LifecycleError, match="^cannot suspend a service that is failed$"):
        lifecycle.request(svc, "suspend", actor="ops")

    n = len(svc.events)
    lifecycle.retry(svc, actor="operator:ops")
    wait_jobs(app)
    db.session.refresh(op)
    assert log(svc, n)[0] == ("retry", "operator:ops", "failed", "suspended", "unsuspend retried by operator:ops", op.id)
    assert (op.state, op.attempts, op.last_error) == ("succeeded", 1, None)  # attempts counted afresh
    assert svc.status == "active" and svc.status_detail == ""
    with pytest.raises(lifecycle.LifecycleError, match=r"^only a failed service can be retried \(this one is active\)$"):
        lifecycle.retry(svc, actor="operator:ops")


def test_a_retry_goes_back_to_the_status_the_operation_runs_in(app, customer, plans):
    svc = lifecycle.create_service(customer, plans["paid"], {"name": "back"}, actor="test")
    REMOTE.fail_next("provision", "permanent")
    lifecycle.request(svc, "provision", actor="stripe")
    wait_jobs(app)
    assert svc.status == "failed"
    n = len(svc.events)
    lifecycle.retry(svc, actor="operator:ops")
    assert log(svc, n)[0][2:4] == ("failed", "provisioning")
    wait_jobs(app)
    assert svc.status == "active"


def test_a_failed_service_without_a_failed_operation_cannot_be_retried(app, customer, plans):
    svc = lifecycle.create_service(customer, plans["paid"], {"name": "nofail"}, actor="test")
    svc.status = "failed"
    db.session.commit()
    with pytest.raises(lifecycle.LifecycleError, match="^this service has no failed operation to retry$"):
        lifecycle.retry(svc, actor="operator:ops")


def test_transient_failures_are_recorded_per_attempt(app, customer, plans):
    REMOTE.fail_next("provision", "transient")
    svc = active(customer, "flaky")
    wait_jobs(app)
    op = svc.operations[0]
    retrying = [e for e in log(svc) if e[0] == "retrying"]
    assert retrying == [("retrying", "worker", "provisioning", "provisioning",
                         "attempt 1 failed: memory: provision timed out (HTTP 503)", op.id)]
    assert (op.state, op.attempts) == ("succeeded", 2)


def test_terminate_supersedes_what_waits_and_records_it(app, customer, plans):
    svc = active(customer, "super")
    wait_jobs(app)
    waiting = Operation(service=svc, action="suspend", state="queued", payload={"prior_status": "active"})
    db.session.add(waiting)
    db.session.commit()
    n = len(svc.events)
    lifecycle.request(svc, "terminate", actor="ops")
    wait_jobs(app)
    db.session.refresh(waiting)
    assert (waiting.state, waiting.last_error) == ("cancelled", "superseded by terminate")
    assert waiting.finished_at is not None
    assert log(svc, n)[0] == ("cancelled", "ops", "active", "active", "suspend cancelled: superseded by terminate",
                              waiting.id)
    assert svc.status == "terminated"


def test_unblock_pending_leaves_a_failed_service_alone(app, customer, plans):
    svc = active(customer, "failedpending")
    wait_jobs(app)
    failed = Operation(service_id=svc.id, action="unsuspend", state="failed", attempts=1, payload={})
    late = Operation(service_id=svc.id, action="change_plan", state="pending", payload={"plan_id": plans["big"].id})
    db.session.add_all([failed, late])
    db.session.flush()
    svc.status = "failed"
    db.session.commit()
    assert lifecycle.unblock_pending() == []  # an operator retries or terminates first
    db.session.refresh(late)
    assert late.state == "pending"


def test_unblock_pending_starts_the_next_operation_once_nothing_runs(app, customer, plans):
    svc = active(customer, "unblock")
    wait_jobs(app)
    other = active(customer, "busy")
    wait_jobs(app)
    # svc: its predecessor finished but the next one was never started (a crash in between)
    waiting = Operation(service=svc, action="suspend", state="pending", payload={"prior_status": "active"})
    # other: a queued operation still owns the service; the pending one keeps waiting
    queued = Operation(service=other, action="unsuspend", state="queued", payload={})
    behind = Operation(service=other, action="suspend", state="pending", payload={})
    db.session.add_all([waiting, queued, behind])
    db.session.commit()
    started = lifecycle.unblock_pending()
    assert [op.id for op in started] == [waiting.id]
    db.session.refresh(behind)
    assert behind.state == "pending"
    for op in started:
        dispatch.hand_over("op", op.id)
    wait_jobs(app)
    db.session.refresh(waiting)
    assert waiting.state == "succeeded" and svc.status == "suspended"


def test_a_lost_remote_object_fails_the_service_and_a_retry_rebuilds_it(app, customer, plans):
    """``mark_lost`` (reconcile found the remote object gone): failed, with the service's own
    provision operation failed again (still the customer's; the event names reconcile) so an
    operator's retry re-runs it."""
    svc = active(customer, "lost1")
    wait_jobs(app)
    REMOTE.objects.clear()
    n = len(svc.events)
    op = lifecycle.mark_lost(svc, "the remote object is gone", actor="operator:reconcile")
    assert (op.action, op.state, op.attempts, op.last_error, op.actor) == (
        "provision", "failed", 0, "the remote object is gone", "customer:alice")
    assert op.payload["prior_status"] == "active" and op.finished_at is not None
    assert [o.id for o in svc.operations if o.action == "provision"] == [op.id]
    assert log(svc, n) == [("failed", "operator:reconcile", "active", "failed", "the remote object is gone", op.id)]
    assert svc.status == "failed" and svc.status_detail == "the remote object is gone"
    assert svc.last_failed_operation.id == op.id
    lifecycle.retry(svc, actor="operator:ops")
    wait_jobs(app)
    assert svc.status == "active" and svc.external_id in REMOTE.objects


def test_the_status_sentence_while_the_job_waits_in_the_queue(make_app, redis_server):
    """With a real Redis and no worker, a requested job waits in the queue: the service says what
    is about to happen (the page and the API show ``status_detail``)."""
    import redis
    from corelib import add_user

    from panel.models import Plan, Service

    redis.Redis.from_url(redis_server.url).flushall()
    app = make_app(REDIS_URL=redis_server.url)
    try:
        with app.app_context():
            user = add_user("queue@example.com")
            free = Plan(slug="qf", name="Q free", backend="memory", options={"size_mib": 1})
            big = Plan(slug="qb", name="Q big", backend="memory", options={"size_mib": 2})
            db.session.add_all([free, big])
            db.session.commit()
            svc = place_order(user, "qf", {"name": "queued1"}, actor="t").service
            assert (svc.status, svc.status_detail) == ("provisioning", "Provisioning…")
            sentences = {}
            for status, action, payload in (("active", "suspend", None), ("suspended", "unsuspend", None),
                                            ("active", "change_plan", {"plan_id": big.id}),
                                            ("active", "terminate", None)):
                other = Service(user=user, plan=free, backend="memory", status=status, params={"name": action})
                db.session.add(other)
                db.session.commit()
                lifecycle.request(other, action, actor="t", payload=payload)
                sentences[action] = (other.status, other.status_detail)
            assert sentences == {"suspend": ("active", "Suspending…"), "unsuspend": ("suspended", "Resuming…"),
                                 "change_plan": ("active", "Changing plan…"),
                                 "terminate": ("terminating", "Terminating…")}
            failed = Service(user=user, plan=free, backend="memory", status="failed", params={"name": "again"})
            db.session.add(failed)
            db.session.flush()
            db.session.add(Operation(service=failed, action="unsuspend", state="failed", attempts=2,
                                     payload={"prior_status": "suspended"}))
            db.session.commit()
            op = lifecycle.retry(failed, actor="operator:ops")
            assert (failed.status, failed.status_detail, op.state, op.attempts) == (
                "suspended", "Resuming…", "queued", 0)
            assert REMOTE.calls == []  # nothing ran: the jobs wait for a worker
    finally:
        redis.Redis.from_url(redis_server.url).flushall()
