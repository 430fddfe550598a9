"""Prices: the local cache of Stripe's Price and Product objects, and how amounts are shown.

Stripe is the source of truth: a plan or add-on names a price id per term, and the amount,
currency, interval and tax behaviour are read from Stripe, never typed twice. They are kept in
``stripe_prices``/``stripe_products`` and refreshed

* by ``price.created|updated|deleted`` and ``product.created|updated|deleted`` events (an event
  older than the state already stored is skipped, so out-of-order deliveries cannot undo a newer
  change; a deleted price stays deleted);
* by ``panel stripe sync`` (``sync()``): every price in the Stripe account (``GET /v1/prices``,
  paginated, products expanded) plus any price the catalog names that the list did not show;
* on first use of a price the cache has never seen (one ``GET /v1/prices/{id}``).

Amounts are integer minor units of an ISO 4217 currency; they are shown with Babel
(``format_money``), converted exactly through ``Decimal`` with Stripe's own minor-unit rules
(zero-decimal currencies such as JPY, three-decimal ones such as KWD).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal

from flask import current_app, has_request_context, request
from flask_babel import lazy_gettext as _l

from panel import lifecycle
from panel.billing import stripe_api
from panel.billing.handlers import EventContext, handles
from panel.billing.models import StripePrice, StripeProduct
from panel.billing.stripe_api import BillingAPIError
from panel.extensions import db
from panel.models import Addon, Plan
from panel.models.base import utcnow
from panel.models.catalog import TERMS, term_of

log = logging.getLogger(__name__)

# Stripe "Zero-decimal currencies" and "Three-decimal currencies" (docs.stripe.com/currencies).
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())

TERM_LABELS = {"monthly": _l("Monthly"), "quarterly": _l("Quarterly"), "semiannual": _l("Every 6 months"),
               "yearly": _l("Yearly")}
TAX_NOTES = {"inclusive": _l("incl. tax"), "exclusive": _l("excl. tax")}
DEFAULT_LOCALE = "en_US"


# --------------------------------------------------------------------------- money

def minor_exponent(currency: str) -> int:
    """Digits after the decimal point in Stripe's minor unit of ``currency`` (``usd`` 2, ``jpy`` 0,
    ``kwd`` 3)."""
    code = (currency or "").lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def to_decimal(amount_minor: int, currency: str) -> Decimal:
    """``amount_minor`` (an int in Stripe's minor unit) as an exact ``Decimal`` of the major unit:
    ``to_decimal(1250, "usd") == Decimal("12.50")``."""
    return Decimal(int(amount_minor)).scaleb(-minor_exponent(currency))


def display_locale() -> str:
    """The locale amounts are shown in: Flask-Babel's when it is set up, else the best of the
    request's ``Accept-Language`` that Babel knows, else ``en_US``."""
    try:  # Flask-Babel, once the panel sets it up
        from flask_babel import get_locale

        loc = get_locale()
        if loc is not None:
            return str(loc)
    except Exception:  # not installed or not initialised
        pass
    if has_request_context():
        from babel import Locale, UnknownLocaleError

        for value, _quality in request.accept_languages:
            try:
                return str(Locale.parse(value.replace("-", "_")))
            except (ValueError, UnknownLocaleError):
                continue
    return DEFAULT_LOCALE


def format_money(amount_minor: int, currency: str, locale: str | None = None) -> str:
    """``amount_minor`` of ``currency`` for people: ``format_money(1250, "usd")`` -> ``"$12.50"``,
    ``format_money(1250, "chf", "de_CH")`` -> ``"CHF 12.50"``, ``(500, "jpy")`` -> ``"¥500"``."""
    from babel.numbers import format_currency

    code = (currency or "").upper()
    return format_currency(to_decimal(amount_minor, code), code, locale=locale or display_locale())


def every(interval: str | None, count: int | None) -> str:
    """``"month"``, ``"3 months"``, ``"year"`` for a recurring interval."""
    if not interval:
        return ""
    count = int(count or 1)
    return interval if count == 1 else f"{count} {interval}s"


# --------------------------------------------------------------------------- the cache

def _newer(row, created: int | None) -> bool:
    """Whether an event made at ``created`` may overwrite ``row`` (a sync, ``created`` None, may)."""
    return created is None or row.last_event_created is None or created >= row.last_event_created


def store_product(obj: dict, created: int | None = None, *, deleted: bool = False) -> StripeProduct | None:
    """Upsert a Stripe Product object (``created``: the event's time, ``None`` for a sync).
    Returns the row, or ``None`` when the state stored is newer. Does not commit."""
    if not isinstance(obj, dict) or not obj.get("id"):
        return None
    row = db.session.get(StripeProduct, obj["id"])
    if row is None:
        row = StripeProduct(id=obj["id"])
        db.session.add(row)
    elif not _newer(row, created) or (row.deleted and created is not None):
        return None
    row.name = str(obj.get("name") or "")[:255]
    row.active = bool(obj.get("active", True))
    row.deleted = deleted or bool(obj.get("deleted"))
    if created is not None:
        row.last_event_created = created
    row.synced_at = utcnow()
    return row


def store_price(obj: dict, created: int | None = None, *, deleted: bool = False) -> StripePrice | None:
    """Upsert a Stripe Price object (see ``store_product``); an expanded ``product`` is stored too."""
    if not isinstance(obj, dict) or not obj.get("id"):
        return None
    product = obj.get("product")
    if isinstance(product, dict):
        store_product(product, created)
        product = product.get("id")
    row = db.session.get(StripePrice, obj["id"])
    if row is None:
        row = StripePrice(id=obj["id"])
        db.session.add(row)
    elif not _newer(row, created) or (row.deleted and created is not None):
        return None
    recurring = obj.get("recurring") or {}
    amount = obj.get("unit_amount")
    decimal = obj.get("unit_amount_decimal")
    row.product_id = product
    row.active = bool(obj.get("active", True))
    row.deleted = deleted or bool(obj.get("deleted"))
    row.currency = str(obj.get("currency") or "usd").lower()[:3]
    row.unit_amount = int(amount) if amount is not None else None
    row.unit_amount_decimal = Decimal(str(decimal)) if decimal not in (None, "") else None
    row.type = obj.get("type") or ("recurring" if recurring else "one_time")
    row.interval = recurring.get("interval")
    row.interval_count = int(recurring["interval_count"]) if recurring.get("interval_count") else (1 if recurring else None)
    row.usage_type = recurring.get("usage_type")
    row.tax_behavior = obj.get("tax_behavior")
    row.nickname = obj.get("nickname")
    if created is not None:
        row.last_event_created = created
    row.synced_at = utcnow()
    return row


def cached(price_id: str | None, *, fetch: bool = True) -> StripePrice | None:
    """The cached price ``price_id``; a price never seen is read from Stripe once (``fetch``) when
    billing is configured. ``None`` when unknown (or Stripe cannot be reached)."""
    if not price_id:
        return None
    row = db.session.get(StripePrice, price_id)
    if row is not None or not fetch or not current_app.config.get("STRIPE_SECRET_KEY"):
        return row
    try:
        obj = stripe_api.call("read the price", stripe_api.client().v1.prices.retrieve, price_id,
                              params={"expand": ["product"]})
    except BillingAPIError as exc:
        log.info("price %s is not in the cache and Stripe did not give it: %s", price_id, exc)
        return None
    row = store_price(obj)
    lifecycle.commit()
    return row


@dataclass
class SyncReport:
    """What ``sync`` did: price ids stored, and catalog prices Stripe does not know (missing)."""

    stored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def catalog_price_ids() -> list[str]:
    """Every price id the catalog names (plans, their metered prices and add-ons, active or not),
    sorted."""
    ids: set[str] = set()
    for plan in db.session.scalars(db.select(Plan)):
        ids.update(plan.term_prices.values())
        ids.update(str(spec["price"]) for spec in (plan.metered or {}).values() if spec.get("price"))
    for addon in db.session.scalars(db.select(Addon)):
        ids.update(addon.term_prices.values())
    return sorted(ids)


def sync() -> SyncReport:
    """Refresh the cache from Stripe: ``GET /v1/prices?limit=100&expand[]=data.product`` page by page
    (``starting_after``), then ``GET /v1/prices/{id}`` for catalog prices the list did not show. A
    catalog price Stripe answers 404 for is marked deleted. Commits. Raises ``BillingAPIError``
    when Stripe cannot be reached."""
    client = stripe_api.client()
    report = SyncReport()
    after = None
    for _page in range(1000):  # at most 100 000 prices
        params = {"limit": 100, "expand": ["data.product"]}
        if after:
            params["starting_after"] = after
        page = stripe_api.call("list the prices", client.v1.prices.list, params=params)
        for obj in page.get("data") or []:
            if store_price(obj) is not None:
                report.stored.append(obj["id"])
        data = page.get("data") or []
        if not page.get("has_more") or not data:
            break
        after = data[-1]["id"]
    for price_id in catalog_price_ids():
        if price_id in report.stored:
            continue
        try:
            obj = stripe_api.call("read the price", client.v1.prices.retrieve, price_id,
                                  params={"expand": ["product"]})
        except BillingAPIError as exc:
            if exc.status == 404 or exc.code == "resource_missing":
                report.missing.append(price_id)
                row = db.session.get(StripePrice, price_id)
                if row is not None:
                    row.deleted = True
                continue
            raise
        store_price(obj)
        report.stored.append(price_id)
    lifecycle.commit()
    return report


# --------------------------------------------------------------------------- events

@handles("price.created", "price.updated", "price.deleted")
def price_event(obj: dict, ctx: EventContext) -> str:
    """Keep the cached price as Stripe describes it (older events are skipped; deleted stays deleted)."""
    row = store_price(obj, ctx.created, deleted=ctx.type == "price.deleted")
    lifecycle.commit()
    if row is None:
        return f"skipped: the cached price {obj.get('id')} is newer than this event"
    return f"price {row.id} cached ({'deleted' if row.deleted else 'active' if row.active else 'inactive'})"


@handles("product.created", "product.updated", "product.deleted")
def product_event(obj: dict, ctx: EventContext) -> str:
    """Keep the cached product (its name and whether it is active)."""
    row = store_product(obj, ctx.created, deleted=ctx.type == "product.deleted")
    lifecycle.commit()
    if row is None:
        return f"skipped: the cached product {obj.get('id')} is newer than this event"
    return f"product {row.id} cached ({'deleted' if row.deleted else 'active' if row.active else 'inactive'})"


# --------------------------------------------------------------------------- offers

def tax_behavior(row: StripePrice) -> str:
    """``inclusive`` or ``exclusive``: the price's own, else ``PANEL_STRIPE_TAX_BEHAVIOR``."""
    if row.tax_behavior in ("inclusive", "exclusive"):
        return row.tax_behavior
    return current_app.config.get("STRIPE_TAX_BEHAVIOR") or "exclusive"


def tax_note(row: StripePrice) -> str | None:
    """``"incl. tax"`` / ``"excl. tax"`` when Stripe Tax is on (``PANEL_STRIPE_TAX``), else ``None``."""
    if not current_app.config.get("STRIPE_TAX"):
        return None
    return str(TAX_NOTES[tax_behavior(row)])


def offer(price_id: str | None, term: str | None = None, *, locale: str | None = None) -> dict | None:
    """What a price looks like to a customer, or ``None`` when it cannot be sold now (unknown,
    inactive, not recurring, or its interval does not match ``term``)::

        {"term": "yearly", "price": "price_...", "unit_amount": 12000, "currency": "usd",
         "amount": "$120.00", "interval": "year", "interval_count": 1, "every": "year",
         "display": "$120.00 / year", "tax_behavior": "exclusive", "tax": "excl. tax" | None}
    """
    row = cached(price_id)
    if row is None or not row.sellable:
        return None
    if term is not None and term_of(row.interval, row.interval_count) != term:
        return None
    amount = format_money(row.unit_amount, row.currency, locale)
    words = every(row.interval, row.interval_count)
    return {"term": term or term_of(row.interval, row.interval_count), "price": row.id,
            "unit_amount": row.unit_amount, "currency": row.currency, "amount": amount,
            "interval": row.interval, "interval_count": row.interval_count, "every": words,
            "display": f"{amount} / {words}", "tax_behavior": tax_behavior(row), "tax": tax_note(row)}


def offers(item: Plan | Addon, *, locale: str | None = None) -> dict[str, dict]:
    """``{term: offer}`` for the terms of a plan or add-on that can be sold now, in ``TERMS`` order."""
    out = {}
    for term, price_id in item.term_prices.items():
        found = offer(price_id, term, locale=locale)
        if found is not None:
            out[term] = found
    return out


def plan_json(plan: Plan, *, locale: str | None = None) -> dict:
    """The API's view of a plan with its prices per term and its add-ons (each with the terms it
    is offered on and their prices)."""
    from panel.storefront import addons_of

    out = plan.to_json()
    plan_offers = offers(plan, locale=locale)
    out["prices"] = plan_offers
    out["terms"] = list(plan_offers)
    out["addons"] = []
    for addon in addons_of(plan):
        item = addon.to_json()
        addon_offers = offers(addon, locale=locale)
        item["prices"] = addon_offers
        item["terms"] = [t for t in (plan_offers or {None: None}) if addon.is_free or t in addon_offers]
        out["addons"].append(item)
    return out


def term_words(term: str | None) -> str:
    """``"Yearly"`` for ``"yearly"`` (the term switch's labels, translated)."""
    return str(TERM_LABELS.get(term or "", (term or "").capitalize()))


def terms_text(terms) -> str:
    """``"monthly or yearly"``: a list of terms in words (translated)."""
    from flask_babel import gettext

    return gettext(" or ").join(term_words(t).lower() for t in terms)


__all__ = ["TERMS", "format_money", "to_decimal", "minor_exponent", "display_locale", "store_price",
           "store_product", "cached", "sync", "offer", "offers", "plan_json", "tax_note"]
