"""Helpers for the billing tests: constants and signed Stripe events built from Stripe's
fixture shapes (a unique module name, like tests/corelib.py)."""
from __future__ import annotations

import json
import secrets
import time

from corelib import wait_jobs
from stripe_standin import fixture

from panel.extensions import db

WHSEC = "whsec_test_" + "b" * 24
SECRET_KEY = "sk_test_billing_" + "a" * 16
PUBLIC = "https://panel.example.test"
PRICE_PAID = "price_1Test"
PRICE_BIG = "price_1TestBig"



def make_event(type_: str, obj: dict, created: int | None = None, event_id: str | None = None) -> dict:
    """A Stripe event (fixture ``event`` shape) carrying ``obj`` as ``data.object``."""
    event = fixture("event")
    event.update(id=event_id or "evt_" + secrets.token_hex(12), type=type_,
                 created=int(created if created is not None else time.time()),
                 livemode=False, pending_webhooks=1, api_version="2025-09-30.clover")
    event["data"] = {"object": obj}
    return event


def sign(payload: str, secret: str = WHSEC, timestamp: int | None = None) -> str:
    """Stripe's ``Stripe-Signature`` header: ``t=<ts>,v1=<hmac_sha256(secret, "<ts>.<payload>")>``."""
    import hashlib
    import hmac

    ts = int(timestamp if timestamp is not None else time.time())
    mac = hmac.new(secret.encode(), f"{ts}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def deliver(client, event: dict | str | bytes, *, secret: str = WHSEC, timestamp: int | None = None,
            header: str | None = None):
    """POST ``event`` to /stripe/webhook as Stripe would (signed unless ``header`` is given)."""
    payload = event if isinstance(event, (str, bytes)) else json.dumps(event)
    text = payload.decode() if isinstance(payload, bytes) else payload
    headers = {"Content-Type": "application/json"}
    sig = header if header is not None else sign(text, secret, timestamp)
    if sig:
        headers["Stripe-Signature"] = sig
    return client.post("/stripe/webhook", data=payload, headers=headers)


def checkout_session_obj(service, *, subscription: str | None, customer: str | None,
                         payment_status: str = "paid", session_id: str | None = None) -> dict:
    """A completed ``checkout.session`` (fixture shape) for our ``service``."""
    session = fixture("checkout.session")
    session.update(id=session_id or "cs_test_" + secrets.token_hex(10), mode="subscription",
                   client_reference_id=str(service.id), customer=customer, subscription=subscription,
                   metadata={"panel_service_id": str(service.id), "panel_user_id": str(service.user_id)},
                   payment_status=payment_status, status="complete", payment_intent=None,
                   success_url=f"{PUBLIC}/services/{service.id}?checkout=success",
                   cancel_url=f"{PUBLIC}/services/{service.id}?checkout=cancelled")
    return session


def subscription_obj(service, sub_id: str, *, customer: str = "cus_test", price: str = PRICE_PAID,
                     status: str = "active", cancel_at_period_end: bool = False,
                     period_end: int | None = None) -> dict:
    """A ``subscription`` (fixture shape): one item on ``price``, our metadata."""
    sub = fixture("subscription")
    period_end = period_end or int(time.time()) + 30 * 86400
    item = sub["items"]["data"][0]
    item["price"]["id"] = price
    item["plan"]["id"] = price
    item.update(id="si_" + sub_id[4:], subscription=sub_id, current_period_end=period_end,
                current_period_start=period_end - 30 * 86400)
    sub["items"]["url"] = f"/v1/subscription_items?subscription={sub_id}"
    sub.update(id=sub_id, customer=customer, status=status, cancel_at_period_end=cancel_at_period_end,
               cancel_at=period_end if cancel_at_period_end else None, canceled_at=None, ended_at=None,
               trial_end=None, trial_start=None, pause_collection=None,
               metadata={"panel_service_id": str(service.id), "panel_user_id": str(service.user_id)})
    return sub


def invoice_obj(service, sub_id: str, *, customer: str = "cus_test", status: str = "open",
                amount: int = 500, invoice_id: str | None = None) -> dict:
    """An ``invoice`` (fixture shape) of subscription ``sub_id``."""
    inv = fixture("invoice")
    iid = invoice_id or "in_" + secrets.token_hex(10)
    inv.update(id=iid, customer=customer, status=status, amount_due=amount,
               amount_paid=amount if status == "paid" else 0, amount_remaining=0 if status == "paid" else amount,
               billing_reason="subscription_cycle", number=f"HP-{iid[-6:].upper()}", subscription=None,
               hosted_invoice_url=f"https://invoice.stripe.test/i/{iid}", attempt_count=1, created=int(time.time()))
    inv["parent"] = {"quote_details": None, "type": "subscription_details",
                     "subscription_details": {"subscription": sub_id,
                                              "metadata": {"panel_service_id": str(service.id),
                                                           "panel_user_id": str(service.user_id)}}}
    return inv


def settle(app):
    """Wait for event jobs and the operations they started."""
    wait_jobs(app)
    wait_jobs(app)
    db.session.expire_all()


def webhook_sink(client):
    """A ``StripeRouter.deliver`` sink posting each signed event to the app's /stripe/webhook."""
    def post(payload, header):
        r = client.post("/stripe/webhook", data=payload,
                        headers={"Content-Type": "application/json", "Stripe-Signature": header})
        assert r.status_code == 200, r.get_data(as_text=True)
        return r
    return post


def flush(app, client, router, rounds: int = 5):
    """Deliver every event the stand-in queued (signed, in order) and wait for the jobs, until the
    stand-in has nothing more to send (jobs may call Stripe and queue more)."""
    for _ in range(rounds):
        settle(app)
        if not router.outbox:
            return
        router.deliver(webhook_sink(client))
    settle(app)


# The terms catalog of the billing II tests (plans on several terms, add-ons) and its prices.
TERMS_CATALOG = """
plans:
  - slug: mem-free
    name: Memory free
    backend: memory
    options: {size_mib: 128}
    addons: [backups]
    max_per_customer: 1
  - slug: mem-pro
    name: Memory pro
    backend: memory
    options: {size_mib: 1024}
    prices: {monthly: price_pro_m, quarterly: price_pro_q, yearly: price_pro_y}
    addons: [extra-ram, backups, priority]
    on_cancel: downgrade:mem-free
  - slug: mem-max
    name: Memory max
    backend: memory
    options: {size_mib: 4096}
    prices: {monthly: price_max_m, yearly: price_max_y}
    addons: [extra-ram]
addons:
  - slug: extra-ram
    name: 2 GB more RAM
    prices: {monthly: price_ram_m, yearly: price_ram_y}
    options: {size_mib: "+2048"}
  - slug: backups
    name: Backups
    options: {}
  - slug: priority
    name: Priority support
    prices: {monthly: price_prio_m}
    options: {}
"""

# (price id, unit_amount in cents, interval, interval_count)
TERM_PRICES = [("price_pro_m", 1200, "month", 1), ("price_pro_q", 3300, "month", 3), ("price_pro_y", 12000, "year", 1),
               ("price_max_m", 3000, "month", 1), ("price_max_y", 30000, "year", 1),
               ("price_ram_m", 400, "month", 1), ("price_ram_y", 4000, "year", 1), ("price_prio_m", 900, "month", 1)]


def load_term_catalog(router) -> None:
    """Put ``TERM_PRICES`` in the Stripe stand-in, import ``TERMS_CATALOG`` and read the prices into
    the cache (``panel stripe sync``); needs an app context."""
    from panel.billing.prices import sync
    from panel.catalog import import_catalog

    for price, amount, interval, count in TERM_PRICES:
        router.create_price(price, amount, "usd", interval=interval, interval_count=count, product=router.product)
    router.reset()
    import_catalog(TERMS_CATALOG)
    sync()
