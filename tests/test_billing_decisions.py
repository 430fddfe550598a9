"""The billing handlers' decision helpers, each branch on its own (the mutation run found branches the
event-driven tests never reach: a suspend still waiting when ``invoice.paid`` arrives, a subscription
found by its id alone, a second payment failure inside the grace period, a subscription ending while
the service is being terminated).

Each test builds the service and its operations as the lifecycle leaves them (rows in SQLite, the
memory backend), calls the helper the event handlers call, and checks its answer and what it
recorded. Nothing here talks to Stripe: these helpers decide, the handlers around them are covered
with signed events in tests/billing.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from corelib import wait_jobs
from memory_backend import REMOTE

from panel.billing import handlers
from panel.billing.models import Subscription
from panel.extensions import db
from panel.models import Operation, Service, ServiceEvent
from panel.models.base import utcnow
from panel.testing import free_port

AT = datetime(2026, 11, 3, 12, 0, tzinfo=timezone.utc)


def service_in(customer, plan, status: str, reason: str | None = None) -> Service:
    svc = Service(user=customer, plan=plan, backend="memory", params={"name": f"b-{status}"}, status=status,
                  status_detail="", suspension_reason=reason, resource_id="m-1" if status != "pending_payment" else None)
    db.session.add(svc)
    db.session.commit()
    if svc.resource_id:  # the remote object the lifecycle left (the jobs these helpers request run on it)
        REMOTE.objects[svc.external_id] = {"state": "suspended" if status == "suspended" else "active", "size": 128}
    return svc


def waiting(svc: Service, action: str, payload: dict | None = None, state: str = "pending") -> Operation:
    """An operation that has not run yet (the helpers must read the status it will give)."""
    op = Operation(service=svc, action=action, state=state, payload=payload or {}, actor="test")
    db.session.add(op)
    db.session.commit()
    db.session.refresh(svc)
    return op


def subscription_for(svc: Service, sub_id: str | None = "sub_dec1") -> Subscription:
    sub = Subscription(service_id=svc.id, user_id=svc.user_id, stripe_customer_id="cus_dec",
                       stripe_subscription_id=sub_id, status="active")
    db.session.add(sub)
    db.session.commit()
    return sub


# --------------------------------------------------------------------------- _billing_suspension

@pytest.mark.parametrize("ops,status,reason,expected", [
    ([("suspend", {"reason": "non_payment"})], "active", None, "non_payment"),   # waiting: its reason
    ([("suspend", {})], "active", None, "operator"),                             # waiting, no reason: an operator's
    ([("unsuspend", {})], "suspended", "non_payment", None),                     # being lifted: none
    ([("unsuspend", {}), ("suspend", {"reason": "non_payment"})], "suspended", "operator", "non_payment"),  # the last wins
    ([], "suspended", "non_payment", "non_payment"),                             # settled: the stored reason
    ([], "suspended", "operator", "operator"),
    ([], "active", "non_payment", None),                                         # a stale reason on a live service
])
def test_the_suspension_reason_comes_from_the_last_waiting_operation(customer, plans, ops, status, reason, expected):
    svc = service_in(customer, plans["free"], status, reason)
    for action, payload in ops:
        waiting(svc, action, payload)
    assert handlers._billing_suspension(svc) == expected


def test_a_finished_suspend_does_not_count_as_waiting(customer, plans):
    svc = service_in(customer, plans["free"], "active")
    waiting(svc, "suspend", {"reason": "non_payment"}, state="succeeded")
    assert handlers._billing_suspension(svc) is None


def test_a_finished_operation_after_a_waiting_suspend_does_not_hide_it(customer, plans):
    svc = service_in(customer, plans["free"], "active")
    waiting(svc, "suspend", {"reason": "non_payment"})
    waiting(svc, "change_plan", {"plan_id": plans["big"].id}, state="failed")  # later, and finished
    assert handlers._billing_suspension(svc) == "non_payment"


# --------------------------------------------------------------------------- _suspend_for_non_payment

def test_a_suspend_already_waiting_counts_as_suspended(app, customer, plans):
    svc = service_in(customer, plans["free"], "active")
    waiting(svc, "suspend", {"reason": "operator"})
    assert handlers._suspend_for_non_payment(svc, "invoice unpaid") == "already suspended"
    assert [op.action for op in svc.operations] == ["suspend"]  # no second request


def test_a_suspended_service_is_not_suspended_twice(app, customer, plans):
    svc = service_in(customer, plans["free"], "suspended", "operator")
    assert handlers._suspend_for_non_payment(svc, "invoice unpaid") == "already suspended"
    assert svc.operations == []


@pytest.mark.parametrize("status", ["failed", "provisioning", "terminated"])
def test_a_service_that_is_not_live_is_left_alone(app, customer, plans, status):
    svc = service_in(customer, plans["free"], status)
    assert handlers._suspend_for_non_payment(svc, "invoice unpaid") == f"not suspended: the service is {status}"
    assert svc.operations == []


def test_a_live_service_is_suspended_for_non_payment(app, customer, plans):
    svc = service_in(customer, plans["free"], "active")
    assert handlers._suspend_for_non_payment(svc, "invoice unpaid") == "suspended for non-payment"
    op = svc.operations[-1]
    assert (op.action, op.payload.get("reason"), op.actor) == ("suspend", "non_payment", "stripe")
    wait_jobs(app)
    db.session.refresh(svc)
    assert (svc.status, svc.suspension_reason) == ("suspended", "non_payment")


def test_a_refused_suspend_is_noted_for_operators(app, customer, plans):
    """A failed service whose waiting retry projects it active: the lifecycle refuses the suspend
    (the service is failed), and the refusal is written on the service's log."""
    svc = service_in(customer, plans["free"], "failed")
    waiting(svc, "unsuspend", {"prior_status": "suspended"})
    result = handlers._suspend_for_non_payment(svc, "invoice unpaid")
    assert result.startswith("not suspended: ") and "failed" in result
    notes = db.session.scalars(db.select(ServiceEvent).where(ServiceEvent.service_id == svc.id)).all()
    refused = [n for n in notes if n.detail.startswith("invoice unpaid; could not suspend: ")]
    assert [(n.kind, n.actor) for n in refused] == [("billing", "stripe")]


def test_a_suspended_service_being_resumed_is_not_suspended_again(app, customer, plans):
    """A waiting unsuspend projects the service active, but it is suspended now: not a second suspend."""
    svc = service_in(customer, plans["free"], "suspended", "operator")
    waiting(svc, "unsuspend")
    assert handlers._suspend_for_non_payment(svc, "invoice unpaid") == "already suspended"
    assert [op.action for op in svc.operations] == ["unsuspend"]


# --------------------------------------------------------------------------- _lift_non_payment

def test_lifting_a_live_service_does_nothing(app, customer, plans):
    svc = service_in(customer, plans["free"], "active")
    assert handlers._lift_non_payment(svc, "invoice paid") == ""
    assert svc.operations == []


@pytest.mark.parametrize("reason,kept", [("operator", "operator"), ("abuse", "abuse"), (None, "operator")])
def test_a_suspension_not_for_non_payment_is_kept(app, customer, plans, reason, kept):
    svc = service_in(customer, plans["free"], "suspended", reason)
    assert handlers._lift_non_payment(svc, "invoice paid") == f"suspension by {kept} kept"
    assert svc.operations == []


def test_a_suspension_for_non_payment_is_lifted_with_the_reason_given(app, customer, plans):
    svc = service_in(customer, plans["free"], "suspended", "non_payment")
    assert handlers._lift_non_payment(svc, "invoice paid") == "unsuspended"
    op = svc.operations[-1]
    assert (op.action, op.actor) == ("unsuspend", "stripe")
    events = db.session.scalars(db.select(ServiceEvent).where(ServiceEvent.service_id == svc.id)).all()
    assert any("invoice paid" in (e.detail or "") for e in events)
    wait_jobs(app)
    db.session.refresh(svc)
    assert svc.status == "active"


def test_a_waiting_suspend_for_non_payment_is_lifted(app, customer, plans):
    svc = service_in(customer, plans["free"], "active")
    waiting(svc, "suspend", {"reason": "non_payment"}, state="queued")
    assert handlers._lift_non_payment(svc, "invoice paid") == "unsuspended"
    assert [op.action for op in svc.operations] == ["suspend", "unsuspend"]  # it runs after the suspend
    assert handlers._billing_suspension(svc) is None


# --------------------------------------------------------------------------- _find

def test_a_subscription_is_found_by_its_id_without_metadata(customer, plans):
    svc = service_in(customer, plans["paid"], "active")
    sub = subscription_for(svc, "sub_only_id")
    assert handlers._find("sub_only_id", None) is sub
    assert handlers._find("sub_only_id", {}) is sub


def test_the_id_wins_over_the_metadata(customer, plans):
    a = service_in(customer, plans["paid"], "active")
    b = service_in(customer, plans["paid"], "active")
    sub_a, sub_b = subscription_for(a, "sub_a"), subscription_for(b, "sub_b")
    assert handlers._find("sub_a", {"panel_service_id": str(b.id)}) is sub_a
    assert handlers._find("sub_unknown", {"panel_service_id": str(b.id)}) is sub_b  # the fallback
    assert handlers._find(None, {"panel_service_id": str(b.id)}) is sub_b


@pytest.mark.parametrize("metadata", [None, {}, {"panel_service_id": "x"}, {"panel_service_id": "999999"}])
def test_nothing_is_found_for_an_unknown_subscription(customer, plans, metadata):
    svc = service_in(customer, plans["paid"], "active")
    subscription_for(svc, "sub_known")
    assert handlers._find("sub_other", metadata) is None


# --------------------------------------------------------------------------- _start_grace

def test_a_second_failure_keeps_the_first_failure_and_its_deadline(app, customer, plans):
    svc = service_in(customer, plans["paid"], "active")
    sub = subscription_for(svc)
    handlers._start_grace(sub, AT)
    days = float(app.config["SUSPEND_AFTER_DAYS"])
    assert (sub.payment_failed_at, sub.grace_until) == (AT, AT + timedelta(days=days))
    handlers._start_grace(sub, AT + timedelta(days=2))
    assert (sub.payment_failed_at, sub.grace_until) == (AT, AT + timedelta(days=days))


def test_clearing_dunning_clears_the_notice_too(customer, plans):
    svc = service_in(customer, plans["paid"], "active")
    sub = subscription_for(svc)
    sub.payment_failed_at, sub.grace_until, sub.notice = AT, AT, "pay"
    handlers._clear_dunning(sub)
    assert (sub.payment_failed_at, sub.grace_until, sub.notice) == (None, None, None)


# --------------------------------------------------------------------------- _end_subscription

@pytest.mark.parametrize("status", ["terminating", "terminated", "cancelled"])
def test_a_subscription_ending_on_a_service_that_is_going_away_changes_nothing(app, customer, plans, status):
    svc = service_in(customer, plans["paid"], status)
    sub = subscription_for(svc)
    ctx = handlers.EventContext(id="evt_dec", type="customer.subscription.deleted", created=int(AT.timestamp()))
    result = handlers._end_subscription(sub, svc, {"ended_at": int(AT.timestamp())}, ctx)
    assert result == f"nothing to do: the service is {status}"
    assert sub.status == "canceled" and svc.operations == []
    days = float(app.config["TERMINATE_AFTER_DAYS"])
    assert sub.terminate_at.replace(tzinfo=timezone.utc) == AT + timedelta(days=days)


# --------------------------------------------------------------------------- _change_plan_to

def priced(plans, price: str = "price_dec_big"):
    """mem-big sold at ``price``, and a plan of another backend at the same price."""
    from panel.models import Plan

    plans["big"].stripe_price = price
    other = Plan(slug="docker-big", name="Docker big", backend="docker", options={}, stripe_price="price_dec_other")
    db.session.add(other)
    db.session.commit()
    return plans["big"]


def test_a_price_of_no_plan_of_the_services_backend_is_noted_not_applied(app, customer, plans):
    priced(plans)
    svc = service_in(customer, plans["paid"], "active")
    sub = subscription_for(svc)
    assert handlers._change_plan_to(sub, svc, "price_dec_other") == "price price_dec_other matches no plan"
    assert svc.plan_id == plans["paid"].id and svc.operations == []
    assert [e.detail for e in svc.events if e.kind == "billing"] == [
        "subscription moved to price price_dec_other, which matches no plan of this backend; an operator must check it"]


def test_a_price_of_the_services_own_plan_changes_nothing(app, customer, plans):
    svc = service_in(customer, plans["paid"], "active")
    sub = subscription_for(svc)
    assert handlers._change_plan_to(sub, svc, "price_1Test") == "already on that plan"
    assert svc.operations == []


def test_an_upgrade_waiting_for_its_checkout_is_not_applied_twice(app, customer, plans):
    priced(plans)
    svc = service_in(customer, plans["paid"], "active")
    sub = subscription_for(svc)
    sub.pending_change = {"plan_id": plans["big"].id}
    assert handlers._change_plan_to(sub, svc, "price_dec_big") == (
        "an upgrade is paid through Checkout: it applies when the checkout completes")
    assert svc.operations == []


@pytest.mark.parametrize("action,state,payload,requested", [
    ("change_plan", "pending", "target", False),   # already on its way: not requested again
    ("change_plan", "running", "target", False),
    ("change_plan", "succeeded", "target", True),  # finished: a new change is requested
    ("change_plan", "pending", "other", True),     # to another plan: this one is requested
    ("suspend", "pending", "target", True),        # another action does not count
])
def test_a_plan_change_already_on_its_way_is_not_requested_again(app, customer, plans, action, state, payload,
                                                                  requested):
    target = priced(plans)
    svc = service_in(customer, plans["paid"], "active")
    sub = subscription_for(svc)
    waiting(svc, action, {"plan_id": target.id if payload == "target" else plans["free"].id}, state=state)
    result = handlers._change_plan_to(sub, svc, "price_dec_big")
    changes = [op for op in svc.operations if op.action == "change_plan" and op.actor == handlers.ACTOR]
    if requested:
        assert result == "plan change to mem-big requested"
        assert [{k: op.payload[k] for k in ("plan_id", "addons")} for op in changes] == [
            {"plan_id": target.id, "addons": []}]
        assert (svc.term, sub.term) == ("monthly", "monthly")
    else:
        assert result == "plan change to mem-big already requested" and changes == []


def test_a_plan_change_keeps_the_add_ons_the_new_plan_offers_and_only_those(app, customer, plans):
    from panel.models import Addon, ServiceAddon

    target = priced(plans)
    offered, dropped, removed = (Addon(slug=slug, name=slug, prices={}, options={})
                                 for slug in ("dec-backups", "dec-ram", "dec-ipv4"))
    db.session.add_all([offered, dropped, removed])
    target.addons = ["dec-backups", "dec-ipv4"]
    svc = service_in(customer, plans["paid"], "active")
    db.session.add_all([ServiceAddon(service_id=svc.id, addon_id=offered.id, state="active"),
                        ServiceAddon(service_id=svc.id, addon_id=dropped.id, state="adding"),
                        ServiceAddon(service_id=svc.id, addon_id=removed.id, state="removed")])
    db.session.commit()
    db.session.refresh(svc)
    sub = subscription_for(svc)
    assert handlers._change_plan_to(sub, svc, "price_dec_big") == "plan change to mem-big requested"
    change = next(op for op in svc.operations if op.action == "change_plan")
    # dec-ram is not offered with mem-big; dec-ipv4 is, but the customer removed it
    assert change.payload["addons"] == ["dec-backups"]


# --------------------------------------------------------------------------- process_event's failures

FAILING = "test.decisions.failing"


@pytest.fixture
def use_handler():
    """Register a handler of the test event type for one test: ``use_handler(fn)``."""
    yield lambda fn: handlers.handles(FAILING)(fn)
    handlers.HANDLERS.pop(FAILING, None)


@pytest.fixture
def failing_handler(use_handler):
    """An event type whose handler raises what it is given (registered as billing registers its own)."""
    raised = {}

    def handler(obj, ctx):
        raise raised["exc"]

    use_handler(handler)
    return raised


def stored_event(event_id: str, attempts: int = 0):
    from panel.billing.models import StripeEvent

    row = StripeEvent(id=event_id, type=FAILING, created=int(AT.timestamp()), payload={"data": {"object": {}}},
                      attempts=attempts, due_at=utcnow(), lease_token=0, lost_runs=0)
    db.session.add(row)
    db.session.commit()
    return row


def event_row(event_id: str):
    from panel.billing.models import StripeEvent

    db.session.rollback()
    return db.session.get(StripeEvent, event_id, populate_existing=True)


def test_a_transient_failure_is_retried_after_the_backoff(app, failing_handler, caplog):
    from panel.backends import TransientBackendError

    failing_handler["exc"] = TransientBackendError("stripe: timed out")
    stored_event("evt_dec_retry")
    before = utcnow()
    assert handlers.process_event("evt_dec_retry") == "retrying"
    row = event_row("evt_dec_retry")
    first = float(app.config["JOB_BACKOFF"][0])
    assert row.attempts == 1 and row.processed_at is None and row.lease_owner is None
    assert before + timedelta(seconds=first) <= row.due_at.replace(tzinfo=timezone.utc) <= utcnow() + timedelta(seconds=first)
    assert row.error == "TransientBackendError: stripe: timed out"
    assert "stripe event evt_dec_retry retrying: TransientBackendError: stripe: timed out" in messages(caplog)


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_the_retry_waits_the_configured_backoff(app, failing_handler):
    """With ``PANEL_JOB_BACKOFF`` 30 s the event is due 30 s later (the suite's default is 0 s)."""
    from panel.backends import TransientBackendError

    app.config["JOB_BACKOFF"] = [30]
    failing_handler["exc"] = TransientBackendError("stripe: timed out")
    stored_event("evt_dec_backoff")
    before = utcnow()
    assert handlers.process_event("evt_dec_backoff") == "retrying"
    due = event_row("evt_dec_backoff").due_at.replace(tzinfo=timezone.utc)
    assert before + timedelta(seconds=30) <= due <= utcnow() + timedelta(seconds=30)


@pytest.mark.parametrize("extra,outcome", [(0, "ignored"), (1, "failed")])
def test_an_event_whose_workers_kept_dying_gives_up(app, extra, outcome):
    """A run is lost (worker killed) up to ``PANEL_JOB_MAX_LOST_RUNS`` times and tried again; one more
    and the event gives up without running its handler, saying why."""
    from panel.billing.models import StripeEvent

    limit = int(app.config["JOB_MAX_LOST_RUNS"])
    db.session.add(StripeEvent(id="evt_dec_lost", type="test.decisions.unknown", created=int(AT.timestamp()),
                               payload={}, due_at=utcnow(), lease_token=3, lost_runs=limit - 1 + extra,
                               lease_owner="dead-worker", lease_expires_at=utcnow() - timedelta(seconds=5)))
    db.session.commit()
    result = handlers.process_event("evt_dec_lost")  # takes the expired lease over: one more lost run
    row = event_row("evt_dec_lost")
    assert row.lost_runs == limit + extra and row.lease_owner is None
    if outcome == "failed":
        assert result == "failed" and row.processed_at is None and row.due_at is None and row.attempts == 1
        assert row.error == (f"gave up after 1 attempt(s): the worker applying it stopped {limit + 1} times "
                             "without reporting; see the worker logs")
    else:
        assert result.startswith("ignored: ") and row.processed_at is not None


def test_the_last_retry_gives_up_and_says_after_how_many(app, failing_handler, caplog):
    from panel.backends import TransientBackendError

    retries = int(app.config["JOB_RETRIES"])
    failing_handler["exc"] = TransientBackendError("x" * 3000)
    stored_event("evt_dec_last", attempts=retries)
    assert handlers.process_event("evt_dec_last") == "failed"
    row = event_row("evt_dec_last")
    assert row.attempts == retries + 1 and row.due_at is None and row.processed_at is None
    assert row.error.startswith(f"gave up after {retries + 1} attempt(s): TransientBackendError: xxx")
    assert len(row.error) == 2000
    assert any(m.startswith("stripe event evt_dec_last failed: TransientBackendError: xxx") for m in messages(caplog))


def test_a_permanent_stripe_error_gives_up_at_once(app, failing_handler):
    from panel.billing.stripe_api import BillingAPIError

    failing_handler["exc"] = BillingAPIError("No such price: 'price_gone'", status=400, code="resource_missing")
    stored_event("evt_dec_perm")
    assert handlers.process_event("evt_dec_perm") == "failed"
    row = event_row("evt_dec_perm")
    assert (row.attempts, row.due_at) == (1, None)
    assert row.error == "gave up after 1 attempt(s): No such price: 'price_gone'"


def test_a_long_message_is_cut_to_2000_characters_when_retrying(app, failing_handler):
    from panel.backends import TransientBackendError

    failing_handler["exc"] = TransientBackendError("y" * 5000)
    stored_event("evt_dec_long")
    assert handlers.process_event("evt_dec_long") == "retrying"
    assert len(event_row("evt_dec_long").error) == 2000


def test_a_failure_whose_lease_was_taken_over_records_nothing(app, failing_handler, caplog):
    """The run stalled and another worker took the event over: its failure report is refused."""
    from panel import work
    from panel.billing.models import StripeEvent

    stored_event("evt_dec_stale")
    lease = work.claim(StripeEvent, "evt_dec_stale")
    db.session.commit()
    db.session.execute(db.update(StripeEvent).where(StripeEvent.id == "evt_dec_stale")
                       .values(lease_token=StripeEvent.lease_token + 1, lease_owner="another-worker"))
    db.session.commit()
    assert handlers._record_failure(lease, 0, "boom", retry=True) == "stale"
    row = event_row("evt_dec_stale")
    assert (row.attempts, row.error, row.lease_owner) == (0, None, "another-worker")
    assert any(m.startswith("stale completion refused: stripe_events evt_dec_stale: lease ") and "taken over" in m
               for m in messages(caplog))


def test_a_completion_whose_lease_was_taken_over_applies_nothing(app, caplog, use_handler):
    """Another worker takes the event over after this run's claim committed and before its handler
    ran (the run stalled past its lease): the fence refuses the run, the handler never runs, and
    the event is left to the new owner."""
    from sqlalchemy import event

    from panel.billing.models import StripeEvent

    ran, taken = [], []
    use_handler(lambda obj, ctx: ran.append(ctx.id) or "applied")
    stored_event("evt_dec_late")
    session = db.session()

    def take_over(_session):
        if taken:  # once: right after the claim committed
            return
        taken.append(True)
        with db.engine.begin() as conn:
            conn.execute(db.update(StripeEvent).where(StripeEvent.id == "evt_dec_late")
                         .values(lease_token=StripeEvent.lease_token + 1, lease_owner="another-worker"))

    event.listen(session, "after_commit", take_over)
    try:
        assert handlers.process_event("evt_dec_late") == "stale"
    finally:
        event.remove(session, "after_commit", take_over)
    assert ran == [] and taken == [True]
    row = event_row("evt_dec_late")
    assert (row.processed_at, row.outcome, row.attempts, row.lease_owner) == (None, None, 0, "another-worker")
    stale = [m for m in messages(caplog) if m.startswith("stale completion refused: ")]
    assert len(stale) == 1 and stale[0].startswith("stale completion refused: stripe_events evt_dec_late: lease ")
    assert "taken over" in stale[0]


def test_a_handler_that_returns_no_sentence_is_recorded_with_an_empty_outcome(app, use_handler):
    use_handler(lambda obj, ctx: None)
    stored_event("evt_dec_quiet")
    assert handlers.process_event("evt_dec_quiet") is None
    row = event_row("evt_dec_quiet")
    assert row.outcome == "" and row.processed_at is not None and row.attempts == 1


@pytest.mark.parametrize("created", [0, int(AT.timestamp())])
def test_a_handler_sees_the_event_as_stored_and_its_sentence_is_logged_and_kept(app, caplog, use_handler, created):
    import logging

    from panel.billing.models import StripeEvent

    seen = []
    use_handler(lambda obj, ctx: seen.append((ctx.id, ctx.type, ctx.created)) or "applied " + "z" * 3000)
    db.session.add(StripeEvent(id="evt_dec_seen", type=FAILING, created=created, payload={"data": {"object": {}}},
                               attempts=0, due_at=utcnow(), lease_token=0, lost_runs=0))
    db.session.commit()
    with caplog.at_level(logging.INFO, logger="panel.billing.handlers"):
        assert handlers.process_event("evt_dec_seen") == "applied " + "z" * 3000
    assert seen == [("evt_dec_seen", FAILING, created)]
    assert event_row("evt_dec_seen").outcome == ("applied " + "z" * 3000)[:2000]  # cut to 2000 characters
    assert f"stripe event evt_dec_seen ({FAILING}) applied: applied {'z' * 3000}" in messages(caplog)


def test_a_transient_stripe_error_is_retried(app, failing_handler):
    from panel.billing.stripe_api import BillingAPIError

    failing_handler["exc"] = BillingAPIError("Stripe did not answer", status=None, transient=True)
    stored_event("evt_dec_flaky")
    assert handlers.process_event("evt_dec_flaky") == "retrying"
    row = event_row("evt_dec_flaky")
    assert (row.attempts, row.error, row.processed_at) == (1, "Stripe did not answer", None)
    assert row.due_at is not None


@pytest.mark.parametrize("kind,logged", [("bug", True), ("transient", False)])
def test_an_unexpected_error_is_logged_with_its_traceback_a_transient_one_is_not(app, failing_handler, caplog,
                                                                                  kind, logged):
    from panel.backends import TransientBackendError

    failing_handler["exc"] = ValueError("a bug") if kind == "bug" else TransientBackendError("try again")
    stored_event("evt_dec_bug")
    assert handlers.process_event("evt_dec_bug") == "retrying"
    traced = [r for r in caplog.records if r.exc_info]
    if logged:
        assert [r.getMessage() for r in traced] == [f"stripe event evt_dec_bug ({FAILING}) failed"]
        assert traced[0].exc_info[0] is ValueError
        assert event_row("evt_dec_bug").error == "ValueError: a bug"
    else:
        assert traced == []
        assert event_row("evt_dec_bug").error == "TransientBackendError: try again"


def test_an_event_of_an_unhandled_type_is_recorded_as_ignored(app):
    from panel.billing.models import StripeEvent

    db.session.add(StripeEvent(id="evt_dec_ign", type="test.decisions.unknown", created=int(AT.timestamp()),
                               payload={}, due_at=utcnow(), lease_token=0, lost_runs=0))
    db.session.commit()
    assert handlers.process_event("evt_dec_ign") == "ignored: test.decisions.unknown is not handled"
    row = event_row("evt_dec_ign")
    assert row.outcome == "ignored: test.decisions.unknown is not handled" and row.processed_at is not None
    assert (row.attempts, row.due_at, row.error) == (1, None, None)
    assert handlers.process_event("evt_dec_ign") == "skipped"  # processed: a second delivery does nothing


@pytest.mark.parametrize("backoff,queued", [(30, 0), (0, 1)])
def test_a_retry_later_than_a_second_is_left_to_the_sweep(make_app, redis_server, failing_handler, backoff,
                                                          queued):
    """With Redis, a retried event is handed over at once only when it is due within a second; one
    due in 30 s waits in the database for the sweep (nothing in the queue would wake a worker early)."""
    import redis

    from panel import dispatch
    from panel.backends import TransientBackendError

    redis.Redis.from_url(redis_server.url).flushall()
    app = make_app(REDIS_URL=redis_server.url, STRIPE_SECRET_KEY="sk_test_decisions",
                   STRIPE_WEBHOOK_SECRET="whsec_decisions", STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}")
    with app.app_context():
        app.config["JOB_BACKOFF"] = [backoff]
        failing_handler["exc"] = TransientBackendError("stripe: timed out")
        stored_event(f"evt_dec_sweep_{backoff}")
        q = dispatch.queue(app)
        q.connection.delete(q.key)
        assert handlers.process_event(f"evt_dec_sweep_{backoff}") == "retrying"
        assert q.connection.llen(q.key) == queued
