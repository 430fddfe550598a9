"""Billable usage: the sampler appends usage records (a counter's increase, a level's value), and a
Stripe-billed service's records reach the Stripe stand-in's meter exactly once per identifier,
across a transient failure, a run whose completion was lost and a repeat after Stripe forgot the
idempotency key."""
from __future__ import annotations

import secrets
from datetime import timedelta
from decimal import Decimal

import pytest
from corelib import add_user, login, wait_jobs
from memory_backend import REMOTE

from panel.billing import metering, tasks
from panel.billing.models import BillingTask, Subscription
from panel.extensions import db
from panel.models import Plan, Service, UsageRecord
from panel.models.base import utcnow


@pytest.fixture
def app(make_app, billing_config):
    app = make_app(**billing_config, JOB_BACKOFF="0")
    with app.app_context():
        yield app


@pytest.fixture
def metered(app, router):
    """An active Stripe-billed service on a plan with a metered ``posts`` counter (Stripe meter) and
    a ``storage_gib`` level (no meter: invoiced only)."""
    event_name = f"posts_{secrets.token_hex(4)}"
    router.create_meter(event_name)
    plan = Plan(slug="postiz", name="Postiz", backend="memory", options={"size_mib": 64}, stripe_price="price_1Test",
                metered={"posts": {"unit_price": "0.01", "currency": "usd", "meter": event_name},
                         "storage_gib": {"unit_price": "0.50", "currency": "usd", "free": "1", "aggregate": "max"}})
    user = add_user("meter@example.com")
    db.session.add(plan)
    db.session.flush()
    svc = Service(user_id=user.id, plan_id=plan.id, backend="memory", status="active", billing_mode="stripe",
                  term="monthly", params={"name": "community"})
    db.session.add(svc)
    db.session.flush()
    customer = f"cus_{secrets.token_hex(5)}"
    db.session.add(Subscription(service_id=svc.id, user_id=user.id, stripe_customer_id=customer,
                                stripe_subscription_id=f"sub_{secrets.token_hex(5)}", status="active"))
    db.session.commit()
    REMOTE.objects[svc.external_id] = {"size": 64, "posts": 10, "storage_gib": 2.5}
    return {"service": svc, "event": event_name, "customer": customer}


def records(svc, metric):
    return db.session.scalars(db.select(UsageRecord).where(UsageRecord.service_id == svc.id,
                                                           UsageRecord.metric == metric).order_by(UsageRecord.id)).all()


def test_sampler_records_increases_and_levels_and_meters_count_once(app, router, metered):
    from panel.jobs import sample_usage

    svc, event, customer = metered["service"], metered["event"], metered["customer"]
    t0 = utcnow() - timedelta(minutes=30)
    sample_usage(now=t0)
    REMOTE.objects[svc.external_id].update(posts=25, storage_gib=3.5)
    sample_usage(now=t0 + timedelta(minutes=10))
    sample_usage(now=t0 + timedelta(minutes=10))        # the same instant again: nothing new
    REMOTE.objects[svc.external_id].update(posts=4)      # the counter was reset: counts from zero
    sample_usage(now=t0 + timedelta(minutes=20))
    wait_jobs(app)
    assert [(r.quantity, r.reading) for r in records(svc, "posts")] == [
        (Decimal(10), Decimal(10)), (Decimal(15), Decimal(25)), (Decimal(4), Decimal(4))]
    assert [r.quantity for r in records(svc, "storage_gib")] == [Decimal("2.5"), Decimal("3.5"), Decimal("3.5")]
    assert len({r.identifier for r in records(svc, "posts")}) == 3
    assert router.meter_total(event, customer) == Decimal(29)
    assert all(r.reported_at is not None for r in records(svc, "posts"))
    assert all(r.reported_at is None for r in records(svc, "storage_gib"))   # no meter: never sent
    # this service's events (the stand-in is shared by the session: an earlier test's late task may post too)
    sent = [p for m, path, p in router.requests if path == "/v1/billing/meter_events"
            and p["identifier"].startswith(svc.external_id + "-")]
    assert {p["identifier"] for p in sent} == {r.identifier for r in records(svc, "posts")}
    assert sent[0]["payload"] == {"stripe_customer_id": customer, "value": "10"}
    keys = [h.get("idempotency-key", "") for (m, path, p), (_, _, h) in zip(router.requests, router.headers_seen)
            if path == "/v1/billing/meter_events" and p["identifier"].startswith(svc.external_id + "-")]
    assert len(set(keys)) == 3 and all(k.startswith("hostpanel-task-") for k in keys)


def test_a_retried_report_never_counts_twice(app, router, metered):
    svc, event, customer = metered["service"], metered["event"], metered["customer"]
    router.fail_next("/v1/billing/meter_events", 500)          # transient: retried with the same key
    [first] = metering.record_usage(svc, [_metric("posts", 7)], utcnow() - timedelta(minutes=5))
    db.session.commit()
    wait_jobs(app)
    assert router.meter_total(event, customer) == Decimal(7)
    posts = [(p["identifier"], k) for (m, path, p), (_, _, h) in zip(router.requests, router.headers_seen)
             if path == "/v1/billing/meter_events" and p.get("identifier") == first.identifier
             for k in [h["idempotency-key"]]]
    assert len(posts) == 2 and posts[0] == posts[1]

    # a run that reached Stripe but whose completion was lost (the worker died) ...
    when = utcnow()
    [lost] = metering.record_usage(svc, [_metric("posts", 19)], when)
    db.session.flush()
    task = _task_for(svc, [lost.id])
    assert metering._report_usage(task) == {"sent": [lost.id], "already": []}
    db.session.rollback()                                     # ... nothing of it was recorded here
    [lost] = metering.record_usage(svc, [_metric("posts", 19)], when)
    db.session.commit()
    wait_jobs(app)                                            # the task the sampler recorded runs again
    db.session.refresh(lost)
    rerun = db.session.scalars(db.select(BillingTask).where(BillingTask.kind == "report_usage")
                               .order_by(BillingTask.id.desc())).first()
    assert rerun.result == {"sent": [], "already": [lost.id]} and lost.reported_at is not None
    assert router.meter_total(event, customer) == Decimal(19)  # 7 + 12, the 12 counted once

    # once more after Stripe forgot the idempotency keys: the identifier is refused, counted as reported
    router.idempotent.clear()
    redo = tasks.record("report_usage", svc, {"records": [first.id, lost.id]}, actor="test")
    db.session.execute(db.update(UsageRecord).values(reported_at=None))
    db.session.commit()
    wait_jobs(app)
    db.session.refresh(redo)
    assert redo.state == "succeeded" and redo.result == {"sent": [], "already": [first.id, lost.id]}
    assert router.meter_total(event, customer) == Decimal(19)


def _task_for(svc, ids):
    task = BillingTask(kind="report_usage", service_id=svc.id, payload={"records": ids}, state="running", actor="t",
                       lease_token=0, lost_runs=0)
    db.session.add(task)
    db.session.flush()
    return task


def _metric(name, value):
    from panel.backends import Metric

    return Metric(name, value, "count")


def test_stripe_check_finds_a_missing_meter(app, router, metered):
    from panel.billing.cli import meter_problems

    assert meter_problems() == []
    plan = db.session.get(Service, metered["service"].id).plan
    plan.metered = dict(plan.metered, storage_gib=dict(plan.metered["storage_gib"], meter="storage_nowhere"))
    db.session.commit()
    assert meter_problems() == [("postiz", "storage_gib", "no Stripe meter has event_name storage_nowhere")]
    result = app.test_cli_runner().invoke(args=["stripe", "check"])
    assert "postiz: metered storage_gib: no Stripe meter has event_name storage_nowhere" in result.output
    assert result.exit_code == 1


def test_the_usage_sampled_hook_sees_every_sample(app, metered):
    """A plugin's ``usage_sampled`` gets the service and its metrics in the sampler's transaction."""
    from panel.hookspecs import hookimpl
    from panel.jobs import sample_usage

    seen = []

    class Listener:
        @hookimpl
        def usage_sampled(self, service, metrics, at):
            seen.append((service.id, sorted(m.name for m in metrics), at))

    app.extensions["panel"].pm.register(Listener(), name="test.listener")
    try:
        now = utcnow()
        sample_usage(now=now)
    finally:
        app.extensions["panel"].pm.unregister(name="test.listener")
    assert seen == [(metered["service"].id, ["memory", "posts", "storage_gib"], now)]
    assert len(records(metered["service"], "posts")) == 1          # billing's own hook ran too


# --------------------------------------------------------------------------- corrections

def _void(client, svc, record, reason="double-counted import"):
    return client.post(f"/admin/services/{svc.id}/usage/void", data={"record": str(record.id), "reason": reason})


def test_voiding_a_reported_record_cancels_its_meter_event_once(app, client, router, metered, operator):
    from panel.billing import invoicing
    from panel.models import AuditEntry

    svc, event, customer = metered["service"], metered["event"], metered["customer"]
    t0 = utcnow() - timedelta(minutes=20)
    [first] = metering.record_usage(svc, [_metric("posts", 7)], t0)
    [wrong] = metering.record_usage(svc, [_metric("posts", 19)], t0 + timedelta(minutes=5))
    db.session.commit()
    wait_jobs(app)
    assert router.meter_total(event, customer) == Decimal(19)

    login(client, "ops@example.com")
    page = client.get(f"/admin/services/{svc.id}")
    assert f'id="void-usage-{wrong.id}"'.encode() in page.data and wrong.identifier.encode() in page.data
    r = _void(client, svc, wrong)
    assert r.status_code == 302
    wait_jobs(app)
    db.session.expire_all()
    [correction] = db.session.scalars(db.select(UsageRecord).where(UsageRecord.cancels_id == wrong.id)).all()
    assert (correction.quantity, correction.source, correction.identifier) == (
        Decimal(-12), "correction", f"void-{wrong.identifier}")
    assert db.session.get(UsageRecord, wrong.id).quantity == Decimal(12)      # the voided record stays
    assert router.meter_adjustments[-1]["cancel"] == {"identifier": wrong.identifier}
    sent = [p for p in router.recorded("POST", "/v1/billing/meter_event_adjustments") if p["event_name"] == event]
    assert sent == [{"event_name": event, "type": "cancel", "cancel": {"identifier": wrong.identifier}}]
    task = db.session.scalars(db.select(BillingTask).where(BillingTask.kind == "cancel_usage")).one()
    assert task.state == "succeeded" and task.result == {"cancelled": [correction.id], "skipped": []}
    assert router.idempotency_keys("POST", "/v1/billing/meter_event_adjustments")[-1:] == [
        f"hostpanel-task-{task.id}-cancel-{wrong.id}"]
    assert correction.reported_at is not None
    assert router.meter_total(event, customer) == Decimal(7)                   # Stripe counts the 7 only
    audit = db.session.scalars(db.select(AuditEntry).where(AuditEntry.action == "usage_record.void")).one()
    assert audit.target_id == str(wrong.id) and audit.after["correction"] == correction.id
    # our own figures leave both the voided record and its correction out
    start = t0.replace(hour=0, minute=0, second=0, microsecond=0)
    assert invoicing.usage_totals(svc.id, start, utcnow() + timedelta(days=1),
                                  invoicing.metered_rates(svc.plan)) == {"posts": Decimal(7)}
    # the counter goes on from the voided record's reading (19), not from zero
    [later] = metering.record_usage(svc, [_metric("posts", 25)], t0 + timedelta(minutes=10))
    assert later.quantity == Decimal(6)
    db.session.commit()

    # voiding again, or voiding the correction, is refused and adds nothing
    for target in (wrong, correction):
        page = client.post(f"/admin/services/{svc.id}/usage/void", data={"record": str(target.id)},
                           follow_redirects=True)
        assert b"voided already" in page.data or b"is a correction" in page.data
    assert db.session.scalar(db.select(db.func.count()).select_from(UsageRecord).where(
        UsageRecord.source == "correction")) == 1
    # another service's record is not this service's to void
    assert client.post(f"/admin/services/{svc.id}/usage/void", data={"record": "999999"}).status_code == 404
    wait_jobs(app)
    assert len([p for p in router.recorded("POST", "/v1/billing/meter_event_adjustments")
                if p["event_name"] == event]) == 1


def test_a_record_voided_before_it_reached_stripe_is_never_sent(app, router, metered):
    svc, event, customer = metered["service"], metered["event"], metered["customer"]
    router.fail_next("/v1/billing/meter_events", 400)             # the report is refused: failed task
    [record] = metering.record_usage(svc, [_metric("posts", 5)], utcnow() - timedelta(minutes=5))
    db.session.commit()
    wait_jobs(app)
    report = db.session.scalars(db.select(BillingTask).where(BillingTask.kind == "report_usage")).one()
    assert report.state == "failed"
    metering.void_record(record, actor="operator:ops@example.com")
    db.session.commit()
    wait_jobs(app)
    cancel = db.session.scalars(db.select(BillingTask).where(BillingTask.kind == "cancel_usage")).one()
    assert cancel.state == "succeeded" and cancel.result["cancelled"] == [] and len(cancel.result["skipped"]) == 1
    tasks.retry(report, actor="operator:ops@example.com")          # the operator retries the report
    wait_jobs(app)
    db.session.refresh(report)
    assert report.state == "succeeded" and report.result == {"sent": [], "already": []}
    assert router.meter_total(event, customer) == Decimal(0)
    assert [p for p in router.recorded("POST", "/v1/billing/meter_event_adjustments")
            if p["cancel"]["identifier"] == record.identifier] == []


def test_stripe_refuses_to_cancel_an_event_older_than_a_day(app, client, router, metered, operator):
    svc, event, customer = metered["service"], metered["event"], metered["customer"]
    [record] = metering.record_usage(svc, [_metric("posts", 9)], utcnow() - timedelta(minutes=5))
    db.session.commit()
    wait_jobs(app)
    router.age_meter_event(record.identifier, 25 * 3600)
    metering.void_record(record, actor="operator:ops@example.com", reason="late")
    db.session.commit()
    wait_jobs(app)
    task = db.session.scalars(db.select(BillingTask).where(BillingTask.kind == "cancel_usage")).one()
    assert task.state == "failed" and "within 24 hours" in task.last_error
    assert router.meter_total(event, customer) == Decimal(9)        # Stripe still counts it: the operator is told
    db.session.refresh(svc)
    sub = db.session.scalar(db.select(Subscription).where(Subscription.service_id == svc.id))
    assert sub.notice is None                                        # nothing for the customer to do
    login(client, "ops@example.com")
    assert b"within 24 hours" in client.get(f"/admin/services/{svc.id}").data
