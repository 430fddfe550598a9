"""Helpers for invoice tests: an app on a real PostgreSQL database (fixtures ``pg_url``, ``pg_app``:
import them into the test module; a second conftest.py would shadow tests/billing's, whose tests
import from ``conftest``), a service with a history (service events, add-on events at given times),
cached Stripe prices for plan and add-on fees, usage records."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from corelib import BASE_CONFIG

from panel.billing.models import StripePrice
from panel.extensions import db
from panel.models import AddonEvent, Plan, Profile, Service, ServiceEvent, UsageRecord

SELLER = {"INVOICE_SELLER_NAME": "Hostpanel GmbH", "INVOICE_SELLER_ADDRESS": "Bahnhofstrasse 1|8001 Zürich",
          "INVOICE_SELLER_COUNTRY": "CH", "INVOICE_SELLER_VAT_ID": "CHE-116.281.710 MWST",
          "INVOICE_SELLER_IBAN": "CH93 0076 2011 6238 5295 7"}


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


@pytest.fixture
def pg_url(postgres_server):
    return postgres_server.create_database()


@pytest.fixture
def pg_app(pg_url, tmp_path, monkeypatch):
    """An app on its own fresh PostgreSQL database, tables created, memory backend enabled."""
    from memory_backend import MemoryPlugin

    from panel import create_app
    from panel.plugins import set_enabled

    for key in list(os.environ):
        if key.startswith("PANEL_"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PANEL_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app(BASE_CONFIG | SELLER | {"DATABASE_URL": pg_url, "PLUGINS": [],
                                             "EXTRA_PLUGINS": [MemoryPlugin()]})
    with app.app_context():
        db.create_all()
        set_enabled("memory", True)
        db.session.commit()
        yield app
        runner = app.extensions.get("panel_runner")
        if runner is not None:
            runner.wait_idle(30)
        db.session.remove()
        db.engine.dispose()
