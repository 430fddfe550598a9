"""The customer's billing profile on /billing (seed 002's org_billing_config, the customer's half):
legal name, address, country, VAT ID checked with python-stdnum (a field-level 400, nothing stored),
the reminder e-mail switch, audited; the operator's switches cannot be set from it. /billing works
on a panel without Stripe keys for an account paying by invoice (invoices, PDFs, profile, the menu
link), and the Stripe routes stay closed there."""
from __future__ import annotations

import re
from datetime import datetime, time, timedelta, timezone

import pytest
from corelib import add_user, login
from invoicelib import SELLER, plan, profile, service

from panel.billing import invoicing, reminders
from panel.extensions import db
from panel.models import AuditEntry, InvoiceReminder, Profile, Service

GOOD = {"company": "Alice AG", "full_name": "Alice Muster", "address_line1": "Hauptgasse 3", "postal_code": "3000",
        "city": "Bern", "country": "CH", "tax_id": "che 116 281 710 mwst", "reminder_emails": "y"}


@pytest.fixture
def app(make_app):
    """A panel without Stripe keys (pay by invoice only)."""
    app = make_app(**SELLER, INVOICE_REMINDER_DAYS="7,14,30", SUSPEND_AFTER_DAYS=3)
    with app.app_context():
        yield app


@pytest.fixture
def alice(app):
    """Alice pays by invoice (an operator set it: a service of billing mode ``invoice``) and has her
    November invoice; Bob has nothing billed."""
    tenant = plan("tenant", 4900, "chf")
    user = add_user("alice@example.com")
    profile(user, company="Old name", country="CH")
    service(user, tenant, [("2026-10-20 08:00", "active")], "alice-tenant")
    add_user("bob@example.com")
    db.session.commit()
    [invoice] = invoicing.generate("2026-11", actor="test").issued
    return {"user": user, "invoice": invoice}


def field_error(html: str, name: str) -> str:
    found = re.search(rf'<div class="error" data-field="{name}">([^<]*)</div>', html)
    return found.group(1) if found else ""


def test_billing_works_without_stripe_for_an_account_paying_by_invoice(app, alice, client):
    from panel.billing import configured

    assert not configured()
    login(client, "alice@example.com")
    page = client.get("/billing")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    inv = alice["invoice"]
    assert inv.number in html and f"/billing/invoices/{inv.id}.pdf" in html
    assert 'id="billing-profile-form"' in html and 'value="Old name"' in html
    assert "Manage billing" not in html and 'id="subscriptions"' not in html     # nothing of Stripe's
    assert 'href="/billing"' in html                                            # the menu links to it
    assert "On for alice-tenant" in html                                        # pay by invoice, set by us
    pdf = client.get(f"/billing/invoices/{inv.id}.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    # the routes that talk to Stripe do not exist on this panel
    assert client.post("/billing/portal").status_code == 404
    svc = db.session.scalar(db.select(Service).where(Service.user_id == alice["user"].id))
    assert client.post(f"/billing/services/{svc.id}/change-plan", data={"plan": "tenant"}).status_code == 404
    assert client.post(f"/billing/services/{svc.id}/addons", data={"add": "x"}).status_code == 404


def test_the_menu_links_billing_only_for_accounts_with_invoicing_without_stripe(app, alice, client):
    login(client, "bob@example.com")
    html = client.get("/services").get_data(as_text=True)
    assert 'href="/billing"' not in html
    assert client.get("/billing").status_code == 200     # the page itself still answers (his profile)


def test_saving_the_billing_profile_is_audited_and_keeps_operator_switches(app, alice, client):
    login(client, "alice@example.com")
    r = client.post("/billing/profile", data=GOOD | {"company": "Alice Muster AG", "reminder_emails": "",
                                                     "auto_invoice": "", "auto_reminders": "",
                                                     "billing_mode": "stripe", "pay_by_invoice": "0"})
    assert r.status_code == 303 and r.headers["Location"].endswith("/billing#billing-profile")
    row = db.session.get(Profile, alice["user"].id)
    db.session.refresh(row)
    assert (row.company, row.city, row.country, row.tax_id) == ("Alice Muster AG", "Bern", "CH", "CHE-116.281.710 MWST")
    assert row.reminder_emails is False
    assert row.auto_invoice is True and row.auto_reminders is True       # the operator's switches: untouched
    svc = db.session.scalar(db.select(Service).where(Service.user_id == alice["user"].id))
    assert svc.billing_mode == "invoice"
    entry = db.session.scalar(db.select(AuditEntry).where(AuditEntry.action == "account.billing_profile"))
    assert entry.actor == "customer:alice@example.com" and entry.target_id == str(alice["user"].id)
    assert entry.before["company"] == "Old name" and entry.after["company"] == "Alice Muster AG"
    assert entry.after["reminder_emails"] is False and "auto_invoice" not in entry.after
    # the issued invoice keeps the buyer it was issued with
    db.session.refresh(alice["invoice"])
    assert alice["invoice"].buyer["name"] == "Old name"
    assert "Billing profile saved." in client.get("/billing").get_data(as_text=True)


def test_a_customer_cannot_turn_pay_by_invoice_on(app, alice, client):
    from panel.models import User

    bob = db.session.scalar(db.select(User).where(User.email == "bob@example.com"))
    login(client, "bob@example.com")
    html = client.get("/billing").get_data(as_text=True)
    assert "Off: you pay by card through checkout." in html and 'name="pay_by_invoice"' not in html
    r = client.post("/billing/profile", data=GOOD | {"company": "Bob GmbH", "pay_by_invoice": "1",
                                                     "billing_mode": "invoice", "auto_invoice": "y"})
    assert r.status_code == 303
    assert db.session.get(Profile, bob.id).company == "Bob GmbH"
    assert db.session.scalar(db.select(Service.id).where(Service.user_id == bob.id)) is None
    assert invoicing.generate("2026-11", email="bob@example.com").drafts == []


@pytest.mark.parametrize("data, field, message", [
    (GOOD | {"tax_id": "CHE-116.281.711 MWST"}, "tax_id", "This is not a valid tax ID for CH"),
    (GOOD | {"country": "DE", "tax_id": "DE136695975"}, "tax_id", "This is not a valid tax ID for DE"),
    (GOOD | {"country": "", "tax_id": "DE136695976"}, "tax_id", "Choose the country of this VAT ID."),
    (GOOD | {"country": "XX"}, "country", "Not a valid choice"),
    (GOOD | {"company": "x" * 201}, "company", "200"),
    (GOOD | {"postal_code": "1" * 21}, "postal_code", "20"),
])
def test_bad_input_is_a_field_level_400_and_stores_nothing(app, alice, client, data, field, message):
    login(client, "alice@example.com")
    r = client.post("/billing/profile", data=data)
    html = r.get_data(as_text=True)
    assert r.status_code == 400
    assert message in field_error(html, field), html[html.find("billing-profile-form"):][:3000]
    row = db.session.get(Profile, alice["user"].id)
    db.session.refresh(row)
    assert row.company == "Old name" and row.tax_id == ""
    assert db.session.scalar(db.select(AuditEntry).where(AuditEntry.action == "account.billing_profile")) is None


def test_the_vat_id_error_in_german(app, alice, client):
    alice["user"].locale = "de"
    db.session.commit()
    login(client, "alice@example.com")
    html = client.post("/billing/profile", data=GOOD | {"tax_id": "CHE-116.281.711 MWST"}).get_data(as_text=True)
    assert "Das ist keine gültige Steuernummer für CH" in field_error(html, "tax_id")
    assert "Rechnungsprofil" in html


def test_a_valid_eu_vat_id_is_stored_and_gets_the_reverse_charge(app, alice, client):
    login(client, "alice@example.com")
    client.post("/billing/profile", data=GOOD | {"country": "DE", "tax_id": "de 136 695 976"})
    row = db.session.get(Profile, alice["user"].id)
    db.session.refresh(row)
    assert (row.country, row.tax_id) == ("DE", "DE136695976")
    [draft] = invoicing.compute_month(alice["user"], "2026-12")
    assert draft.vat_rate == 0 and draft.vat_note == invoicing.REVERSE_CHARGE


def test_csrf_is_required(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        user = add_user("csrf@example.com")
        client = app.test_client()
        with client.session_transaction() as sess:   # signed in without going through the login form
            sess["_user_id"] = user.get_id()
            sess["_fresh"] = True
        r = client.post("/billing/profile", data=GOOD)
        assert r.status_code == 400
        assert db.session.get(Profile, user.id) is None


def test_without_reminder_emails_the_reminder_is_recorded_not_mailed_and_dunning_follows(app, alice):
    from memory_backend import REMOTE

    row = db.session.get(Profile, alice["user"].id)
    row.reminder_emails = False
    svc = db.session.scalar(db.select(Service).where(Service.user_id == alice["user"].id))
    REMOTE.objects[svc.external_id] = {"size": 64, "state": "active"}
    db.session.commit()
    inv = alice["invoice"]

    def day(n):
        return datetime.combine(inv.due_on + timedelta(days=n), time(9), tzinfo=timezone.utc)

    report = reminders.run(day(7))
    assert report.sent == [(inv.number, 7)]
    [reminder] = db.session.scalars(db.select(InvoiceReminder)).all()
    assert reminder.sent_to == ""                       # recorded, no e-mail
    reminders.run(day(30))
    assert reminders.run(day(33)).suspended             # the suspension still follows the last step


def test_operators_see_that_the_customer_turned_reminder_emails_off(app, alice, client):
    add_user("ops@example.com", role="operator")
    login(client, "alice@example.com")
    client.post("/billing/profile", data=GOOD | {"reminder_emails": ""})
    ops = app.test_client()
    from flask import g

    g.pop("_login_user", None)
    login(ops, "ops@example.com")
    html = ops.get("/admin/billing").get_data(as_text=True)
    assert 'data-reminder-emails="off"' in html


def test_an_account_without_a_profile_sees_the_reminder_switch_on(app, alice, client):
    """Reminder e-mails are on until a customer turns them off: the form says so before any profile
    row exists (the reminders treat a missing profile as "on")."""
    carol = add_user("carol@example.com")
    db.session.commit()
    assert db.session.scalar(db.select(Profile).where(Profile.user_id == carol.id)) is None
    login(client, "carol@example.com")
    html = client.get("/billing").get_data(as_text=True)
    box = re.search(r'<input[^>]*name="reminder_emails"[^>]*>', html).group(0)
    assert "checked" in box
