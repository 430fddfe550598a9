"""Billing test fixtures: an app with Stripe configured against the real localstripe behind the
loopback stand-in router (``stripe_servers``, in tests/conftest.py: the route matrix shares it)."""
from __future__ import annotations

import os
import sys

import pytest
import stripe

sys.path.insert(0, os.path.dirname(__file__))

from memory_backend import REMOTE  # noqa: E402

from panel.extensions import db  # noqa: E402
from corelib import token_for  # noqa: E402

from billinglib import PRICE_BIG, PUBLIC, SECRET_KEY, WHSEC  # noqa: E402


@pytest.fixture
def router(stripe_servers):
    stripe_servers.reset()
    yield stripe_servers
    stripe_servers.stop_auto_deliver()


@pytest.fixture
def billing_config(router):
    return {"STRIPE_SECRET_KEY": SECRET_KEY, "STRIPE_WEBHOOK_SECRET": WHSEC,
            "STRIPE_API_BASE": router.url, "PUBLIC_URL": PUBLIC}


@pytest.fixture
def app(make_app, billing_config):
    """The core's ``app`` fixture, with Stripe billing configured (overrides tests/conftest.py)."""
    REMOTE.__init__()
    app = make_app(**billing_config)
    with app.app_context():
        yield app


@pytest.fixture
def paid_plans(plans):
    """The core's plans, with ``mem-big`` made a paid plan of the same backend (for plan changes)."""
    plans["big"].stripe_price = PRICE_BIG
    db.session.commit()
    return plans


@pytest.fixture
def auth(customer):
    return token_for(customer)


@pytest.fixture
def upstream_client(router):
    """An SDK client straight to the stand-in router (to play the customer's side in Stripe)."""
    return stripe.StripeClient(SECRET_KEY, base_addresses={"api": router.url})


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


@pytest.fixture
def term_catalog(app, router):
    """The terms catalog (plans on monthly/quarterly/yearly prices, add-ons) imported, its prices
    in the Stripe stand-in (and read into the cache by ``panel stripe sync``)."""
    from panel.billing.prices import sync
    from panel.catalog import import_catalog

    for price, amount, interval, count in TERM_PRICES:
        router.create_price(price, amount, "usd", interval=interval, interval_count=count, product=router.product)
    router.reset()
    import_catalog(TERMS_CATALOG)
    sync()
    return TERMS_CATALOG
