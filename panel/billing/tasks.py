"""Billing tasks: every Stripe call that changes a charge, as a row first and then a job.

A request (a click, an API call, a lifecycle change, a Stripe event) never calls Stripe to change
a charge. It records a ``BillingTask`` (``record``/``schedule``) in its own transaction (a Stripe
event's: the event's); after the commit the job ``run_task(task_id)`` makes the calls. Each POST carries the idempotency key
``hostpanel-task-<id>-<step>``, so a retried or duplicated job never cancels, charges or refunds
twice; every step first reads Stripe's state, so a re-run after a crash picks up where the
previous run stopped.

Kinds (``payload`` keys):

* ``cancel_subscription`` (``subscription``, ``refund``: ``none``/``credit``/``refund``/``full``/
  ``full_credit``, ``at``: Unix seconds of the request): ``DELETE /v1/subscriptions/{id}``;
  ``credit`` cancels with ``prorate=true&invoice_now=true`` (Stripe credits the unused time to the
  customer's balance); ``refund`` then issues a credit note with ``refund_amount`` = the unused
  part of the period at ``at`` (``unused_amount``) on the latest paid invoice; ``full`` refunds
  (``full_credit`` credits) that invoice's whole remaining amount (a paid order that never ran).
* ``cancel_at_period_end`` (``subscription``): ``POST /v1/subscriptions/{id}`` with
  ``cancel_at_period_end=true``.
* ``add_item`` (``subscription``, ``price``, ``addon``): ``POST /v1/subscription_items`` with
  ``proration_behavior=create_prorations``; then the backend applies the add-on (``change_plan``).
* ``remove_item`` (``subscription``, ``price``, ``item``?, ``addon``): ``DELETE
  /v1/subscription_items/{id}`` with ``proration_behavior=create_prorations``; then the backend
  drops it.
* ``change_prices`` (``subscription``, ``prices``: ``{old price: new price or null}``, ``add``:
  [new prices], ``metered``: [the new plan's metered prices, added without a quantity],
  ``plan_id``, ``term``, ``addons``): one ``POST /v1/subscriptions/{id}`` moving every item at
  once (prorated; a new interval restarts the billing cycle), then the backend's
  ``change_plan``.
* ``report_usage`` (``records``: usage record ids): one ``POST /v1/billing/meter_events`` per
  record, identified by the record's ``identifier`` (``panel.billing.metering``).
* ``cancel_usage`` (``corrections``: ``[{"record": correction id, "voids": voided record id,
  "identifier", "event_name"}]``): one ``POST /v1/billing/meter_event_adjustments``
  (``type=cancel``) per voided record Stripe counted (``panel.billing.metering``).

Tasks are durable work (``panel.work``, kind ``billing``): a task is owed while its ``due_at`` is
set, a worker claims it with a lease and fencing token, and the dispatcher's sweep hands over
again whatever is due or whose lease expired, so a lost job or a killed worker loses nothing.
Tasks of one service run one at a time, in order. A transient Stripe failure is due again after
``PANEL_JOB_BACKOFF`` (up to ``PANEL_JOB_RETRIES`` times); a rejection fails the task: the
operator sees Stripe's message on the service page (with a Retry button), the customer a plain
sentence.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta
from decimal import ROUND_DOWN, Decimal

from flask import current_app
from sqlalchemy.exc import InterfaceError, OperationalError

from panel import lifecycle, work
from panel.billing import stripe_api
from panel.billing.models import TASK_UNFINISHED, BillingTask, Subscription, from_unix
from panel.billing.stripe_api import BillingAPIError
from panel.extensions import db
from panel.models import Service, ServiceAddon
from panel.models.base import utcnow

log = logging.getLogger(__name__)

PRORATION = "create_prorations"
REFUND_REASON = "order_change"  # Stripe credit note reasons: duplicate, fraudulent, order_change, product_unsatisfactory

# What the customer reads when a task failed (operators see Stripe's message).
CUSTOMER_WORDS = {
    "cancel_subscription": "We could not stop the subscription in our payment provider yet; our team has been told "
                           "and will make sure you are not charged for it.",
    "cancel_at_period_end": "The cancellation did not go through yet; our team has been told.",
    "add_item": "The add-on could not be added: the payment provider refused the change. Nothing was charged.",
    "remove_item": "The add-on could not be removed in the payment provider yet; our team has been told.",
    "change_prices": "The plan change could not be made: the payment provider refused it. Nothing was charged.",
}


# --------------------------------------------------------------------------- recording

def register(app) -> None:
    """Register work kind ``billing`` (``BillingTask`` rows, run by ``run_task``) with the dispatcher."""
    from panel import dispatch
    from panel.billing import metering  # noqa: F401  (the report_usage kind)

    dispatch.register_kind(app, dispatch.WorkKind("billing", BillingTask, run_task))


def open_tasks(service: Service, kind: str | None = None) -> list[BillingTask]:
    """Unfinished tasks of ``service`` (of ``kind`` when given), oldest first."""
    query = db.select(BillingTask).where(BillingTask.service_id == service.id,
                                         BillingTask.state.in_(TASK_UNFINISHED))
    if kind:
        query = query.where(BillingTask.kind == kind)
    return db.session.scalars(query.order_by(BillingTask.id)).all()


def record(kind: str, service: Service | None, payload: dict, *, actor: str) -> BillingTask:
    """Add a ``BillingTask``, due now, to the current transaction (flushed, not committed); a worker
    gets it once the transaction commits (and the sweep, should that hand-over be lost)."""
    task = BillingTask(kind=kind, service_id=service.id if service is not None else None, payload=dict(payload),
                       state="queued", actor=actor or "system", due_at=utcnow(), lease_token=0, lost_runs=0)
    db.session.add(task)
    db.session.flush()
    work.wake_after_commit("billing", task.id)
    return task


def commit_and_hand_over() -> None:
    """Commit what was recorded (``lifecycle.commit``: only a flush inside a Stripe event's or a
    job's one transaction); the dispatcher hands the tasks to workers after the real commit."""
    lifecycle.commit()


def schedule(kind: str, service: Service | None, payload: dict, *, actor: str) -> BillingTask:
    """``record`` a task and commit. Returns the task."""
    task = record(kind, service, payload, actor=actor)
    commit_and_hand_over()
    return task


# --------------------------------------------------------------------------- the job

def _earlier_open(task: BillingTask) -> bool:
    if task.service_id is None:
        return False
    return db.session.scalar(db.select(db.func.count()).select_from(BillingTask).where(
        BillingTask.service_id == task.service_id, BillingTask.id < task.id,
        BillingTask.state.in_(TASK_UNFINISHED))) > 0


WAIT_SECONDS = 3.0  # a task whose service has an earlier unfinished task looks again after this


def run_task(task_id: int) -> str:
    """Job (work kind ``billing``): run billing task ``task_id`` under a lease (``panel.work``).
    Returns ``succeeded``, ``retrying``, ``failed``, ``waiting`` (an earlier task of the service is
    unfinished), ``skipped`` (not due: a duplicate job) or ``stale`` (the lease was taken over).

    The Stripe calls run with the lease renewed by a heartbeat; then the outcome, the lease release
    and the follow-up (a backend operation, the subscription row) commit in one transaction that
    starts with the fencing check. A transient Stripe failure is due again after
    ``PANEL_JOB_BACKOFF`` (up to ``PANEL_JOB_RETRIES`` times); a rejection fails the task.
    """
    now = utcnow()
    lease = work.claim(BillingTask, task_id, now=now, values={"state": "running", "updated_at": now})
    if lease is None:
        return "skipped"
    task = db.session.get(BillingTask, task_id, populate_existing=True)
    prior = task.attempts or 0
    if _earlier_open(task):
        work.fence(lease)
        task.state, task.due_at = "queued", now + timedelta(seconds=WAIT_SECONDS)
        work.wake_after_commit("billing", task.id, task.due_at)
        db.session.commit()
        return "waiting"
    db.session.commit()  # the claim
    if lease.lost_runs > current_app.config["JOB_MAX_LOST_RUNS"]:
        return _record_failure(lease, prior, f"the worker running it stopped {lease.lost_runs} times without "
                                             "reporting; see the worker logs", retry=False)
    with work.Heartbeat(lease):
        try:
            task = db.session.get(BillingTask, task_id, populate_existing=True)
            result = RUNNERS[task.kind](task)
        except BillingAPIError as exc:
            return _record_failure(lease, prior, str(exc), retry=exc.transient)
        except (OperationalError, InterfaceError):
            db.session.rollback()
            raise
        except Exception as exc:
            log.exception("billing task %s failed", task_id)
            return _record_failure(lease, prior, f"internal error ({type(exc).__name__}: {exc})", retry=False)
    try:
        with lifecycle.one_transaction():
            work.fence(lease)  # first: the completion of a run whose lease was taken over is refused
            task = db.session.get(BillingTask, task_id, populate_existing=True)
            task.state, task.result, task.last_error = "succeeded", result, None
            task.attempts, task.due_at, task.finished_at = prior + 1, None, utcnow()
            AFTER[task.kind](task)
            _next(task)
        lifecycle.commit()
    except work.StaleLease as exc:
        db.session.rollback()
        log.warning("stale completion refused: %s", exc)
        return "stale"
    return "succeeded"


def _record_failure(lease, prior: int, message: str, *, retry: bool) -> str:
    """Record a failed run under the fence: due again after the backoff, or failed for good (the
    operator sees ``message``, the customer a plain sentence)."""
    from panel.jobs import backoff_for

    db.session.rollback()
    try:
        with lifecycle.one_transaction():
            work.fence(lease)
            task = db.session.get(BillingTask, lease.id, populate_existing=True)
            task.attempts = prior + 1
            task.last_error = message[:2000]
            if retry and task.attempts <= current_app.config["JOB_RETRIES"]:
                task.state = "queued"
                task.due_at = utcnow() + timedelta(seconds=backoff_for(task.attempts))
                work.wake_after_commit("billing", task.id, task.due_at)
                outcome = "retrying"
            else:
                _fail(task, message)
                outcome = "failed"
        lifecycle.commit()
    except work.StaleLease as exc:
        db.session.rollback()
        log.warning("stale completion refused: %s", exc)
        return "stale"
    log.warning("billing task %s %s: %s", lease.id, outcome, message)
    return outcome


def _fail(task: BillingTask, message: str) -> None:
    """Mark ``task`` failed and tell the operator (service event) and the customer (notice).
    Does not commit."""
    task.state, task.due_at, task.finished_at = "failed", None, utcnow()
    task.last_error = message[:2000]
    service = db.session.get(Service, task.service_id) if task.service_id else None
    if service is not None:
        FAILED.get(task.kind, lambda t, s: None)(task, service)
        lifecycle.note(service, f"billing task {task.id} ({task.kind}) failed: {message}", actor="billing",
                       kind="billing")
        sub = _subscription(service)
        if sub is not None and task.kind in CUSTOMER_WORDS:
            sub.notice = CUSTOMER_WORDS[task.kind]
    _next(task)


def _next(task: BillingTask) -> None:
    """Make the next queued task of the same service due now (it waited for this one)."""
    if task.service_id is None:
        return
    following = db.session.scalar(db.select(BillingTask).where(
        BillingTask.service_id == task.service_id, BillingTask.state == "queued", BillingTask.id > task.id)
        .order_by(BillingTask.id).limit(1))
    if following is not None:
        following.due_at = utcnow()
        work.wake_after_commit("billing", following.id)


def retry(task: BillingTask, *, actor: str) -> None:
    """An operator retries a failed task (attempts start over); commits (a worker takes it)."""
    if task.state != "failed":
        raise lifecycle.LifecycleError(f"only a failed billing task can be retried (this one is {task.state})")
    task.state, task.attempts, task.finished_at, task.due_at = "queued", 0, None, utcnow()
    task.actor = actor
    work.wake_after_commit("billing", task.id)
    db.session.commit()


# --------------------------------------------------------------------------- helpers

def _subscription(service: Service | None) -> Subscription | None:
    if service is None:
        return None
    return db.session.scalar(db.select(Subscription).where(Subscription.service_id == service.id))


def _client():
    return stripe_api.client()


def _retrieve(sub_id: str) -> dict:
    return stripe_api.call("read the subscription", _client().v1.subscriptions.retrieve, sub_id)


def unused_amount(subscription: dict, at: int) -> int:
    """The part of the current period's price not used at ``at`` (Unix seconds), in minor units,
    rounded down: the sum of every licensed item's ``unit_amount x quantity`` (metered items are
    paid in arrears and left out) times
    ``(period_end - at) / (period_end - period_start)`` (each item's own period, API 2025-03-31+)."""
    total = Decimal(0)
    for item in (subscription.get("items") or {}).get("data") or []:
        price = item.get("price") or {}
        start = item.get("current_period_start") or subscription.get("current_period_start")
        end = item.get("current_period_end") or subscription.get("current_period_end")
        amount = price.get("unit_amount")
        if (price.get("recurring") or {}).get("usage_type") == "metered":
            continue  # billed in arrears from its meter: nothing of it was paid in advance
        if amount is None or not start or not end or end <= start:
            continue
        fraction = max(Decimal(0), min(Decimal(1), Decimal(int(end) - int(at)) / Decimal(int(end) - int(start))))
        total += Decimal(int(amount) * int(item.get("quantity") or 1)) * fraction
    return int(total.quantize(Decimal(1), rounding=ROUND_DOWN))


def _latest_paid_invoice(sub_id: str) -> dict | None:
    page = stripe_api.call("list the subscription's invoices", _client().v1.invoices.list,
                           params={"subscription": sub_id, "limit": 10})
    for inv in page.get("data") or []:
        if inv.get("status") == "paid" and int(inv.get("amount_paid") or 0) > 0:
            return inv
    return None


def _credit_note(task: BillingTask, sub_id: str, amount: int, how: str) -> dict | None:
    """A credit note of ``amount`` on the subscription's latest paid invoice, refunded to the card
    (``how`` ``refund``) or credited to the customer's balance (``credit``), capped at what the
    invoice has left. ``None`` when nothing is left to give back."""
    invoice = _latest_paid_invoice(sub_id)
    if invoice is None:
        return None
    left = int(invoice.get("amount_paid") or 0) - int(invoice.get("post_payment_credit_notes_amount") or 0)
    amount = min(int(amount), left)
    if amount <= 0:
        return None
    params = {"invoice": invoice["id"], "amount": amount, "reason": REFUND_REASON,
              "memo": "Refund of a hosting order that could not be set up"
              if str(task.payload.get("refund")).startswith("full") else "Unused time of a cancelled hosting service",
              "metadata": {"panel_task_id": str(task.id), "panel_service_id": str(task.service_id or "")}}
    params["refund_amount" if how == "refund" else "credit_amount"] = amount
    return stripe_api.call("issue the credit note", _client().v1.credit_notes.create, params=params,
                           options={"idempotency_key": task.idempotency_key("credit-note")})


# --------------------------------------------------------------------------- runners

def _cancel_subscription(task: BillingTask) -> dict:
    sub_id = task.payload["subscription"]
    refund = task.payload.get("refund") or "none"
    at = int(task.payload.get("at") or utcnow().timestamp())
    result = dict(task.result or {})
    try:
        current = _retrieve(sub_id)
    except BillingAPIError as exc:
        if exc.status == 404 or exc.code == "resource_missing":
            return {"cancelled": False, "note": "the subscription does not exist in Stripe"}
        raise
    # computed at the request's time ``at`` from prices and periods: a retry gives back the same amount
    result["unused"] = unused_amount(current, at)
    if current.get("status") not in ("canceled", "incomplete_expired"):
        params = {"prorate": True, "invoice_now": True} if refund == "credit" else {}
        stripe_api.call("cancel the subscription", _client().v1.subscriptions.cancel, sub_id, params=params,
                        options={"idempotency_key": task.idempotency_key("cancel")})
    result["cancelled"] = True
    if refund in ("refund", "full", "full_credit"):
        amount = 10 ** 12 if refund.startswith("full") else result["unused"]
        note = _credit_note(task, sub_id, amount, "credit" if refund == "full_credit" else "refund")
        if note is not None:
            result.update(credit_note=note["id"], refunded=int(note["amount"]), currency=note.get("currency"))
    return result


def _cancel_at_period_end(task: BillingTask) -> dict:
    sub_id = task.payload["subscription"]
    updated = stripe_api.call("cancel the subscription at period end", _client().v1.subscriptions.update, sub_id,
                              params={"cancel_at_period_end": True},
                              options={"idempotency_key": task.idempotency_key("update")})
    return {"cancel_at_period_end": bool(updated.get("cancel_at_period_end")),
            "period_end": stripe_api.period_end_of(updated)}


def _item_with_price(subscription: dict, price: str) -> dict | None:
    for item in (subscription.get("items") or {}).get("data") or []:
        if stripe_api.item_price(item) == price:
            return item
    return None


def _add_item(task: BillingTask) -> dict:
    sub_id, price = task.payload["subscription"], task.payload["price"]
    existing = _item_with_price(_retrieve(sub_id), price)
    if existing is not None:  # an earlier run added it
        return {"item": existing["id"]}
    item = stripe_api.call("add the subscription item", _client().v1.subscription_items.create,
                           params={"subscription": sub_id, "price": price, "quantity": 1,
                                   "proration_behavior": PRORATION,
                                   "metadata": {"panel_addon": task.payload.get("addon", "")}},
                           options={"idempotency_key": task.idempotency_key("add")})
    return {"item": item["id"]}


def _remove_item(task: BillingTask) -> dict:
    sub_id, price = task.payload["subscription"], task.payload["price"]
    item = _item_with_price(_retrieve(sub_id), price)
    if item is None:  # an earlier run removed it
        return {"removed": None}
    try:
        stripe_api.call("remove the subscription item", _client().v1.subscription_items.delete, item["id"],
                        params={"proration_behavior": PRORATION},
                        options={"idempotency_key": task.idempotency_key("remove")})
    except BillingAPIError as exc:
        if not (exc.status == 404 or exc.code == "resource_missing"):
            raise
    return {"removed": item["id"]}


def _change_prices(task: BillingTask) -> dict:
    sub_id = task.payload["subscription"]
    moves = dict(task.payload.get("prices") or {})
    at = int(time.time())  # the subscription as read now: an event created before is older
    current = _retrieve(sub_id)
    have = {stripe_api.item_price(i): i for i in (current.get("items") or {}).get("data") or []}
    wanted = set(v for v in moves.values() if v) | set(task.payload.get("add") or [])
    if wanted and wanted == set(have):  # an earlier run made the change
        return {"items": sorted(have), "at": at}
    items = []
    for old, new in moves.items():
        item = have.get(old)
        if item is None:
            continue
        items.append({"id": item["id"], "deleted": True} if not new else {"id": item["id"], "price": new})
    metered = set(task.payload.get("metered") or [])
    for price in task.payload.get("add") or []:
        if price not in have:  # a metered price takes no quantity (Stripe refuses one)
            items.append({"price": price} if price in metered else {"price": price, "quantity": 1})
    updated = stripe_api.call("change the subscription's prices", _client().v1.subscriptions.update, sub_id,
                              params={"items": items, "proration_behavior": PRORATION},
                              options={"idempotency_key": task.idempotency_key("update")})
    return {"items": sorted(stripe_api.item_price(i) for i in (updated.get("items") or {}).get("data") or []),
            "at": at}


RUNNERS = {"cancel_subscription": _cancel_subscription, "cancel_at_period_end": _cancel_at_period_end,
           "add_item": _add_item, "remove_item": _remove_item, "change_prices": _change_prices}


# --------------------------------------------------------------------------- after a task
# These run inside the task's completion transaction (``lifecycle.one_transaction``): they only
# flush; the task's outcome and what follows from it commit together.

def _after_cancel(task: BillingTask) -> None:
    service = db.session.get(Service, task.service_id) if task.service_id else None
    sub = _subscription(service)
    result = task.result or {}
    if sub is not None and sub.stripe_subscription_id == task.payload.get("subscription"):
        sub.status = "canceled"
        sub.cancel_at_period_end = False
        if sub.deleted_at is None:
            sub.deleted_at = utcnow()
        sub.grace_until = None
        sub.end_action = sub.end_action or "keep"
    if service is None:
        return
    words = {"none": "no refund", "credit": "unused time credited to the customer's Stripe balance",
             "refund": "unused time refunded", "full": "payment refunded",
             "full_credit": "payment credited to the customer's Stripe balance"}[task.payload.get("refund") or "none"]
    detail = f"Stripe subscription {task.payload.get('subscription')} cancelled ({words}"
    if result.get("refunded"):
        from panel.billing.prices import format_money

        detail += f": {format_money(result['refunded'], result.get('currency') or 'usd', 'en_US')} in credit note {result.get('credit_note')}"
    lifecycle.note(service, detail + ")", actor="billing", kind="billing")


def _after_period_end(task: BillingTask) -> None:
    service = db.session.get(Service, task.service_id) if task.service_id else None
    sub = _subscription(service)
    if sub is None:
        return
    sub.cancel_at_period_end = True
    if (task.result or {}).get("period_end"):
        sub.current_period_end = from_unix(task.result["period_end"])
    when = sub.ends_on.strftime("%Y-%m-%d") if sub.ends_on else "the end of the billing period"
    lifecycle.note(service, f"subscription set to end on {when}", actor="billing", kind="billing")


def _after_item(task: BillingTask) -> None:
    """The subscription item was added or removed: record its id, then let the backend apply the
    add-ons (``change_plan`` on the current plan with the wanted add-ons)."""
    from panel.billing import changes

    service = db.session.get(Service, task.service_id) if task.service_id else None
    if service is None:
        return
    if task.kind == "add_item":
        row = db.session.scalar(db.select(ServiceAddon).join(ServiceAddon.addon).where(
            ServiceAddon.service_id == service.id, ServiceAddon.price_id == task.payload["price"]))
        if row is not None:
            row.stripe_subscription_item_id = (task.result or {}).get("item")
    changes.apply_to_backend(service, actor=task.actor, why=f"billing task {task.id} ({task.kind}) done")


def _after_change_prices(task: BillingTask) -> None:
    from panel.billing import changes

    service = db.session.get(Service, task.service_id) if task.service_id else None
    if service is not None:
        changes.prices_changed(service, task)


AFTER = {"cancel_subscription": _after_cancel, "cancel_at_period_end": _after_period_end,
         "add_item": _after_item, "remove_item": _after_item, "change_prices": _after_change_prices}


def _failed_item(task: BillingTask, service: Service) -> None:
    """Adding failed: the add-on is not bought (its row goes); removing failed: it stays."""
    row = db.session.scalar(db.select(ServiceAddon).where(ServiceAddon.service_id == service.id,
                                                          ServiceAddon.price_id == task.payload.get("price")))
    if row is None:
        return
    if task.kind == "add_item" and row.state == "adding":
        service.addons.remove(row)
    elif task.kind == "remove_item" and row.state == "removing":
        row.state = "active"


def _failed_change(task: BillingTask, service: Service) -> None:
    sub = _subscription(service)
    if sub is not None:
        sub.requested_price = None


FAILED = {"add_item": _failed_item, "remove_item": _failed_item, "change_prices": _failed_change}
