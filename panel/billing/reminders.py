"""Payment reminders for overdue invoices of our own (seed 002 phase 6), and the dunning that
follows the last one.

``auto_invoice(now)`` issues last month's invoice of every account billed by invoice whose profile
has ``auto_invoice`` on (seed 002's monthly cron). ``PANEL_INVOICE_REMINDER_DAYS`` (default
``7,14,30``) are the steps, in days after an issued
invoice's due date. ``run(now)`` (periodic in ``panel worker``, every
``PANEL_INVOICE_CRON_INTERVAL`` seconds, default 3600) sends, per overdue invoice, the highest
step reached that was not sent yet (a panel that was down for weeks sends one reminder, not
three), records it (``invoice_reminders``, one row per invoice and step) and mails it to the
account with the invoice's PDF attached. After the last step, once ``PANEL_SUSPEND_AFTER_DAYS``
of grace have passed too, the account's services billed by invoice are suspended for non-payment,
exactly as a Stripe-billed service is after its grace; marking the invoice paid lifts it.

Two switches on the account's profile: ``auto_reminders`` (operators, ``/admin/billing``): off, the
operator chases the account by hand (no reminder, no automatic suspension); ``reminder_emails``
(the customer, ``/billing``): off, each reminder is still recorded (``sent_to`` empty) and the
suspension after the last one still follows, only no e-mail is sent.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _

from panel.extensions import db
from panel.models import Service
from panel.models.base import utcnow
from panel.models.invoices import Invoice, InvoiceReminder

log = logging.getLogger(__name__)
DEFAULT_STEPS = "7,14,30"


def steps() -> list[int]:
    """``PANEL_INVOICE_REMINDER_DAYS`` as sorted days after the due date (``[7, 14, 30]``)."""
    text = str(current_app.config.get("INVOICE_REMINDER_DAYS") or DEFAULT_STEPS)
    return sorted({int(part) for part in text.split(",") if part.strip()})


@dataclass
class ReminderReport:
    """What one run did: reminders sent (``(invoice number, step)``) and services suspended."""

    sent: list[tuple[str, int]] = field(default_factory=list)
    suspended: list[int] = field(default_factory=list)


def run(now: datetime | None = None) -> ReminderReport:
    """Send the reminders due at ``now`` (aware UTC; default: now) and suspend after the last step
    plus the grace period. Commits each reminder before its mail is queued."""
    now = now or utcnow()
    today = now.date()
    report = ReminderReport()
    days = steps()
    if not days:
        return report
    grace = int(current_app.config.get("SUSPEND_AFTER_DAYS") or 0)
    overdue = db.session.scalars(db.select(Invoice).where(Invoice.status == "issued", Invoice.due_on < today)
                                 .order_by(Invoice.id)).all()
    for invoice in overdue:
        profile = invoice.user.profile
        if profile is not None and not profile.auto_reminders:
            continue  # the operator chases this account by hand
        late = (today - invoice.due_on).days
        reached = [d for d in days if late >= d]
        if not reached:
            continue
        sent = set(db.session.scalars(db.select(InvoiceReminder.step).where(InvoiceReminder.invoice_id == invoice.id)))
        step = reached[-1]
        if not any(s >= step for s in sent):
            mail = profile is None or profile.reminder_emails is not False
            reminder = InvoiceReminder(invoice_id=invoice.id, step=step, sent_at=now,
                                       sent_to=invoice.user.email if mail else "", last_step=step == days[-1])
            db.session.add(reminder)
            db.session.flush()
            if mail:
                queue_mail(reminder)  # the reminder and its mail commit together
            db.session.commit()
            report.sent.append((invoice.number, step))
        if late >= days[-1] + grace and days[-1] in sent | {step}:
            report.suspended += suspend_account(invoice)
    return report


def reminder_text(reminder: InvoiceReminder) -> tuple[str, str]:
    """``(subject, body)`` of a reminder, in the account's language."""
    from panel.i18n import money

    invoice = db.session.get(Invoice, reminder.invoice_id)
    with force_locale(invoice.user.locale or "en"):
        subject = _("Reminder: invoice %(number)s is overdue", number=invoice.number)
        body = _("Our invoice %(number)s of %(total)s was due on %(due)s and we have not received your payment "
                 "yet. The invoice is attached. Please transfer the amount with the payment reference "
                 "%(reference)s. If you have paid in the meantime, please ignore this message.",
                 number=invoice.number, total=money(invoice.total, invoice.currency), due=invoice.due_on.isoformat(),
                 reference=invoice.payment_reference)
        if reminder.last_step:
            body += "\n\n" + _("This is our last reminder: if the invoice stays unpaid, your services will be "
                               "suspended in %(days)s days.", days=int(current_app.config.get("SUSPEND_AFTER_DAYS") or 0))
    return subject, body


def queue_mail(reminder: InvoiceReminder) -> bool:
    """Record the reminder's email (an ``OutboundMail`` of kind ``invoice_reminder``, in the current
    transaction) when mail is configured; a worker renders and sends it (``reminder_message``)."""
    from panel import notify

    if not notify.enabled():
        log.warning("invoice reminder %s recorded but not mailed: mail is not configured", reminder.id)
        return False
    subject, _body = reminder_text(reminder)
    return notify.send(reminder.sent_to, subject, "", kind="invoice_reminder", ref_id=reminder.id)


def reminder_message(reminder_id: int):
    """The Flask-Mail ``Message`` of reminder ``reminder_id``: its text in the account's language and
    the invoice's PDF attached (rendered now from the stored invoice)."""
    from flask_mail import Message

    from panel.billing.invoice_pdf import invoice_pdf, pdf_filename

    reminder = db.session.get(InvoiceReminder, reminder_id)
    invoice = db.session.get(Invoice, reminder.invoice_id)
    subject, body = reminder_text(reminder)
    message = Message(subject=subject, recipients=[reminder.sent_to], body=body)
    message.attach(pdf_filename(invoice), "application/pdf", invoice_pdf(invoice))
    return message


def _invoiced_services(user_id: int) -> list[Service]:
    return db.session.scalars(db.select(Service).where(Service.user_id == user_id, Service.billing_mode == "invoice")
                              .order_by(Service.id)).all()


def suspend_account(invoice: Invoice) -> list[int]:
    """Suspend (reason non-payment) the live services billed by invoice of the invoice's account;
    returns the ids of those asked to suspend now."""
    from panel.billing.handlers import _suspend_for_non_payment

    done = []
    for service in _invoiced_services(invoice.user_id):
        if _suspend_for_non_payment(service, f"invoice {invoice.number} unpaid after the last reminder") \
                == "suspended for non-payment":
            done.append(service.id)
    return done


def lift_after_payment(invoice: Invoice) -> list[int]:
    """After ``invoice`` was paid: unsuspend the account's services suspended for non-payment,
    unless another invoice is still unpaid past its last reminder. Returns the ids unsuspended."""
    from panel.billing.handlers import _lift_non_payment

    last = steps()[-1] if steps() else 0
    still = db.session.scalar(db.select(db.func.count(Invoice.id)).where(
        Invoice.user_id == invoice.user_id, Invoice.status == "issued",
        Invoice.due_on <= utcnow().date() - timedelta(days=last)))
    if still:
        return []
    return [s.id for s in _invoiced_services(invoice.user_id)
            if _lift_non_payment(s, f"invoice {invoice.number} paid") == "unsuspended"]


def previous_month(now: datetime) -> str:
    """The calendar month before ``now``'s: ``2026-12-01`` -> ``"2026-11"``."""
    first = now.date().replace(day=1) - timedelta(days=1)
    return f"{first:%Y-%m}"


def auto_invoice(now: datetime | None = None) -> list[str]:
    """The monthly job: issue last month's invoice of every account with a service billed by invoice
    and ``auto_invoice`` on (the default) that has none for that month yet. Returns the numbers
    issued."""
    from panel.billing import invoicing
    from panel.models import Profile, User

    now = now or utcnow()
    month = previous_month(now)
    first, _ = invoicing.month_bounds(month)
    invoiced = db.select(Invoice.user_id).where(Invoice.period_start == first, Invoice.status != "void")
    off = db.select(Profile.user_id).where(Profile.auto_invoice.is_(False))
    users = db.session.scalars(db.select(User.email).where(
        User.id.in_(db.select(Service.user_id).where(Service.billing_mode == "invoice")),
        User.id.not_in(invoiced), User.id.not_in(off)).order_by(User.id)).all()
    issued = []
    for email in users:
        issued += [inv.number for inv in invoicing.generate(month, email=email, actor="auto-invoice").issued]
    return issued


def periodic() -> None:
    """What ``panel worker`` runs every ``PANEL_INVOICE_CRON_INTERVAL`` seconds: the monthly
    invoices still owed, then the reminders."""
    auto_invoice()
    run()


def register(app) -> None:
    """Run the monthly invoices and the reminders periodically in ``panel worker``."""
    from panel import dispatch

    dispatch.register_periodic(app, "invoices", float(app.config.get("INVOICE_CRON_INTERVAL") or 3600), periodic)
