"""The state machine and jobs, in-process, against the in-memory backend plugin."""
import pytest
from corelib import running_without_a_job, wait_jobs
from memory_backend import REMOTE

from panel import jobs, lifecycle
from panel.extensions import db
from panel.models import Operation, ServiceEvent
from panel.models.events import AppendOnlyError
from panel.orders import place_order


def order(customer, slug="mem-free", name="web1"):
    return place_order(customer, slug, {"name": name}, actor="test").service


def test_free_order_provisions_to_active_with_event_trail(app, customer, plans):
    svc = order(customer)
    wait_jobs(app)
    assert svc.status == "active"
    assert svc.resource_id == f"m-{svc.external_id}"
    assert svc.backend_data == {"host": "web1.test"}
    assert REMOTE.calls == [("provision", svc.external_id)]
    kinds = [(e.kind, e.from_status, e.to_status) for e in svc.events]
    assert kinds == [("created", None, "pending_payment"),
                     ("requested", "pending_payment", "pending_payment"),
                     ("queued", "pending_payment", "provisioning"),
                     ("started", "provisioning", "provisioning"),
                     ("succeeded", "provisioning", "active")]
    assert all(e.at is not None and e.actor for e in svc.events)


def test_secrets_are_encrypted_at_rest_and_given_back_to_the_backend(app, customer, plans):
    svc = order(customer)
    wait_jobs(app)
    assert svc.secrets_encrypted and "s3cret-root-pw" not in svc.secrets_encrypted
    assert "s3cret-db-pw" not in svc.secrets_encrypted
    spec = lifecycle.spec_for(svc)
    assert spec.secrets["root_password"].reveal() == "s3cret-root-pw"
    assert spec.secrets["db_password"].reveal() == "s3cret-db-pw"  # a Secret is stored revealed, not masked
    assert "s3cret-root-pw" not in repr(spec)


def test_transient_errors_are_retried_then_succeed(app, customer, plans):
    REMOTE.fail_next("provision", "transient", "transient")
    svc = order(customer)
    wait_jobs(app)
    assert svc.status == "active"
    op = svc.operations[0]
    assert op.attempts == 3 and op.state == "succeeded"
    assert [e.kind for e in svc.events].count("retrying") == 2
    assert "HTTP 503" in [e for e in svc.events if e.kind == "retrying"][0].detail


def test_transient_errors_past_the_retry_limit_fail_with_the_message(app, customer, plans):
    REMOTE.fail_next("provision", *["transient"] * 10)
    svc = order(customer)
    wait_jobs(app)
    assert svc.status == "failed"
    assert "HTTP 503" in svc.status_detail and "gave up after 4 attempts" in svc.status_detail
    assert svc.operations[0].attempts == 4  # 1 + JOB_RETRIES (3)


def test_permanent_error_fails_at_once_and_an_operator_retry_recovers(app, customer, plans):
    REMOTE.fail_next("provision", "permanent")
    svc = order(customer)
    wait_jobs(app)
    assert svc.status == "failed"
    assert svc.status_detail == "memory: provision rejected: hostname is already taken"
    assert svc.operations[0].attempts == 1
    lifecycle.retry(svc, actor="operator:ops")
    wait_jobs(app)
    assert svc.status == "active"
    assert [c for c in REMOTE.calls if c[0] == "provision"] == [("provision", svc.external_id)] * 2
    assert len(REMOTE.objects) == 1
    assert any(e.kind == "retry" and e.actor == "operator:ops" for e in svc.events)


def test_suspend_unsuspend_terminate(app, customer, plans):
    svc = order(customer)
    wait_jobs(app)
    lifecycle.request(svc, "suspend", actor="op", payload={"reason": "non_payment"})
    wait_jobs(app)
    assert svc.status == "suspended" and svc.suspension_reason == "non_payment"
    assert REMOTE.objects[svc.external_id]["state"] == "suspended"
    lifecycle.request(svc, "unsuspend", actor="op")
    wait_jobs(app)
    assert svc.status == "active" and svc.suspension_reason is None
    lifecycle.request(svc, "terminate", actor="op")
    assert svc.status in ("terminating", "terminated")
    wait_jobs(app)
    assert svc.status == "terminated"
    assert svc.external_id not in REMOTE.objects
    with pytest.raises(lifecycle.LifecycleError):
        lifecycle.request(svc, "unsuspend", actor="op")


def test_requests_while_busy_wait_their_turn_in_order(app, customer, plans):
    svc = order(customer)  # provision queued; the in-process runner may already run it
    lifecycle.request(svc, "suspend", actor="op")
    lifecycle.request(svc, "unsuspend", actor="op")
    wait_jobs(app)
    for _ in range(3):  # promoted operations are enqueued as each one finishes
        wait_jobs(app)
    assert [op.action for op in svc.operations] == ["provision", "suspend", "unsuspend"]
    assert all(op.state == "succeeded" for op in svc.operations)
    assert [c[0] for c in REMOTE.calls] == ["provision", "suspend", "unsuspend"]
    assert svc.status == "active"


def test_invalid_transitions_are_refused(app, customer, plans):
    svc = order(customer)
    wait_jobs(app)
    with pytest.raises(lifecycle.LifecycleError, match="cannot provision a service that is active"):
        lifecycle.request(svc, "provision", actor="op")
    with pytest.raises(lifecycle.LifecycleError, match="only an unpaid order"):
        lifecycle.cancel(svc, actor="op")
    with pytest.raises(lifecycle.LifecycleError, match="only a failed service"):
        lifecycle.retry(svc, actor="op")


def test_unpaid_order_waits_and_can_be_cancelled(app, customer, plans):
    svc = lifecycle.create_service(customer, plans["paid"], {"name": "x"}, actor="test")
    assert svc.status == "pending_payment" and svc.operations == []
    lifecycle.cancel(svc, actor="customer")
    assert svc.status == "cancelled"
    assert REMOTE.calls == []


def test_event_log_is_append_only(app, customer, plans):
    svc = order(customer)
    wait_jobs(app)
    event = svc.events[0]
    event.detail = "rewritten"
    with pytest.raises(AppendOnlyError):
        db.session.commit()
    db.session.rollback()
    db.session.delete(db.session.get(ServiceEvent, event.id))
    with pytest.raises(AppendOnlyError):
        db.session.commit()
    db.session.rollback()


def test_duplicate_jobs_for_one_operation_run_the_backend_once(app, customer, plans):
    svc = lifecycle.create_service(customer, plans["paid"], {"name": "x"}, actor="test")
    lifecycle.request(svc, "provision", actor="billing")
    op = svc.operations[0]
    wait_jobs(app)
    assert jobs.run_operation(op.id) == "skipped"  # a duplicate delivery of the same job
    assert REMOTE.calls == [("provision", svc.external_id)]


def test_sweep_takes_over_an_operation_whose_worker_died(app, customer, plans):
    from datetime import timedelta

    from panel import dispatch
    from panel.models.base import utcnow

    svc = lifecycle.create_service(customer, plans["paid"], {"name": "x"}, actor="test")
    # A worker claimed it and died mid-job: the row says running, its lease ran out, nothing runs it.
    past = utcnow() - timedelta(seconds=60)
    op = Operation(service=svc, action="provision", state="running", attempts=1, payload={}, due_at=past,
                   lease_owner="dead-host:1:1", lease_expires_at=past, lease_token=1)
    svc.status = "provisioning"
    db.session.add(op)
    db.session.commit()
    assert dispatch.sweep() == [f"op-{op.id}"]
    wait_jobs(app)
    assert svc.status == "active"
    db.session.refresh(op)
    assert (op.attempts, op.lost_runs, op.lease_token, op.lease_owner) == (2, 1, 2, None)
    assert any(e.kind == "requeued" and "not counted as attempts" in e.detail for e in svc.events)
    assert dispatch.sweep() == []


def test_sweep_leaves_a_live_lease_alone(app, customer, plans):
    from datetime import timedelta

    from panel import dispatch
    from panel.models.base import utcnow

    svc = lifecycle.create_service(customer, plans["paid"], {"name": "y"}, actor="test")
    now = utcnow()
    op = Operation(service=svc, action="provision", state="running", attempts=0, payload={}, due_at=now,
                   lease_owner="busy-host:1:1", lease_expires_at=now + timedelta(seconds=60), lease_token=1)
    db.session.add(op)
    db.session.commit()
    assert dispatch.sweep() == []
    assert jobs.run_operation(op.id) == "skipped"  # a stray job cannot claim it either
    assert REMOTE.calls == []


def test_change_plan_calls_the_backend_and_switches_the_plan(app, customer, plans):
    svc = order(customer)
    wait_jobs(app)
    lifecycle.request(svc, "change_plan", actor="billing", payload={"plan_id": plans["big"].id})
    wait_jobs(app)
    assert svc.plan.slug == "mem-big"
    assert REMOTE.objects[svc.external_id]["size"] == 512
    assert any("plan changed from mem-free to mem-big" in e.detail for e in svc.events)


def test_status_changed_hook_sees_every_transition(make_app, customer_email="hook@example.com"):
    from panel import hookimpl

    seen = []

    class Audit:
        @hookimpl
        def service_status_changed(self, service, old, new):
            seen.append((service.external_id, old, new))

    from memory_backend import MemoryPlugin
    app = make_app(EXTRA_PLUGINS=[MemoryPlugin(), Audit()])
    with app.app_context():
        from corelib import add_user
        from panel.models import Plan

        user = add_user(customer_email)
        db.session.add(Plan(slug="f", name="F", backend="memory", options={"size_mib": 1}))
        db.session.commit()
        svc = place_order(user, "f", {"name": "h"}, actor="t").service
        wait_jobs(app)
        assert [(o, n) for _, o, n in seen] == [("pending_payment", "provisioning"), ("provisioning", "active")]
        assert {ext for ext, _, _ in seen} == {svc.external_id}
