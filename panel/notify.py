"""Email notifications (Flask-Mail): customers hear about their services, operators about failures.

Configured with Flask-Mail's settings as ``PANEL_MAIL_*`` variables (``PANEL_MAIL_SERVER``,
``PANEL_MAIL_PORT``, ``PANEL_MAIL_USE_TLS``, ``PANEL_MAIL_USE_SSL``, ``PANEL_MAIL_USERNAME``,
``PANEL_MAIL_PASSWORD``, ``PANEL_MAIL_DEFAULT_SENDER``). Without ``PANEL_MAIL_SERVER`` nothing is
sent. Each mail is durable work: an ``OutboundMail`` row (body encrypted, cleared once sent), sent
by a worker under a lease (``deliver``), so a slow or down SMTP server never holds up a
transition, and an SMTP outage, a lost job queue or a killed worker delays mail instead of losing
it. Refused tries back off along ``PANEL_MAIL_BACKOFF``; a mail given up is shown to operators on
``/admin/mail`` with a retry button (and by ``panel doctor``).

What is sent (``service_status_changed``, a hook this module implements like any plugin):

* the customer: the service is ready (provisioning -> active), suspended, resumed, removed;
  a failed setup ("we are on it", without the technical message);
* every operator: a service went to ``failed`` or ``needs_reconcile``, with the technical reason and
  a link;
* the customer, from billing: a failed payment and its deadline (``customer_notice``).
"""
from __future__ import annotations

import logging
import smtplib
from datetime import timedelta

from flask import current_app

from panel.hookspecs import hookimpl

log = logging.getLogger(__name__)


def init_app(app) -> None:
    """Set up Flask-Mail when ``PANEL_MAIL_SERVER`` is set, and register the status hook."""
    if app.config.get("MAIL_SERVER"):
        from flask_mail import Mail

        app.config.setdefault("MAIL_DEFAULT_SENDER", "hostpanel@localhost")
        Mail(app)
    app.extensions["panel"].pm.register(StatusMail(), name="panel.notify")
    from panel import dispatch
    from panel.models import OutboundMail

    dispatch.register_kind(app, dispatch.WorkKind("mail", OutboundMail, deliver, id_from_key=int))
    if app.config.get("PURGE_INTERVAL"):
        dispatch.register_periodic(app, "mail-retention", app.config["PURGE_INTERVAL"], purge_sent)


def enabled() -> bool:
    """Whether mail is configured."""
    return "mail" in current_app.extensions


def send(to: list[str] | str, subject: str, body: str, *, kind: str = "plain", ref_id: int | None = None,
         service_id: int | None = None) -> bool:
    """Record one plain-text email as an ``OutboundMail`` row (due now) and have a worker send it.
    Returns whether it was recorded (``False`` without mail configured or without a recipient).

    Inside a Stripe event's or a job's one transaction (``lifecycle.one_transaction``) the row is
    only flushed: it commits, or rolls back, with the change it tells about. Anywhere else it is
    committed here, with whatever the session holds. ``kind="invoice_reminder"`` with ``ref_id``
    (an ``InvoiceReminder``) renders subject, body and PDF when it is sent.
    """
    if not enabled():
        return False
    from panel import crypto, lifecycle, work
    from panel.extensions import db
    from panel.models import OutboundMail
    from panel.models.base import utcnow

    recipients = [to] if isinstance(to, str) else list(to)
    if not recipients:
        return False
    mail = OutboundMail(kind=kind, ref_id=ref_id, service_id=service_id, recipients=recipients,
                        subject=subject[:300], body_encrypted=crypto.encrypt(body) if body else None,
                        state="queued", due_at=utcnow(), lease_token=0, lost_runs=0, attempts=0)
    db.session.add(mail)
    db.session.flush()
    work.wake_after_commit("mail", mail.id)
    lifecycle.commit()  # only a flush inside one transaction
    return True


SMTP_ERRORS = (OSError, smtplib.SMTPException)


def deliver(mail_id: int) -> str:
    """Job (work kind ``mail``): send ``OutboundMail`` ``mail_id`` under a lease (``panel.work``).
    Returns ``sent``, ``retrying``, ``failed`` (given up after ``PANEL_MAIL_BACKOFF``), ``skipped``
    (not due: a duplicate job) or ``stale`` (the lease was taken over).

    The SMTP conversation runs with the lease held; then the outcome and the lease release commit
    together. Delivery is at least once: a worker killed after the SMTP server accepted the message
    and before that commit sends it again when the lease is taken over.
    """
    from flask_mail import Message

    from panel import crypto, work
    from panel.extensions import db
    from panel.models import OutboundMail
    from panel.models.base import utcnow

    now = utcnow()
    lease = work.claim(OutboundMail, mail_id, now=now, values={"state": "running"})
    if lease is None:
        return "skipped"
    db.session.commit()
    mail = db.session.get(OutboundMail, mail_id)
    error, give_up = None, False
    with work.Heartbeat(lease):
        try:
            if mail.kind == "invoice_reminder":
                from panel.billing.reminders import reminder_message

                message = reminder_message(mail.ref_id)
            else:
                message = Message(subject=mail.subject, recipients=list(mail.recipients),
                                  body=crypto.decrypt(mail.body_encrypted) if mail.body_encrypted else "")
            current_app.extensions["mail"].send(message)
        except SMTP_ERRORS as exc:
            error = f"SMTP: {type(exc).__name__}: {exc}"[:2000]
        except Exception as exc:  # a broken template or a missing invoice: no retry will help
            log.exception("mail %s could not be built", mail_id)
            error, give_up = f"internal error ({type(exc).__name__}: {exc})"[:2000], True
    try:
        work.fence(lease)
        mail = db.session.get(OutboundMail, mail_id, populate_existing=True)
        mail.attempts = (mail.attempts or 0) + 1
        if error is None:
            mail.state, mail.sent_at, mail.due_at, mail.last_error, mail.body_encrypted = "sent", utcnow(), None, None, None
            outcome = "sent"
        else:
            mail.last_error = error
            steps = current_app.config["MAIL_BACKOFF"]
            if mail.attempts <= len(steps) and not give_up:
                mail.state = "queued"
                mail.due_at = utcnow() + timedelta(seconds=steps[mail.attempts - 1])
                work.wake_after_commit("mail", mail.id, mail.due_at)
                outcome = "retrying"
            else:
                mail.state, mail.due_at = "failed", None
                outcome = "failed"
                log.warning("mail %s to %s given up after %s tries: %s", mail_id, len(mail.recipients),
                            mail.attempts, error)
        db.session.commit()
    except work.StaleLease as exc:
        db.session.rollback()
        log.warning("stale mail completion refused: %s", exc)
        return "stale"
    return outcome


def purge_sent(now=None) -> int:
    """A periodic task (every ``PANEL_PURGE_INTERVAL`` seconds): delete mail sent more than
    ``PANEL_MAIL_RETENTION_DAYS`` ago (their bodies are already cleared; mail given up stays until an
    operator retries it). Returns how many rows were deleted."""
    from panel.extensions import db
    from panel.models import OutboundMail
    from panel.models.base import utcnow

    cutoff = (now or utcnow()) - timedelta(days=int(current_app.config["MAIL_RETENTION_DAYS"]))
    deleted = db.session.execute(db.delete(OutboundMail).where(OutboundMail.state == "sent",
                                                               OutboundMail.sent_at < cutoff)).rowcount
    db.session.commit()
    return deleted


def retry(mail: "OutboundMail", *, actor: str) -> None:
    """An operator's retry of a mail that was given up: due now, with a fresh set of tries."""
    from panel import work
    from panel.extensions import db
    from panel.models.base import utcnow

    mail.state, mail.due_at, mail.attempts = "queued", utcnow(), 0
    work.wake_after_commit("mail", mail.id)
    db.session.commit()


def _link(service_id: int, admin: bool = False) -> str:
    base = current_app.config["PUBLIC_URL"]
    return f"{base}/admin/services/{service_id}" if admin else f"{base}/services/{service_id}"


def customer_notice(service, subject: str, body: str) -> bool:
    """Mail the service's customer (billing uses it for a failed payment)."""
    return send(service.user.email, subject, f"{body}\n\n{_link(service.id)}\n", service_id=service.id)


class StatusMail:
    """The ``service_status_changed`` hook that turns transitions into mail."""

    @hookimpl
    def service_status_changed(self, service, old, new):
        if not enabled():
            return
        link = _link(service.id)
        name = f"{service.plan} service #{service.id}"
        if new == "active" and old == "provisioning":
            send(service.customer_email, f"Your {name} is ready", f"It is up and running.\n\n{link}\n")
        elif new == "active" and old == "suspended":
            send(service.customer_email, f"Your {name} is running again", f"It has been resumed.\n\n{link}\n")
        elif new == "suspended":
            send(service.customer_email, f"Your {name} is suspended",
                 f"It is stopped but nothing is deleted. {service.status_detail}\n\n{link}\n")
        elif new == "terminated":
            send(service.customer_email, f"Your {name} was removed", f"It has been deleted.\n\n{link}\n")
        elif new in ("failed", "needs_reconcile"):
            if old == "provisioning":
                send(service.customer_email, f"Your {name} is delayed",
                     "Setting it up hit a problem. Our team has been told and is on it.\n\n" + link + "\n")
            from panel.extensions import db
            from panel.models import Service, User

            operators = db.session.scalars(db.select(User.email).where(User.role == "operator")).all()
            row = db.session.get(Service, service.id)
            reason = (row.reconcile_reason if row is not None else "") or service.status_detail
            what = "failed" if new == "failed" else "needs reconciling (the backend may have made it)"
            send(list(operators), f"[hostpanel] service #{service.id} {what} ({service.backend})",
                 f"Service #{service.id} ({service.plan}, {service.customer_email}) went from {old} to {new}:\n\n"
                 f"{reason}\n\nRetry or terminate it from {_link(service.id, admin=True)}\n")
