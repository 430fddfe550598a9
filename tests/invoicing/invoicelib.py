"""Helpers for invoice tests: a service with a history (service events, add-on events at given
times), cached Stripe prices for plan and add-on fees, usage records."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from panel.billing.models import StripePrice
from panel.extensions import db
from panel.models import AddonEvent, Plan, Profile, Service, ServiceEvent, UsageRecord


def at(text: str) -> datetime:
    """``"2026-11-10 12:00"`` as an aware UTC datetime."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)


def price(price_id: str, amount: int, currency: str) -> str:
    """Cache a monthly Stripe price of ``amount`` minor units."""
    db.session.add(StripePrice(id=price_id, currency=currency, unit_amount=amount, type="recurring",
                               interval="month", interval_count=1, active=True, deleted=False))
    db.session.flush()
    return price_id


def plan(slug: str, fee: int, currency: str, metered: dict | None = None) -> Plan:
    row = Plan(slug=slug, name=slug.title(), backend="memory", options={"size_mib": 64},
               prices={"monthly": price(f"price_{slug}", fee, currency)}, stripe_price=f"price_{slug}",
               metered=metered or {})
    db.session.add(row)
    db.session.flush()
    return row


def profile(user, **fields) -> Profile:
    row = Profile(user_id=user.id, **fields)
    db.session.add(row)
    db.session.flush()
    db.session.refresh(user)
    return row


def service(user, plan_row, history: list[tuple[str, str]], name: str) -> Service:
    """A service billed by invoice whose event log holds ``history`` (``[(at text, to_status)]``)."""
    svc = Service(user_id=user.id, plan_id=plan_row.id, backend="memory", status=history[-1][1],
                  billing_mode="invoice", term="monthly", params={"name": name})
    db.session.add(svc)
    db.session.flush()
    previous = None
    for when, status in history:
        db.session.add(ServiceEvent(service_id=svc.id, at=at(when), kind="succeeded", from_status=previous,
                                    to_status=status))
        previous = status
    db.session.flush()
    return svc


def addon_event(svc, slug: str, kind: str, when: str, amount: int, currency: str) -> None:
    db.session.add(AddonEvent(service_id=svc.id, addon_slug=slug, kind=kind, at=at(when), unit_amount=amount,
                              currency=currency, term="monthly", billing_mode="invoice"))
    db.session.flush()


def usage(svc, metric: str, when: str, quantity: str, n: int) -> None:
    db.session.add(UsageRecord(service_id=svc.id, metric=metric, period_start=at(when), period_end=at(when),
                               quantity=Decimal(quantity), source="sampler",
                               identifier=f"test-{svc.id}-{metric}-{n}"))
    db.session.flush()
