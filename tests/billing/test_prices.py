"""The price cache: panel stripe sync (pagination), price.*/product.* events (duplicates, out of
order, deleted stays deleted), panel stripe check on terms and add-ons, and amounts per locale."""
import json

from billinglib import deliver, make_event, settle

from panel.billing.models import StripeEvent, StripePrice, StripeProduct
from panel.billing.prices import format_money, offer, to_decimal
from panel.extensions import db
from panel.models import Addon, Plan


def send(app, client, type_, obj, created):
    event = make_event(type_, obj, created=created)
    assert deliver(client, event).status_code == 200
    settle(app)
    return db.session.get(StripeEvent, event["id"])


def test_sync_reads_every_page_and_reports_catalog_prices_stripe_lacks(app, router, term_catalog):
    for n in range(105):  # more than one page of 100
        router.create_price(f"price_page_{n:03d}", 100 + n, "eur", interval="month", product=router.product)
    db.session.add(Plan(slug="ghost", name="Ghost", backend="memory", prices={"monthly": "price_not_in_stripe"}))
    db.session.commit()
    listed = len(router.recorded("GET", "/v1/prices"))
    result = app.test_cli_runner().invoke(args=["stripe", "sync"])
    assert result.exit_code == 1 and "missing in Stripe: price_not_in_stripe" in result.output
    pages = [b for b in router.recorded("GET", "/v1/prices")[listed:] if "limit" in b]
    assert len(pages) >= 2 and pages[1]["starting_after"]  # it followed has_more
    assert db.session.get(StripePrice, "price_page_104").unit_amount == 204
    assert db.session.get(StripePrice, "price_page_000").currency == "eur"
    quarterly = db.session.get(StripePrice, "price_pro_q")
    assert (quarterly.interval, quarterly.interval_count, quarterly.unit_amount) == ("month", 3, 3300)
    assert str(quarterly.unit_amount_decimal) .startswith("3300")
    assert quarterly.product is not None and quarterly.product.name == "hostpanel test"


def test_price_events_update_the_cache_once_and_in_order(app, client, router, term_catalog):
    price = dict(router.prices["price_pro_m"])
    t = 2_000_000_000
    newer = dict(price, unit_amount=1500, unit_amount_decimal="1500")
    row = send(app, client, "price.updated", newer, t + 10)
    assert row.outcome.startswith("price price_pro_m cached")
    assert db.session.get(StripePrice, "price_pro_m").unit_amount == 1500
    # a duplicate delivery is stored once and runs nothing twice
    event = make_event("price.updated", dict(price, unit_amount=1700), created=t + 20, event_id="evt_dup_price")
    assert deliver(client, event).status_code == 200
    assert deliver(client, event).get_json()["duplicate"] is True
    settle(app)
    assert db.session.get(StripePrice, "price_pro_m").unit_amount == 1700
    # an older event arriving late does not undo the newer amount
    late = send(app, client, "price.updated", dict(price, unit_amount=999), t + 5)
    assert late.outcome.startswith("skipped") and db.session.get(StripePrice, "price_pro_m").unit_amount == 1700
    # deleted stays deleted, even when an older "updated" comes after it
    send(app, client, "price.deleted", dict(price, deleted=True), t + 30)
    send(app, client, "price.updated", dict(price, active=True), t + 25)
    cached = db.session.get(StripePrice, "price_pro_m")
    assert cached.deleted and not cached.sellable
    assert offer("price_pro_m", "monthly") is None  # not sold any more
    assert "monthly" not in client.get("/api/v1/plans").get_json()["plans"][1]["prices"]


def test_product_events_take_a_plan_off_sale_and_back(app, client, router, term_catalog):
    product = dict(router.products[router.product])
    t = 2_000_000_000
    send(app, client, "product.updated", dict(product, active=False), t + 10)
    send(app, client, "product.updated", dict(product, active=True), t + 5)  # older: skipped
    assert db.session.get(StripeProduct, router.product).active is False
    plans = {p["slug"]: p for p in client.get("/api/v1/plans").get_json()["plans"]}
    assert plans["mem-pro"]["prices"] == {} and plans["mem-free"]["free"] is True
    page = client.get("/plans").get_data(as_text=True)
    assert "Not on sale right now." in page
    send(app, client, "product.updated", dict(product, active=True), t + 20)
    plans = {p["slug"]: p for p in client.get("/api/v1/plans").get_json()["plans"]}
    assert list(plans["mem-pro"]["prices"]) == ["monthly", "quarterly", "yearly"]


def test_stripe_check_covers_terms_addons_and_currencies(app, router, term_catalog):
    result = app.test_cli_runner().invoke(args=["stripe", "check"])
    assert result.exit_code == 0, result.output
    router.create_price("price_pro_q", 3300, "usd", interval="month", interval_count=1, product=router.product)
    router.create_price("price_ram_y", 4000, "eur", interval="year", product=router.product)
    Addon.by_slug("priority").prices = {"monthly": "price_prio_gone"}
    db.session.commit()
    result = app.test_cli_runner().invoke(args=["stripe", "check"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert "mem-pro: price price_pro_q is billed every 1 month(s), but quarterly means every 3 month(s)" in lines
    assert "addon extra-ram: price price_ram_y is in EUR, but plan mem-pro's yearly price is in USD" in lines
    assert "addon priority: price price_prio_gone does not exist in Stripe" in lines
    # check refreshed the cache from what Stripe answered
    assert db.session.get(StripePrice, "price_pro_q").interval_count == 1


def test_amounts_are_exact_and_follow_currency_and_locale(app):
    assert to_decimal(1999, "usd") == to_decimal(1999, "USD") and str(to_decimal(1999, "usd")) == "19.99"
    assert str(to_decimal(500, "jpy")) == "500" and str(to_decimal(1234, "kwd")) == "1.234"
    assert format_money(123456, "usd", "en_US") == "$1,234.56"
    assert format_money(123456, "eur", "de_DE") == "1.234,56\xa0€"
    assert format_money(500, "jpy", "ja_JP") == "￥500"
    assert format_money(1250, "chf", "de_CH") == "CHF\xa012.50"
    assert json.dumps(format_money(1, "usd", "en_US")) == '"$0.01"'


def test_plans_page_shows_terms_addons_tax_and_sold_out(app, client, router, term_catalog):
    from memory_backend import REMOTE

    page = client.get("/plans").get_data(as_text=True)
    assert 'id="term-switch"' in page and 'data-term="quarterly"' in page
    assert "$12.00" in page and "$33.00" in page and "$120.00" in page  # pro per term
    assert "+$4.00 / month" in page and "+$40.00 / year" in page  # extra RAM per term
    assert 'data-price="free"' in page and "included free" in page
    assert "excl. tax" not in page  # Stripe Tax is off
    assert "<script>" not in page and "onclick" not in page  # CSP: script-src 'self'
    german = client.get("/plans", headers={"Accept-Language": "de-DE,de;q=0.9"}).get_data(as_text=True)
    assert "12,00\xa0$" in german and "Jährlich" in german
    app.config["STRIPE_TAX"] = True
    router.update_price("price_max_m", tax_behavior="inclusive")
    from panel.billing.prices import store_price

    store_price(router.prices["price_max_m"])
    db.session.commit()
    page = client.get("/plans").get_data(as_text=True)
    assert "excl. tax" in page and "incl. tax" in page and 'id="tax-note"' in page
    REMOTE.capacity = False
    app.extensions.pop("panel_capacity", None)
    page = client.get("/plans").get_data(as_text=True)
    assert 'id="sold-out-mem-pro"' in page and "Choose Memory pro" not in page

