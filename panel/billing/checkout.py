"""Starting a paid order: the Stripe customer, the checkout session, and customer-side changes
(cancel at period end, change plan) that go through the Stripe API.

Nothing here provisions anything: the service waits in ``pending_payment`` until Stripe's
``checkout.session.completed`` event arrives (``panel.billing.handlers``).
"""
from __future__ import annotations

import logging
import time

from flask import current_app
from sqlalchemy.exc import IntegrityError

from panel import lifecycle
from panel.billing import stripe_api
from panel.billing.models import BillingCustomer, Subscription, from_unix
from panel.billing.stripe_api import BillingAPIError
from panel.extensions import db
from panel.models import Plan, Service, User

log = logging.getLogger(__name__)


def metadata_for(service: Service) -> dict[str, str]:
    """The metadata we put on checkout sessions and subscriptions (Stripe metadata values are
    strings): ``{"panel_service_id": "12", "panel_user_id": "3"}``."""
    return {"panel_service_id": str(service.id), "panel_user_id": str(service.user_id)}


def ensure_customer(user: User) -> str:
    """The Stripe customer id of ``user``, creating the customer on first use.

    Stripe ``POST /v1/customers`` with ``email`` and ``metadata[panel_user_id]``, idempotency key
    ``panel-customer-<user id>`` so two concurrent first orders make one customer. Commits the
    ``billing_customers`` row. Raises ``BillingAPIError``.
    """
    row = db.session.scalar(db.select(BillingCustomer).where(BillingCustomer.user_id == user.id))
    if row is not None:
        return row.stripe_customer_id
    client = stripe_api.client()
    customer = stripe_api.call("create the Stripe customer", client.v1.customers.create,
                               params={"email": user.email, "metadata": {"panel_user_id": str(user.id)}},
                               options={"idempotency_key": f"panel-customer-{user.id}"})
    row = BillingCustomer(user_id=user.id, stripe_customer_id=customer["id"])
    db.session.add(row)
    try:
        db.session.commit()
    except IntegrityError:  # a concurrent order stored it first
        db.session.rollback()
        row = db.session.scalar(db.select(BillingCustomer).where(BillingCustomer.user_id == user.id))
        if row is None:
            raise
    return row.stripe_customer_id


def _session_expiry_seconds() -> int:
    # Stripe accepts 30 minutes to 24 hours for a checkout session's expires_at.
    hours = float(current_app.config["PENDING_PAYMENT_HOURS"])
    return int(min(max(hours * 3600, 1800), 86400))


def start_checkout(user: User, plan: Plan, params: dict, *, actor: str, claim_key: str | None = None,
                   record_with=None):
    """Record the order (``pending_payment``) and open a Stripe checkout session for it.

    Stripe ``POST /v1/checkout/sessions``: ``mode=subscription``, one line item with the plan's
    price, the user's customer, ``client_reference_id`` = our service id, ``metadata`` and
    ``subscription_data.metadata`` = ``metadata_for(service)``, success/cancel URLs under
    ``PANEL_PUBLIC_URL``, ``expires_at`` after ``PANEL_PENDING_PAYMENT_HOURS`` (within Stripe's
    30 min..24 h).

    ``claim_key`` (the remote name the order holds, ``panel.orders.claim_for``) and
    ``record_with`` are passed on to ``lifecycle.create_service``. Returns ``panel.orders.OrderResult(service, checkout_url)``. Raises ``panel.orders.OrderError``
    (502 ``payment_provider_unavailable`` or 409 ``checkout_rejected``) when Stripe fails; the
    pending service is then cancelled, not left dangling.
    """
    from panel.orders import OrderError, OrderResult

    service = lifecycle.create_service(user, plan, params, actor=actor, claim_key=claim_key,
                                       record_with=record_with)
    public = current_app.config["PUBLIC_URL"]
    try:
        customer_id = ensure_customer(user)
        client = stripe_api.client()
        session = stripe_api.call(
            "create the checkout session", client.v1.checkout.sessions.create,
            params={
                "mode": "subscription",
                "customer": customer_id,
                "line_items": [{"price": plan.stripe_price, "quantity": 1}],
                "client_reference_id": str(service.id),
                "metadata": metadata_for(service),
                "subscription_data": {"metadata": metadata_for(service)},
                "success_url": f"{public}/services/{service.id}?checkout=success",
                "cancel_url": f"{public}/services/{service.id}?checkout=cancelled",
                "expires_at": int(time.time()) + _session_expiry_seconds(),
            },
            options={"idempotency_key": f"panel-checkout-{service.external_id}"})
    except BillingAPIError as exc:
        db.session.rollback()
        service = db.session.get(Service, service.id)
        lifecycle.cancel(service, actor="billing", detail=f"checkout could not start: {exc}")
        if exc.transient or exc.status is None or exc.status in (401, 403):
            raise OrderError(502, "payment_provider_unavailable",
                             "the payment provider is not reachable right now; nothing was charged, "
                             "please try again in a few minutes") from None
        raise OrderError(409, "checkout_rejected",
                         "this plan cannot be bought right now (the payment provider rejected it); "
                         "nothing was charged") from None
    sub = Subscription(service_id=service.id, user_id=user.id, stripe_customer_id=customer_id,
                       checkout_session_id=session["id"], stripe_price=plan.stripe_price, status="checkout")
    db.session.add(sub)
    lifecycle.note(service, f"checkout session {session['id']} opened", actor="billing", kind="billing")
    return OrderResult(service, session.get("url"))


def checkout_url(service: Service) -> str | None:
    """The URL of the open checkout session of ``service`` (Stripe ``GET
    /v1/checkout/sessions/{id}``), for an API client repeating its order; ``None`` when the
    session is complete, expired or unknown, or Stripe cannot be reached."""
    sub = subscription_for(service)
    if sub is None or not sub.checkout_session_id:
        return None
    try:
        session = stripe_api.call("read the checkout session", stripe_api.client().v1.checkout.sessions.retrieve,
                                  sub.checkout_session_id)
    except BillingAPIError:
        return None
    return session.get("url") if session.get("status") == "open" else None


def subscription_for(service: Service) -> Subscription | None:
    """The ``Subscription`` row of ``service`` (``None`` for free plans and old orders)."""
    return db.session.scalar(db.select(Subscription).where(Subscription.service_id == service.id))


def cancel_at_period_end(service: Service, *, actor: str) -> Subscription:
    """Cancel the service's subscription at the end of the paid period.

    Stripe ``POST /v1/subscriptions/{id}`` with ``cancel_at_period_end=true``; the service keeps
    running until then, and ``customer.subscription.deleted`` starts the end. Commits and appends
    a billing event. Raises ``lifecycle.LifecycleError`` (shown to the customer) when there is no
    live subscription or Stripe refuses.
    """
    sub = subscription_for(service)
    if sub is None or not sub.stripe_subscription_id or sub.deleted_at is not None:
        raise lifecycle.LifecycleError("this service has no running subscription to cancel")
    if sub.cancel_at_period_end:
        return sub
    try:
        updated = stripe_api.call("cancel the subscription", stripe_api.client().v1.subscriptions.update,
                                  sub.stripe_subscription_id, params={"cancel_at_period_end": True})
    except BillingAPIError as exc:
        raise lifecycle.LifecycleError(f"the cancellation did not go through: {exc}") from None
    sub.cancel_at_period_end = bool(updated.get("cancel_at_period_end", True))
    end = stripe_api.period_end_of(updated)
    if end:
        sub.current_period_end = from_unix(end)
    when = sub.ends_on.strftime("%Y-%m-%d") if sub.ends_on else "the end of the billing period"
    lifecycle.note(service, f"cancellation requested by {actor}: the service ends on {when}",
                   actor=actor, kind="billing")
    return sub


def change_plan_options(service: Service) -> list[Plan]:
    """The plans ``service`` may change to: active, paid, same backend, not its current plan."""
    rows = db.session.scalars(db.select(Plan).where(Plan.active.is_(True), Plan.backend == service.backend,
                                                    Plan.id != service.plan_id)
                              .order_by(Plan.sort_order, Plan.id)).all()
    return [p for p in rows if not p.is_free]


def change_plan(service: Service, new_plan: Plan, *, actor: str) -> Subscription:
    """Move the service's subscription to ``new_plan``'s price, prorated.

    Stripe ``GET /v1/subscriptions/{id}`` (for the item id), then ``POST /v1/subscriptions/{id}``
    with ``items[0][id]``, ``items[0][price]`` and ``proration_behavior=create_prorations``.
    The backend's ``change_plan`` runs when ``customer.subscription.updated`` shows the new price.
    Raises ``lifecycle.LifecycleError`` (shown to the customer).
    """
    sub = subscription_for(service)
    if sub is None or not sub.stripe_subscription_id or sub.deleted_at is not None:
        raise lifecycle.LifecycleError("this service has no running subscription")
    if service.status not in ("active", "suspended"):
        raise lifecycle.LifecycleError(f"cannot change the plan of a service that is {service.status}")
    if new_plan.id not in {p.id for p in change_plan_options(service)}:
        raise lifecycle.LifecycleError("that plan is not available for this service")
    client = stripe_api.client()
    try:
        current = stripe_api.call("read the subscription", client.v1.subscriptions.retrieve,
                                  sub.stripe_subscription_id)
        item = stripe_api.item_of(current)
        if not item.get("id"):
            raise lifecycle.LifecycleError("the subscription has no item to change")
        updated = stripe_api.call("change the subscription's price", client.v1.subscriptions.update,
                                  sub.stripe_subscription_id,
                                  params={"items": [{"id": item["id"], "price": new_plan.stripe_price}],
                                          "proration_behavior": "create_prorations"})
    except BillingAPIError as exc:
        raise lifecycle.LifecycleError(f"the plan change did not go through: {exc}") from None
    sub.requested_price = new_plan.stripe_price
    lifecycle.note(service, f"plan change to {new_plan.slug} requested by {actor} (prorated in Stripe)",
                   actor=actor, kind="billing")
    log.info("service %s: subscription %s moved to price %s", service.id, updated.get("id"),
             new_plan.stripe_price)
    return sub


def create_portal_session(user: User, return_url: str) -> str:
    """A fresh customer portal URL for ``user`` (Stripe ``POST /v1/billing_portal/sessions`` with
    ``customer`` and ``return_url``); sessions are short-lived, so make one per click.
    Raises ``LookupError`` when the user has no Stripe customer yet, ``BillingAPIError``."""
    row = db.session.scalar(db.select(BillingCustomer).where(BillingCustomer.user_id == user.id))
    if row is None:
        raise LookupError("no billing account yet: order a paid plan first")
    session = stripe_api.call("open the customer portal", stripe_api.client().v1.billing_portal.sessions.create,
                              params={"customer": row.stripe_customer_id, "return_url": return_url})
    return session["url"]
