"""The projected charge of a service: what its next bill will say, as far as we can tell now.

* **Stripe-billed** (``billing_mode == "stripe"`` with a live subscription): Stripe's upcoming
  invoice, ``POST /v1/invoices/create_preview`` with ``subscription=<sub id>`` (the old ``GET
  /v1/invoices/upcoming`` is gone from Stripe's API). It carries the next period's licensed items,
  this period's metered usage (from the meter events reported so far), pending prorations, tax
  and the customer's balance. Read: ``amount_due``, ``total``, ``currency``, ``period_end``
  and ``lines.data[].{description, amount}``. Kept per process for
  ``PANEL_BILLING_ESTIMATE_CACHE_SECONDS`` (default 300) per subscription, so a page view is not
  a Stripe call each time; a failure is kept for a minute at most, and answers ``available:
  False`` (the customer reads "The estimate is not available right now"; the log has Stripe's
  message), never an error page.
* **Invoice-billed** (``billing_mode == "invoice"``): our own invoicing computation
  (``panel.billing.invoicing.service_lines``) for the current calendar month (UTC) up to today,
  a dry run: nothing is issued or numbered. VAT at the account's rate (``vat_for``) on the net.

Shape (``projected_charge``), money in integer minor units of ``currency``::

    {"source": "stripe" | "invoice", "available": True, "currency": "usd",
     "amount_due": 1734, "total": 1734, "subtotal": 1734, "vat": 0,
     "period_end": "2026-12-31T23:59:59+00:00",            # when the bill is made (ISO 8601 UTC)
     "lines": [{"description": "...", "amount": 500}, ...]}
    {"source": "stripe", "available": False}              # Stripe could not say

``None`` for a service with nothing to project (free, complimentary, no live subscription, no
Stripe configured).
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import date, datetime, time as dtime, timedelta, timezone

from flask import current_app

from panel.models import Service

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
FAILURE_SECONDS = 60.0  # a Stripe failure is asked again after at most this long
CACHE_SIZE = 2048


def _cache() -> dict:
    return current_app.extensions.setdefault("panel_billing", {}).setdefault("estimates", {})


def _ttl() -> float:
    return float(current_app.config.get("BILLING_ESTIMATE_CACHE_SECONDS", 300))


def forget(subscription_id: str | None = None) -> None:
    """Drop the cached estimate of ``subscription_id`` (every one with ``None``)."""
    with _LOCK:
        if subscription_id is None:
            _cache().clear()
        else:
            _cache().pop(subscription_id, None)


def _iso(seconds: int | None) -> str | None:
    if not seconds:
        return None
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).isoformat()


def stripe_estimate(subscription_id: str) -> dict:
    """Stripe's upcoming invoice of ``subscription_id`` in the shape of ``projected_charge``
    (``POST /v1/invoices/create_preview``), cached (see the module docstring). Never raises for a
    Stripe failure: answers ``{"source": "stripe", "available": False}``."""
    from panel.billing import stripe_api
    from panel.billing.stripe_api import BillingAPIError

    now = time.monotonic()
    with _LOCK:
        hit = _cache().get(subscription_id)
    if hit is not None:
        fetched, out = hit
        keep = _ttl() if out["available"] else min(_ttl(), FAILURE_SECONDS)
        if now - fetched < keep:
            return dict(out)
    try:
        invoice = stripe_api.call("preview the upcoming invoice", stripe_api.client().v1.invoices.create_preview,
                                  params={"subscription": subscription_id})
        lines = [{"description": line.get("description") or "", "amount": int(line.get("amount") or 0)}
                 for line in (invoice.get("lines") or {}).get("data") or []]
        total = int(invoice.get("total") or 0)
        subtotal = int(invoice.get("subtotal_excluding_tax") or invoice.get("subtotal") or 0)
        out = {"source": "stripe", "available": True, "currency": str(invoice.get("currency") or "").lower(),
               "amount_due": int(invoice.get("amount_due") if invoice.get("amount_due") is not None else total),
               "total": total, "subtotal": subtotal,
               "vat": int(invoice.get("total") or 0) - int(invoice.get("total_excluding_tax") or total),
               "period_end": _iso(invoice.get("period_end")), "lines": lines}
    except BillingAPIError as exc:
        log.warning("no upcoming invoice for subscription %s: %s", subscription_id, exc)
        out = {"source": "stripe", "available": False}
    with _LOCK:
        cache = _cache()
        if len(cache) >= CACHE_SIZE:
            cache.clear()
        cache[subscription_id] = (now, out)
    return dict(out)


def invoice_estimate(service: Service, today: date | None = None) -> dict | None:
    """Our own invoice of ``service`` for this calendar month so far (a dry run of
    ``invoicing.service_lines`` with the days from the 1st to ``today``, UTC, prorated over the
    whole month, and the usage up to today), VAT at the account's rate, in
    the shape of ``projected_charge``; ``None`` when nothing is owed yet. Lines in another
    currency than the first line's are left out of the sums (the real run issues one invoice per
    currency)."""
    from panel.billing import invoicing

    today = today or datetime.now(timezone.utc).date()
    first, last = invoicing.month_bounds(f"{today:%Y-%m}")
    lines = invoicing.service_lines(service, first, last, until=today)
    if not lines:
        return None
    currency = lines[0].currency
    lines = [line for line in lines if line.currency == currency]
    profile = service.user.profile
    rate, _note = invoicing.vat_for(getattr(profile, "country", ""), getattr(profile, "tax_id", ""))
    subtotal = sum(line.amount for line in lines)
    vat = invoicing.vat_amount(subtotal, rate)
    end = datetime.combine(last + timedelta(days=1), dtime.min, tzinfo=timezone.utc)
    return {"source": "invoice", "available": True, "currency": currency, "subtotal": subtotal, "vat": vat,
            "vat_rate": str(rate), "total": subtotal + vat, "amount_due": subtotal + vat,
            "period_end": end.isoformat(), "lines": [{"description": line.description, "amount": line.amount}
                                                     for line in lines]}


def projected_charge(service: Service) -> dict | None:
    """The projected charge of ``service`` (see the module docstring for the shape); ``None``
    when there is nothing to project."""
    from panel import billing
    from panel.billing.changes import live_subscription

    if service.billing_mode == "invoice":
        return invoice_estimate(service)
    if service.billing_mode != "stripe" or not billing.configured():
        return None
    sub = live_subscription(service)
    if sub is None or not sub.stripe_subscription_id:
        return None
    return stripe_estimate(sub.stripe_subscription_id)


def usage_report(service: Service) -> dict:
    """``GET /api/v1/services/<id>/usage/current``: the billable usage so far this period and the
    projected charge: ``{"period": {"start", "end"} (ISO 8601 UTC, the calendar month),
    "usage": [{"metric", "used", "free", "unit_price" (decimal strings), "currency", "amount"
    (minor units)}], "projected_charge": projected_charge(service)}``."""
    from panel.billing.routes import usage_so_far
    from panel.models.invoices import decimal_text

    now = datetime.now(timezone.utc)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    usage = [{"metric": u["metric"], "used": decimal_text(u["used"]), "free": decimal_text(u["free"]),
              "unit_price": decimal_text(u["unit_price"]), "currency": u["currency"], "amount": u["amount"]}
             for u in usage_so_far(service)]
    return {"period": {"start": start.isoformat(), "end": end.isoformat()}, "usage": usage,
            "projected_charge": projected_charge(service)}
