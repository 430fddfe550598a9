"""What the plans page and the order form show: each plan's prices per term, its add-ons and
their prices, whether it is sold out, and what an order would cost.

Prices come from the Stripe price cache (``panel.billing.prices``); a plan whose price cannot be
read (billing not configured, Stripe unreachable) shows no amount rather than a wrong one.
``sold out`` is the backend's ``check_capacity`` for the plan's options, cached for
``CAPACITY_TTL`` seconds so a busy plans page does not ask the backend on every view.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from flask import current_app

from panel.backends import BackendError, NoCapacityError
from panel.models import Addon, Plan
from panel.models.catalog import TERMS

CAPACITY_TTL = 60.0
_LOCK = threading.Lock()


@dataclass
class AddonCard:
    """An add-on as offered with one plan: ``offers`` per term (``{}`` for a free add-on) and the
    ``terms`` it can be bought on (``[None]`` on a free plan)."""

    addon: Addon
    offers: dict
    terms: list


@dataclass
class PlanCard:
    """A plan as the plans page shows it (``offers``: ``{term: panel.billing.prices.offer}``)."""

    plan: Plan
    offers: dict
    addons: list[AddonCard] = field(default_factory=list)
    sold_out: bool = False
    complimentary: bool = False

    @property
    def terms(self) -> list[str]:
        """The terms this card has a price for."""
        return list(self.offers)

    @property
    def orderable(self) -> bool:
        """Free, complimentary, or at least one price that can be sold now, and not sold out."""
        return not self.sold_out and (self.plan.is_free or self.complimentary or bool(self.offers))


def _billing_on() -> bool:
    return bool(current_app.config.get("STRIPE_SECRET_KEY"))


def offers_of(item) -> dict:
    """``{term: offer}`` of a plan or add-on (``{}`` when free or when billing is off)."""
    if item.is_free or not _billing_on():
        return {}
    from panel.billing.prices import offers

    return offers(item)


def addons_of(plan: Plan) -> list[Addon]:
    """The plan's active add-ons in catalog order."""
    slugs = list(plan.addons or [])
    if not slugs:
        return []
    from panel.extensions import db

    rows = db.session.scalars(db.select(Addon).where(Addon.slug.in_(slugs), Addon.active.is_(True))).all()
    return sorted(rows, key=lambda a: (a.sort_order or 0, a.id))


def sold_out(plan: Plan) -> bool:
    """Whether the backend says it has no capacity for ``plan`` right now (``check_capacity`` with
    the plan's options and no order params; any other answer counts as "not sold out")."""
    cache = current_app.extensions.setdefault("panel_capacity", {})
    now = time.monotonic()
    key = (plan.id, plan.updated_at)
    with _LOCK:
        hit = cache.get(key)
        if hit and now - hit[0] < CAPACITY_TTL:
            return hit[1]
    from panel.plugins import BackendNotConfigured, get_backend

    try:
        get_backend(plan.backend).check_capacity(dict(plan.options or {}), {})
        result = False
    except NoCapacityError:
        result = True
    except (BackendError, BackendNotConfigured):
        result = False
    except Exception:  # a plugin bug must not break the plans page
        result = False
    with _LOCK:
        if len(cache) > 1000:
            cache.clear()
        cache[key] = (now, result)
    return result


def card(plan: Plan, user=None) -> PlanCard:
    """The ``PlanCard`` of ``plan`` for ``user`` (anonymous: ``None``)."""
    from panel import billing

    comp = not plan.is_free and user is not None and getattr(user, "is_authenticated", False) \
        and billing.account_is_complimentary(user)
    offers = offers_of(plan)
    addon_cards = []
    for addon in addons_of(plan):
        addon_offers = offers_of(addon)
        if plan.is_free:
            terms = [None] if addon.is_free else []
        else:
            terms = [t for t in (offers or plan.term_prices) if addon.is_free or t in addon_offers]
        if terms:
            addon_cards.append(AddonCard(addon, addon_offers, terms))
    return PlanCard(plan, offers, addon_cards, sold_out=sold_out(plan), complimentary=bool(comp))


def cards(plans: list[Plan], user=None) -> list[PlanCard]:
    """``card`` of each plan."""
    return [card(p, user) for p in plans]


def all_terms(plan_cards: list[PlanCard]) -> list[str]:
    """The terms any card has a price for, in ``TERMS`` order (the term switch)."""
    seen = {t for c in plan_cards for t in c.terms}
    return [t for t in TERMS if t in seen]


def total(plan_card: PlanCard, term: str | None, addon_slugs) -> dict | None:
    """``{"unit_amount", "currency", "display"}`` of the plan on ``term`` with those add-ons, or
    ``None`` when a price is unknown or currencies differ."""
    offer = plan_card.offers.get(term or "")
    if offer is None:
        return None
    amount, currency = offer["unit_amount"], offer["currency"]
    for addon_card in plan_card.addons:
        if addon_card.addon.slug in addon_slugs and not addon_card.addon.is_free:
            extra = addon_card.offers.get(term)
            if extra is None or extra["currency"] != currency:
                return None
            amount += extra["unit_amount"]
    from panel.billing.prices import format_money

    return {"unit_amount": amount, "currency": currency, "display": f"{format_money(amount, currency)} / {offer['every']}"}
