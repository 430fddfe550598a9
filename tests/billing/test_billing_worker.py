"""Billing on the durable-work path with real components: PostgreSQL, Redis, real ``panel worker``
subprocesses, the PDS plugin and its stand-in, and the Stripe stand-in over loopback HTTP. A paid
order with an add-on, a cancellation that stops the charge, and a billing task whose worker died
taken over by the sweep and run exactly once."""
from datetime import timedelta

import pytest
from billinglib import SECRET_KEY, WHSEC, webhook_sink
from flows import subscription_row

import panel_pds.standin  # noqa: F401,E402  (our plugin: an import error must fail, not skip)

CATALOG = """
plans:
  - slug: pds-pro
    name: PDS Pro
    backend: pds
    options: {disksize_gb: 20}
    prices: {monthly: price_pds_m, yearly: price_pds_y}
    addons: [more-disk]
addons:
  - slug: more-disk
    name: 10 GiB more
    prices: {yearly: price_disk_y}
    options: {disksize_gb: "+10"}
"""


@pytest.fixture
def stack(redis_server, postgres_server, monkeypatch, tmp_path, router):
    from test_e2e_worker import _stack

    for price, amount, interval in (("price_pds_m", 700, "month"), ("price_pds_y", 7000, "year"),
                                    ("price_disk_y", 1200, "year")):
        router.create_price(price, amount, "usd", interval=interval, product=router.product)
    router.reset()
    for stack in _stack(redis_server, postgres_server, monkeypatch, tmp_path, PANEL_STRIPE_SECRET_KEY=SECRET_KEY,
                        PANEL_STRIPE_WEBHOOK_SECRET=WHSEC, PANEL_STRIPE_API_BASE=router.url,
                        PANEL_PUBLIC_URL="https://panel.example.test", PANEL_TERMINATE_REFUND="refund"):
        from panel.billing.prices import sync
        from panel.catalog import import_catalog

        import_catalog(CATALOG)
        sync()
        yield stack


def test_paid_order_then_cancel_now_through_real_workers(stack, router):
    from panel.billing.models import BillingTask
    from panel.extensions import db
    from panel.models import AddonEvent, Service

    r = stack.client.post("/api/v1/orders", json={"plan": "pds-pro", "term": "yearly", "addons": ["more-disk"],
                                                  "params": {"username": "payer"}}, headers=stack.auth)
    assert r.status_code == 201, r.get_json()
    sid = r.get_json()["service"]["id"]
    service = db.session.get(Service, sid)
    router.complete_session(subscription_row(service).checkout_session_id, emit=True)
    router.deliver(webhook_sink(stack.client))  # stored, then handed to Redis: the worker applies them
    stack.worker()
    assert stack.service(sid)["status"] == "active"
    assert stack.standin.deploys()[0]["disksize"] == 30  # 20 GiB + the add-on's "+10"
    db.session.expire_all()
    assert [(e.addon_slug, e.kind, e.term, e.unit_amount) for e in
            db.session.scalars(db.select(AddonEvent).where(AddonEvent.service_id == sid))] == [
        ("more-disk", "enabled", "yearly", 1200)]
    sub_id = subscription_row(service).stripe_subscription_id
    r = stack.client.post(f"/api/v1/services/{sid}/cancel", json={"at_period_end": False}, headers=stack.auth)
    assert r.status_code == 202
    assert router.subscriptions[sub_id]["status"] == "active"  # the request itself called nothing
    stack.worker()
    router.deliver(webhook_sink(stack.client))
    stack.worker()
    assert stack.service(sid)["status"] == "terminated" and router.subscriptions[sub_id]["status"] == "canceled"
    db.session.expire_all()
    [task] = db.session.scalars(db.select(BillingTask).where(BillingTask.service_id == sid)).all()
    assert task.state == "succeeded" and task.lease_owner is None and task.due_at is None
    assert 0 < task.result["refunded"] <= 7000 + 1200  # PANEL_TERMINATE_REFUND=refund: the unused part


def test_a_task_whose_worker_died_is_taken_over_and_runs_once(stack, router):
    from panel.billing.models import BillingTask
    from panel.extensions import db
    from panel.models.base import utcnow

    customer = router.forward("POST", "/v1/customers", {"Authorization": f"Bearer {SECRET_KEY}",
                                                         "Content-Type": "application/x-www-form-urlencoded"},
                              b"email=orphan%40example.com")[1]["id"]
    sub = router._create_subscription({"customer": customer, "items": [{"price": "price_pds_m"}], "metadata": {}},
                                      emit=False)
    past = utcnow() - timedelta(minutes=5)
    task = BillingTask(kind="cancel_subscription", payload={"subscription": sub["id"], "refund": "none",
                                                            "at": int(utcnow().timestamp())},
                       state="running", actor="test", due_at=past, lease_owner="dead-host:1:1",
                       lease_expires_at=past, lease_token=1, lost_runs=0, attempts=0)
    db.session.add(task)
    db.session.commit()
    stack.worker()  # its sweep finds the expired lease and hands the task over
    db.session.expire_all()
    task = db.session.get(BillingTask, task.id)
    assert task.state == "succeeded" and task.lost_runs == 1 and task.attempts == 1
    assert router.subscriptions[sub["id"]]["status"] == "canceled"
    assert len(router.recorded("DELETE", f"/v1/subscriptions/{sub['id']}")) == 1
    stack.worker()  # nothing is due any more: Stripe is not called again
    assert len(router.recorded("DELETE", f"/v1/subscriptions/{sub['id']}")) == 1
