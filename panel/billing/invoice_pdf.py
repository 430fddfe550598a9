"""Invoice PDFs: ``templates/invoices/invoice_pdf.html`` rendered by WeasyPrint (Pango renders the
text; Debian packages ``libpango-1.0-0``, ``libpangoft2-1.0-0`` and a font, see
``scripts/system-deps``). The PDF is rendered from the stored, immutable invoice on each download,
so it always shows what was issued."""
from __future__ import annotations

from flask import current_app, render_template
from flask_babel import force_locale

from panel.i18n import money
from panel.models.invoices import Invoice


def invoice_html(invoice: Invoice, locale: str | None = None) -> str:
    """The invoice as HTML in ``locale`` (default: the language it was issued in, ``Invoice.locale``,
    in which its line texts are stored, so the whole document is in one language)."""
    locale = locale or invoice.locale or "en"
    with force_locale(locale):
        return render_template("invoices/invoice_pdf.html", invoice=invoice, money=money, lang=locale.split("_")[0])


def invoice_pdf(invoice: Invoice, locale: str | None = None) -> bytes:
    """The invoice as PDF bytes (``application/pdf``)."""
    from weasyprint import HTML

    return HTML(string=invoice_html(invoice, locale), base_url=current_app.root_path).write_pdf()


def pdf_filename(invoice: Invoice) -> str:
    """``invoice-2026-000123.pdf``."""
    return f"invoice-{invoice.number}.pdf"
