"""The customer's invoices of our own: the PDF download (``GET /billing/invoices/<id>.pdf``); the
list is on ``/billing`` and in the API (``GET /api/v1/invoices``)."""
from __future__ import annotations

from flask import Blueprint, Response, abort
from flask_login import current_user, login_required

from panel.extensions import db
from panel.models.invoices import Invoice

bp = Blueprint("invoices", __name__, url_prefix="/billing/invoices")


def own_invoice(invoice_id: int, user) -> Invoice | None:
    """``user``'s invoice ``invoice_id`` (an operator may see any), or ``None``: another customer's
    invoice is answered exactly like one that does not exist."""
    invoice = db.session.get(Invoice, invoice_id)
    if invoice is None or (invoice.user_id != user.id and not user.is_operator):
        return None
    return invoice


def pdf_response(invoice: Invoice) -> Response:
    """The invoice's PDF as a download (``Content-Disposition: attachment``)."""
    from panel.billing.invoice_pdf import invoice_pdf, pdf_filename

    return Response(invoice_pdf(invoice), mimetype="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{pdf_filename(invoice)}"',
                             "Cache-Control": "private, no-store"})


def invoices_of(user_id: int, limit: int = 24) -> list[Invoice]:
    """The account's invoices of our own, newest first."""
    return db.session.scalars(db.select(Invoice).where(Invoice.user_id == user_id)
                              .order_by(Invoice.issued_at.desc(), Invoice.id.desc()).limit(limit)).all()


@bp.get("/<int:invoice_id>.pdf")
@login_required
def pdf(invoice_id):
    """GET /billing/invoices/<id>.pdf: the invoice as PDF (404 for anyone else's)."""
    invoice = own_invoice(invoice_id, current_user) or abort(404)
    return pdf_response(invoice)
