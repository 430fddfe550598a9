"""Reminders for overdue invoices with a frozen clock: steps 7, 14 and 30 days after the due date,
each mailed once to a real SMTP server (aiosmtpd) with the PDF attached and recorded; a panel that
was down sends only the step reached; after the last step and the grace the account's invoiced
services are suspended for non-payment, and marking the invoice paid lifts it."""
from __future__ import annotations

import io
from datetime import datetime, time, timedelta, timezone

import pytest
from corelib import add_user, login, wait_jobs
from invoicelib import SELLER, plan, profile, service
from memory_backend import REMOTE
from pypdf import PdfReader

from panel.billing import invoicing, reminders
from panel.extensions import db
from panel.models import InvoiceReminder, Operation
from panel.models.base import AppendOnlyError


@pytest.fixture
def app(make_app, smtp):
    inbox, port = smtp
    app = make_app(**SELLER, MAIL_SERVER="127.0.0.1", MAIL_PORT=port, MAIL_DEFAULT_SENDER="billing@example.com",
                   MAIL_SUPPRESS_SEND=False, INVOICE_REMINDER_DAYS="7,14,30", SUSPEND_AFTER_DAYS=3,
                   STRIPE_SECRET_KEY="sk_test_rem", STRIPE_WEBHOOK_SECRET="whsec_rem", STRIPE_API_BASE="http://127.0.0.1:9")
    with app.app_context():
        yield app


@pytest.fixture
def overdue(app):
    tenant = plan("tenant", 4900, "chf")
    user = add_user("late@example.com")
    profile(user, company="Late AG", country="CH")
    svc = service(user, tenant, [("2026-10-20 08:00", "active")], "late-tenant")
    REMOTE.objects[svc.external_id] = {"size": 64, "state": "active"}
    add_user("ops@example.com", role="operator")
    db.session.commit()
    [invoice] = invoicing.generate("2026-11").issued
    return invoice, svc


def day(invoice, days_after_due):
    return datetime.combine(invoice.due_on + timedelta(days=days_after_due), time(9), tzinfo=timezone.utc)


def test_reminder_schedule_with_a_frozen_clock(app, smtp, overdue, client):
    inbox, _ = smtp
    invoice, svc = overdue
    assert reminders.run(day(invoice, 0)).sent == [] and reminders.run(day(invoice, 6)).sent == []
    assert reminders.run(day(invoice, 7)).sent == [(invoice.number, 7)]
    assert reminders.run(day(invoice, 8)).sent == []                  # once per step
    wait_jobs(app)
    [mail] = inbox.wait_for(1)
    assert mail["to"] == ["late@example.com"] and invoice.number in mail["subject"]
    assert invoice.payment_reference in mail["body"] and "CHF52.97" in mail["body"]
    [attachment] = mail["attachments"]
    assert (attachment["filename"], attachment["type"]) == (f"invoice-{invoice.number}.pdf", "application/pdf")
    text = PdfReader(io.BytesIO(attachment["data"])).pages[0].extract_text()
    assert f"Invoice {invoice.number}" in text and "CHF52.97" in text
    assert reminders.run(day(invoice, 14)).sent == [(invoice.number, 14)]
    last = reminders.run(day(invoice, 30))
    assert last.sent == [(invoice.number, 30)] and last.suspended == []   # grace: 3 more days
    wait_jobs(app)
    bodies = [m["body"] for m in inbox.wait_for(3) if m["subject"].startswith("Reminder")]
    assert len(bodies) == 3 and sum("last reminder" in b for b in bodies) == 1   # the 30-day one
    assert reminders.run(day(invoice, 32)).suspended == []
    assert reminders.run(day(invoice, 33)).suspended == [svc.id]
    wait_jobs(app)
    suspend = db.session.scalar(db.select(Operation).where(Operation.service_id == svc.id, Operation.action == "suspend"))
    assert suspend is not None and suspend.payload.get("reason") == "non_payment" and suspend.state == "succeeded"
    steps = db.session.scalars(db.select(InvoiceReminder.step).where(InvoiceReminder.invoice_id == invoice.id)
                               .order_by(InvoiceReminder.step)).all()
    assert steps == [7, 14, 30]
    assert len([m for m in inbox.messages if m["subject"].startswith("Reminder")]) == 3
    row = db.session.scalar(db.select(InvoiceReminder))
    row.step = 1
    with pytest.raises(AppendOnlyError):
        db.session.flush()
    db.session.rollback()


def test_a_late_first_run_sends_only_the_step_reached(app, smtp, overdue):
    inbox, _ = smtp
    invoice, _svc = overdue
    assert reminders.run(day(invoice, 31)).sent == [(invoice.number, 30)]
    assert reminders.run(day(invoice, 31)).sent == []
    wait_jobs(app)
    assert len(inbox.wait_for(1)) == 1


def test_marking_paid_lifts_the_suspension(app, smtp, overdue, client):
    invoice, svc = overdue
    reminders.run(day(invoice, 30))
    reminders.run(day(invoice, 40))
    wait_jobs(app)
    db.session.refresh(svc)
    assert svc.status == "suspended" and svc.suspension_reason == "non_payment"
    assert REMOTE.objects[svc.external_id]["state"] == "suspended"
    login(client, "ops@example.com")
    client.post(f"/admin/invoices/{invoice.id}/paid", data={"amount": "52.97", "paid_on": "2027-02-10"})
    wait_jobs(app)
    db.session.refresh(svc)
    assert svc.status == "active" and REMOTE.objects[svc.external_id]["state"] == "active"


def test_monthly_invoices_and_the_accounts_switches(app, smtp, client):
    from panel.models import Invoice, Profile

    tenant = plan("tenant", 4900, "chf")
    on = add_user("on@example.com")
    off = add_user("off@example.com")
    profile(on, company="On AG", country="CH")
    service(on, tenant, [("2026-10-20 08:00", "active")], "on-tenant")
    service(off, tenant, [("2026-10-20 08:00", "active")], "off-tenant")
    add_user("ops@example.com", role="operator")
    db.session.commit()
    login(client, "ops@example.com")
    html = client.get("/admin/billing").get_data(as_text=True)
    assert "On AG" in html and "off@example.com" in html
    client.post(f"/admin/billing/accounts/{off.id}", data={"auto_reminders": "1"})   # no monthly invoice
    assert db.session.get(Profile, off.id).auto_invoice is False
    now = datetime(2026, 12, 1, 2, tzinfo=timezone.utc)
    assert reminders.previous_month(now) == "2026-11"
    [number] = reminders.auto_invoice(now)
    assert reminders.auto_invoice(now) == []                                          # once a month
    invoice = db.session.scalar(db.select(Invoice).where(Invoice.number == number))
    assert invoice.user_id == on.id and invoice.period_start.isoformat() == "2026-11-01"
    # reminders off: nothing is sent for that account
    client.post(f"/admin/billing/accounts/{on.id}", data={"auto_invoice": "1"})
    assert reminders.run(day(invoice, 8)).sent == []
    client.post(f"/admin/billing/accounts/{on.id}", data={"auto_invoice": "1", "auto_reminders": "1"})
    assert reminders.run(day(invoice, 8)).sent == [(invoice.number, 7)]
