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

from billinglib import PRICE_BIG, PUBLIC, SECRET_KEY, TERMS_CATALOG, WHSEC  # noqa: E402


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


@pytest.fixture
def term_catalog(app, router):
    """The terms catalog (plans on monthly/quarterly/yearly prices, add-ons) imported, its prices
    in the Stripe stand-in (and read into the cache by ``panel stripe sync``)."""
    from billinglib import load_term_catalog

    load_term_catalog(router)
    return TERMS_CATALOG
