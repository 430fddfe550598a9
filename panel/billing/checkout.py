"""Starting a paid order: the Stripe customer (with the profile's billing address and tax ID when
Stripe Tax is on), the checkout session (one line item per price, tax and promotion-code options)
and the customer portal. Changes to a running subscription are in ``panel.billing.changes``.

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
from panel.billing.models import BillingCustomer, Subscription
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

    The profile is the account page's (``panel.models.Profile``: name, company, address, ISO
    country code, tax ID checked with python-stdnum); without one Checkout collects the address.
    """
    from panel.models import Profile

    profile = db.session.get(Profile, user.id)
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


def metered_prices(plan: Plan | None, term: str | None) -> dict[str, str]:
    """``{metric: Stripe price id}`` of the plan's metered prices (``metered.<metric>.price``, a
    recurring price with ``recurring.usage_type=metered`` tied to the metric's meter) that go on a
    subscription on ``term``: those whose billing interval (price cache, read from Stripe once)
    is the term's, since every item of a Stripe subscription shares one interval. A price Stripe
    does not give is kept (Checkout then refuses it, and ``panel stripe check`` names it)."""
    from panel.billing.invoicing import metered_rates
    from panel.billing.prices import cached
    from panel.models.catalog import term_of

    out = {}
    for metric, rate in metered_rates(plan).items():
        price = rate.get("price")
        if not price:
            continue
        row = cached(price)
        if row is not None and row.interval and term and term_of(row.interval, row.interval_count or 1) != term:
            continue
        out[metric] = price
    return out


def line_items(plan: Plan, term: str | None, addons) -> list[dict]:
    """Checkout's ``line_items``: the plan's price for ``term`` (quantity 1), one per paid add-on
    (quantity 1), then one per metered price (``metered_prices``) WITHOUT ``quantity``: Stripe
    refuses a quantity on a metered price, whose usage comes from its meter's events. ``addons``
    are ``ServiceAddon`` rows or ``Addon`` objects."""
    items = [{"price": plan.price_for(term), "quantity": 1}]
    for row in addons:
        addon = getattr(row, "addon", row)
        price = addon.price_for(term)
        if price:
            items.append({"price": price, "quantity": 1})
    for price in metered_prices(plan, term).values():
        items.append({"price": price})
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
                   term: str | None = None, addons=(), record_with=None):
    """Record the order (``pending_payment``, with its ``term`` and ``addons`` rows) and open a
    Stripe checkout session for it with one line item per price (``line_items``) and the metadata
    ``panel_term`` (see ``open_session``).

    ``claim_key`` (the remote name the order holds, ``panel.orders.claim_for``) and ``record_with``
    are passed on to ``lifecycle.create_service``. Returns
    ``panel.orders.OrderResult(service, checkout_url)``. Raises ``panel.orders.OrderError``
    (``checkout_error``) when Stripe fails; the pending service is then cancelled, not left dangling.
    """
    from panel.orders import OrderResult

    term = term or plan.default_term
    addons = list(addons)
    items = line_items(plan, term, addons)
    service = lifecycle.create_service(user, plan, params, actor=actor, claim_key=claim_key, billing_mode="stripe",
                                       term=term, addons=addons, record_with=record_with)
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
