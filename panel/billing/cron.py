"""Periodic billing work, idempotent and safe to run from many places at once.

``run(now=None)`` does, in order:

1. ``recover_paid_checkouts``: an order still waiting ``WEBHOOK_GRACE`` (10 minutes) after its
   checkout session was made is checked against Stripe; a session that is complete and paid is
   fulfilled as its ``checkout.session.completed`` would have been (the event was lost or the
   webhook is misconfigured), so a paid service is never left waiting unseen.
   ``expire_pending_payments``: orders unpaid after ``PANEL_PENDING_PAYMENT_HOURS`` are
   cancelled (their checkout session is expired in Stripe first, so it cannot be paid later;
   a session found paid is fulfilled instead).
2. ``expire_grace``: services whose grace period after a failed payment
   (``PANEL_SUSPEND_AFTER_DAYS``) passed unpaid are suspended for non-payment.
3. ``terminate_ended``: services whose subscription ended ``PANEL_TERMINATE_AFTER_DAYS`` ago are
   terminated (once: ``terminate_requested_at``).
5. ``stop_orphan_subscriptions``: a service that ended while its subscription still charges and no
   cancellation is on its way gets one (``changes.stop_orphans``).

Stored events whose job was lost need nothing here: they stay due in the database and the
workers' sweep (every ``PANEL_SWEEP_INTERVAL`` seconds) hands them over again.

``panel worker`` runs this every minute (registered with the dispatcher); ``panel cron`` runs it
once, for a system cron. Pass ``now`` (aware UTC ``datetime``) to control the clock in tests.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app

from panel import lifecycle
from panel.billing import handlers, stripe_api
from panel.billing.models import Subscription, aware
from panel.billing.stripe_api import BillingAPIError
from panel.extensions import db
from panel.models import Service
from panel.models.base import utcnow

log = logging.getLogger(__name__)


@dataclass
class CronReport:
    """What one run did: service ids per step, and problems (sentences)."""

    recovered: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    suspended: list[int] = field(default_factory=list)
    terminated: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report as printable lines."""
        out = [f"paid orders recovered from Stripe: {len(self.recovered)} {self.recovered or ''}".rstrip(),
               f"cancelled unpaid orders: {len(self.cancelled)} {self.cancelled or ''}".rstrip(),
               f"suspended after grace: {len(self.suspended)} {self.suspended or ''}".rstrip(),
               f"terminated after retention: {len(self.terminated)} {self.terminated or ''}".rstrip(),
               f"subscriptions of ended services cancelled: {len(self.stopped)} {self.stopped or ''}".rstrip()]
        out += [f"problem: {p}" for p in self.problems]
        return out


WEBHOOK_GRACE = timedelta(minutes=10)
RECOVER_PER_RUN = 50


def _paid(session) -> bool:
    return session.get("status") == "complete" and session.get("payment_status") in ("paid", "no_payment_required")


def _fulfil_from_session(service_id: int, session, now: datetime) -> bool:
    """Run the ``checkout.session.completed`` handler on a session read from Stripe; returns whether
    the service left ``pending_payment``."""
    ctx = handlers.EventContext(id=f"recovered-{session.get('id')}", type="checkout.session.completed",
                                created=int(now.timestamp()))
    outcome = handlers.checkout_completed(dict(session), ctx)
    service = db.session.get(Service, service_id)
    db.session.refresh(service)
    if service.status != "pending_payment":
        lifecycle.note(service, "fulfilled from the paid checkout session read from Stripe: its webhook "
                                f"event never arrived (check the webhook endpoint); {outcome}",
                       actor="billing", kind="billing")
        return True
    return False


def recover_paid_checkouts(now: datetime, report: CronReport) -> None:
    """Fulfil orders whose checkout session Stripe says is paid but whose event never came.

    Looks at orders in ``pending_payment`` older than ``WEBHOOK_GRACE`` (at most
    ``RECOVER_PER_RUN`` a run, oldest first); Stripe ``GET /v1/checkout/sessions/{id}``.
    """
    if not current_app.config.get("STRIPE_SECRET_KEY"):
        return
    rows = db.session.execute(
        db.select(Service.id, Service.created_at, Subscription.checkout_session_id)
        .join(Subscription, Subscription.service_id == Service.id)
        .where(Service.status == "pending_payment", Subscription.checkout_session_id.is_not(None))
        .order_by(Service.id)).all()
    client = stripe_api.client()
    checked = 0
    for service_id, created_at, session_id in rows:
        if aware(created_at) is None or aware(created_at) > now - WEBHOOK_GRACE:
            continue
        if checked >= RECOVER_PER_RUN:
            break
        checked += 1
        try:
            session = stripe_api.call("read the checkout session", client.v1.checkout.sessions.retrieve, session_id)
        except BillingAPIError as exc:
            if exc.transient:
                report.problems.append(f"service {service_id}: Stripe unreachable, will retry")
            continue
        if _paid(session) and _fulfil_from_session(service_id, session, now):
            report.recovered.append(service_id)


def _expire_checkout_session(session_id: str):
    """``("expired", None)``, ``("complete", session)`` (paid: fulfil it), or ``("unknown", None)``
    (Stripe unreachable).

    Stripe ``POST /v1/checkout/sessions/{id}/expire``; when refused, ``GET`` it to see why.
    """
    client = stripe_api.client()
    try:
        stripe_api.call("expire the checkout session", client.v1.checkout.sessions.expire, session_id)
        return "expired", None
    except BillingAPIError as exc:
        if exc.transient:
            return "unknown", None
    try:
        session = stripe_api.call("read the checkout session", client.v1.checkout.sessions.retrieve, session_id)
    except BillingAPIError as exc:
        return ("unknown", None) if exc.transient else ("expired", None)
    return ("complete", session) if _paid(session) else ("expired", None)


def expire_pending_payments(now: datetime, report: CronReport) -> None:
    """Cancel orders unpaid for ``PANEL_PENDING_PAYMENT_HOURS`` (their checkout session is expired in
    Stripe first; a paid one is left alone).
    """
    hours = float(current_app.config["PENDING_PAYMENT_HOURS"])
    cutoff = now - timedelta(hours=hours)
    rows = db.session.scalars(db.select(Service).where(Service.status == "pending_payment")
                              .order_by(Service.id)).all()
    for service in rows:
        if aware(service.created_at) is None or aware(service.created_at) > cutoff:
            continue
        sub = db.session.scalar(db.select(Subscription).where(Subscription.service_id == service.id))
        if sub is not None and sub.checkout_session_id and current_app.config.get("STRIPE_SECRET_KEY"):
            state, session = _expire_checkout_session(sub.checkout_session_id)
            if state == "complete":  # paid after all: fulfil it rather than wait for a lost event
                if _fulfil_from_session(service.id, session, now):
                    report.recovered.append(service.id)
                continue
            if state == "unknown":
                report.problems.append(f"service {service.id}: Stripe unreachable, will retry")
                continue
        with handlers.service_lock(service.id):
            service = db.session.get(Service, service.id)
            if service.status != "pending_payment":
                continue
            lifecycle.cancel(service, actor="billing",
                             detail=f"not paid within {hours:g} hours: order cancelled")
        report.cancelled.append(service.id)


def expire_grace(now: datetime, report: CronReport) -> None:
    """Suspend (reason non_payment) services whose grace after a failed payment
    (``PANEL_SUSPEND_AFTER_DAYS``) has passed.
    """
    rows = db.session.scalars(db.select(Subscription).where(Subscription.grace_until.is_not(None),
                                                            Subscription.deleted_at.is_(None))).all()
    for sub in rows:
        if aware(sub.grace_until) > now:
            continue
        with handlers.service_lock(sub.service_id):
            sub = db.session.get(Subscription, sub.id)
            if sub.grace_until is None or aware(sub.grace_until) > now or sub.status in handlers.RUNNING:
                continue
            service = db.session.get(Service, sub.service_id)
            sub.grace_until = None
            sub.notice = "Your payment is overdue: the service is suspended until the invoice is paid."
            db.session.commit()
            outcome = handlers._suspend_for_non_payment(service, "payment overdue: grace period over")
            if outcome == "suspended for non-payment":
                report.suspended.append(service.id)


def terminate_ended(now: datetime, report: CronReport) -> None:
    """Request terminate, once, for services whose subscription ended more than
    ``PANEL_TERMINATE_AFTER_DAYS`` ago.
    """
    rows = db.session.scalars(db.select(Subscription).where(Subscription.terminate_at.is_not(None),
                                                            Subscription.terminate_requested_at.is_(None))).all()
    for sub in rows:
        if aware(sub.terminate_at) > now:
            continue
        with handlers.service_lock(sub.service_id):
            sub = db.session.get(Subscription, sub.id)
            if sub.terminate_requested_at is not None:
                continue
            service = db.session.get(Service, sub.service_id)
            # The mark commits with the terminate request (lifecycle.request commits both): a
            # worker killed in between leaves neither, and the next run asks again.
            sub.terminate_requested_at = now
            db.session.flush()
            if service.status in lifecycle.FINAL:
                db.session.commit()
                continue
            try:
                if service.status == "pending_payment":
                    lifecycle.cancel(service, actor="billing", detail="subscription ended")
                else:
                    lifecycle.request(service, "terminate", actor="billing",
                                      detail="subscription ended: retention period over")
                report.terminated.append(service.id)
            except lifecycle.LifecycleError as exc:
                db.session.rollback()
                sub = db.session.get(Subscription, sub.id)
                sub.terminate_requested_at = now  # asked once: an operator sees the problem
                db.session.commit()
                report.problems.append(f"service {service.id}: {exc}")


def stop_orphan_subscriptions(now: datetime, report: CronReport) -> None:
    """Cancel the subscriptions of services that ended without their charge being stopped."""
    from panel.billing.changes import stop_orphans

    report.stopped += stop_orphans()


def run(now: datetime | None = None) -> CronReport:
    """Run every periodic billing step once (see the module docstring); returns a ``CronReport``."""
    now = now or utcnow()
    report = CronReport()
    for step in (recover_paid_checkouts, expire_pending_payments, expire_grace, terminate_ended,
                 stop_orphan_subscriptions):
        try:
            step(now, report)
        except Exception as exc:  # one step's failure must not stop the others
            db.session.rollback()
            log.exception("billing cron step %s failed", step.__name__)
            report.problems.append(f"{step.__name__}: {type(exc).__name__}: {exc}")
    return report
