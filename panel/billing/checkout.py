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


# Stripe tax ID types by country (docs.stripe.com/billing/customer/tax-ids): EU VAT numbers are
# ``eu_vat``; a few others have their own type. Countries not listed send no tax ID.
EU = set("AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split())
TAX_ID_TYPES = {"CH": "ch_vat", "GB": "gb_vat", "NO": "no_vat", "AU": "au_abn", "CA": "ca_bn", "IS": "is_vat",
                "LI": "li_uid", "NZ": "nz_gst", "ZA": "za_vat", "IN": "in_gst", "SG": "sg_gst", "JP": "jp_cn",
                "GR": "eu_vat"}


def billing_profile(user: User) -> dict:
    """The Stripe customer fields from ``user``'s account profile (billing address and tax ID),
    ``{}`` when there is none: ``{"name", "address": {line1, line2, postal_code, city, state,
    country}, "tax_id_data": [{"type": "eu_vat", "value": ...}]}``, empty values left out.

    The profile (name, address, tax ID) is the account page's (``panel.models.Profile``, the
    accounts work); until that model exists this returns ``{}`` and Checkout collects the address.
    """
    from panel import models

    profile_model = getattr(models, "Profile", None)
    profile = None
    if profile_model is not None:
        profile = db.session.get(profile_model, user.id)
    if profile is None:
        profile = getattr(user, "profile", None)
    if profile is None:
        return {}
    out: dict = {}
    name = (getattr(profile, "company", "") or getattr(profile, "full_name", "") or "").strip()
    if name:
        out["name"] = name
    address = {"line1": getattr(profile, "address_line1", ""), "line2": getattr(profile, "address_line2", ""),
               "postal_code": getattr(profile, "postal_code", ""), "city": getattr(profile, "city", ""),
               "state": getattr(profile, "region", ""), "country": (getattr(profile, "country", "") or "").upper()}
    address = {k: v.strip() for k, v in address.items() if v and v.strip()}
    if address.get("country"):
        out["address"] = address
    tax_id = (getattr(profile, "tax_id", "") or "").replace(" ", "")
    country = address.get("country", "")
    kind = "eu_vat" if country in EU else TAX_ID_TYPES.get(country)
    if tax_id and kind:
        out["tax_id_data"] = [{"type": kind, "value": tax_id}]
    return out


def ensure_customer(user: User) -> str:
    """The Stripe customer id of ``user``, creating the customer on first use.

    Stripe ``POST /v1/customers`` with ``email``, ``metadata[panel_user_id]`` and, when Stripe Tax
    is on (``PANEL_STRIPE_TAX``), the profile's ``name``, ``address`` and ``tax_id_data``
    (``billing_profile``); idempotency key ``panel-customer-<user id>`` so two concurrent first
    orders make one customer. A customer made before gets the profile's name and address with
    ``POST /v1/customers/{id}`` (tax IDs are collected by Checkout then). Commits the
    ``billing_customers`` row. Raises ``BillingAPIError``.
    """
    tax = bool(current_app.config.get("STRIPE_TAX"))
    profile = billing_profile(user) if tax else {}
    client = stripe_api.client()
    row = db.session.scalar(db.select(BillingCustomer).where(BillingCustomer.user_id == user.id))
    if row is not None:
        update = {k: v for k, v in profile.items() if k in ("name", "address")}
        if update:
            stripe_api.call("update the Stripe customer", client.v1.customers.update, row.stripe_customer_id,
                            params=update)
        return row.stripe_customer_id
    params = {"email": user.email, "metadata": {"panel_user_id": str(user.id)}, **profile}
    customer = stripe_api.call("create the Stripe customer", client.v1.customers.create, params=params,
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


def line_items(plan: Plan, term: str | None, addons) -> list[dict]:
    """Checkout's ``line_items``: the plan's price for ``term``, then one per paid add-on (each
    quantity 1). ``addons`` are ``ServiceAddon`` rows or ``Addon``\ s."""
    items = [{"price": plan.price_for(term), "quantity": 1}]
    for row in addons:
        addon = getattr(row, "addon", row)
        price = addon.price_for(term)
        if price:
            items.append({"price": price, "quantity": 1})
    return items


def session_options(customer_id: str) -> dict:
    """Checkout parameters for tax and promotion codes.

    ``PANEL_STRIPE_TAX=1``: ``automatic_tax[enabled]=true``, ``billing_address_collection=required``,
    ``tax_id_collection[enabled]=true`` and ``customer_update[address|name]=auto`` (Checkout saves
    what the customer types on the Stripe customer, which Stripe Tax and tax IDs need).
    ``PANEL_STRIPE_PROMOTION_CODES=1``: ``allow_promotion_codes=true``.
    """
    out: dict = {}
    if current_app.config.get("STRIPE_TAX"):
        out.update(automatic_tax={"enabled": True}, billing_address_collection="required",
                   tax_id_collection={"enabled": True}, customer_update={"address": "auto", "name": "auto"})
    if current_app.config.get("STRIPE_PROMOTION_CODES"):
        out["allow_promotion_codes"] = True
    return out


def open_session(service: Service, customer_id: str, items: list[dict], *, metadata: dict | None = None,
                 key: str) -> dict:
    """Stripe ``POST /v1/checkout/sessions`` (``mode=subscription``) for ``service``: ``items``,
    the customer, ``client_reference_id`` = our service id, ``metadata`` and
    ``subscription_data.metadata`` = ``metadata_for(service)`` plus ``metadata``, success/cancel URLs
    under ``PANEL_PUBLIC_URL``, ``expires_at`` after ``PANEL_PENDING_PAYMENT_HOURS`` (within Stripe's
    30 min..24 h), tax and promotion options (``session_options``); idempotency key ``key``.
    Raises ``BillingAPIError``."""
    public = current_app.config["PUBLIC_URL"]
    meta = {**metadata_for(service), **(metadata or {})}
    params = {
        "mode": "subscription",
        "customer": customer_id,
        "line_items": items,
        "client_reference_id": str(service.id),
        "metadata": meta,
        "subscription_data": {"metadata": meta},
        "success_url": f"{public}/services/{service.id}?checkout=success",
        "cancel_url": f"{public}/services/{service.id}?checkout=cancelled",
        "expires_at": int(time.time()) + _session_expiry_seconds(),
        **session_options(customer_id),
    }
    return stripe_api.call("create the checkout session", stripe_api.client().v1.checkout.sessions.create,
                           params=params, options={"idempotency_key": key})


def checkout_error(exc: BillingAPIError):
    """The ``OrderError`` a failed Checkout start answers: 502 ``payment_provider_unavailable``
    (Stripe unreachable, 5xx, our key refused) or 409 ``checkout_rejected`` (Stripe refused the
    request, e.g. an unknown or inactive price); nothing was charged either way."""
    from panel.orders import OrderError

    if exc.transient or exc.status is None or exc.status in (401, 403):
        return OrderError(502, "payment_provider_unavailable",
                          "the payment provider is not reachable right now; nothing was charged, "
                          "please try again in a few minutes")
    return OrderError(409, "checkout_rejected",
                      "this plan cannot be bought right now (the payment provider rejected it); "
                      "nothing was charged")


def start_checkout(user: User, plan: Plan, params: dict, *, actor: str, claim_key: str | None = None,
                   term: str | None = None, addons=()):
    """Record the order (``pending_payment``, with its ``term`` and ``addons`` rows) and open a
    Stripe checkout session for it with one line item per price (``line_items``) and the metadata
    ``panel_term`` (see ``open_session``).

    ``claim_key`` is the remote name the order holds (``panel.orders.claim_for``), passed on to
    ``lifecycle.create_service``. Returns ``panel.orders.OrderResult(service, checkout_url)``.
    Raises ``panel.orders.OrderError`` (``checkout_error``) when Stripe fails; the pending service
    is then cancelled, not left dangling.
    """
    from panel.orders import OrderResult

    term = term or plan.default_term
    addons = list(addons)
    items = line_items(plan, term, addons)
    service = lifecycle.create_service(user, plan, params, actor=actor, claim_key=claim_key, billing_mode="stripe",
                                       term=term, addons=addons)
    try:
        customer_id = ensure_customer(user)
        session = open_session(service, customer_id, items, metadata={"panel_term": term or ""},
                               key=f"panel-checkout-{service.external_id}")
    except BillingAPIError as exc:
        db.session.rollback()
        service = db.session.get(Service, service.id)
        lifecycle.cancel(service, actor="billing", detail=f"checkout could not start: {exc}")
        raise checkout_error(exc) from None
    sub = Subscription(service_id=service.id, user_id=user.id, stripe_customer_id=customer_id,
                       checkout_session_id=session["id"], stripe_price=plan.price_for(term), status="checkout",
                       term=term)
    db.session.add(sub)
    lifecycle.note(service, f"checkout session {session['id']} opened ({term}, {len(items)} line item(s))",
                   actor="billing", kind="billing")
    return OrderResult(service, session.get("url"))


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
