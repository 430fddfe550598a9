"""Invoices for customers (/billing list, PDF download, the API; another customer's invoice is a
404) and for operators (/admin/billing: generate, mark paid, void, totals, CSV; every action
audited). PDFs are read back with pypdf."""
from __future__ import annotations

import csv
import io

import pytest
from corelib import add_user, login, token_for
from invoicelib import SELLER, addon_event, plan, profile, service
from pypdf import PdfReader

from panel.extensions import db
from panel.models import AuditEntry, Invoice


@pytest.fixture
def app(make_app):
    app = make_app(**SELLER, STRIPE_SECRET_KEY="sk_test_pages", STRIPE_WEBHOOK_SECRET="whsec_pages",
                   STRIPE_API_BASE="http://127.0.0.1:9")
    with app.app_context():
        yield app


@pytest.fixture
def billed(app):
    """Alice (CH, by invoice: CHF 49 a month, an add-on from the 16th) and her November invoice;
    Bob, another customer; an operator."""
    from panel.billing import invoicing

    tenant = plan("tenant", 4900, "chf")
    alice = add_user("alice@example.com")
    profile(alice, company="Alice AG", full_name="Alice Muster", address_line1="Hauptgasse 3", postal_code="3000",
            city="Bern", country="CH", tax_id="CHE-116.281.710")
    svc = service(alice, tenant, [("2026-10-20 08:00", "active")], "alice-tenant")
    addon_event(svc, "searxng", "enabled", "2026-11-16 10:00", 300, "chf")
    bob = add_user("bob@example.com")
    ops = add_user("ops@example.com", role="operator")
    db.session.commit()
    [invoice] = invoicing.generate("2026-11", actor="test").issued
    return {"alice": alice, "bob": bob, "ops": ops, "invoice": invoice}


def signed_in(client, email):
    """A client logged in as ``email``. The fixture's app context is shared by every request
    (Flask reuses it), so Flask-Login's cached user is dropped first."""
    from flask import g

    g.pop("_login_user", None)
    login(client, email)
    g.pop("_login_user", None)
    return client


def pdf_text(data: bytes) -> str:
    reader = PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_invoice_pdf_holds_the_numbers(billed, client):
    inv = billed["invoice"]
    # 49.00 full month + 3.00 * 15/30 = 1.50; subtotal 50.50; VAT 8.1 % = 4.0905 -> 4.09; total 54.59
    assert (inv.subtotal, inv.vat, inv.total) == (5050, 409, 5459)
    login(client, "alice@example.com")
    r = client.get(f"/billing/invoices/{inv.id}.pdf")
    assert r.status_code == 200 and r.mimetype == "application/pdf"
    assert f'filename="invoice-{inv.number}.pdf"' in r.headers["Content-Disposition"]
    text = pdf_text(r.data)
    for expected in (f"Invoice {inv.number}", "Hostpanel GmbH", "Alice AG", "Hauptgasse 3", "CHE-116.281.710",
                     "CHF49.00", "CHF1.50", "Subtotal", "CHF50.50", "VAT 8.10 %", "CHF4.09", "CHF54.59",
                     inv.payment_reference, inv.due_on.isoformat(), "2026-11-01", "2026-11-30",
                     "CH93 0076 2011 6238 5295 7", "15 of 30 days"):
        assert expected in text, expected


def test_invoice_pdf_in_german(billed, client):
    """An invoice is issued in the account's language, lines included, and stays in it: the PDF
    follows the invoice's ``locale``, not the reader's language of the day."""
    from panel.billing import invoicing

    english = billed["invoice"]
    alice = billed["alice"]
    alice.locale = "de"
    db.session.commit()
    login(client, "alice@example.com")
    text = pdf_text(client.get(f"/billing/invoices/{english.id}.pdf").data)
    assert f"Invoice {english.number}" in text and "15 of 30 days" in text and "Rechnung" not in text
    [december] = invoicing.generate("2026-12", actor="test").issued
    assert december.locale == "de"
    assert [line.description for line in december.lines] == [
        "Tenant: alice-tenant (31 von 31 Tagen)", "Zusatzoption searxng: alice-tenant (31 von 31 Tagen)"]
    text = pdf_text(client.get(f"/billing/invoices/{december.id}.pdf").data)
    assert f"Rechnung {december.number}" in text and "Zwischensumme" in text and "MWST 8.10 %" in text
    assert "Zahlungsreferenz" in text and "31 von 31 Tagen" in text
    alice.locale = "en"       # a later change of language does not rewrite what was issued
    db.session.commit()
    assert "31 von 31 Tagen" in pdf_text(client.get(f"/billing/invoices/{december.id}.pdf").data)


def test_billing_page_lists_own_invoices_only(billed, client):
    login(client, "alice@example.com")
    html = client.get("/billing").get_data(as_text=True)
    assert billed["invoice"].number in html and f"/billing/invoices/{billed['invoice'].id}.pdf" in html
    bob = signed_in(client.application.test_client(), "bob@example.com")
    assert billed["invoice"].number not in bob.get("/billing").get_data(as_text=True)
    assert bob.get(f"/billing/invoices/{billed['invoice'].id}.pdf").status_code == 404
    assert bob.get("/billing/invoices/99999.pdf").status_code == 404


def test_api_invoices(billed, client):
    inv = billed["invoice"]
    alice, bob = token_for(billed["alice"]), token_for(billed["bob"])
    listing = client.get("/api/v1/invoices", headers=alice).get_json()["invoices"]
    assert [i["number"] for i in listing] == [inv.number]
    one = client.get(f"/api/v1/invoices/{inv.id}", headers=alice).get_json()["invoice"]
    assert (one["total"], one["vat"], one["vat_rate"], one["currency"]) == (5459, 409, "8.10", "chf")
    assert [(ln["kind"], ln["quantity"], ln["amount"]) for ln in one["lines"]] == [("base", "30", 4900),
                                                                                  ("addon", "15", 150)]
    pdf = client.get(f"/api/v1/invoices/{inv.id}.pdf", headers=alice)
    assert pdf.status_code == 200 and "CHF54.59" in pdf_text(pdf.data)
    assert client.get("/api/v1/invoices", headers=bob).get_json() == {"invoices": []}
    for url in (f"/api/v1/invoices/{inv.id}", f"/api/v1/invoices/{inv.id}.pdf"):
        r = client.get(url, headers=bob)
        assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"
    assert client.get("/api/v1/invoices").status_code == 401


def test_operator_billing_page_generate_mark_paid_void_and_csv(billed, client):
    login(client, "bob@example.com")
    assert client.get("/admin/billing").status_code == 404
    ops = signed_in(client.application.test_client(), "ops@example.com")
    html = ops.get("/admin/billing").get_data(as_text=True)
    assert billed["invoice"].number in html and "Tenant" in html and "CHF49.00" in html  # list and rates
    assert "2026-11" in html and "CHF54.59" in html                                       # totals per month
    # a dry run shows lines and issues nothing
    r = ops.post("/admin/billing/generate", data={"month": "2026-12", "dry_run": "1"})
    assert r.status_code == 200 and "alice@example.com" in r.get_data(as_text=True)
    assert db.session.scalar(db.select(db.func.count(Invoice.id))) == 1
    r = ops.post("/admin/billing/generate", data={"month": "2026-12", "email": "alice@example.com"})
    assert r.status_code == 302
    december = db.session.scalar(db.select(Invoice).where(Invoice.number != billed["invoice"].number))
    assert december.period_start.isoformat() == "2026-12-01" and december.number.endswith("-000002")
    assert db.session.scalar(db.select(AuditEntry).where(AuditEntry.action == "invoice.issue")).actor.endswith("ops@example.com")
    assert "no account" in ops.post("/admin/billing/generate", data={"month": "2026-12", "email": "x@example.com"},
                                    follow_redirects=True).get_data(as_text=True)
    # mark paid: a bad amount is a message and changes nothing; a good one is recorded and audited
    inv = billed["invoice"]
    html = ops.post(f"/admin/invoices/{inv.id}/paid", data={"amount": "54.591", "paid_on": "2026-12-10"},
                    follow_redirects=True).get_data(as_text=True)
    assert "more decimals than CHF" in html
    db.session.refresh(inv)
    assert inv.status == "issued"
    ops.post(f"/admin/invoices/{inv.id}/paid", data={"amount": "54.59", "paid_on": "2026-12-10", "reference": "ZKB 7"})
    db.session.refresh(inv)
    assert (inv.status, inv.paid_amount, inv.paid_reference) == ("paid", 5459, "ZKB 7")
    entry = db.session.scalar(db.select(AuditEntry).where(AuditEntry.action == "invoice.paid"))
    assert entry.target_id == str(inv.id) and entry.after["amount"] == 5459
    # void the December one; a paid one cannot be voided
    ops.post(f"/admin/invoices/{december.id}/void", data={"reason": "sent twice"})
    db.session.refresh(december)
    assert december.status == "void" and december.void_reason == "sent twice"
    assert "is paid, not issued" in ops.post(f"/admin/invoices/{inv.id}/void", data={},
                                             follow_redirects=True).get_data(as_text=True)
    assert "paid (1)" in ops.get("/admin/billing?status=paid").get_data(as_text=True)
    assert ops.get("/admin/billing?status=nonsense").status_code == 400
    rows = list(csv.DictReader(io.StringIO(ops.get("/admin/billing/invoices.csv").get_data(as_text=True))))
    assert [(r["number"], r["status"], r["total"], r["vat"], r["paid_amount"]) for r in rows] == [
        (inv.number, "paid", "54.59", "4.09", "54.59"),
        (december.number, "void", major(december.total), major(december.vat), "")]
    assert ops.get(f"/admin/invoices/{inv.id}.pdf").mimetype == "application/pdf"


def major(minor: int) -> str:
    from panel.billing.prices import to_decimal

    return str(to_decimal(minor, "chf"))


def test_the_invoices_generate_command(app):
    tenant = plan("tenant", 4900, "chf")
    alice = add_user("cli@example.com")
    profile(alice, company="Cli AG", country="CH")
    service(alice, tenant, [("2026-10-20 08:00", "active")], "cli")
    db.session.commit()
    runner = app.test_cli_runner()
    dry = runner.invoke(args=["invoices", "generate", "--month", "2026-11", "--dry-run"])
    assert dry.exit_code == 0 and "cli@example.com 2026-11 CHF" in dry.output
    assert "30 x 1.633333 = CHF49.00" in dry.output and "total CHF52.97" in dry.output
    assert db.session.scalar(db.select(db.func.count(Invoice.id))) == 0
    real = runner.invoke(args=["invoices", "generate", "--month", "2026-11", "--account", "cli@example.com"])
    number = db.session.scalar(db.select(Invoice.number))
    assert number.endswith("-000001")
    assert real.exit_code == 0 and f"issued {number} to cli@example.com: CHF52.97" in real.output
    assert db.session.scalar(db.select(AuditEntry).where(AuditEntry.action == "invoice.issue")) is not None
    bad = runner.invoke(args=["invoices", "generate", "--month", "November"])
    assert bad.exit_code != 0 and "month must look like 2026-11" in bad.output


def test_the_service_page_shows_usage_this_month(app, client):
    from datetime import datetime, timezone

    from invoicelib import usage

    from panel.models import Service

    postiz = plan("postiz", 500, "usd", {"posts": {"unit_price": "0.01", "currency": "usd"},
                                          "storage_gib": {"unit_price": "0.50", "free": "1", "currency": "usd",
                                                          "aggregate": "max"}})
    user = add_user("usage@example.com")
    svc = service(user, postiz, [("2026-10-03 09:00", "active")], "usage-community")
    this_month = datetime.now(timezone.utc).strftime("%Y-%m")
    usage(svc, "posts", f"{this_month}-01 10:00", "1200", 1)
    usage(svc, "posts", f"{this_month}-01 11:00", "34", 2)
    usage(svc, "storage_gib", f"{this_month}-01 11:00", "3.5", 3)
    usage(svc, "posts", "2020-01-01 10:00", "999", 4)     # another month: not counted
    db.session.commit()
    login(client, "usage@example.com")
    html = client.get(f"/services/{svc.id}").get_data(as_text=True)
    assert 'id="metered-usage"' in html
    assert "1234" in html and "$12.34" in html and "3.5" in html and "$1.25" in html
    assert db.session.get(Service, svc.id).billing_mode == "invoice"
