"""The operator's billing page (``/admin/billing``): rates and allowances as configured, invoices of
our own by status, "generate", "mark paid", "void", totals per month and a CSV export. Every action
is audited (``panel.audit.record``)."""
from __future__ import annotations

import csv
import io
from datetime import date

from flask import Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from panel import audit
from panel.admin import bp
from panel.admin.routes import operator_required
from panel.billing import invoicing
from panel.billing.invoice_routes import pdf_response
from panel.billing.prices import to_decimal
from panel.customer.forms import ActionForm
from panel.extensions import db
from panel.models import Plan
from panel.models.invoices import INVOICE_STATUSES, Invoice


def _actor() -> str:
    return f"operator:{current_user.email}"


def monthly_totals() -> list[dict]:
    """``[{"month": "2026-11", "currency", "count", "total", "paid", "open"}]`` (minor units) of the
    invoices not void, newest month first."""
    rows = db.session.execute(db.select(Invoice.period_start, Invoice.currency, Invoice.status, Invoice.total)
                              .where(Invoice.status != "void")).all()
    out: dict[tuple[str, str], dict] = {}
    for start, currency, status, total in rows:
        key = (f"{start:%Y-%m}", currency)
        item = out.setdefault(key, {"month": key[0], "currency": currency, "count": 0, "total": 0, "paid": 0, "open": 0})
        item["count"] += 1
        item["total"] += total
        item["paid" if status == "paid" else "open"] += total
    return [out[k] for k in sorted(out, reverse=True)]


def rates() -> list[dict]:
    """Each active plan's monthly fee (price cache) and metered rates, for the page."""
    from panel.billing import price_snapshot

    out = []
    for plan in db.session.scalars(db.select(Plan).where(Plan.active.is_(True)).order_by(Plan.sort_order, Plan.id)):
        fee, currency = price_snapshot(plan.price_for("monthly"))
        if fee is None and not plan.metered:
            continue
        out.append({"plan": plan, "fee": fee, "currency": currency, "metered": invoicing.metered_rates(plan)})
    return out


@bp.get("/billing")
@operator_required
def billing():
    """GET /admin/billing[?status=issued|paid|void]: the invoices (newest first, 200 at most)."""
    status = request.args.get("status") or ""
    if status and status not in INVOICE_STATUSES:
        abort(400)
    query = db.select(Invoice).order_by(Invoice.issued_at.desc(), Invoice.id.desc()).limit(200)
    if status:
        query = query.where(Invoice.status == status)
    counts = dict(db.session.execute(db.select(Invoice.status, db.func.count(Invoice.id)).group_by(Invoice.status)).all())
    return render_template("admin/billing.html", invoices=db.session.scalars(query).all(), status=status,
                           statuses=INVOICE_STATUSES, counts=counts, totals=monthly_totals(), rates=rates(),
                           form=ActionForm(), today=date.today(), preview=None, major=to_decimal,
                           accounts=invoiced_accounts())


@bp.post("/billing/generate")
@operator_required
def invoice_generate():
    """POST /admin/billing/generate (``month``, ``email`` optional, ``dry_run``): seed 002's
    "Generate invoice for org X / month M"."""
    if not ActionForm().validate_on_submit():
        abort(400)
    month = (request.form.get("month") or "").strip()
    email = (request.form.get("email") or "").strip() or None
    dry_run = bool(request.form.get("dry_run"))
    try:
        result = invoicing.generate(month, email=email, dry_run=dry_run, actor=_actor())
    except invoicing.InvoiceError as exc:
        flash(str(exc), "error")
        return redirect(url_for("admin.billing"))
    if dry_run:
        flash(f"Dry run for {month}: {len(result.drafts)} invoice(s) would be issued.", "success")
        return render_template("admin/billing.html", invoices=[], status="", statuses=INVOICE_STATUSES, counts={},
                               totals=monthly_totals(), rates=rates(), form=ActionForm(), today=date.today(),
                               preview=result.drafts, major=to_decimal, accounts=invoiced_accounts())
    for invoice in result.issued:
        audit.record(current_user, "invoice.issue", invoice,
                     after={"number": invoice.number, "total": invoice.total, "currency": invoice.currency,
                            "month": month})
    audit.commit()
    for line in result.skipped:
        flash(line, "error")
    flash(f"{len(result.issued)} invoice(s) issued for {month}." if result.drafts
          else f"Nothing to invoice for {month}.", "success")
    return redirect(url_for("admin.billing"))


@bp.post("/invoices/<int:invoice_id>/paid")
@operator_required
def invoice_paid(invoice_id):
    """POST /admin/invoices/<id>/paid (``amount`` in major units, ``paid_on`` YYYY-MM-DD,
    ``reference``): a bank transfer received."""
    invoice = db.session.get(Invoice, invoice_id) or abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        amount = invoicing.parse_amount(request.form.get("amount") or "", invoice.currency)
        try:
            paid_on = date.fromisoformat((request.form.get("paid_on") or "").strip())
        except ValueError:
            raise invoicing.InvoiceError("the payment date must look like 2026-12-10") from None
        invoicing.mark_paid(invoice, amount=amount, paid_on=paid_on,
                            reference=(request.form.get("reference") or "").strip())
    except invoicing.InvoiceError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for("admin.billing")), 303
    audit.record(current_user, "invoice.paid", invoice, before={"status": "issued"},
                 after={"status": "paid", "amount": amount, "paid_on": paid_on.isoformat(),
                        "reference": invoice.paid_reference})
    db.session.commit()
    from panel.billing.reminders import lift_after_payment

    lift_after_payment(invoice)  # services suspended for this unpaid invoice run again
    flash(f"Invoice {invoice.number} marked paid.", "success")
    return redirect(url_for("admin.billing"))


def invoiced_accounts() -> list[dict]:
    """Accounts with a service billed by invoice: ``[{"user", "profile", "services"}]``."""
    from panel.models import Service, User

    rows = db.session.execute(db.select(User, db.func.count(Service.id)).join(Service, Service.user_id == User.id)
                              .where(Service.billing_mode == "invoice").group_by(User.id).order_by(User.email)).all()
    return [{"user": user, "profile": user.profile, "services": count} for user, count in rows]


@bp.post("/billing/accounts/<int:user_id>")
@operator_required
def invoice_account(user_id):
    """POST /admin/billing/accounts/<id> (``auto_invoice``, ``auto_reminders`` checkboxes): an
    account's invoicing switches (seed 002's org_billing_config), kept on its profile."""
    from panel.models import Profile, User

    user = db.session.get(User, user_id) or abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    profile = user.profile
    if profile is None:
        profile = Profile(user_id=user.id)
        db.session.add(profile)
    before = {"auto_invoice": profile.auto_invoice is not False, "auto_reminders": profile.auto_reminders is not False}
    profile.auto_invoice = bool(request.form.get("auto_invoice"))
    profile.auto_reminders = bool(request.form.get("auto_reminders"))
    audit.record(current_user, "account.invoicing", ("user", user.id), before=before,
                 after={"auto_invoice": profile.auto_invoice, "auto_reminders": profile.auto_reminders})
    db.session.commit()
    flash(f"Invoicing of {user.email} saved.", "success")
    return redirect(url_for("admin.billing"))


@bp.post("/invoices/<int:invoice_id>/void")
@operator_required
def invoice_void(invoice_id):
    """POST /admin/invoices/<id>/void (``reason``): cancel an unpaid invoice (its number stays used)."""
    invoice = db.session.get(Invoice, invoice_id) or abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    reason = (request.form.get("reason") or "").strip()[:500]
    try:
        invoicing.void(invoice, reason=reason)
    except invoicing.InvoiceError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for("admin.billing"))
    audit.record(current_user, "invoice.void", invoice, before={"status": "issued"},
                 after={"status": "void", "reason": reason})
    db.session.commit()
    flash(f"Invoice {invoice.number} voided.", "success")
    return redirect(url_for("admin.billing"))


@bp.get("/invoices/<int:invoice_id>.pdf")
@operator_required
def invoice_pdf(invoice_id):
    """GET /admin/invoices/<id>.pdf: any invoice's PDF."""
    return pdf_response(db.session.get(Invoice, invoice_id) or abort(404))


CSV_COLUMNS = ("number", "status", "email", "buyer", "country", "vat_id", "period_start", "period_end", "issued_on",
               "due_on", "currency", "subtotal", "vat_rate", "vat", "total", "paid_on", "paid_amount", "paid_reference")


@bp.get("/billing/invoices.csv")
@operator_required
def invoices_csv():
    """GET /admin/billing/invoices.csv: every invoice, amounts in major units (exact decimals)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for inv in db.session.scalars(db.select(Invoice).order_by(Invoice.number)):
        writer.writerow([inv.number, inv.status, inv.buyer.get("email", ""), inv.buyer.get("name", ""),
                         inv.buyer.get("country", ""), inv.buyer.get("vat_id", ""), inv.period_start.isoformat(),
                         inv.period_end.isoformat(), f"{inv.issued_at:%Y-%m-%d}", inv.due_on.isoformat(),
                         inv.currency.upper(), to_decimal(inv.subtotal, inv.currency), inv.vat_rate,
                         to_decimal(inv.vat, inv.currency), to_decimal(inv.total, inv.currency),
                         f"{inv.paid_at:%Y-%m-%d}" if inv.paid_at else "",
                         to_decimal(inv.paid_amount, inv.currency) if inv.paid_amount is not None else "",
                         inv.paid_reference or ""])
    audit.record(current_user, "invoice.export", ("invoices", 0), after={"format": "csv"})
    audit.commit()
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="invoices.csv"'})


@bp.post("/services/<int:service_id>/usage/void")
@operator_required
def void_usage(service_id):
    """POST /admin/services/<id>/usage/void (``record``: a usage record id of the service,
    ``reason``): void a usage record. A correction record cancels it (append-only); for a
    Stripe-billed service the meter event is cancelled by a ``cancel_usage`` billing task.
    Audited as ``usage_record.void``."""
    from panel.billing import metering
    from panel.models import Service, UsageRecord

    service = db.session.get(Service, service_id) or abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        record_id = int(request.form.get("record") or "")
    except ValueError:
        abort(400)
    record = db.session.get(UsageRecord, record_id)
    if record is None or record.service_id != service.id:
        abort(404)
    reason = (request.form.get("reason") or "").strip()[:500]
    from sqlalchemy.exc import IntegrityError

    try:
        correction = metering.void_record(record, actor=_actor(), reason=reason)
    except (metering.VoidError, IntegrityError) as exc:  # IntegrityError: another operator voided it first
        db.session.rollback()
        flash(str(exc) if isinstance(exc, metering.VoidError) else f"usage record {record_id} is voided already",
              "error")
        return redirect(url_for("admin.service", service_id=service.id))
    audit.record(current_user, "usage_record.void", record, before={"quantity": str(record.quantity)},
                 after={"correction": correction.id, "identifier": record.identifier, "reason": reason})
    from panel import lifecycle

    lifecycle.commit()
    flash(f"Usage record {record.id} voided by correction record {correction.id}.", "success")
    return redirect(url_for("admin.service", service_id=service.id))
