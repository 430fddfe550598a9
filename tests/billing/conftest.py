"""Billing test fixtures: a real localstripe behind the loopback stand-in router, an app with
Stripe configured, and helpers to build signed Stripe events from Stripe's fixture shapes."""
from __future__ import annotations

import os
import sys

import pytest
import stripe

sys.path.insert(0, os.path.dirname(__file__))

from memory_backend import REMOTE  # noqa: E402
from stripe_standin import Localstripe, StripeRouter  # noqa: E402

from panel.extensions import db  # noqa: E402
from corelib import token_for  # noqa: E402

from billinglib import PRICE_BIG, PRICE_PAID, PUBLIC, SECRET_KEY, WHSEC  # noqa: E402


@pytest.fixture(scope="session")
def stripe_servers():
    """``StripeRouter`` in front of a real localstripe (both on 127.0.0.1), with a product and
    the two recurring prices the plans use."""
    upstream = Localstripe()
    router = StripeRouter(upstream.url)
    try:
        client = stripe.StripeClient(SECRET_KEY, base_addresses={"api": upstream.url})
        product = client.v1.products.create(params={"name": "hostpanel test"})
        for price, amount in ((PRICE_PAID, 500), (PRICE_BIG, 900)):
            client.v1.plans.create(params={"id": price, "product": product.id, "amount": amount,
                                           "currency": "usd", "interval": "month"})
        router.product = product.id
        yield router
    finally:
        router.stop()
        upstream.stop()


@pytest.fixture
def router(stripe_servers):
    stripe_servers.failures.clear()
    stripe_servers.webhook_endpoints.clear()
    return stripe_servers


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
