"""Core test fixtures: an app on a temporary SQLite file with in-process jobs, users, a client, and
the loopback Stripe (``stripe_servers``).

Real Redis and PostgreSQL come from ``panel.testing`` (``redis_server``, ``postgres_server``).
"""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from corelib import BASE_CONFIG, add_user  # noqa: E402
from memory_backend import REMOTE, MemoryPlugin  # noqa: E402

from panel import create_app  # noqa: E402
from panel.extensions import db  # noqa: E402
from panel.models import Plan  # noqa: E402



@pytest.fixture(autouse=True)
def _fresh_memory_remote():
    """Every test starts with an empty memory backend (no objects, calls or scripted failures left
    by an earlier test: the suite passes in any order)."""
    REMOTE.__init__()
    yield


@pytest.fixture
def make_app(tmp_path, monkeypatch):
    """``make_app(**config)`` builds an app with tables created; memory backend enabled."""
    for key in list(os.environ):
        if key.startswith("PANEL_"):
            monkeypatch.delenv(key, raising=False)
    made = []

    def make(create_tables=True, plugins=(), **overrides):
        config = dict(BASE_CONFIG)
        config["DATABASE_URL"] = f"sqlite:///{tmp_path}/panel-{len(made)}.db"
        config["EXTRA_PLUGINS"] = [MemoryPlugin()]
        config["PLUGINS"] = list(plugins)
        config.update(overrides)
        monkeypatch.setenv("PANEL_INSTANCE_PATH", str(tmp_path / "instance"))
        app = create_app(config)
        if create_tables:
            with app.app_context():
                db.create_all()
                from panel.plugins import set_enabled

                set_enabled("memory", True)
        made.append(app)
        return app

    yield make
    for app in made:
        runner = app.extensions.get("panel_runner")
        if runner is not None:
            runner.cancel_delayed()  # a retry waiting out its backoff: its row stays due, the app goes away
            runner.wait_idle(30)
            runner.pool.shutdown(wait=True)
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(make_app):
    REMOTE.__init__()
    app = make_app()
    with app.app_context():
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def customer(app):
    return add_user("alice@example.com")


@pytest.fixture
def other_customer(app):
    return add_user("bob@example.com")


@pytest.fixture
def operator(app):
    return add_user("ops@example.com", role="operator")


@pytest.fixture
def plans(app):
    free = Plan(slug="mem-free", name="Memory free", backend="memory", options={"size_mib": 128})
    big = Plan(slug="mem-big", name="Memory big", backend="memory", options={"size_mib": 512})
    paid = Plan(slug="mem-paid", name="Memory paid", backend="memory", options={"size_mib": 256},
                stripe_price="price_1Test")
    db.session.add_all([free, big, paid])
    db.session.commit()
    return {"free": free, "big": big, "paid": paid}


@pytest.fixture(scope="session")
def stripe_servers():
    """``StripeRouter`` (the Stripe stand-in: prices, subscriptions, invoices, credit notes, signed
    webhooks) in front of a real localstripe (customers, payment methods), both on 127.0.0.1, with a
    product and the two monthly prices the plans use (tests/billing and the route matrix share it)."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "billing"))
    from billinglib import PRICE_BIG, PRICE_PAID, WHSEC
    from stripe_standin import Localstripe, StripeRouter

    upstream = Localstripe()
    router = StripeRouter(upstream.url, webhook_secret=WHSEC)
    try:
        product = router.create_product("hostpanel test")
        for price, amount in ((PRICE_PAID, 500), (PRICE_BIG, 900)):
            router.create_price(price, amount, "usd", interval="month", product=product["id"])
        router.product = product["id"]
        router.reset()
        yield router
    finally:
        router.stop()
        upstream.stop()


@pytest.fixture
def smtp():
    """A real SMTP server on loopback (aiosmtpd): ``(inbox, port)`` (see ``mailsink.Inbox``)."""
    from mailsink import smtp_sink

    with smtp_sink() as sink:
        yield sink
