"""Invoices of our own in the JSON API: ``GET /api/v1/invoices``, ``/api/v1/invoices/<id>`` and
``/api/v1/invoices/<id>.pdf``."""
from __future__ import annotations

from flask import g, jsonify

from panel.api import bp
from panel.api.errors import error_response
from panel.billing.invoice_routes import invoices_of, own_invoice, pdf_response


@bp.get("/invoices")
def invoices():
    """GET /api/v1/invoices: the caller's invoices, newest first (amounts in minor units)."""
    return jsonify({"invoices": [inv.to_json() for inv in invoices_of(g.api_user.id, limit=100)]})


@bp.get("/invoices/<int:invoice_id>")
def invoice(invoice_id):
    """GET /api/v1/invoices/<id>: one invoice with its lines; 404 for another customer's."""
    inv = own_invoice(invoice_id, g.api_user)
    if inv is None:
        return error_response(404, "not_found", "no such invoice")
    return jsonify({"invoice": inv.to_json()})


@bp.get("/invoices/<int:invoice_id>.pdf")
def invoice_pdf(invoice_id):
    """GET /api/v1/invoices/<id>.pdf: the invoice as PDF; 404 (JSON) for another customer's."""
    inv = own_invoice(invoice_id, g.api_user)
    if inv is None:
        return error_response(404, "not_found", "no such invoice")
    return pdf_response(inv)
