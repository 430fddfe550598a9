"""Customer flows for the billing tests: order a paid plan, pay for it in (local)stripe."""
from __future__ import annotations

from billinglib import PRICE_PAID, deliver, make_event, settle

from panel.billing.models import Subscription
from panel.extensions import db
from panel.models import Service


def order_paid(client, auth, name="site1", plan="mem-paid"):
    """POST /api/v1/orders for a paid plan; returns (service, response body)."""
    r = client.post("/api/v1/orders", json={"plan": plan, "params": {"name": name}}, headers=auth)
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    return db.session.get(Service, body["service"]["id"]), body


def subscription_row(service) -> Subscription:
    db.session.expire_all()
    return db.session.scalar(db.select(Subscription).where(Subscription.service_id == service.id))


def real_subscription(upstream_client, service, price=PRICE_PAID) -> dict:
    """What Stripe Checkout makes when the customer pays: a card on the customer (localstripe)
    and a subscription (the stand-in) on ``price`` with our metadata."""
    row = subscription_row(service)
    customer = row.stripe_customer_id
    pm = upstream_client.v1.payment_methods.create(params={
        "type": "card", "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
    upstream_client.v1.payment_methods.attach(pm.id, params={"customer": customer})
    upstream_client.v1.customers.update(customer, params={"invoice_settings": {"default_payment_method": pm.id}})
    sub = upstream_client.v1.subscriptions.create(params={
        "customer": customer, "items": [{"price": price}],
        "metadata": {"panel_service_id": str(service.id), "panel_user_id": str(service.user_id)}})
    return sub.to_dict()


def pay(app, client, router, upstream_client, service, price=PRICE_PAID):
    """The customer pays: a real subscription, the checkout session completes, Stripe sends
    ``checkout.session.completed``; returns (subscription id, customer id)."""
    sub = real_subscription(upstream_client, service, price)
    row = subscription_row(service)
    session = router.complete_session(row.checkout_session_id, sub["id"])
    r = deliver(client, make_event("checkout.session.completed", session))
    assert r.status_code == 200, r.get_json()
    settle(app)
    db.session.refresh(service)
    assert service.status == "active", service.status_detail
    return sub["id"], sub["customer"]
