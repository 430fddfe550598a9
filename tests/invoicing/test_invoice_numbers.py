"""Gapless invoice numbers under concurrency (several OS processes on one real PostgreSQL), and
issued invoices, their lines, credit notes and usage records being immutable."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from decimal import Decimal

import pytest
from corelib import add_user
from invoicelib import pg_app, pg_url, plan, profile, service  # noqa: F401 (fixtures)

from panel.billing import invoicing
from panel.extensions import db
from panel.models import CreditNote, Invoice, InvoiceLine, UsageRecord
from panel.models.base import AppendOnlyError

HERE = os.path.dirname(__file__)
PROCESSES, EACH = 4, 6


def test_concurrent_processes_never_duplicate_or_skip_a_number(pg_app, pg_url, tmp_path):
    users = [add_user(f"p{i}@example.com") for i in range(PROCESSES)]
    db.session.commit()
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "issue_worker.py"), pg_url, str(u.id), str(EACH),
                               str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for u in users]
    go.touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs += [line.split() for line in out.splitlines()]
    committed = [n for kind, n in outputs if kind == "committed"]
    rolled_back = [n for kind, n in outputs if kind == "rolledback"]
    assert len(committed) == PROCESSES * (EACH - EACH // 3) and len(rolled_back) == PROCESSES * (EACH // 3)
    assert len(set(committed)) == len(committed)                      # no duplicates
    stored = db.session.scalars(db.select(Invoice.number).order_by(Invoice.number)).all()
    assert sorted(committed) == stored
    assert stored == [f"2026-{n:06d}" for n in range(1, len(committed) + 1)]   # no gaps
    # a rolled-back number was given again to a later issue (it burned nothing); one rolled back
    # after every commit stays the next number to give
    assert set(rolled_back) - set(committed) <= {f"2026-{len(committed) + 1:06d}"}
    assert set(rolled_back) & set(committed)


def _issued(currency="chf"):
    tenant = plan("tenant", 4900, currency)
    user = add_user("imm@example.com")
    profile(user, company="Imm AG", country="CH")
    service(user, tenant, [("2026-10-20 08:00", "active")], "imm")
    db.session.commit()
    [invoice] = invoicing.generate("2026-11").issued
    return invoice


def test_an_issued_invoice_is_immutable(app):
    invoice = _issued()
    assert invoice.number == f"{invoice.issued_at.year}-000001"
    for column, value in (("total", 1), ("number", "2026-999999"), ("buyer", {"name": "x"}),
                          ("period_start", date(2026, 1, 1))):
        setattr(invoice, column, value)
        with pytest.raises(AppendOnlyError):
            db.session.flush()
        db.session.rollback()
    line = db.session.scalar(db.select(InvoiceLine))
    line.amount = 1
    with pytest.raises(AppendOnlyError):
        db.session.flush()
    db.session.rollback()
    for row in (db.session.get(Invoice, invoice.id), db.session.scalar(db.select(InvoiceLine))):
        db.session.delete(row)
        with pytest.raises(AppendOnlyError):
            db.session.flush()
        db.session.rollback()
    assert db.session.get(Invoice, invoice.id).total == 5297


def test_mark_paid_void_and_credit_notes(app):
    invoice = _issued()
    invoicing.mark_paid(invoice, amount=invoicing.parse_amount("52.97", "chf"), paid_on=date(2026, 12, 10),
                        reference="bank 42")
    db.session.commit()
    assert (invoice.status, invoice.paid_amount, invoice.paid_reference) == ("paid", 5297, "bank 42")
    with pytest.raises(invoicing.InvoiceError):
        invoicing.void(invoice, reason="late")
    invoice.status = "void"                      # bypassing the function: the model refuses too
    with pytest.raises(AppendOnlyError):
        db.session.flush()
    db.session.rollback()
    note = invoicing.credit(invoice, amount=1000, reason="outage")
    db.session.commit()
    assert (note.number, note.amount, note.vat, note.total) == (f"CN-{note.issued_at.year}-000001", 1000, 81, 1081)
    assert note.invoice_id == invoice.id and invoice.credit_notes == [note]
    with pytest.raises(invoicing.InvoiceError):
        invoicing.credit(invoice, amount=invoice.subtotal - 999, reason="too much")
    note.amount = 1
    with pytest.raises(AppendOnlyError):
        db.session.flush()
    db.session.rollback()
    with pytest.raises(invoicing.InvoiceError):
        invoicing.parse_amount("1.234", "chf")


def test_usage_records_are_append_only(app):
    from invoicelib import usage

    tenant = plan("tenant", 4900, "chf")
    user = add_user("use@example.com")
    svc = service(user, tenant, [("2026-10-20 08:00", "active")], "use")
    usage(svc, "posts", "2026-11-02 10:00", "5", 1)
    db.session.commit()
    row = db.session.scalar(db.select(UsageRecord))
    row.reported_at = invoicing.utcnow()           # the one column set later (Stripe acknowledged it)
    db.session.commit()
    row.quantity = Decimal(6)
    with pytest.raises(AppendOnlyError):
        db.session.flush()
    db.session.rollback()
    db.session.delete(row)
    with pytest.raises(AppendOnlyError):
        db.session.flush()
