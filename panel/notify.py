"""Email notifications (Flask-Mail): customers hear about their services, operators about failures.

Configured with Flask-Mail's settings as ``PANEL_MAIL_*`` variables (``PANEL_MAIL_SERVER``,
``PANEL_MAIL_PORT``, ``PANEL_MAIL_USE_TLS``, ``PANEL_MAIL_USE_SSL``, ``PANEL_MAIL_USERNAME``,
``PANEL_MAIL_PASSWORD``, ``PANEL_MAIL_DEFAULT_SENDER``). Without ``PANEL_MAIL_SERVER`` nothing is
sent. Mail goes out as a job (``deliver``), so a slow or down SMTP server never holds up a
transition; the job tries an unreachable SMTP server three times before it gives up.

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
import time

from flask import current_app

from panel.backends import TransientBackendError
from panel.hookspecs import hookimpl

log = logging.getLogger(__name__)


def init_app(app) -> None:
    """Set up Flask-Mail when ``PANEL_MAIL_SERVER`` is set, and register the status hook."""
    if app.config.get("MAIL_SERVER"):
        from flask_mail import Mail

        app.config.setdefault("MAIL_DEFAULT_SENDER", "hostpanel@localhost")
        Mail(app)
    app.extensions["panel"].pm.register(StatusMail(), name="panel.notify")


def enabled() -> bool:
    """Whether mail is configured."""
    return "mail" in current_app.extensions


def send(to: list[str] | str, subject: str, body: str) -> bool:
    """Queue one plain-text email (a ``deliver`` job). Returns whether it was queued."""
    if not enabled():
        return False
    from panel import dispatch

    recipients = [to] if isinstance(to, str) else list(to)
    if not recipients:
        return False
    message = {"to": recipients, "subject": subject, "body": body}
    return dispatch.enqueue_call(deliver, message, key="mail")


SMTP_TRIES = (0.0, 1.0, 3.0)  # seconds to wait before each try


def deliver(message: dict) -> None:
    """Job: send ``{"to": [...], "subject", "body"}`` through Flask-Mail.

    An unreachable SMTP server is tried ``len(SMTP_TRIES)`` times; then ``TransientBackendError``
    is raised (the job is recorded as failed in RQ).
    """
    from flask_mail import Message

    for pause in SMTP_TRIES:
        time.sleep(pause)
        try:
            current_app.extensions["mail"].send(Message(subject=message["subject"], recipients=message["to"],
                                                        body=message["body"]))
            return
        except (OSError, smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError) as exc:
            error = exc
    raise TransientBackendError(f"SMTP server unreachable ({type(error).__name__})") from None


def _link(service_id: int, admin: bool = False) -> str:
    base = current_app.config["PUBLIC_URL"]
    return f"{base}/admin/services/{service_id}" if admin else f"{base}/services/{service_id}"


def customer_notice(service, subject: str, body: str) -> bool:
    """Mail the service's customer (billing uses it for a failed payment)."""
    return send(service.user.email, subject, f"{body}\n\n{_link(service.id)}\n")


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
