"""An operator changes the plan of a service billed through Stripe (issue 12 section 3): the change
goes through billing (``panel.billing.change_plan``: the subscription's item moves to the new
price, prorated), and the backend's ``change_plan`` runs once Stripe accepted it (not again for the event); a move to
a free plan is refused here (it means cancelling the subscription)."""
from __future__ import annotations

import pytest
from billinglib import PRICE_BIG, PRICE_PAID, flush, settle
from corelib import add_user, login
from flows import order_paid, pay, subscription_row

from panel.billing import handlers
from panel.billing.models import BillingTask
from panel.billing.stripe_api import BillingAPIError
from panel.extensions import db
from panel.models import AuditEntry


def test_the_operator_change_goes_through_billing(app, client, auth, paid_plans, router, upstream_client):
    from memory_backend import REMOTE

    service, _ = order_paid(client, auth)
    sub_id, _customer = pay(app, client, router, upstream_client, service)
    add_user("ops@example.com", role="operator")
    login(client, "ops@example.com")
    page = client.get(f"/admin/services/{service.id}").get_data(as_text=True)
    assert '<option value="mem-big">' in page and '<option value="mem-free">' in page
    refused = client.post(f"/admin/services/{service.id}/change-plan", data={"plan": "mem-free"},
                          follow_redirects=True).get_data(as_text=True)
    assert "billed through Stripe: a move to a free plan goes through cancelling its subscription" in refused
    r = client.post(f"/admin/services/{service.id}/change-plan", data={"plan": "mem-big"})
    assert r.status_code == 303
    assert subscription_row(service).requested_price == PRICE_BIG  # the row first
    settle(app)  # then the billing task (a job) makes the Stripe call
    sent = router.recorded("POST", f"/v1/subscriptions/{sub_id}")[-1]
    assert sent["proration_behavior"] == "create_prorations" and sent["items"][0]["price"] == PRICE_BIG
    flush(app, client, router)  # the operation it starts, then Stripe's events: the subscription's
    # created event (older than the change, delivered late) must not move the plan back
    # Stripe accepted the new price: the backend applies the plan, once (issue 9's rule)
    assert service.plan.slug == "mem-big"
    assert [c for c in REMOTE.calls if c[0] == "change_plan"] == [("change_plan", service.external_id)], REMOTE.calls
    requested = next(e for e in service.events if "requested by operator:ops@example.com" in (e.detail or ""))
    assert requested.detail == "plan change to mem-big (monthly) requested by operator:ops@example.com (prorated in Stripe)"
    entry = db.session.scalar(db.select(AuditEntry).where(AuditEntry.action == "service.change_plan"))
    assert entry.after == {"plan": "mem-big", "how": "through billing (prorated in Stripe)"}


# --------------------------------------------------------------------------- handlers._current_price
# Which price a subscription event is followed on. After a plan change the panel made itself (a
# succeeded ``change_prices`` task of this service), a late event may carry the old price, so Stripe's
# current subscription is read and its plan price wins; otherwise the event's price is taken without a
# call to Stripe.


@pytest.fixture
def paid(app, client, router, upstream_client, auth, paid_plans):
    """An active service on mem-paid, its subscription in Stripe on PRICE_PAID."""
    svc, _ = order_paid(client, auth)
    pay(app, client, router, upstream_client, svc)
    return svc, subscription_row(svc)


def task(service_id, kind: str = "change_prices", state: str = "succeeded") -> BillingTask:
    row = BillingTask(service_id=service_id, kind=kind, state=state, payload={})
    db.session.add(row)
    db.session.commit()
    return row


def subscription_reads(router) -> int:
    return sum(1 for method, path, _ in router.requests if method == "GET" and path.startswith("/v1/subscriptions/"))


def test_without_a_plan_change_of_our_own_the_events_price_is_followed_without_asking_stripe(paid, router):
    svc, sub = paid
    before = subscription_reads(router)
    assert handlers._current_price(sub, svc, PRICE_BIG) == PRICE_BIG
    assert subscription_reads(router) == before


@pytest.mark.parametrize("kind,state,whose", [
    ("change_prices", "queued", "own"),       # not done yet
    ("change_prices", "failed", "own"),
    ("cancel", "succeeded", "own"),           # another kind of task
    ("change_prices", "succeeded", "other"),  # another service's
])
def test_only_a_succeeded_plan_change_of_this_service_counts(paid, router, customer, plans, kind, state, whose):
    from panel.models import Service

    svc, sub = paid
    other = Service(user=customer, plan=plans["paid"], backend="memory", params={"name": "other"}, status="active")
    db.session.add(other)
    db.session.commit()
    task(svc.id if whose == "own" else other.id, kind, state)
    assert handlers._current_price(sub, svc, PRICE_BIG) == PRICE_BIG


def test_after_our_own_plan_change_stripes_current_price_wins(paid, router):
    svc, sub = paid
    task(svc.id)
    before = subscription_reads(router)
    assert handlers._current_price(sub, svc, PRICE_BIG) == PRICE_PAID  # the late event's price loses
    assert subscription_reads(router) == before + 1


def test_a_failed_read_is_a_billing_error_naming_the_call(paid, router):
    svc, sub = paid
    task(svc.id)
    router.fail_next(f"/v1/subscriptions/{sub.stripe_subscription_id}", 400)  # not retried by the SDK
    with pytest.raises(BillingAPIError) as caught:
        handlers._current_price(sub, svc, PRICE_BIG)
    assert str(caught.value).startswith("read the subscription: ")


def test_stripes_plan_item_wins_over_an_add_on_item_listed_before_it(paid, router, upstream_client):
    """Stripe lists items in the order they were added: after a plan change that replaced the plan's
    item, an add-on's item comes first, and the plan's price is still the one followed."""
    svc, sub = paid
    task(svc.id)
    sid = sub.stripe_subscription_id
    router.create_price("price_1TestAddonFirst", 200, "usd", interval="month", product=router.product)
    plan_item = upstream_client.v1.subscriptions.retrieve(sid)["items"]["data"][0]
    upstream_client.v1.subscription_items.create(params={
        "subscription": sid, "price": "price_1TestAddonFirst", "quantity": 1, "proration_behavior": "none"})
    upstream_client.v1.subscription_items.delete(plan_item["id"], params={"proration_behavior": "none"})
    upstream_client.v1.subscription_items.create(params={
        "subscription": sid, "price": PRICE_BIG, "quantity": 1, "proration_behavior": "none"})
    listed = [i["price"]["id"] for i in upstream_client.v1.subscriptions.retrieve(sid)["items"]["data"]]
    assert listed == ["price_1TestAddonFirst", PRICE_BIG]
    assert handlers._current_price(sub, svc, PRICE_PAID) == PRICE_BIG
