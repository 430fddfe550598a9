"""Stripe events drive the lifecycle: provision, dunning, suspension, plan change, termination,
out-of-order deliveries, and the periodic work (``panel cron``) with a controlled clock."""
from datetime import datetime, timedelta, timezone

from billinglib import (PRICE_BIG, SECRET_KEY, WHSEC, checkout_session_obj, deliver, invoice_obj, make_event, settle,
                        subscription_obj)
from corelib import login
from flows import order_paid, pay, subscription_row
from memory_backend import REMOTE

from panel import lifecycle
from panel.billing import cron
from panel.billing.models import BillingInvoice, StripeEvent, aware
from panel.extensions import db


def calls(action):
    return [c for c in REMOTE.calls if c[0] == action]


def send(app, client, type_, obj, created):
    event = make_event(type_, obj, created=created)
    r = deliver(client, event)
    assert r.status_code == 200, r.get_json()
    settle(app)
    return db.session.get(StripeEvent, event["id"])


def at(ts):
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def test_unpaid_checkout_waits_for_async_payment(app, client, auth, paid_plans):
    service, _ = order_paid(client, auth)
    t = int(datetime.now(timezone.utc).timestamp())
    session = checkout_session_obj(service, subscription="sub_async1", customer="cus_async1", payment_status="unpaid")
    row = send(app, client, "checkout.session.completed", session, t)
    assert "waiting" in row.outcome and service.status == "pending_payment" and REMOTE.calls == []
    session["payment_status"] = "paid"
    send(app, client, "checkout.session.async_payment_succeeded", session, t + 60)
    assert service.status == "active" and calls("provision") == [("provision", service.external_id)]
    sub = subscription_row(service)
    assert sub.stripe_subscription_id == "sub_async1" and sub.stripe_customer_id == "cus_async1"


def test_deleted_before_completed_never_provisions(app, client, auth, paid_plans):
    service, _ = order_paid(client, auth)
    t = int(datetime.now(timezone.utc).timestamp())
    send(app, client, "customer.subscription.deleted",
         subscription_obj(service, "sub_gone1", status="canceled"), t + 5)
    assert service.status == "cancelled"
    row = send(app, client, "checkout.session.completed",
               checkout_session_obj(service, subscription="sub_gone1", customer="cus_test"), t)
    assert service.status == "cancelled" and "already ended" in row.outcome
    assert REMOTE.calls == []


def test_subscription_states_drive_the_service(app, client, auth, paid_plans):
    service, _ = order_paid(client, auth)
    t = int(datetime.now(timezone.utc).timestamp())
    send(app, client, "checkout.session.completed",
         checkout_session_obj(service, subscription="sub_states", customer="cus_test"), t)
    assert service.status == "active"
    send(app, client, "customer.subscription.updated", subscription_obj(service, "sub_states", status="past_due"), t + 10)
    assert service.status == "active" and aware(subscription_row(service).grace_until) == at(t + 10) + timedelta(days=3)
    send(app, client, "customer.subscription.updated", subscription_obj(service, "sub_states", status="unpaid"), t + 20)
    assert service.status == "suspended" and service.suspension_reason == "non_payment"
    # an older "active" arrives late: it must not undo the newer "unpaid"
    row = send(app, client, "customer.subscription.updated",
               subscription_obj(service, "sub_states", status="active"), t + 15)
    assert row.outcome.startswith("skipped") and service.status == "suspended"
    send(app, client, "customer.subscription.updated", subscription_obj(service, "sub_states", status="active"), t + 30)
    assert service.status == "active" and service.suspension_reason is None
    assert subscription_row(service).grace_until is None
    send(app, client, "customer.subscription.paused", subscription_obj(service, "sub_states", status="paused"), t + 40)
    assert service.status == "suspended" and subscription_row(service).status == "paused"
    send(app, client, "customer.subscription.resumed", subscription_obj(service, "sub_states", status="active"), t + 50)
    assert service.status == "active"
    assert len(calls("suspend")) == 2 and len(calls("unsuspend")) == 2


def test_payment_failure_grace_suspension_then_paid(app, client, auth, paid_plans):
    service, _ = order_paid(client, auth)
    t = int(datetime.now(timezone.utc).timestamp())
    send(app, client, "checkout.session.completed",
         checkout_session_obj(service, subscription="sub_dun", customer="cus_test"), t)
    failed = invoice_obj(service, "sub_dun", status="open", invoice_id="in_dunning1")
    send(app, client, "invoice.payment_failed", failed, t + 100)
    sub = subscription_row(service)
    assert sub.status == "past_due" and aware(sub.grace_until) == at(t + 100) + timedelta(days=3)
    assert any(e.kind == "billing" and "payment failed" in e.detail for e in service.events)
    login(client, "alice@example.com")
    page = client.get(f"/services/{service.id}").get_data(as_text=True)
    assert 'id="billing-notice"' in page and "payment for invoice" in page
    # still in grace two days later; suspended once the grace period is over
    assert cron.run(now=at(t + 100) + timedelta(days=2)).suspended == []
    settle(app)
    assert service.status == "active"
    report = cron.run(now=at(t + 100) + timedelta(days=3, seconds=1))
    settle(app)
    assert report.suspended == [service.id]
    assert service.status == "suspended" and service.suspension_reason == "non_payment"
    cron.run(now=at(t + 100) + timedelta(days=4))  # idempotent
    settle(app)
    assert len(calls("suspend")) == 1
    failed.update(status="paid", amount_paid=500)
    send(app, client, "invoice.paid", failed, t + 200)
    assert service.status == "active" and len(calls("unsuspend")) == 1
    assert subscription_row(service).notice is None
    inv = db.session.scalar(db.select(BillingInvoice).where(BillingInvoice.stripe_invoice_id == "in_dunning1"))
    assert inv.status == "paid" and inv.service_id == service.id
    page = client.get("/billing").get_data(as_text=True)
    assert 'href="https://invoice.stripe.test/i/in_dunning1"' in page and "$5.00 / month" in page
    assert SECRET_KEY not in page and WHSEC not in page


def test_old_payment_failure_after_payment_is_ignored(app, client, auth, paid_plans):
    service, _ = order_paid(client, auth)
    t = int(datetime.now(timezone.utc).timestamp())
    send(app, client, "checkout.session.completed", checkout_session_obj(service, subscription="sub_old", customer="c"), t)
    inv = invoice_obj(service, "sub_old", status="paid")
    send(app, client, "invoice.paid", inv, t + 50)
    row = send(app, client, "invoice.payment_failed", dict(inv, status="open"), t + 40)
    assert "older" in row.outcome and subscription_row(service).grace_until is None
    assert cron.run(now=at(t) + timedelta(days=30)).suspended == []


def test_operator_suspension_is_not_lifted_by_invoice_paid(app, client, auth, paid_plans):
    service, _ = order_paid(client, auth)
    t = int(datetime.now(timezone.utc).timestamp())
    send(app, client, "checkout.session.completed", checkout_session_obj(service, subscription="sub_op", customer="c"), t)
    lifecycle.request(service, "suspend", actor="operator:ops", payload={"reason": "operator"})
    settle(app)
    assert service.status == "suspended" and service.suspension_reason == "operator"
    row = send(app, client, "invoice.paid", invoice_obj(service, "sub_op", status="paid"), t + 10)
    assert "kept" in row.outcome
    assert service.status == "suspended" and calls("unsuspend") == []


def test_cancel_at_period_end_then_terminated_after_retention(app, client, auth, paid_plans, router, upstream_client):
    service, _ = order_paid(client, auth)
    sub_id, customer = pay(app, client, router, upstream_client, service)
    login(client, "alice@example.com")
    r = client.post(f"/services/{service.id}/cancel")
    assert r.status_code == 302
    settle(app)  # the Stripe call is a billing task's job, never the request's
    assert upstream_client.v1.subscriptions.retrieve(sub_id).cancel_at_period_end is True
    row = subscription_row(service)
    ends = row.current_period_end.strftime("%Y-%m-%d")
    assert f"ends on {ends}" in client.get(f"/services/{service.id}").get_data(as_text=True)
    t = int(datetime.now(timezone.utc).timestamp())
    period_end = int(row.current_period_end.timestamp())
    send(app, client, "customer.subscription.updated",
         subscription_obj(service, sub_id, customer=customer, cancel_at_period_end=True, period_end=period_end), t + 1)
    assert service.status == "active"
    deleted = subscription_obj(service, sub_id, customer=customer, status="canceled", period_end=period_end)
    deleted["ended_at"] = t + 2
    send(app, client, "customer.subscription.deleted", deleted, t + 2)
    assert service.status == "suspended" and calls("terminate") == []
    assert cron.run(now=at(t + 2) + timedelta(days=13)).terminated == []
    report = cron.run(now=at(t + 2) + timedelta(days=14, seconds=1))
    settle(app)
    assert report.terminated == [service.id] and service.status == "terminated"
    cron.run(now=at(t + 2) + timedelta(days=20))
    send(app, client, "customer.subscription.deleted", deleted, t + 3)  # a late duplicate
    settle(app)
    assert calls("terminate") == [("terminate", service.external_id)]


def test_change_plan_prorates_then_applies_on_updated(app, client, auth, paid_plans, router, upstream_client):
    service, _ = order_paid(client, auth)
    sub_id, customer = pay(app, client, router, upstream_client, service)
    login(client, "alice@example.com")
    page = client.get("/billing").get_data(as_text=True)
    assert 'value="mem-big"' in page and 'value="mem-free"' in page  # paid -> free too (at period end)
    r = client.post(f"/billing/services/{service.id}/change-plan", data={"plan": "mem-big"})
    assert r.status_code == 302
    assert calls("change_plan") == [] or service.plan.slug == "mem-paid"  # the request calls nothing itself
    settle(app)
    sent = router.recorded("POST", f"/v1/subscriptions/{sub_id}")[-1]
    assert sent["proration_behavior"] == "create_prorations" and sent["items"][0]["price"] == PRICE_BIG
    assert router.idempotency_keys("POST", f"/v1/subscriptions/{sub_id}")[-1].startswith("hostpanel-task-")
    remote = upstream_client.v1.subscriptions.retrieve(sub_id).to_dict()
    assert [i["price"]["id"] for i in remote["items"]["data"]] == [PRICE_BIG]
    # Stripe accepted the new price: the backend applies the plan (no webhook needed for that)
    assert service.plan.slug == "mem-big" and calls("change_plan") == [("change_plan", service.external_id)]
    assert REMOTE.objects[service.external_id]["size"] == 512
    t = int(datetime.now(timezone.utc).timestamp())
    send(app, client, "customer.subscription.updated",
         subscription_obj(service, sub_id, customer=customer, price=PRICE_BIG), t + 5)
    assert calls("change_plan") == [("change_plan", service.external_id)]  # the event changes nothing twice


def test_pending_payment_expires(app, client, auth, paid_plans, router):
    service, _ = order_paid(client, auth)
    paid, _ = order_paid(client, auth, name="paid2")
    created = service.created_at.replace(tzinfo=timezone.utc)
    assert cron.run(now=created + timedelta(hours=23)).cancelled == []
    router.complete_session(subscription_row(paid).checkout_session_id, "sub_late")  # paid, event lost
    report = cron.run(now=created + timedelta(hours=24, minutes=1))
    assert report.cancelled == [service.id]
    assert report.recovered == [paid.id]  # a paid session is fulfilled, never cancelled
    settle(app)
    db.session.expire_all()
    assert service.status == "cancelled" and paid.status == "active"
    assert router.sessions[subscription_row(service).checkout_session_id]["status"] == "expired"
    assert cron.run(now=created + timedelta(hours=30)).cancelled == []
    assert REMOTE.calls == [("provision", paid.external_id)]


def test_a_paid_checkout_whose_event_was_lost_is_fulfilled_by_cron(app, client, auth, paid_plans, router):
    service, _ = order_paid(client, auth)
    unpaid, _ = order_paid(client, auth, name="unpaid2")
    created = service.created_at.replace(tzinfo=timezone.utc)
    router.complete_session(subscription_row(service).checkout_session_id, "sub_lost_event")
    assert cron.run(now=created + timedelta(minutes=5)).recovered == []  # the event may still come
    report = cron.run(now=created + timedelta(minutes=11))
    assert report.recovered == [service.id]
    settle(app)
    db.session.expire_all()
    assert service.status == "active" and unpaid.status == "pending_payment"
    assert subscription_row(service).stripe_subscription_id == "sub_lost_event"
    assert any("webhook event never arrived" in e.detail for e in service.events)
    assert cron.run(now=created + timedelta(minutes=20)).recovered == []
    assert REMOTE.calls == [("provision", service.external_id)]


def test_panel_cron_command(app, client, auth, paid_plans):
    result = app.test_cli_runner().invoke(args=["cron"])
    assert result.exit_code == 0, result.output
    assert "cancelled unpaid orders: 0" in result.output and "terminated after retention: 0" in result.output


def test_operators_see_the_subscription_on_the_service_page(app, client, auth, paid_plans, router, upstream_client):
    from corelib import add_user

    service, _ = order_paid(client, auth)
    sub_id, customer_id = pay(app, client, router, upstream_client, service)
    ops = add_user("billing-ops@example.com", role="operator")
    login(client, ops.email)
    html = client.get(f"/admin/services/{service.id}").get_data(as_text=True)
    assert 'id="admin-billing"' in html and sub_id in html and customer_id in html
