"""Whoever ends a paid service, its Stripe subscription stops charging: operator (now, at period
end, with a refund or a prorated credit), customer (web and API), the billing cron, a failed
provisioning that is cancelled, a payment that arrives for a cancelled order, and a lost status
hook found by the sweep. After each path the stand-in has no live subscription of the service."""
from decimal import ROUND_DOWN, Decimal

import pytest
from billinglib import flush, settle
from corelib import add_user, login, token_for
from flows import subscription_row
from memory_backend import REMOTE

from panel import lifecycle
from panel.billing import cron
from panel.billing.models import BillingTask, aware
from panel.extensions import db
from panel.models import Service


def paid_service(app, client, auth, router, name="s1", term="monthly", addons=()):
    r = client.post("/api/v1/orders", json={"plan": "mem-pro", "term": term, "addons": list(addons),
                                            "params": {"name": name}}, headers=auth)
    assert r.status_code == 201, r.get_json()
    service = db.session.get(Service, r.get_json()["service"]["id"])
    router.complete_session(subscription_row(service).checkout_session_id, emit=True)
    flush(app, client, router)
    db.session.refresh(service)
    assert service.status == "active"
    return service, subscription_row(service).stripe_subscription_id


def live(router, service) -> list[str]:
    """The service's subscriptions that still charge in the stand-in (matched by its Stripe
    customer, unique to this test, and our service id)."""
    customer = subscription_row(service).stripe_customer_id
    return [s["id"] for s in router.live_subscriptions()
            if s["customer"] == customer and s["metadata"].get("panel_service_id") == str(service.id)]


def tasks_of(service, kind="cancel_subscription"):
    return db.session.scalars(db.select(BillingTask).where(BillingTask.service_id == service.id,
                                                           BillingTask.kind == kind)).all()


def expected_unused(router, sub_id, at) -> int:
    total = Decimal(0)
    for item in router.subscriptions[sub_id]["items"]["data"]:
        start, end = item["current_period_start"], item["current_period_end"]
        total += Decimal(item["price"]["unit_amount"]) * Decimal(end - at) / Decimal(end - start)
    return int(total.quantize(Decimal(1), rounding=ROUND_DOWN))


@pytest.fixture
def operator_client(app, operator):
    c = app.test_client()
    login(c, "ops@example.com")
    return c


def test_operator_terminates_now_and_refunds_the_unused_time(app, client, auth, router, term_catalog, operator_client):
    service, sub_id = paid_service(app, client, auth, router, addons=["extra-ram"])
    assert live(router, service) == [sub_id]
    r = operator_client.post(f"/admin/services/{service.id}/terminate", data={"refund": "refund", "when": "now"})
    assert r.status_code == 302
    flush(app, client, router)
    db.session.refresh(service)
    assert service.status == "terminated" and live(router, service) == []
    [task] = tasks_of(service)
    assert task.state == "succeeded" and task.payload["refund"] == "refund" and task.actor.startswith("operator:")
    unused = expected_unused(router, sub_id, task.payload["at"])
    assert 0 < unused <= 1200 + 400 and task.result["unused"] == unused
    [note] = [n for n in router.credit_notes.values()  # the stand-in outlives each test's database
              if n["id"] == task.result["credit_note"]
              and router.invoices[n["invoice"]]["parent"]["subscription_details"]["subscription"] == sub_id]
    assert note["metadata"]["panel_task_id"] == str(task.id)
    assert note["refund_amount"] == unused == task.result["refunded"] and note["refunds"]
    assert router.idempotency_keys("POST", "/v1/credit_notes")[-1] == f"hostpanel-task-{task.id}-credit-note"
    assert router.idempotency_keys("DELETE", f"/v1/subscriptions/{sub_id}")[-1] == f"hostpanel-task-{task.id}-cancel"
    assert any("unused time refunded" in e.detail for e in service.events)
    page = operator_client.get(f"/admin/services/{service.id}").get_data(as_text=True)
    assert f'data-task="{task.id}" data-state="succeeded"' in page
    # the job ran once: a duplicate job (a second hand-over) calls Stripe no more
    from panel.billing.tasks import run_task

    deletes = len(router.recorded("DELETE", f"/v1/subscriptions/{sub_id}"))
    assert run_task(task.id) == "skipped"
    assert len(router.recorded("DELETE", f"/v1/subscriptions/{sub_id}")) == deletes


def test_operator_terminates_with_a_prorated_credit(app, client, auth, router, term_catalog, operator_client):
    service, sub_id = paid_service(app, client, auth, router, name="s2")
    customer_id = router.subscriptions[sub_id]["customer"]
    operator_client.post(f"/admin/services/{service.id}/terminate", data={"refund": "credit"})
    flush(app, client, router)
    sent = router.recorded("DELETE", f"/v1/subscriptions/{sub_id}")[-1]
    assert sent == {"prorate": "true", "invoice_now": "true"}
    assert router.balances[customer_id] < 0  # Stripe credited the unused time to the customer's balance
    assert live(router, service) == [] and db.session.get(Service, service.id).status == "terminated"


def test_operator_terminates_at_period_end(app, client, auth, router, term_catalog, operator_client):
    service, sub_id = paid_service(app, client, auth, router, name="s3")
    operator_client.post(f"/admin/services/{service.id}/terminate", data={"when": "period_end"})
    flush(app, client, router)
    assert router.subscriptions[sub_id]["cancel_at_period_end"] is True and live(router, service) == []
    db.session.refresh(service)
    assert service.status == "active" and subscription_row(service).end_action == "terminate"
    router.end_period(sub_id)  # Stripe ends it when the period is over
    flush(app, client, router)
    db.session.refresh(service)
    assert service.status == "terminated" and ("terminate", service.external_id) in REMOTE.calls


def test_customer_cancels_now_through_the_api(app, client, auth, router, term_catalog):
    service, sub_id = paid_service(app, client, auth, router, name="s4")
    bad = client.post(f"/api/v1/services/{service.id}/cancel", json={"at_period_end": "no"}, headers=auth)
    assert bad.status_code == 422 and "at_period_end" in bad.get_json()["error"]["fields"]
    r = client.post(f"/api/v1/services/{service.id}/cancel", json={"at_period_end": False}, headers=auth)
    assert r.status_code == 202 and "being removed" in r.get_json()["message"]
    flush(app, client, router)
    db.session.refresh(service)
    assert service.status == "terminated" and live(router, service) == []
    [task] = tasks_of(service)
    assert task.payload["refund"] == "none" and "credit_note" not in task.result  # PANEL_TERMINATE_REFUND=none
    other = token_for(add_user("eve@example.com"))
    assert client.post(f"/api/v1/services/{service.id}/cancel", json={}, headers=other).status_code == 404


def test_customer_cancels_at_period_end_through_the_api(app, client, auth, router, term_catalog):
    service, sub_id = paid_service(app, client, auth, router, name="s5")
    r = client.post(f"/api/v1/services/{service.id}/cancel", json={"at_period_end": True}, headers=auth)
    assert r.status_code == 202
    flush(app, client, router)
    info = client.get(f"/api/v1/services/{service.id}/subscription", headers=auth).get_json()["subscription"]
    assert info["cancel_at_period_end"] is True and info["ends_at"] and info["then"] == "downgrade:mem-free"
    assert live(router, service) == []
    router.end_period(sub_id)
    flush(app, client, router)
    db.session.refresh(service)
    # mem-pro's on_cancel is downgrade:mem-free: the service keeps running, free
    assert service.status == "active" and service.plan.slug == "mem-free" and service.billing_mode == "free"


def test_the_billing_cron_terminates_and_nothing_is_left_charging(app, client, auth, router, term_catalog):
    from panel.models import Plan

    Plan.by_slug("mem-pro").on_cancel = "suspend"
    db.session.commit()
    service, sub_id = paid_service(app, client, auth, router, name="s6")
    router.set_subscription_status(sub_id, "past_due")
    router.end_period(sub_id)  # Stripe gave up on the payments and cancelled it
    flush(app, client, router)
    db.session.refresh(service)
    assert service.status == "suspended"
    report = cron.run(now=aware(subscription_row(service).terminate_at))
    settle(app)
    db.session.refresh(service)
    assert report.terminated == [service.id] and service.status == "terminated" and live(router, service) == []
    assert tasks_of(service) == []  # nothing to cancel: Stripe had ended it


def test_failed_provisioning_then_cancelled_refunds_the_payment(app, client, auth, router, term_catalog, operator_client):
    REMOTE.fail_next("provision", "permanent")
    r = client.post("/api/v1/orders", json={"plan": "mem-pro", "params": {"name": "s7"}}, headers=auth)
    service = db.session.get(Service, r.get_json()["service"]["id"])
    router.complete_session(subscription_row(service).checkout_session_id, emit=True)
    flush(app, client, router)
    db.session.refresh(service)
    assert service.status == "failed"
    sub_id = subscription_row(service).stripe_subscription_id
    operator_client.post(f"/admin/services/{service.id}/terminate", data={})  # "as configured"
    flush(app, client, router)
    db.session.refresh(service)
    assert service.status == "terminated" and live(router, service) == []
    [task] = tasks_of(service)
    assert task.payload["refund"] == "full"  # PANEL_FAILED_ORDER_REFUND=refund: it never ran
    first_invoice = next(i for i in router.invoices.values()
                         if i["parent"]["subscription_details"]["subscription"] == sub_id)
    assert task.result["refunded"] == first_invoice["amount_paid"] == 1200


def test_a_payment_for_a_cancelled_order_is_cancelled_and_refunded(app, client, auth, router, term_catalog):
    r = client.post("/api/v1/orders", json={"plan": "mem-pro", "params": {"name": "s8"}}, headers=auth)
    service = db.session.get(Service, r.get_json()["service"]["id"])
    login(client, "alice@example.com")
    client.post(f"/services/{service.id}/cancel")
    db.session.refresh(service)
    assert service.status == "cancelled"
    router.complete_session(subscription_row(service).checkout_session_id, emit=True)  # paid anyway
    flush(app, client, router)
    assert live(router, service) == [] and REMOTE.calls == []
    [task] = tasks_of(service)
    assert task.state == "succeeded" and task.result["refunded"] == 1200


def test_a_lost_status_hook_is_caught_by_the_sweep(app, client, auth, router, term_catalog):
    service, sub_id = paid_service(app, client, auth, router, name="s9")
    pm = app.extensions["panel"].pm
    hook = pm.unregister(name="panel.billing")  # as if the process died right after the commit
    try:
        lifecycle.request(service, "terminate", actor="test", detail="terminated while the hook was gone")
        settle(app)
        assert live(router, service) == [sub_id]
    finally:
        pm.register(hook, name="panel.billing")
    report = cron.run()
    flush(app, client, router)
    assert report.stopped == [service.id] and live(router, service) == []
    assert cron.run().stopped == []  # once


def test_stripe_failures_are_retried_then_shown_to_operators(app, client, auth, router, term_catalog, operator_client):
    service, sub_id = paid_service(app, client, auth, router, name="s10")
    for _ in range(3):  # the SDK retries twice itself; the task retries after that
        router.fail_next(f"/v1/subscriptions/{sub_id}", 503)
    operator_client.post(f"/admin/services/{service.id}/terminate", data={"refund": "none"})
    flush(app, client, router)
    [task] = tasks_of(service)
    assert task.state == "succeeded" and task.attempts == 2 and live(router, service) == []
    # a refusal fails the task at once; the operator sees why and retries it
    service2, sub2 = paid_service(app, client, auth, router, name="s11")
    router.fail_next("/v1/credit_notes", 400)
    operator_client.post(f"/admin/services/{service2.id}/terminate", data={"refund": "refund"})
    settle(app)  # the task ran and failed; Stripe's events are not delivered yet
    cron.run()  # the sweep for lost cancellations leaves a failed one to the operator (no second refund)
    settle(app)
    flush(app, client, router)
    [failed] = tasks_of(service2)
    assert failed.state == "failed" and "stand-in failure" in failed.last_error and live(router, service2) == []
    page = operator_client.get(f"/admin/services/{service2.id}").get_data(as_text=True)
    assert f'id="retry-task-{failed.id}"' in page and "stand-in failure" in page
    customer_page = client.get(f"/services/{service2.id}").get_data(as_text=True)
    assert "stand-in failure" not in customer_page  # Stripe's words are for operators
    operator_client.post(f"/admin/billing-tasks/{failed.id}/retry")
    flush(app, client, router)
    db.session.refresh(failed)
    assert failed.state == "succeeded" and failed.result["refunded"] > 0
    # one cancel call per task in Stripe's eyes: the retry reused the task's idempotency key
    keys = router.idempotency_keys("DELETE", f"/v1/subscriptions/{sub2}")
    assert set(keys) == {f"hostpanel-task-{failed.id}-cancel"}


def test_a_failed_cancellation_is_not_recorded_twice_by_the_status_hook(app, client, auth, router, term_catalog):
    """A refused refund fails the cancel task; the termination that follows ends the service and its
    status hook asks to stop billing again: the failed task is what it gets (it waits for the
    operator's retry), never a second task that could refund twice. (Before, this depended on which
    came first, the task's failure or the termination.)"""
    from panel.billing import changes

    service, sub_id = paid_service(app, client, auth, router, name="s12")
    failed = BillingTask(kind="cancel_subscription", service_id=service.id, state="failed", attempts=1,
                         payload={"subscription": sub_id, "refund": "refund"}, last_error="stand-in failure",
                         actor="operator", lease_token=0, lost_runs=0)
    db.session.add(failed)
    db.session.commit()
    assert changes.stop_billing(db.session.get(Service, service.id), actor="billing").id == failed.id
    changes.on_status_changed(service.id, "terminating", "terminated")
    db.session.expire_all()
    assert [t.id for t in tasks_of(service)] == [failed.id]
