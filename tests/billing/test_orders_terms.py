"""Ordering on a term with add-ons: Checkout line items, refusals before anything is charged,
per-customer limits, Stripe Tax and promotion codes, and the paid order provisioned with the
add-ons merged in and logged."""
from billinglib import PUBLIC, flush
from corelib import login
from flows import subscription_row
from memory_backend import REMOTE

from panel.extensions import db
from panel.models import AddonEvent, Service


def order(client, auth, **body):
    return client.post("/api/v1/orders", json={"plan": "mem-pro", "params": {"name": "t1"}, **body}, headers=auth)


def test_yearly_order_with_addon_pays_both_prices_and_provisions_them(app, client, auth, router, term_catalog):
    r = order(client, auth, term="yearly", addons=["extra-ram", "backups"])
    assert r.status_code == 201, r.get_json()
    service = db.session.get(Service, r.get_json()["service"]["id"])
    sent = router.recorded("POST", "/v1/checkout/sessions")[-1]
    assert sent["line_items"] == [{"price": "price_pro_y", "quantity": "1"}, {"price": "price_ram_y", "quantity": "1"}]
    assert sent["metadata"]["panel_term"] == "yearly" and "automatic_tax" not in sent
    assert "allow_promotion_codes" not in sent
    assert service.term == "yearly" and service.billing_mode == "stripe" and REMOTE.calls == []
    assert sorted((row.addon.slug, row.state, row.price_id) for row in service.addons) == [
        ("backups", "adding", None), ("extra-ram", "adding", "price_ram_y")]
    router.complete_session(subscription_row(service).checkout_session_id, emit=True)
    flush(app, client, router)
    db.session.refresh(service)
    assert service.status == "active"
    assert REMOTE.objects[service.external_id]["size"] == 1024 + 2048  # "+2048" merged in
    sub = subscription_row(service)
    assert sub.term == "yearly" and sub.stripe_price == "price_pro_y"
    remote = router.subscriptions[sub.stripe_subscription_id]
    assert sorted(i["price"]["id"] for i in remote["items"]["data"]) == ["price_pro_y", "price_ram_y"]
    ram = next(row for row in service.addons if row.addon.slug == "extra-ram")
    assert ram.state == "active" and ram.stripe_subscription_item_id.startswith("si_")
    events = db.session.scalars(db.select(AddonEvent).where(AddonEvent.service_id == service.id)
                                .order_by(AddonEvent.addon_slug)).all()
    assert [(e.addon_slug, e.kind, e.price_id, e.term, e.unit_amount, e.currency) for e in events] == [
        ("backups", "enabled", None, None, None, None), ("extra-ram", "enabled", "price_ram_y", "yearly", 4000, "usd")]
    info = client.get(f"/api/v1/services/{service.id}/subscription", headers=auth).get_json()["subscription"]
    assert info["term"] == "yearly" and info["status"] == "active" and info["renews_at"]
    assert info["price"]["unit_amount"] == 12000 and {a["addon"] for a in info["addons"]} == {"extra-ram", "backups"}


def test_refusals_come_before_any_charge(app, client, auth, router, term_catalog):
    before = len(router.recorded("POST", "/v1/checkout/sessions"))
    cases = [
        (dict(term="quarterly", addons=["extra-ram"]), 422, "addons", "no quarterly price"),
        (dict(term="weekly"), 422, "term", "monthly, quarterly, yearly"),
        (dict(addons=["nope"]), 422, "addons", "not offered"),
        (dict(term="yearly", addons=["priority"]), 422, "addons", "no yearly price"),
        (dict(addons="extra-ram"), 422, "addons", "list"),
    ]
    for body, status, field, words in cases:
        r = order(client, auth, **body)
        assert r.status_code == status, (body, r.get_json())
        assert field in r.get_json()["error"]["fields"] and words in r.get_json()["error"]["message"] + str(
            r.get_json()["error"]["fields"]), (body, r.get_json())
    free = client.post("/api/v1/orders", json={"plan": "mem-free", "term": "monthly", "params": {"name": "f1"}}, headers=auth)
    assert (free.status_code, free.get_json()) == (422, {"error": {
        "code": "invalid_term", "message": "a free plan has no billing term",
        "fields": {"term": "must be empty for a free plan"}}})
    not_a_list = order(client, auth, addons="extra-ram")
    assert (not_a_list.status_code, not_a_list.get_json()) == (422, {"error": {
        "code": "invalid_addons", "message": "addons must be a list of add-on slugs",
        "fields": {"addons": "must be a list of add-on slugs"}}})
    unknown = order(client, auth, addons=["nope"])
    assert unknown.get_json() == {"error": {"code": "invalid_addons", "message": "nope is not offered with Memory pro",
                                            "fields": {"addons": "nope is not offered with this plan"}}}
    elsewhere = client.post("/api/v1/orders", json={"plan": "mem-max", "addons": ["backups"], "params": {"name": "m1"}},
                            headers=auth)  # an active add-on, but not one mem-max offers
    assert (elsewhere.status_code, elsewhere.get_json()["error"]["message"]) == (422, "backups is not offered with Memory max")
    quarterly = order(client, auth, term="quarterly", addons=["extra-ram"])
    words = "2 GB more RAM has no quarterly price: choose monthly or yearly or leave it out"
    assert quarterly.get_json() == {"error": {"code": "invalid_addons", "message": words, "fields": {"addons": words}}}
    from panel.models import Plan

    free_plan = db.session.scalar(db.select(Plan).where(Plan.slug == "mem-free"))
    free_plan.addons = ["backups", "extra-ram"]  # a paid add-on listed with a free plan
    db.session.commit()
    paid_on_free = client.post("/api/v1/orders", json={"plan": "mem-free", "addons": ["extra-ram"],
                                                       "params": {"name": "f2"}}, headers=auth)
    words = "2 GB more RAM is a paid add-on: it needs a paid plan"
    assert (paid_on_free.status_code, paid_on_free.get_json()) == (422, {"error": {
        "code": "invalid_addons", "message": words, "fields": {"addons": words}}})
    weekly = order(client, auth, term="weekly")
    assert weekly.get_json() == {"error": {"code": "invalid_term", "message": "Memory pro is sold monthly, quarterly, yearly",
                                           "fields": {"term": "must be one of monthly, quarterly, yearly"}}}
    assert len(router.recorded("POST", "/v1/checkout/sessions")) == before
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 0


def test_addons_that_break_the_plans_options_are_refused(app, client, auth, router, term_catalog):
    from panel.models import Addon

    Addon.by_slug("extra-ram").options = {"size_mib": "+-2000"}  # 1024 - 2000 < 1: the schema refuses it
    db.session.commit()
    r = order(client, auth, addons=["extra-ram"])
    assert r.status_code == 422 and "do not fit" in r.get_json()["error"]["fields"]["addons"]
    assert "size_mib" in r.get_json()["error"]["fields"]["addons"]
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 0


def test_one_free_service_per_customer(app, client, auth, router, term_catalog):
    first = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "free1"}}, headers=auth)
    assert first.status_code == 201
    again = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "free2"}}, headers=auth)
    assert (again.status_code, again.get_json()) == (409, {"error": {
        "code": "limit_reached",
        "message": "you already have 1 Memory free service: that is the limit per customer"}})
    from panel.models import Plan

    db.session.scalar(db.select(Plan).where(Plan.slug == "mem-free")).max_per_customer = 2
    db.session.commit()
    assert client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "free2"}},
                       headers=auth).status_code == 201
    third = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "free3"}}, headers=auth)
    assert third.get_json()["error"]["message"] == "you already have 2 Memory free services: that is the limit per customer"


def test_tax_and_promotion_codes_reach_checkout_and_the_customer(app, client, auth, customer, router, term_catalog):
    app.config.update(STRIPE_TAX=True, STRIPE_PROMOTION_CODES=True)
    from panel.models import Profile

    db.session.add(Profile(user_id=customer.id, full_name="Alice Example", company="Example GmbH",
                           address_line1="Hauptstr. 1", address_line2="", postal_code="10115", city="Berlin",
                           region="", country="de", tax_id="DE 123456789"))  # what /account stores
    db.session.commit()
    from panel.billing.checkout import billing_profile

    assert billing_profile(customer) == {
        "name": "Example GmbH", "address": {"line1": "Hauptstr. 1", "postal_code": "10115", "city": "Berlin",
                                            "country": "DE"},
        "tax_id_data": [{"type": "eu_vat", "value": "DE123456789"}]}
    from panel.billing.checkout import ensure_customer

    customer_id = ensure_customer(customer)
    created = router.recorded("POST", "/v1/customers")[-1]
    assert created["address"]["country"] == "DE" and created["tax_id_data"] == [{"type": "eu_vat", "value": "DE123456789"}]
    r = order(client, auth, term="monthly")
    assert r.status_code == 201, r.get_json()
    sent = router.recorded("POST", "/v1/checkout/sessions")[-1]
    assert sent["customer"] == customer_id
    assert sent["automatic_tax"] == {"enabled": "true"} and sent["billing_address_collection"] == "required"
    assert sent["tax_id_collection"] == {"enabled": "true"}
    assert sent["customer_update"] == {"address": "auto", "name": "auto"}
    assert sent["allow_promotion_codes"] == "true"
    session = router.sessions[subscription_row(db.session.get(Service, r.get_json()["service"]["id"])).checkout_session_id]
    assert session["automatic_tax"]["enabled"] is True and session["total_details"]["amount_tax"] == 97  # 8.1 % of $12
    login(client, "alice@example.com")
    page = client.get("/order/mem-pro?term=monthly").get_data(as_text=True)
    assert "excl. tax" in page


def test_the_order_form_picks_a_term_and_addons(app, client, customer, router, term_catalog):
    login(client, "alice@example.com")
    page = client.get("/order/mem-pro?term=yearly").get_data(as_text=True)
    assert 'name="term" value="yearly"' in page and 'value="yearly" data-amount="12000"' in page
    assert 'data-addon="priority" data-terms="monthly"' in page  # JS disables it on yearly; the server refuses it
    assert 'id="order-total"' in page and "$120.00 / year" in page
    bad = client.post("/order/mem-pro", data={"term": "yearly", "addons": ["priority"], "param_name": "web1"})
    assert bad.status_code == 422 and "no yearly price" in bad.get_data(as_text=True)
    ok = client.post("/order/mem-pro", data={"term": "yearly", "addons": ["extra-ram"], "param_name": "web1"})
    assert ok.status_code == 303 and ok.headers["Location"].startswith("https://checkout.stripe.test/")
    sent = router.recorded("POST", "/v1/checkout/sessions")[-1]
    assert [i["price"] for i in sent["line_items"]] == ["price_pro_y", "price_ram_y"]
    assert sent["success_url"].startswith(PUBLIC)
