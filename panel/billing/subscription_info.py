"""``GET /api/v1/services/<id>/subscription``: seed 003's getSubscriptionInfo for one service."""
from __future__ import annotations

from panel import addons as addon_state
from panel.billing.changes import change_options, live_subscription, subscription_for
from panel.billing.models import aware
from panel.billing.prices import offer, offers
from panel.models import Service


def _iso(value) -> str | None:
    value = aware(value)
    return value.isoformat() if value is not None else None


def subscription_json(service: Service) -> dict:
    """How ``service`` is billed::

        {"plan": slug, "term": "yearly" | None, "billing_mode": "stripe" | "free" | "complimentary" | "invoice",
         "status": Stripe's subscription status, or the billing mode when there is no subscription,
         "price": offer | None, "renews_at": ISO 8601 | None, "ends_at": ISO 8601 | None,
         "cancel_at_period_end": bool, "then": "terminate" | "downgrade:<slug>" | ... | None,
         "notice": sentence | None,
         "addons": [{"addon", "name", "state", "price": offer | None}],
         "addon_events": [{"addon", "kind", "at", "price", "term", "unit_amount", "currency", ...}],
         "available": [{"plan", "name", "free", "terms": [...], "prices": {term: offer}}]}

    Offers are ``panel.billing.prices.offer`` (amounts in minor units and as display text).
    """
    sub = subscription_for(service)
    live = live_subscription(service)
    plan = service.plan
    price_id = (sub.stripe_price if sub is not None and sub.stripe_price else None) or plan.price_for(service.term)
    status = sub.status if sub is not None and service.billing_mode == "stripe" else service.billing_mode
    out = {
        "service": service.id,
        "plan": plan.slug,
        "term": service.term,
        "billing_mode": service.billing_mode,
        "status": status,
        "price": offer(price_id) if price_id and service.billing_mode != "free" else None,
        "renews_at": _iso(sub.renews_on) if live is not None else None,
        "ends_at": _iso(sub.ends_on) if live is not None else None,
        "cancel_at_period_end": bool(live is not None and sub.cancel_at_period_end),
        "then": (sub.end_action if sub is not None and sub.end_action != "keep" else None) or plan.on_cancel,
        "notice": sub.notice if sub is not None else None,
        "addons": [{"addon": row.addon.slug, "name": row.addon.name, "state": row.state,
                    "price": offer(row.price_id, row.term) if row.price_id else None} for row in service.addons],
        "addon_events": [e.to_json() for e in addon_state.events_of(service)],
        "available": [{"plan": p.slug, "name": p.name, "free": p.is_free, "terms": list(offers(p)),
                       "prices": offers(p)} for p in change_options(service)] if service.status == "active" else [],
    }
    return out
