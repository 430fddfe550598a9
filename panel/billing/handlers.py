"""Stripe event handlers: turn a stored ``StripeEvent`` into lifecycle requests.

``process_event(event_id)`` is the job of work kind ``stripe`` (``panel.dispatch``).
Each handler is a function of the event's ``data.object`` and an ``EventContext``, returns a
short outcome sentence (stored on the event), and changes service statuses only through
``panel.lifecycle``.

Ordering: Stripe neither guarantees order nor single delivery. Per subscription we keep
``last_event_created`` (Stripe's ``event.created``, Unix seconds); a subscription or invoice
event older than it is recorded and skipped, so an old event never undoes a newer state. A
subscription that ended (``customer.subscription.deleted``) stays ended. Handlers are written
as "bring the service to the state Stripe describes", so running one twice changes nothing.
Events of one service are handled one at a time (``service_lock``). Handlers commit through
``lifecycle.commit()``, which only flushes inside the event's one transaction.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from flask import current_app
from sqlalchemy.exc import InterfaceError, OperationalError

from panel import lifecycle, notify, work
from panel.backends import TransientBackendError
from panel.billing import stripe_api
from panel.billing.models import BillingCustomer, BillingInvoice, StripeEvent, Subscription, aware, from_unix
from panel.billing.stripe_api import BillingAPIError
from panel.extensions import db
from panel.models import Service
from panel.models.base import utcnow
from panel.models.services import OP_UNFINISHED

log = logging.getLogger(__name__)

RUNNING = ("active", "trialing")
NOT_PAID = ("unpaid", "paused")
ENDED = ("canceled", "incomplete_expired")
ACTOR = "stripe"
REASON = "non_payment"


@dataclass(frozen=True)
class EventContext:
    """What a handler knows about the event besides its object: ``id``, ``type`` and
    ``created`` (Stripe's Unix seconds)."""

    id: str
    type: str
    created: int

    @property
    def at(self) -> datetime:
        """The event's ``created`` time as a UTC datetime."""
        return from_unix(self.created)


HANDLERS: dict[str, Callable[[dict, EventContext], str]] = {}


def handles(*types: str):
    """Register the decorated function as the handler of the given event types."""

    def register(fn):
        for t in types:
            HANDLERS[t] = fn
        return fn

    return register


def handled_types() -> list[str]:
    """The event types we act on (to select when registering the webhook endpoint in Stripe)."""
    return sorted(HANDLERS)


# --------------------------------------------------------------------------- the job

def register(app) -> None:
    """Register work kind ``stripe`` (stored events, run by ``process_event``) with the dispatcher."""
    from panel import dispatch

    dispatch.register_kind(app, dispatch.WorkKind("stripe", StripeEvent, process_event))


def process_event(event_id: str) -> str:
    """Job (work kind ``stripe``): apply stored event ``event_id`` once. Returns its outcome
    sentence, "skipped" (not due: processed, given up, or another worker holds it) or "stale".

    The event is claimed (``panel.work.claim``), then its handler's effects, ``processed_at`` and
    the lease release commit in one transaction that starts with the fencing check, so a run
    killed anywhere before that commit leaves nothing half-applied and the event is due again
    once its lease expires. A failure is recorded (``error``, ``attempts``) and retried after
    ``PANEL_JOB_BACKOFF`` up to ``PANEL_JOB_RETRIES`` times; a permanent Stripe error gives up at
    once (``due_at`` cleared, ``error`` says why). An unreachable database raises (the lease
    expires and another run takes over).
    """
    lease = work.claim(StripeEvent, event_id)
    if lease is None:
        return "skipped"
    row = db.session.get(StripeEvent, event_id, populate_existing=True)
    prior_attempts = row.attempts or 0
    payload = row.payload or {}
    ctx = EventContext(row.id, row.type, int(row.created or 0))
    db.session.commit()
    if lease.lost_runs > current_app.config["JOB_MAX_LOST_RUNS"]:
        return _record_failure(lease, prior_attempts, f"the worker applying it stopped {lease.lost_runs} "
                                                      "times without reporting; see the worker logs", retry=False)
    handler = HANDLERS.get(ctx.type)
    try:
        with lifecycle.one_transaction():
            work.fence(lease)  # first: on PostgreSQL the event row stays locked until the commit
            obj = (payload.get("data") or {}).get("object") or {}
            outcome = handler(obj, ctx) if handler else f"ignored: {ctx.type} is not handled"
            row = db.session.get(StripeEvent, event_id, populate_existing=True)
            row.processed_at = utcnow()
            row.outcome = (outcome or "")[:2000]
            row.error = None
            row.attempts = prior_attempts + 1
            row.due_at = None
        lifecycle.commit()
    except work.StaleLease as exc:
        db.session.rollback()
        log.warning("stale completion refused: %s", exc)
        return "stale"
    except (OperationalError, InterfaceError):
        db.session.rollback()
        raise
    except BillingAPIError as exc:
        return _record_failure(lease, prior_attempts, str(exc), retry=exc.transient)
    except Exception as exc:  # a race (IntegrityError), a lock timeout, a bug: recorded, retried
        if not isinstance(exc, TransientBackendError):
            log.exception("stripe event %s (%s) failed", event_id, ctx.type)
        return _record_failure(lease, prior_attempts, f"{type(exc).__name__}: {exc}", retry=True)
    log.info("stripe event %s (%s) applied: %s", event_id, ctx.type, outcome)
    return outcome


def _record_failure(lease: work.Lease, prior_attempts: int, message: str, *, retry: bool) -> str:
    """Record a failed run of an event (under the fence): due again after the backoff, or given up."""
    from panel.jobs import backoff_for

    db.session.rollback()
    try:
        work.fence(lease)
    except work.StaleLease as exc:
        db.session.rollback()
        log.warning("stale completion refused: %s", exc)
        return "stale"
    row = db.session.get(StripeEvent, lease.id, populate_existing=True)
    row.attempts = prior_attempts + 1
    if retry and row.attempts <= current_app.config["JOB_RETRIES"]:
        row.due_at = utcnow() + timedelta(seconds=backoff_for(row.attempts))
        row.error = message[:2000]
        work.wake_after_commit("stripe", row.id, row.due_at)
        outcome = "retrying"
    else:
        row.due_at = None
        row.error = f"gave up after {row.attempts} attempt(s): {message}"[:2000]
        outcome = "failed"
    db.session.commit()
    log.warning("stripe event %s %s: %s", lease.id, outcome, message)
    return outcome


@contextlib.contextmanager
def service_lock(service_id: int):
    """Serialise billing work on one service: on PostgreSQL the service row is locked
    (``SELECT ... FOR UPDATE``) until the transaction ends, so two events, or an event and a job
    completion, of one service never interleave; SQLite serialises writers by itself. Session
    state is refreshed on entry."""
    db.session.expire_all()
    lifecycle.lock_service(service_id)
    yield


# --------------------------------------------------------------------------- lookups

def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _id(value) -> str | None:
    if isinstance(value, dict):
        return value.get("id")
    return value or None


def _find(stripe_subscription_id: str | None, metadata: dict | None) -> Subscription | None:
    if stripe_subscription_id:
        sub = db.session.scalar(db.select(Subscription)
                                .where(Subscription.stripe_subscription_id == stripe_subscription_id))
        if sub is not None:
            return sub
    service_id = _int((metadata or {}).get("panel_service_id"))
    if service_id is not None:
        return db.session.scalar(db.select(Subscription).where(Subscription.service_id == service_id))
    return None


# --------------------------------------------------------------------------- service moves

def _billing_suspension(service: Service) -> str | None:
    """The reason of the suspension the service has or is about to have (``None``: none)."""
    for op in reversed(service.operations):
        if op.state not in OP_UNFINISHED:
            continue
        if op.action == "suspend":
            return (op.payload or {}).get("reason") or "operator"
        if op.action == "unsuspend":
            return None
    return service.suspension_reason if service.status == "suspended" else None


def _suspend_for_non_payment(service: Service, why: str) -> str:
    current = lifecycle.projected_status(service)
    if current == "suspended" or service.status in ("suspended",):
        return "already suspended"
    if current != "active":
        return f"not suspended: the service is {service.status}"
    try:
        lifecycle.request(service, "suspend", actor=ACTOR, detail=why, payload={"reason": REASON})
    except lifecycle.LifecycleError as exc:
        lifecycle.note(service, f"{why}; could not suspend: {exc}", actor=ACTOR, kind="billing")
        return f"not suspended: {exc}"
    return "suspended for non-payment"


def _lift_non_payment(service: Service, why: str) -> str:
    if lifecycle.projected_status(service) != "suspended":
        return ""
    reason = _billing_suspension(service)
    if reason != REASON:
        return f"suspension by {reason or 'operator'} kept"
    try:
        lifecycle.request(service, "unsuspend", actor=ACTOR, detail=why)
    except lifecycle.LifecycleError as exc:
        return f"not unsuspended: {exc}"
    return "unsuspended"


def _start_grace(sub: Subscription, failed_at: datetime) -> None:
    if sub.payment_failed_at is None:
        sub.payment_failed_at = failed_at
        sub.grace_until = failed_at + timedelta(days=float(current_app.config["SUSPEND_AFTER_DAYS"]))


def _clear_dunning(sub: Subscription) -> None:
    sub.payment_failed_at = None
    sub.grace_until = None
    sub.notice = None


def _end_subscription(sub: Subscription, service: Service, obj: dict, ctx: EventContext) -> str:
    """``customer.subscription.deleted``: suspend now, terminate after retention; an order
    never paid is cancelled without any backend call."""
    if sub.deleted_at is None:
        sub.deleted_at = from_unix(obj.get("ended_at")) or ctx.at
        sub.terminate_at = sub.deleted_at + timedelta(days=float(current_app.config["TERMINATE_AFTER_DAYS"]))
    sub.status = "canceled"
    sub.grace_until = None
    if service.status == "pending_payment":
        sub.notice = "The subscription ended before the payment completed."
        lifecycle.cancel(service, actor=ACTOR, detail="subscription ended before checkout completed")
        return "order cancelled: subscription ended before checkout completed"
    if service.status in lifecycle.FINAL or service.status == "terminating":
        lifecycle.commit()
        return f"nothing to do: the service is {service.status}"
    from panel.billing import changes

    outcome = changes.subscription_ended(sub, service)  # end_action / the plan's on_cancel
    if outcome:
        return outcome
    sub.notice = (f"Your subscription has ended. The service is suspended and will be deleted on "
                  f"{aware(sub.terminate_at):%Y-%m-%d}.")
    result = _suspend_for_non_payment(service, "subscription ended")
    lifecycle.commit()
    return f"subscription ended; {result}; termination due {aware(sub.terminate_at):%Y-%m-%d}"


def _change_plan_to(sub: Subscription, service: Service, price: str) -> str:
    """The subscription's plan item is on ``price`` and the service is not on a plan selling it
    (a change made in the portal, or a resumed subscription after a downgrade): move the service
    to that plan (its add-ons that the plan offers stay)."""
    from panel import addons as addon_state
    from panel.billing import changes

    plans = changes.plans_with_price(price, service.backend)
    if not plans:
        lifecycle.note(service, f"subscription moved to price {price}, which matches no plan of this backend; "
                                "an operator must check it", actor=ACTOR, kind="billing")
        return f"price {price} matches no plan"
    target = plans[0]
    if target.id == service.plan_id:
        return "already on that plan"
    if sub.pending_change:
        return "an upgrade is paid through Checkout: it applies when the checkout completes"
    if sub.requested_price == price or any(
            op.action == "change_plan" and (op.payload or {}).get("plan_id") == target.id
            for op in service.operations if op.state in OP_UNFINISHED):
        return f"plan change to {target.slug} already requested"
    term = changes.term_of_price(target, price)
    keep = sorted(row.addon.slug for row in addon_state.wanted(service) if row.addon.slug in (target.addons or []))
    service.term = term or service.term
    sub.term = service.term
    if service.billing_mode == "free":
        service.billing_mode = "stripe"
    try:
        lifecycle.request(service, "change_plan", actor=ACTOR, payload={"plan_id": target.id, "addons": keep},
                          detail=f"plan change to {target.slug} (Stripe price {price})")
    except lifecycle.LifecycleError as exc:
        lifecycle.note(service, f"plan change to {target.slug} paid in Stripe but not applied: {exc}",
                       actor=ACTOR, kind="billing")
        return f"plan change not applied: {exc}"
    return f"plan change to {target.slug} requested"


# --------------------------------------------------------------------------- checkout.session.*

@handles("checkout.session.completed", "checkout.session.async_payment_succeeded")
def checkout_completed(session: dict, ctx: EventContext) -> str:
    """Link the customer and subscription to the service and provision it, once paid.

    ``payment_status`` ``paid`` or ``no_payment_required`` provisions; ``unpaid`` waits for
    ``checkout.session.async_payment_succeeded``. A subscription that already ended (its
    ``deleted`` event came first) cancels the order instead; a payment for an order we already
    cancelled (unpaid too long) cancels the subscription in Stripe.
    """
    metadata = session.get("metadata") or {}
    service_id = _int(session.get("client_reference_id")) or _int(metadata.get("panel_service_id"))
    service = db.session.get(Service, service_id) if service_id else None
    if service is None:
        return "ignored: the checkout session names no service of ours"
    if metadata.get("panel_user_id") and _int(metadata.get("panel_user_id")) != service.user_id:
        return "ignored: the checkout session's user does not own the service"
    with service_lock(service.id):
        service = db.session.get(Service, service.id)
        sub = db.session.scalar(db.select(Subscription).where(Subscription.service_id == service.id))
        if sub is None:
            sub = Subscription(service_id=service.id, user_id=service.user_id, stripe_price=service.plan.stripe_price)
            db.session.add(sub)
        customer_id = _id(session.get("customer"))
        subscription_id = _id(session.get("subscription"))
        if subscription_id and sub.stripe_subscription_id and sub.stripe_subscription_id != subscription_id:
            lifecycle.note(service, f"a second subscription {subscription_id} was paid for this service; "
                                    "an operator should refund it", actor=ACTOR, kind="billing")
            return "ignored: the service already has another subscription"
        if customer_id:
            sub.stripe_customer_id = customer_id
            if db.session.scalar(db.select(BillingCustomer).where(BillingCustomer.user_id == service.user_id)) is None:
                db.session.add(BillingCustomer(user_id=service.user_id, stripe_customer_id=customer_id))
        if subscription_id:
            sub.stripe_subscription_id = subscription_id
        if session.get("id") and not sub.checkout_session_id:
            sub.checkout_session_id = session["id"]
        status = session.get("payment_status")
        if status not in ("paid", "no_payment_required"):
            sub.notice = "Your payment is being processed; the service starts once it clears."
            lifecycle.commit()
            return f"waiting: payment_status is {status}"
        if sub.deleted_at is not None:
            if service.status == "pending_payment":
                lifecycle.cancel(service, actor=ACTOR, detail="subscription ended before checkout completed")
                return "order cancelled: the subscription had already ended"
            lifecycle.commit()
            return "not provisioned: the subscription had already ended"
        if sub.status in ("checkout", "incomplete"):
            sub.status = "active"
        if sub.notice and "payment is being processed" in sub.notice:
            sub.notice = None
        term = (metadata.get("panel_term") or "").strip() or None
        if term and not sub.pending_change:
            sub.term = term
        if service.status == "pending_payment":
            lifecycle.request(service, "provision", actor=ACTOR,
                              detail=f"payment received (checkout session {session.get('id')})")
            return "provisioning"
        from panel.billing import changes

        if sub.pending_change and service.status in ("active", "suspended"):
            return changes.apply_paid_upgrade(sub, service, session)
        if service.status in lifecycle.FINAL and subscription_id:
            task = changes.stop_billing(service, actor=ACTOR, why=f"paid after the order was {service.status}")
            detail = (f"paid after the order was {service.status}: subscription {subscription_id} is cancelled "
                      f"and refunded as configured (billing task {task.id if task else '-'})")
            lifecycle.note(service, detail, actor=ACTOR, kind="billing")
            return detail
        lifecycle.commit()
        return f"nothing to do: the service is {service.status}"


@handles("checkout.session.expired")
def checkout_expired(session: dict, ctx: EventContext) -> str:
    """The customer never paid: cancel the order if it is still waiting."""
    service_id = _int(session.get("client_reference_id")) or _int((session.get("metadata") or {}).get("panel_service_id"))
    service = db.session.get(Service, service_id) if service_id else None
    if service is None:
        return "ignored: the checkout session names no service of ours"
    with service_lock(service.id):
        service = db.session.get(Service, service.id)
        if service.status != "pending_payment":
            return f"nothing to do: the service is {service.status}"
        lifecycle.cancel(service, actor=ACTOR, detail="checkout session expired without payment")
        return "order cancelled: checkout session expired"


# --------------------------------------------------------------------------- customer.subscription.*

@handles("customer.subscription.created", "customer.subscription.updated", "customer.subscription.paused",
         "customer.subscription.resumed", "customer.subscription.deleted")
def subscription_changed(obj: dict, ctx: EventContext) -> str:
    """Bring the service to the state of the subscription in the event.

    ``active``/``trialing`` run (a non-payment suspension is lifted), ``past_due`` starts the
    grace period, ``unpaid``/``paused`` suspend for non-payment, ``deleted`` (or ``canceled``)
    suspends now and schedules termination. A new price becomes ``change_plan``;
    ``cancel_at_period_end`` and ``current_period_end`` are stored for the customer's pages.
    """
    sub = _find(obj.get("id"), obj.get("metadata"))
    if sub is None:
        return "ignored: no service of ours has this subscription"
    with service_lock(sub.service_id):
        sub = db.session.get(Subscription, sub.id)
        service = db.session.get(Service, sub.service_id)
        if sub.stripe_subscription_id and obj.get("id") != sub.stripe_subscription_id:
            return "ignored: the service has another subscription"
        if sub.last_event_created is not None and ctx.created < sub.last_event_created:
            from panel.billing import changes

            changes.sync_items(service, obj, only_missing=True)  # facts still unknown are filled in
            if sub.current_period_end is None and stripe_api.period_end_of(obj):
                sub.current_period_end = from_unix(stripe_api.period_end_of(obj))
            lifecycle.commit()
            return f"skipped: older ({ctx.created}) than the state already applied ({sub.last_event_created})"
        deleted = ctx.type == "customer.subscription.deleted" or obj.get("status") in ENDED
        if sub.deleted_at is not None:
            return "skipped: the subscription already ended"
        sub.last_event_created = ctx.created
        sub.stripe_subscription_id = obj.get("id")
        sub.stripe_customer_id = _id(obj.get("customer")) or sub.stripe_customer_id
        sub.cancel_at_period_end = bool(obj.get("cancel_at_period_end"))
        sub.cancel_at = from_unix(obj.get("cancel_at"))
        end = stripe_api.period_end_of(obj)
        if end:
            sub.current_period_end = from_unix(end)
        if deleted:
            return _end_subscription(sub, service, obj, ctx)
        status = obj.get("status") or sub.status
        if ctx.type == "customer.subscription.paused":
            status = "paused"
        elif ctx.type == "customer.subscription.resumed" and status == "paused":
            status = "active"
        sub.status = status
        from panel.billing import changes

        price = stripe_api.price_of(obj, changes.plan_prices())
        changes.sync_items(service, obj)
        if price:
            sub.stripe_price = price
            if sub.requested_price == price and not changes.tasks.open_tasks(service, "change_prices"):
                sub.requested_price = None  # our own change_prices task clears it when it is done
        outcomes = [f"status {status}"]
        if service.status in ("pending_payment", "cancelled", "terminated", "terminating"):
            lifecycle.commit()
            return f"recorded ({', '.join(outcomes)}); the service is {service.status}"
        if status in RUNNING:
            _clear_dunning(sub)
            outcomes.append(_lift_non_payment(service, f"subscription is {status} again") or "running")
        elif status == "past_due":
            _start_grace(sub, ctx.at)
            sub.notice = (f"Your last payment failed. Update your payment method by "
                          f"{aware(sub.grace_until):%Y-%m-%d} or the service will be suspended.")
            outcomes.append(f"grace until {aware(sub.grace_until):%Y-%m-%d %H:%M}")
        elif status == "paused" and service.plan.downgrade_slug:  # seed 003: paused -> the free tier
            outcomes.append(changes.downgrade(sub, service, service.plan.downgrade_slug, why="subscription paused")
                            or _suspend_for_non_payment(service, "subscription is paused"))
            sub.notice = "Your subscription is paused: the service runs on the free plan until it resumes."
        elif status in NOT_PAID:
            sub.notice = ("Your subscription is paused: the service is suspended until it resumes."
                          if status == "paused" else
                          "Your subscription is unpaid: the service is suspended until the invoice is paid.")
            outcomes.append(_suspend_for_non_payment(service, f"subscription is {status}"))
        lifecycle.commit()
        if price and status in RUNNING and price not in service.plan.term_prices.values():
            price = _current_price(sub, service, price)
            if price in service.plan.term_prices.values():
                outcomes.append("Stripe's subscription is already on the plan's price (the event is older than "
                                "the panel's own plan change)")
            else:
                outcomes.append(_change_plan_to(sub, service, price))
        if sub.cancel_at_period_end and sub.ends_on:
            outcomes.append(f"ends on {sub.ends_on:%Y-%m-%d}")
        lifecycle.commit()
        return "; ".join(o for o in outcomes if o)


def _current_price(sub: Subscription, service: Service, price: str) -> str:
    """The price to follow when an event's price is not the service's plan's. After a plan change
    the panel made itself (a succeeded ``change_prices`` task) a late event may describe the
    prices before it (Stripe does not deliver in order, and ``created`` has one-second
    resolution), so the subscription is read from Stripe (``GET /v1/subscriptions/{id}``) and its
    current price wins; otherwise the event's ``price``. Raises ``BillingAPIError`` (the event is
    retried)."""
    from panel.billing import changes
    from panel.billing.models import BillingTask

    changed = db.session.scalar(db.select(BillingTask.id).where(
        BillingTask.service_id == service.id, BillingTask.kind == "change_prices",
        BillingTask.state == "succeeded").limit(1))
    if changed is None or not sub.stripe_subscription_id:
        return price
    current = stripe_api.call("read the subscription", stripe_api.client().v1.subscriptions.retrieve,
                              sub.stripe_subscription_id)
    return stripe_api.price_of(current, changes.plan_prices()) or price


# --------------------------------------------------------------------------- invoice.*

def _record_invoice(invoice: dict, sub: Subscription | None, ctx: EventContext) -> BillingInvoice | None:
    if not invoice.get("id"):
        return None
    row = db.session.scalar(db.select(BillingInvoice).where(BillingInvoice.stripe_invoice_id == invoice["id"]))
    if row is None:
        user_id = sub.user_id if sub is not None else None
        if user_id is None:
            customer = db.session.scalar(db.select(BillingCustomer).where(
                BillingCustomer.stripe_customer_id == _id(invoice.get("customer"))))
            user_id = customer.user_id if customer is not None else None
        if user_id is None:
            return None
        row = BillingInvoice(stripe_invoice_id=invoice["id"], user_id=user_id)
        db.session.add(row)
    elif row.last_event_created is not None and ctx.created < row.last_event_created:
        return row
    row.service_id = sub.service_id if sub is not None else row.service_id
    row.stripe_subscription_id = sub.stripe_subscription_id if sub is not None else row.stripe_subscription_id
    row.number = invoice.get("number")
    row.status = "paid" if ctx.type == "invoice.paid" else invoice.get("status")
    row.currency = invoice.get("currency")
    row.amount_due = int(invoice.get("amount_due") or 0)
    row.amount_paid = int(invoice.get("amount_paid") or 0)
    row.hosted_invoice_url = invoice.get("hosted_invoice_url")
    row.created = from_unix(invoice.get("created"))
    row.last_event_created = ctx.created
    return row


def _money(cents: int, currency: str | None) -> str:
    return f"{cents / 100:.2f} {(currency or '').upper()}".strip()


@handles("invoice.payment_failed", "invoice.paid")
def invoice_event(invoice: dict, ctx: EventContext) -> str:
    """Dunning. ``invoice.payment_failed`` tells the customer (a billing event and a notice) and
    starts the grace period (``PANEL_SUSPEND_AFTER_DAYS``; ``panel cron`` suspends when it
    passes). ``invoice.paid`` ends it and lifts a non-payment suspension; a suspension by an
    operator stays."""
    sub_id, metadata = stripe_api.invoice_subscription(invoice)
    sub = _find(sub_id, metadata)
    if sub is None:
        _record_invoice(invoice, None, ctx)
        lifecycle.commit()
        return "recorded: the invoice belongs to no subscription of ours"
    with service_lock(sub.service_id):
        sub = db.session.get(Subscription, sub.id)
        service = db.session.get(Service, sub.service_id)
        if sub_id and not sub.stripe_subscription_id:
            sub.stripe_subscription_id = sub_id
        inv = _record_invoice(invoice, sub, ctx)
        label = invoice.get("number") or invoice.get("id")
        if sub.last_event_created is not None and ctx.created < sub.last_event_created:
            lifecycle.commit()
            return "recorded; skipped: older than the state already applied"
        if sub.deleted_at is not None:
            lifecycle.commit()
            return "recorded; the subscription already ended"
        sub.last_event_created = ctx.created
        if ctx.type == "invoice.payment_failed":
            _start_grace(sub, ctx.at)
            if sub.status in RUNNING or sub.status == "checkout":
                sub.status = "past_due"
            due = aware(sub.grace_until)
            sub.notice = (f"Your payment for invoice {label} failed. Update your payment method by "
                          f"{due:%Y-%m-%d} or the service will be suspended.")
            if service.status in ("pending_payment", "cancelled", "terminated"):
                lifecycle.commit()
                return "recorded: payment failed before the service started"
            lifecycle.note(service, f"payment failed for invoice {label} ({_money(inv.amount_due if inv else 0, invoice.get('currency'))}, "
                                    f"attempt {invoice.get('attempt_count') or 1}); the service will be suspended on "
                                    f"{due:%Y-%m-%d %H:%M} UTC unless it is paid", actor=ACTOR, kind="billing")
            notify.customer_notice(service, "Your payment failed", sub.notice)
            if due <= utcnow():
                return "payment failed; " + _suspend_for_non_payment(service, "payment overdue")
            return f"payment failed; grace until {due:%Y-%m-%d %H:%M}"
        # invoice.paid
        had_dunning = sub.payment_failed_at is not None or sub.status in ("past_due", "unpaid")
        _clear_dunning(sub)
        if sub.status in ("past_due", "unpaid", "checkout", "incomplete"):
            sub.status = "active"
        if service.status in ("pending_payment", "cancelled", "terminated"):
            lifecycle.commit()
            return f"recorded: invoice paid; the service is {service.status}"
        if had_dunning:
            lifecycle.note(service, f"invoice {label} paid", actor=ACTOR, kind="billing")
        else:
            lifecycle.commit()
        if sub.status == "paused":
            return "invoice paid; the subscription is paused"
        return "invoice paid; " + (_lift_non_payment(service, f"invoice {label} paid") or "nothing to lift")
