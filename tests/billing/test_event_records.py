"""What Stripe's events leave behind: each event's stored outcome, the subscription row, the
customer's notice and the service's history (notes and requests, by the actor ``stripe``), exactly.

Driven by real signed deliveries to ``POST /stripe/webhook`` (shapes from Stripe's fixtures).
"""
from datetime import datetime, timedelta, timezone

from billinglib import PRICE_BIG, checkout_session_obj, deliver, invoice_obj, make_event, settle, subscription_obj
from flows import order_paid, subscription_row
from memory_backend import REMOTE

from panel import lifecycle
from panel.billing.models import StripeEvent, aware
from panel.extensions import db


def send(app, client, type_, obj, created):
    event = make_event(type_, obj, created=created)
    assert deliver(client, event).status_code == 200
    settle(app)
    row = db.session.get(StripeEvent, event["id"])
    db.session.refresh(row)
    return row


def notes(service, since=0):
    db.session.refresh(service)
    return [(e.kind, e.actor, e.detail) for e in service.events[since:]]


def move_to_price(app, client, service, sub_id, price, created):
    """Stripe moved the subscription to ``price``: (the stored event, the history it added)."""
    n = len(service.events)
    row = send(app, client, "customer.subscription.updated", subscription_obj(service, sub_id, price=price), created)
    return row, notes(service, n)


def paid(app, client, auth, sub_id):
    service, _ = order_paid(client, auth)
    t = int(datetime.now(timezone.utc).timestamp())
    row = send(app, client, "checkout.session.completed",
               checkout_session_obj(service, subscription=sub_id, customer="cus_test"), t)
    assert service.status == "active", row.outcome
    return service, t


def test_the_end_of_a_running_subscription(app, client, auth, paid_plans):
    service, t = paid(app, client, auth, "sub_end1")
    ended = t + 100
    obj = subscription_obj(service, "sub_end1", status="canceled")
    obj["ended_at"] = ended
    n = len(service.events)
    row = send(app, client, "customer.subscription.deleted", obj, t + 120)
    sub = subscription_row(service)
    due = datetime.fromtimestamp(ended, tz=timezone.utc) + timedelta(days=14)
    assert aware(sub.deleted_at) == datetime.fromtimestamp(ended, tz=timezone.utc)  # Stripe's ended_at, not the event time
    assert aware(sub.terminate_at) == due and sub.status == "canceled" and sub.grace_until is None
    assert row.outcome == f"subscription ended; suspended for non-payment; termination due {due:%Y-%m-%d}"
    assert row.error is None and row.attempts == 1
    assert sub.notice == ("Your subscription has ended. The service is suspended and will be deleted on "
                          f"{due:%Y-%m-%d}.")
    suspend = service.operations[-1]
    assert (suspend.action, suspend.actor, suspend.payload["reason"]) == ("suspend", "stripe", "non_payment")
    assert notes(service, n)[0] == ("requested", "stripe", "subscription ended")
    assert service.status == "suspended" and service.suspension_reason == "non_payment"
    # a repeat (another id, same content) changes nothing
    row = send(app, client, "customer.subscription.deleted", obj, t + 130)
    assert row.outcome == "skipped: the subscription already ended"
    assert len([c for c in REMOTE.calls if c[0] == "suspend"]) == 1


def test_the_end_of_a_subscription_without_ended_at_uses_the_event_time(app, client, auth, paid_plans):
    service, t = paid(app, client, auth, "sub_end2")
    obj = subscription_obj(service, "sub_end2", status="canceled")
    send(app, client, "customer.subscription.deleted", obj, t + 200)
    assert aware(subscription_row(service).deleted_at) == datetime.fromtimestamp(t + 200, tz=timezone.utc)


def test_the_end_of_a_subscription_never_paid_cancels_the_order(app, client, auth, paid_plans):
    service, _ = order_paid(client, auth)
    t = int(datetime.now(timezone.utc).timestamp())
    n = len(service.events)
    row = send(app, client, "customer.subscription.deleted",
               subscription_obj(service, "sub_never", status="canceled"), t)
    assert row.outcome == "order cancelled: subscription ended before checkout completed"
    assert subscription_row(service).notice == "The subscription ended before the payment completed."
    assert notes(service, n)[-1] == ("cancelled", "stripe", "subscription ended before checkout completed")
    assert service.status == "cancelled" and REMOTE.calls == []


def test_the_end_of_a_subscription_whose_service_is_gone(app, client, auth, paid_plans):
    service, t = paid(app, client, auth, "sub_gone")
    lifecycle.request(service, "terminate", actor="ops")
    settle(app)
    row = send(app, client, "customer.subscription.deleted", subscription_obj(service, "sub_gone", status="canceled"),
               t + 10)
    assert row.outcome == "skipped: the subscription already ended"  # terminating it stopped the charge


def test_a_price_that_matches_no_plan_is_noted_for_an_operator(app, client, auth, paid_plans):
    service, t = paid(app, client, auth, "sub_price")
    row, added = move_to_price(app, client, service, "sub_price", "price_unknown", t + 10)
    assert "price price_unknown matches no plan" in row.outcome
    assert ("billing", "stripe", "subscription moved to price price_unknown, which matches no plan of this "
                                 "backend; an operator must check it") in added


def test_a_plan_change_in_stripe_is_requested_with_its_price(app, client, auth, paid_plans):
    service, t = paid(app, client, auth, "sub_move")
    row, added = move_to_price(app, client, service, "sub_move", PRICE_BIG, t + 10)
    assert "plan change to mem-big requested" in row.outcome
    change = [op for op in service.operations if op.action == "change_plan"][0]
    assert change.actor == "stripe" and change.payload["plan_id"] == paid_plans["big"].id
    assert ("requested", "stripe", f"plan change to mem-big (Stripe price {PRICE_BIG})") in added
    assert service.plan.slug == "mem-big"


def test_a_plan_change_that_cannot_apply_is_noted(app, client, auth, paid_plans):
    service, t = paid(app, client, auth, "sub_nochange")
    REMOTE.fail_next("suspend", "permanent")
    lifecycle.request(service, "suspend", actor="ops")
    settle(app)
    assert service.status == "failed"
    row, added = move_to_price(app, client, service, "sub_nochange", PRICE_BIG, t + 10)
    assert "plan change not applied" in row.outcome
    assert ("billing", "stripe", "plan change to mem-big paid in Stripe but not applied: cannot change plan a "
                                 "service that is failed") in added


def test_non_payment_suspension_and_its_lifting(app, client, auth, paid_plans):
    service, t = paid(app, client, auth, "sub_np")
    n = len(service.events)
    row = send(app, client, "customer.subscription.updated", subscription_obj(service, "sub_np", status="unpaid"), t + 10)
    assert "suspended for non-payment" in row.outcome
    assert "requested" in [kind for kind, actor, _ in notes(service, n) if actor == "stripe"]
    n = len(service.events)
    row = send(app, client, "invoice.paid", invoice_obj(service, "sub_np", status="paid"), t + 20)
    assert "unsuspended" in row.outcome and "not unsuspended" not in row.outcome
    unsuspend = service.operations[-1]
    assert (unsuspend.action, unsuspend.actor) == ("unsuspend", "stripe")
    assert "requested" in [kind for kind, actor, _ in notes(service, n) if actor == "stripe"]
    assert service.status == "active"


def test_an_operator_suspension_is_kept_and_said_so(app, client, auth, paid_plans):
    service, t = paid(app, client, auth, "sub_opkeep")
    lifecycle.request(service, "suspend", actor="operator:ops", payload={"reason": "operator"})
    settle(app)
    row = send(app, client, "invoice.paid", invoice_obj(service, "sub_opkeep", status="paid"), t + 10)
    assert "suspension by operator kept" in row.outcome
    # an operator suspension still waiting to run counts too
    lifecycle.request(service, "unsuspend", actor="operator:ops")
    settle(app)
    waiting = lifecycle.Operation(service=service, action="suspend", state="queued", payload={})
    db.session.add(waiting)
    db.session.commit()
    row = send(app, client, "invoice.paid", invoice_obj(service, "sub_opkeep", status="paid"), t + 20)
    assert "suspension by operator kept" in row.outcome


def stored_event(type_, obj, created=1700000000):
    """An event as the webhook stores it: due now (the job reads it back by id)."""
    from panel.models.base import utcnow

    event = make_event(type_, obj, created=created)
    db.session.add(StripeEvent(id=event["id"], type=event["type"], created=event["created"], payload=event,
                               attempts=0, due_at=utcnow()))
    db.session.commit()
    return event["id"]


# Handlers make no Stripe call since billing II (a call that changes a charge is a billing task
# recorded in the event's transaction; its retries are tests/billing/test_stop_billing.py's): a
# failing handler is retried and given up through the same path as a bug, below.


def test_a_handler_bug_is_recorded_with_its_type_and_retried_then_given_up(app, client, auth, paid_plans):
    """A bug in a handler is recorded with the exception's type, retried like an outage and, after
    ``PANEL_JOB_RETRIES`` attempts, given up: no longer due, the error says so (an operator sees it)."""
    from panel.billing.handlers import process_event

    service, _ = order_paid(client, auth)
    obj = checkout_session_obj(service, subscription="sub_bug", customer="cus_test")
    obj["metadata"] = "not a mapping"  # what no Stripe event carries: the handler trips over it
    event_id = stored_event("checkout.session.completed", obj)
    assert process_event(event_id) in ("retrying", "stale")  # the runner may already retry it
    settle(app)
    row = db.session.get(StripeEvent, event_id)
    db.session.refresh(row)
    retries = app.config["JOB_RETRIES"]
    assert row.processed_at is None and row.attempts == retries + 1 and row.due_at is None
    assert row.error.startswith(f"gave up after {retries + 1} attempt(s): AttributeError: ")
    assert process_event(event_id) == "skipped"


def test_a_processed_event_keeps_its_outcome_and_clears_an_earlier_error(app, client, auth, paid_plans):
    from panel.billing.handlers import process_event

    service, _ = order_paid(client, auth)
    event_id = stored_event("checkout.session.completed",
                            checkout_session_obj(service, subscription="sub_ok", customer="cus_test"))
    row = db.session.get(StripeEvent, event_id)
    row.error = "an earlier failure"
    row.attempts = 2
    db.session.commit()
    assert process_event(event_id) == "provisioning"
    db.session.refresh(row)
    assert (row.outcome, row.error, row.attempts) == ("provisioning", None, 3) and row.processed_at is not None
    assert row.due_at is None and row.lease_owner is None
    settle(app)


def test_non_payment_on_a_suspended_or_unsuspended_service(app, client, auth, paid_plans):
    service, t = paid(app, client, auth, "sub_twice")
    lifecycle.request(service, "suspend", actor="operator:ops", payload={"reason": "operator"})
    settle(app)
    row = send(app, client, "customer.subscription.updated", subscription_obj(service, "sub_twice", status="unpaid"),
               t + 10)
    assert "already suspended" in row.outcome and len([c for c in REMOTE.calls if c[0] == "suspend"]) == 1
    REMOTE.fail_next("unsuspend", "permanent")
    lifecycle.request(service, "unsuspend", actor="operator:ops")
    settle(app)
    assert service.status == "failed"
    row = send(app, client, "customer.subscription.updated", subscription_obj(service, "sub_twice", status="unpaid"),
               t + 20)
    assert "not suspended: the service is failed" in row.outcome
