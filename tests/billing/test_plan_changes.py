"""Plan changes in every direction (free -> paid through Checkout on the same service, paid ->
paid with a new term and add-ons, paid -> free at period end, refused downgrades), on_cancel for
paused and ended subscriptions, the sign-up plan, complimentary services and accounts, and
operators ordering without payment."""
from billinglib import flush, settle
from corelib import add_user, login, token_for
from flows import subscription_row
from memory_backend import REMOTE
from test_stop_billing import live, paid_service

from panel.extensions import db
from panel.models import Plan, Service


def calls(service, action):
    return REMOTE.calls.count((action, service.external_id))


def free_service(app, client, auth, name="f1"):
    r = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": name}}, headers=auth)
    assert r.status_code == 201, r.get_json()
    settle(app)
    service = db.session.get(Service, r.get_json()["service"]["id"])
    assert service.status == "active" and service.billing_mode == "free"
    return service


def test_free_to_paid_through_checkout_keeps_the_service(app, client, auth, router, term_catalog):
    service = free_service(app, client, auth)
    r = client.post(f"/api/v1/services/{service.id}/plan", json={"plan": "mem-pro", "term": "yearly"}, headers=auth)
    assert r.status_code == 202 and r.get_json()["checkout_url"].startswith("https://checkout.stripe.test/")
    sent = router.recorded("POST", "/v1/checkout/sessions")[-1]
    assert sent["line_items"] == [{"price": "price_pro_y", "quantity": "1"}]
    assert sent["metadata"]["panel_upgrade"] == "mem-pro" and sent["client_reference_id"] == str(service.id)
    db.session.refresh(service)
    assert service.plan.slug == "mem-free" and calls(service, "change_plan") == 0  # not before payment
    router.complete_session(subscription_row(service).checkout_session_id, emit=True)
    flush(app, client, router)
    db.session.refresh(service)
    assert service.plan.slug == "mem-pro" and service.billing_mode == "stripe" and service.term == "yearly"
    assert calls(service, "provision") == 1 and calls(service, "change_plan") == 1  # no reprovision: same data
    assert REMOTE.objects[service.external_id]["size"] == 1024
    assert live(router, service) == [subscription_row(service).stripe_subscription_id]


def test_paid_to_paid_on_a_new_term_moves_every_item(app, client, auth, router, term_catalog):
    service, sub_id = paid_service(app, client, auth, router, name="p1", addons=["extra-ram"])
    r = client.post(f"/api/v1/services/{service.id}/plan", json={"plan": "mem-max", "term": "yearly"}, headers=auth)
    assert r.status_code == 202, r.get_json()
    flush(app, client, router)
    db.session.refresh(service)
    items = sorted(i["price"]["id"] for i in router.subscriptions[sub_id]["items"]["data"])
    assert items == ["price_max_y", "price_ram_y"]  # the plan item and the add-on item, both on yearly
    assert service.plan.slug == "mem-max" and service.term == "yearly"
    assert REMOTE.objects[service.external_id]["size"] == 4096 + 2048
    [ram] = service.addons
    assert (ram.price_id, ram.term, ram.unit_amount) == ("price_ram_y", "yearly", 4000)
    assert subscription_row(service).stripe_price == "price_max_y"


def test_an_addon_the_new_plan_lacks_is_removed_with_it(app, client, auth, router, term_catalog):
    service, sub_id = paid_service(app, client, auth, router, name="p2", addons=["priority"])
    client.post(f"/api/v1/services/{service.id}/plan", json={"plan": "mem-max"}, headers=auth)
    flush(app, client, router)
    db.session.refresh(service)
    assert [i["price"]["id"] for i in router.subscriptions[sub_id]["items"]["data"]] == ["price_max_m"]
    assert service.addons == [] and service.plan.slug == "mem-max"
    from panel.models import AddonEvent

    kinds = [e.kind for e in db.session.scalars(db.select(AddonEvent).where(AddonEvent.service_id == service.id))]
    assert kinds == ["enabled", "disabled"]


def test_a_downgrade_the_backend_cannot_do_is_refused_before_any_charge(app, client, auth, router, term_catalog):
    service, sub_id = paid_service(app, client, auth, router, name="p3")
    REMOTE.used_mib = 900
    before = len(router.recorded("POST", f"/v1/subscriptions/{sub_id}"))
    r = client.post(f"/api/v1/services/{service.id}/plan", json={"plan": "mem-free"}, headers=auth)
    assert r.status_code == 409 and "cannot shrink" in r.get_json()["error"]["message"]
    assert len(router.recorded("POST", f"/v1/subscriptions/{sub_id}")) == before and live(router, service)


def test_paid_to_free_at_period_end(app, client, auth, router, term_catalog):
    service, sub_id = paid_service(app, client, auth, router, name="p4")
    r = client.post(f"/api/v1/services/{service.id}/plan", json={"plan": "mem-free"}, headers=auth)
    assert r.status_code == 202 and "when the paid period ends" in r.get_json()["message"]
    flush(app, client, router)
    assert router.subscriptions[sub_id]["cancel_at_period_end"] is True
    db.session.refresh(service)
    assert service.plan.slug == "mem-pro"  # paid until the end of the period
    router.end_period(sub_id)
    flush(app, client, router)
    db.session.refresh(service)
    assert service.plan.slug == "mem-free" and service.billing_mode == "free" and service.status == "active"
    assert subscription_row(service).terminate_at is None and calls(service, "terminate") == 0


def test_paused_downgrades_and_resumed_restores(app, client, auth, router, term_catalog):
    service, sub_id = paid_service(app, client, auth, router, name="p5")
    router.set_subscription_status(sub_id, "paused")
    flush(app, client, router)
    db.session.refresh(service)
    assert service.plan.slug == "mem-free" and service.status == "active"  # seed 003: the free tier
    router.set_subscription_status(sub_id, "active")
    flush(app, client, router)
    db.session.refresh(service)
    assert service.plan.slug == "mem-pro" and service.billing_mode == "stripe" and service.term == "monthly"


def test_on_cancel_terminate_and_suspend(app, client, auth, router, term_catalog):
    Plan.by_slug("mem-pro").on_cancel = "terminate"
    db.session.commit()
    service, sub_id = paid_service(app, client, auth, router, name="p6")
    router.end_period(sub_id)
    flush(app, client, router)
    db.session.refresh(service)
    assert service.status == "terminated"
    Plan.by_slug("mem-pro").on_cancel = "suspend"
    db.session.commit()
    service, sub_id = paid_service(app, client, auth, router, name="p7")
    router.end_period(sub_id)
    flush(app, client, router)
    db.session.refresh(service)
    assert service.status == "suspended" and subscription_row(service).terminate_at is not None


def test_the_signup_plan_is_ordered_for_new_accounts(make_app, billing_config, router):
    from memory_backend import REMOTE as remote

    remote.__init__()
    app = make_app(**billing_config, SIGNUP_PLAN="mem-free", SIGNUP_PARAMS={"name": "u{user_id}"})
    with app.app_context():
        db.session.add(Plan(slug="mem-free", name="Free", backend="memory", options={"size_mib": 64}))
        db.session.commit()
        client = app.test_client()
        r = client.post("/signup", data={"email": "new@example.com", "password": "password123",
                                         "confirm": "password123"})
        assert r.status_code == 302 and r.headers["Location"].endswith("/services")
        settle(app)
        [service] = db.session.scalars(db.select(Service)).all()
        assert service.params == {"name": f"u{service.user_id}"} and service.status == "active"
        assert service.billing_mode == "free"


def test_comped_service_keeps_running_without_a_subscription_and_can_pay_later(
        app, client, auth, router, term_catalog, operator):
    service, sub_id = paid_service(app, client, auth, router, name="c1")
    ops = app.test_client()
    login(ops, "ops@example.com")
    assert ops.post(f"/admin/services/{service.id}/comp", data={"refund": "none", "note": "early adopter"}).status_code == 302
    flush(app, client, router)
    db.session.refresh(service)
    assert service.billing_mode == "complimentary" and service.status == "active" and live(router, service) == []
    login(client, "alice@example.com")
    page = client.get(f"/services/{service.id}").get_data(as_text=True)
    assert 'id="billing-mode">complimentary' in page and "Pay for Memory pro" in page
    info = client.get(f"/api/v1/services/{service.id}/subscription", headers=auth).get_json()["subscription"]
    assert info["billing_mode"] == "complimentary" and info["status"] == "complimentary"
    # still able to pay later: Checkout for the same service, then it is a Stripe subscription again
    r = client.post(f"/billing/services/{service.id}/change-plan", data={"plan": "mem-pro:monthly"})
    assert r.status_code == 303 and r.headers["Location"].startswith("https://checkout.stripe.test/")
    router.complete_session(subscription_row(service).checkout_session_id, emit=True)
    flush(app, client, router)
    db.session.refresh(service)
    assert service.billing_mode == "stripe" and len(live(router, service)) == 1 and calls(service, "provision") == 1


def test_complimentary_accounts_and_operator_orders(app, client, auth, customer, router, term_catalog, operator):
    ops = app.test_client()
    login(ops, "ops@example.com")
    ops.post(f"/admin/customers/{customer.id}/comp", data={"on": "1"})
    page = ops.get("/admin/customers").get_data(as_text=True)
    assert 'data-comp="1"' in page
    sessions = len(router.recorded("POST", "/v1/checkout/sessions"))
    r = client.post("/api/v1/orders", json={"plan": "mem-pro", "params": {"name": "c2"}}, headers=auth)
    assert r.status_code == 201 and r.get_json()["checkout_url"] is None
    settle(app)
    service = db.session.get(Service, r.get_json()["service"]["id"])
    assert service.billing_mode == "complimentary" and service.status == "active"
    assert len(router.recorded("POST", "/v1/checkout/sessions")) == sessions
    # an operator orders for another customer, to be invoiced later (issue 13 bills it)
    bob = add_user("bob@example.com")
    r = ops.post(f"/admin/customers/{bob.id}/order", data={"plan": "mem-max", "term": "yearly", "mode": "invoice",
                                                           "addons": "extra-ram", "params": '{"name": "inv1"}'})
    assert r.status_code == 302, r.get_data(as_text=True)
    settle(app)
    invoiced = db.session.scalars(db.select(Service).where(Service.user_id == bob.id)).one()
    assert invoiced.billing_mode == "invoice" and invoiced.term == "yearly" and invoiced.status == "active"
    assert REMOTE.objects[invoiced.external_id]["size"] == 4096 + 2048
    [row] = invoiced.addons
    assert (row.price_id, row.unit_amount, row.currency) == ("price_ram_y", 4000, "usd")
    bad = ops.post(f"/admin/customers/{bob.id}/order", data={"plan": "mem-max", "mode": "invoice", "params": "[1]"})
    assert bad.status_code == 200 and "must be a JSON object" in bad.get_data(as_text=True)
    bob_auth = token_for(bob)
    info = client.get(f"/api/v1/services/{invoiced.id}/subscription", headers=bob_auth).get_json()["subscription"]
    assert info["billing_mode"] == "invoice" and info["price"]["unit_amount"] == 30000
    # an invoiced service changes plan at once (the term is recorded for the invoice)
    r = client.post(f"/api/v1/services/{invoiced.id}/plan", json={"plan": "mem-pro", "term": "monthly"}, headers=bob_auth)
    assert r.status_code == 202
    settle(app)
    db.session.refresh(invoiced)
    assert invoiced.plan.slug == "mem-pro" and invoiced.term == "monthly" and invoiced.billing_mode == "invoice"


def test_plan_change_api_errors(app, client, auth, router, term_catalog):
    service, _ = paid_service(app, client, auth, router, name="e1")
    url = f"/api/v1/services/{service.id}/plan"
    assert client.post(url, data="nope", headers=auth).status_code == 400
    assert client.post(url, json={"term": "yearly"}, headers=auth).status_code == 422
    assert client.post(url, json={"plan": "nope"}, headers=auth).status_code == 404
    same = client.post(url, json={"plan": "mem-pro", "term": "monthly"}, headers=auth)
    assert same.status_code == 422 and same.get_json()["error"]["fields"] == {"plan": "the service is on this plan already"}
    bad_term = client.post(url, json={"plan": "mem-max", "term": "quarterly"}, headers=auth)
    assert bad_term.status_code == 422 and "term" in bad_term.get_json()["error"]["fields"]
