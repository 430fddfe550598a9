"""Add-ons on a running service: a prorated subscription item, then the backend applies the merged
options through change_plan; every enable and disable is an append-only event with its time,
price and term; failures in Stripe or the backend are retried and shown like any operation."""
import pytest
from billinglib import flush, make_event, deliver, settle, subscription_obj
from corelib import login
from memory_backend import REMOTE
from test_stop_billing import paid_service

from panel.extensions import db
from panel.models import AddonEvent, Service
from panel.models.events import AppendOnlyError


def events(service):
    return [(e.addon_slug, e.kind, e.price_id, e.term, e.unit_amount)
            for e in db.session.scalars(db.select(AddonEvent).where(AddonEvent.service_id == service.id)
                                        .order_by(AddonEvent.id))]


def addons_call(client, auth, service, **body):
    return client.post(f"/api/v1/services/{service.id}/addons", json=body, headers=auth)


def test_add_then_remove_an_addon_through_the_api(app, client, auth, router, term_catalog):
    service, sub_id = paid_service(app, client, auth, router, name="a1")
    assert REMOTE.objects[service.external_id]["size"] == 1024
    r = addons_call(client, auth, service, add=["extra-ram"])
    assert r.status_code == 202, r.get_json()
    assert r.get_json()["subscription"]["addons"][0]["state"] == "adding" and REMOTE.calls.count(
        ("change_plan", service.external_id)) == 0  # nothing happens in the request
    flush(app, client, router)
    sent = router.recorded("POST", "/v1/subscription_items")[-1]
    assert sent["subscription"] == sub_id and sent["price"] == "price_ram_m"
    assert sent["proration_behavior"] == "create_prorations"
    assert router.pending_items[sub_id][-1]["proration"] is True and 0 < router.pending_items[sub_id][-1]["amount"] <= 400
    db.session.refresh(service)
    assert REMOTE.objects[service.external_id]["size"] == 1024 + 2048
    [row] = service.addons
    assert row.state == "active" and row.stripe_subscription_item_id.startswith("si_")
    assert events(service) == [("extra-ram", "enabled", "price_ram_m", "monthly", 400)]
    info = client.get(f"/api/v1/services/{service.id}/subscription", headers=auth).get_json()["subscription"]
    assert info["addons"][0]["state"] == "active" and info["addons"][0]["price"]["display"] == "$4.00 / month"
    r = addons_call(client, auth, service, remove=["extra-ram"])
    assert r.status_code == 202
    flush(app, client, router)
    db.session.refresh(service)
    assert router.recorded("DELETE", "/v1/subscription_items/")[-1] == {"proration_behavior": "create_prorations"}
    assert [i["price"]["id"] for i in router.subscriptions[sub_id]["items"]["data"]] == ["price_pro_m"]
    assert REMOTE.objects[service.external_id]["size"] == 1024 and service.addons == []
    assert events(service) == [("extra-ram", "enabled", "price_ram_m", "monthly", 400),
                               ("extra-ram", "disabled", "price_ram_m", "monthly", 400)]
    first = db.session.scalars(db.select(AddonEvent).where(AddonEvent.service_id == service.id)).first()
    first.kind = "disabled"
    with pytest.raises(AppendOnlyError):
        db.session.commit()
    db.session.rollback()


@pytest.mark.parametrize("body, status, words", [
    ({"add": ["priority-nope"]}, 422, "not offered"),
    ({"add": ["extra-ram", "extra-ram"], "remove": []}, 202, None),
    ({"remove": ["backups"]}, 422, "not on this service"),
    ({"add": "extra-ram"}, 422, "list of add-on slugs"),
    ({}, 422, "choose an add-on"),
])
def test_addon_requests_are_checked_first(app, client, auth, router, term_catalog, body, status, words):
    service, sub_id = paid_service(app, client, auth, router, name="a2")
    r = addons_call(client, auth, service, **body)
    assert r.status_code == status, r.get_json()
    flush(app, client, router)
    items = [b for b in router.recorded("POST", "/v1/subscription_items") if b["subscription"] == sub_id]
    if words:
        assert words in r.get_json()["error"]["message"] and r.get_json()["error"]["fields"]
        assert items == []  # refused before anything was charged
    else:
        assert len(items) == 1  # the same add-on twice is bought once


def test_a_yearly_service_cannot_take_a_monthly_only_addon(app, client, auth, router, term_catalog):
    service, _ = paid_service(app, client, auth, router, name="a3", term="yearly")
    before = len(router.recorded("POST", "/v1/subscription_items"))
    r = addons_call(client, auth, service, add=["priority"])
    assert r.status_code == 422 and "no yearly price" in r.get_json()["error"]["fields"]["addons"]
    assert len(router.recorded("POST", "/v1/subscription_items")) == before


def test_stripe_refusing_the_item_charges_and_applies_nothing(app, client, auth, router, term_catalog):
    service, _ = paid_service(app, client, auth, router, name="a4")
    router.fail_next("/v1/subscription_items", 400)
    assert addons_call(client, auth, service, add=["extra-ram"]).status_code == 202
    flush(app, client, router)
    db.session.refresh(service)
    assert service.addons == [] and events(service) == [] and REMOTE.objects[service.external_id]["size"] == 1024
    login(client, "alice@example.com")
    page = client.get(f"/services/{service.id}").get_data(as_text=True)
    assert "The add-on could not be added" in page and "Nothing was charged" in page


def test_a_backend_failure_is_an_operation_an_operator_retries(app, client, auth, router, term_catalog, operator):
    service, _ = paid_service(app, client, auth, router, name="a5")
    REMOTE.fail_next("change_plan", "permanent")
    addons_call(client, auth, service, add=["extra-ram"])
    flush(app, client, router)
    db.session.refresh(service)
    assert service.status == "failed" and events(service) == []  # logged only when the backend confirms
    ops = app.test_client()
    login(ops, "ops@example.com")
    assert ops.post(f"/admin/services/{service.id}/retry").status_code == 302
    settle(app)
    db.session.refresh(service)
    assert service.status == "active" and REMOTE.objects[service.external_id]["size"] == 1024 + 2048
    assert events(service) == [("extra-ram", "enabled", "price_ram_m", "monthly", 400)]


def test_free_addons_on_free_services_and_paid_addons_need_a_paid_plan(app, client, auth, router, term_catalog):
    r = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "a6"}}, headers=auth)
    service = db.session.get(Service, r.get_json()["service"]["id"])
    settle(app)
    before = len(router.recorded("POST", "/v1/subscription_items"))
    assert addons_call(client, auth, service, add=["backups"]).status_code == 202
    settle(app)
    db.session.refresh(service)
    assert events(service) == [("backups", "enabled", None, None, None)]
    assert len(router.recorded("POST", "/v1/subscription_items")) == before  # a free add-on: no Stripe call
    from panel.models import Plan

    Plan.by_slug("mem-free").addons = ["backups", "extra-ram"]
    db.session.commit()
    r = addons_call(client, auth, service, add=["extra-ram"])
    assert r.status_code == 409 and "needs a paid plan" in r.get_json()["error"]["message"]


def test_the_service_page_adds_and_removes(app, client, auth, customer, router, term_catalog):
    service, sub_id = paid_service(app, client, auth, router, name="a7")
    login(client, "alice@example.com")
    page = client.get(f"/services/{service.id}").get_data(as_text=True)
    assert 'id="add-addon"' in page and "2 GB more RAM (+$4.00 / month)" in page
    assert client.post(f"/billing/services/{service.id}/addons", data={"add": "extra-ram"}).status_code == 302
    flush(app, client, router)
    page = client.get(f"/services/{service.id}").get_data(as_text=True)
    assert 'data-addon="extra-ram" data-state="active"' in page and 'id="remove-extra-ram"' in page
    client.post(f"/billing/services/{service.id}/addons", data={"remove": "extra-ram"})
    flush(app, client, router)
    db.session.refresh(service)
    assert service.addons == [] and [k for _, k, *_ in events(service)] == ["enabled", "disabled"]


def test_subscription_events_with_items_out_of_order_and_twice(app, client, auth, router, term_catalog):
    service, sub_id = paid_service(app, client, auth, router, name="a8", addons=["extra-ram"])
    remote = router.subscriptions[sub_id]
    obj = subscription_obj(service, sub_id, customer=remote["customer"], price="price_pro_m")
    obj["items"]["data"] = [dict(i) for i in remote["items"]["data"]]
    row = next(r for r in db.session.get(Service, service.id).addons)
    row.stripe_subscription_item_id = None
    db.session.commit()
    t = 2_000_000_000
    newer = make_event("customer.subscription.updated", obj, created=t + 10, event_id="evt_items_new")
    older = make_event("customer.subscription.updated", obj, created=t + 1, event_id="evt_items_old")
    for event in (newer, older, newer):  # the older one arrives after the newer one, then a duplicate
        assert deliver(client, event).status_code == 200
        settle(app)
    from panel.billing.models import StripeEvent

    assert db.session.get(StripeEvent, "evt_items_old").outcome.startswith("skipped: older")
    db.session.expire_all()
    row = db.session.get(Service, service.id).addons[0]
    ram = next(i for i in remote["items"]["data"] if i["price"]["id"] == "price_ram_m")
    assert row.stripe_subscription_item_id == ram["id"]
    assert REMOTE.calls.count(("change_plan", service.external_id)) == 0  # the plan item did not move
