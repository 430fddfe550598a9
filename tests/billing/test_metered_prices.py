"""Metered prices on the subscription: Checkout adds a plan's metered prices as line items without
a quantity (the Stripe stand-in refuses one, as Stripe does), a plan change moves them, and
``panel stripe check`` finds metered prices that cannot bill."""
from __future__ import annotations

import secrets

import pytest
import stripe
from billinglib import SECRET_KEY
from flows import subscription_row
from test_stop_billing import paid_service

from panel.extensions import db
from panel.models import Plan


@pytest.fixture
def metered_catalog(app, router, term_catalog):
    """The terms catalog with metered prices: mem-pro prices ``posts`` (1 cent a post), mem-max
    prices ``posts`` (half a cent) and ``storage_gib`` (50 cents), each a monthly metered Stripe
    price tied to its meter."""
    tag = secrets.token_hex(3)
    posts = router.create_meter(f"posts_{tag}")
    storage = router.create_meter(f"storage_{tag}", formula="last")
    prices = {
        "pro_posts": router.create_price(f"price_posts_pro_{tag}", None, "usd", meter=posts["id"],
                                         unit_amount_decimal="1", product=router.product)["id"],
        "max_posts": router.create_price(f"price_posts_max_{tag}", None, "usd", meter=posts["id"],
                                         unit_amount_decimal="0.5", product=router.product)["id"],
        "max_storage": router.create_price(f"price_storage_max_{tag}", 50, "usd", meter=storage["id"],
                                           product=router.product)["id"],
    }
    pro, top = Plan.by_slug("mem-pro"), Plan.by_slug("mem-max")
    pro.metered = {"posts": {"unit_price": "0.01", "currency": "usd", "meter": posts["event_name"],
                             "price": prices["pro_posts"]}}
    top.metered = {"posts": {"unit_price": "0.005", "currency": "usd", "meter": posts["event_name"],
                             "price": prices["max_posts"]},
                   "storage_gib": {"unit_price": "0.50", "currency": "usd", "aggregate": "max",
                                   "meter": storage["event_name"], "price": prices["max_storage"]}}
    db.session.commit()
    return {"prices": prices, "posts": posts, "storage": storage}


def _items(router, sub_id):
    return sorted(((i["price"]["id"], i.get("quantity")) for i in router.subscriptions[sub_id]["items"]["data"]),
                  key=lambda pair: pair[0])


def test_checkout_adds_metered_prices_without_quantity(app, client, auth, router, metered_catalog):
    posts_price = metered_catalog["prices"]["pro_posts"]
    service, sub_id = paid_service(app, client, auth, router, name="m1")
    sent = router.recorded("POST", "/v1/checkout/sessions")[-1]
    assert sent["line_items"] == [{"price": "price_pro_m", "quantity": "1"}, {"price": posts_price}]
    # the subscription Checkout made carries the metered item (no quantity); only the base fee was paid
    assert _items(router, sub_id) == sorted([("price_pro_m", 1), (posts_price, None)])
    first = router.invoices[router.subscriptions[sub_id]["latest_invoice"]]
    assert first["amount_paid"] == 1200
    assert subscription_row(service).stripe_price == "price_pro_m"  # the plan's item, not the metered one


def test_a_metered_price_is_left_off_a_term_of_another_interval(app, client, auth, router, metered_catalog):
    paid_service(app, client, auth, router, name="y1", term="yearly")
    sent = router.recorded("POST", "/v1/checkout/sessions")[-1]
    assert sent["line_items"] == [{"price": "price_pro_y", "quantity": "1"}]  # monthly usage cannot ride a yearly sub


def test_the_stand_in_refuses_a_quantity_on_a_metered_price(app, router, metered_catalog, upstream_client):
    posts_price = metered_catalog["prices"]["pro_posts"]
    customer = upstream_client.v1.customers.create(params={"email": "q@example.com"})
    base = {"mode": "subscription", "customer": customer.id, "success_url": "https://x.test/s",
            "cancel_url": "https://x.test/c"}
    with pytest.raises(stripe.InvalidRequestError) as refused:
        upstream_client.v1.checkout.sessions.create(params={
            **base, "line_items": [{"price": "price_pro_m", "quantity": 1}, {"price": posts_price, "quantity": 1}]})
    assert refused.value.http_status == 400
    assert "usage_type is `metered`" in str(refused.value) and refused.value.param == "line_items[1][quantity]"
    assert refused.value.error.type == "invalid_request_error"
    with pytest.raises(stripe.InvalidRequestError) as missing:  # a licensed price still needs one
        upstream_client.v1.checkout.sessions.create(params={**base, "line_items": [{"price": "price_pro_m"}]})
    assert "Quantity is required" in str(missing.value)
    session = upstream_client.v1.checkout.sessions.create(params={
        **base, "line_items": [{"price": "price_pro_m", "quantity": 1}, {"price": posts_price}]})
    assert session.amount_subtotal == 1200  # metered usage is billed at the period's end
    sub = stripe.StripeClient(SECRET_KEY, base_addresses={"api": router.url}).v1.subscriptions
    with pytest.raises(stripe.InvalidRequestError):
        sub.create(params={"customer": customer.id, "items": [{"price": posts_price, "quantity": 2}]})


def test_a_plan_change_moves_the_metered_items(app, client, auth, router, metered_catalog):
    prices = metered_catalog["prices"]
    service, sub_id = paid_service(app, client, auth, router, name="c1")
    from billinglib import flush

    r = client.post(f"/api/v1/services/{service.id}/plan", json={"plan": "mem-max", "term": "monthly"}, headers=auth)
    assert r.status_code == 202, r.get_json()
    flush(app, client, router)
    db.session.refresh(service)
    assert service.plan.slug == "mem-max"
    # posts moves to mem-max's price on the same item, storage is added; neither has a quantity
    assert _items(router, sub_id) == sorted([("price_max_m", 1), (prices["max_posts"], None),
                                             (prices["max_storage"], None)])
    # back to mem-pro: its posts price, and storage (not priced there) is removed
    r = client.post(f"/api/v1/services/{service.id}/plan", json={"plan": "mem-pro", "term": "monthly"}, headers=auth)
    assert r.status_code == 202, r.get_json()
    flush(app, client, router)
    assert _items(router, sub_id) == sorted([("price_pro_m", 1), (prices["pro_posts"], None)])


def test_stripe_check_finds_metered_prices_that_cannot_bill(app, router, metered_catalog):
    from panel.billing.cli import meter_problems

    prices = metered_catalog["prices"]
    assert meter_problems() == []
    top = Plan.by_slug("mem-max")
    spec = dict(top.metered)
    spec["posts"] = dict(spec["posts"], price="price_max_m")            # a licensed price
    spec["storage_gib"] = dict(spec["storage_gib"], price="price_nowhere")
    top.metered = spec
    pro = Plan.by_slug("mem-pro")
    pro.metered = {"posts": dict(pro.metered["posts"], meter=metered_catalog["storage"]["event_name"])}
    db.session.commit()
    router.meters[metered_catalog["storage"]["id"]]["status"] = "inactive"
    problems = meter_problems()
    storage = metered_catalog["storage"]
    assert ("mem-max", "posts", "price price_max_m is not metered (it needs recurring.usage_type=metered)") in problems
    assert ("mem-max", "storage_gib", "price price_nowhere does not exist in Stripe") in problems
    assert ("mem-max", "storage_gib", f"the Stripe meter {storage['id']} for {storage['event_name']} is inactive") \
        in problems
    assert ("mem-pro", "posts", f"price {prices['pro_posts']} is tied to meter {metered_catalog['posts']['id']} "
                                f"(event_name {metered_catalog['posts']['event_name']}), but the usage is reported "
                                f"to event_name {storage['event_name']}") in problems
    result = app.test_cli_runner().invoke(args=["stripe", "check"])
    assert "mem-max: metered posts: price price_max_m is not metered" in result.output
    assert result.exit_code == 1

    router.meters[storage["id"]]["status"] = "active"
    top.metered = {"storage_gib": dict(spec["storage_gib"], price=prices["pro_posts"])}
    pro.metered = {"posts": dict(pro.metered["posts"], meter=None, price=prices["pro_posts"])}
    db.session.commit()
    problems = meter_problems()
    assert ("mem-max", "storage_gib", f"price {prices['pro_posts']} is tied to meter {metered_catalog['posts']['id']} "
                                      f"(event_name {metered_catalog['posts']['event_name']}), but the usage is "
                                      f"reported to event_name {storage['event_name']}") in problems
    assert any(p[:2] == ("mem-pro", "posts") and "has no meter" in p[2] for p in problems)

    # a catalog unit_price unlike the Stripe price's amount (1 cent a post in Stripe)
    pro.metered = {"posts": dict(pro.metered["posts"], meter=metered_catalog["posts"]["event_name"],
                                 unit_price="0.02")}
    top.metered = {}
    db.session.commit()
    assert meter_problems() == [("mem-pro", "posts", f"price {prices['pro_posts']} charges 0.01 per unit, but the "
                                                     "catalog's unit_price is 0.02 (our invoices and usage figures use it)")]
