"""Invoices of our own (seed 002's ``invoices``, ``invoice_lines``, ``invoice_number_counters``),
credit notes that correct them, and append-only usage records (the billable usage).

Money is integer minor units (cents, Rappen) with an ISO 4217 ``currency`` (lower case, like
Stripe's); quantities, unit prices and VAT rates are ``Decimal`` (``NUMERIC`` columns), never
floats. The rounding rules are in ``panel.billing.invoicing``.

An issued invoice is immutable: its number, buyer, lines and amounts never change (the ORM refuses,
like the append-only service events); only its payment state moves (``issued`` -> ``paid`` or
``void``). A correction is a ``CreditNote`` referencing the invoice.
"""
from __future__ import annotations

from sqlalchemy import (BigInteger, Date, DateTime, ForeignKey, Index, Integer, Numeric, String, Text,
                        UniqueConstraint, event, inspect)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from panel.extensions import db
from panel.models.base import AppendOnlyError, JSONType, append_only, isoformat_utc, utcnow

INVOICE_STATUSES = ("issued", "paid", "void")
# What may change on an issued invoice (its payment state); everything else is frozen.
INVOICE_MUTABLE = frozenset({"status", "paid_at", "paid_amount", "paid_reference", "voided_at",
                             "void_reason", "updated_at"})


def decimal_text(value) -> str:
    """A Decimal without trailing zeros and never in exponent form: ``30.000000`` -> ``"30"``,
    ``0.010000`` -> ``"0.01"``."""
    from decimal import Decimal

    return format(Decimal(value).normalize(), "f")


class InvoiceCounter(db.Model):
    """The last number given in one numbering ``series`` (``invoice``, ``credit_note``) of one
    ``year``. Locked ``FOR UPDATE`` by the transaction that issues, so numbers are gapless: a
    rolled-back issue rolls the counter back too."""

    __tablename__ = "invoice_counters"

    series: Mapped[str] = mapped_column(String(16), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_number: Mapped[int] = mapped_column(Integer, default=0)


class Invoice(db.Model):
    """One issued invoice of one account for one period (``period_start``..``period_end``, dates
    inclusive).

    * ``number``: ``YYYY-NNNNNN``, gapless per year (``panel.billing.invoicing.allocate_number``).
    * ``buyer``/``seller``: snapshots at issue time (``{"name", "address": [lines], "country",
      "vat_id"}``), so a later profile change does not rewrite an issued invoice.
    * ``subtotal`` (net), ``vat`` and ``total``: minor units of ``currency``; ``vat_rate`` a
      percentage (``Decimal("8.10")``); ``vat_note`` e.g. the reverse-charge sentence.
    * ``status``: ``issued``, ``paid`` (``paid_at``, ``paid_amount`` minor units,
      ``paid_reference``) or ``void``.
    * ``locale``: the language the invoice was issued in (the account's at issue time, e.g.
      ``"de"``): its line descriptions and ``vat_note`` are stored in it and its PDF is rendered
      in it, so the document never changes after issue.
    """

    __tablename__ = "invoices"
    __table_args__ = (Index("ix_invoices_user_period", "user_id", "period_start"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    period_start = mapped_column(Date, nullable=False)
    period_end = mapped_column(Date, nullable=False)
    issued_at = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    due_on = mapped_column(Date, nullable=False)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[int] = mapped_column(BigInteger)
    vat_rate = mapped_column(Numeric(5, 2), nullable=False)
    vat: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[int] = mapped_column(BigInteger)
    vat_note: Mapped[str] = mapped_column(Text, default="")
    locale: Mapped[str] = mapped_column(String(16), default="en", server_default="en")
    buyer: Mapped[dict] = mapped_column(JSONType, default=dict)
    seller: Mapped[dict] = mapped_column(JSONType, default=dict)
    payment_reference: Mapped[str] = mapped_column(String(64), default="")
    issued_by: Mapped[str] = mapped_column(String(120), default="system")
    status: Mapped[str] = mapped_column(String(16), default="issued", index=True)
    paid_at = mapped_column(DateTime(timezone=True), nullable=True)
    paid_amount: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    paid_reference: Mapped[str | None] = mapped_column(String(120), nullable=True)
    voided_at = mapped_column(DateTime(timezone=True), nullable=True)
    void_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    user = relationship("User")
    lines = relationship("InvoiceLine", back_populates="invoice", order_by="InvoiceLine.position")
    credit_notes = relationship("CreditNote", back_populates="invoice", order_by="CreditNote.id")

    def to_json(self) -> dict:
        """The API's view: amounts in minor units with the currency, dates ISO 8601."""
        return {"id": self.id, "number": self.number, "status": self.status,
                "period_start": self.period_start.isoformat(), "period_end": self.period_end.isoformat(),
                "issued_at": isoformat_utc(self.issued_at), "due_on": self.due_on.isoformat(),
                "currency": self.currency, "subtotal": self.subtotal, "vat_rate": str(self.vat_rate),
                "vat": self.vat, "total": self.total, "vat_note": self.vat_note,
                "payment_reference": self.payment_reference, "paid_at": isoformat_utc(self.paid_at),
                "locale": self.locale,
                "lines": [line.to_json() for line in self.lines]}


class InvoiceLine(db.Model):
    """One line of an invoice: ``quantity`` (Decimal) x ``unit_price`` (Decimal, major units of
    the invoice's currency per ``unit``) = ``amount`` (minor units, rounded per line).
    ``kind``: ``base`` (prorated plan fee), ``addon`` (add-on days), ``metered`` (usage)."""

    __tablename__ = "invoice_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text)
    quantity = mapped_column(Numeric(18, 6), nullable=False)
    unit: Mapped[str] = mapped_column(String(32), default="")
    unit_price = mapped_column(Numeric(18, 6), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger)

    invoice = relationship("Invoice", back_populates="lines")

    def to_json(self) -> dict:
        """``{"kind", "description", "quantity", "unit", "unit_price", "amount"}`` (Decimals as strings)."""
        return {"kind": self.kind, "service_id": self.service_id, "description": self.description,
                "quantity": decimal_text(self.quantity), "unit": self.unit,
                "unit_price": decimal_text(self.unit_price), "amount": self.amount}


class CreditNote(db.Model):
    """A correction of an issued invoice (never an edit of it): ``amount`` net and ``vat`` in
    minor units of the invoice's currency, at the invoice's VAT rate; numbered ``CN-YYYY-NNNNNN``
    gaplessly per year. Append-only."""

    __tablename__ = "credit_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    issued_at = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger)
    vat: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text, default="")
    issued_by: Mapped[str] = mapped_column(String(120), default="system")

    invoice = relationship("Invoice", back_populates="credit_notes")


class UsageRecord(db.Model):
    """One billable usage figure of one service (append-only; the bill is recomputed from these).

    ``metric`` is a billable metric the backend declares (``posts``, ``storage_gib``);
    ``period_start``/``period_end`` the interval measured (aware UTC); ``quantity`` a Decimal in
    the metric's unit (for a ``sum`` metric the increase over the period, for ``max`` the level);
    ``reading`` the backend's raw value at ``period_end`` (a counter's total), from which the next
    increase is computed; ``source`` who measured it (``sampler``, ``operator``); ``identifier`` is
    unique and is also the Stripe meter event's ``identifier`` (Stripe dedupes on it), so a
    retried report never counts twice. ``reported_at`` is when Stripe acknowledged it (the only
    column that may be set later).

    Corrections: a record is never changed or deleted; voiding one appends a *correction record*
    (``source`` ``correction``, ``cancels_id`` = the voided record, ``quantity`` its negative,
    ``identifier`` ``void-<its identifier>``). A voided record and its correction both drop out
    of the bill (``panel.billing.invoicing.usage_totals``); for a Stripe-billed service the
    correction is sent as a meter event adjustment (``panel.billing.metering``) and its
    ``reported_at`` is when Stripe took the cancellation.
    """

    __tablename__ = "usage_records"
    __table_args__ = (UniqueConstraint("identifier", name="uq_usage_records_identifier"),
                      UniqueConstraint("cancels_id", name="uq_usage_records_cancels_id"),
                      Index("ix_usage_records_service_period", "service_id", "period_start"))

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"))
    metric: Mapped[str] = mapped_column(String(64))
    period_start = mapped_column(DateTime(timezone=True), nullable=False)
    period_end = mapped_column(DateTime(timezone=True), nullable=False)
    quantity = mapped_column(Numeric(24, 6), nullable=False)
    reading = mapped_column(Numeric(24, 6), nullable=True)
    source: Mapped[str] = mapped_column(String(32), default="sampler")
    identifier: Mapped[str] = mapped_column(String(100))
    recorded_at = mapped_column(DateTime(timezone=True), default=utcnow)
    reported_at = mapped_column(DateTime(timezone=True), nullable=True)
    cancels_id: Mapped[int | None] = mapped_column(ForeignKey("usage_records.id"), nullable=True)

    def to_json(self) -> dict:
        """``{"id", "metric", "period_start", "period_end" (ISO 8601 UTC), "quantity" (decimal
        string), "source", "identifier", "reported_at", "cancels_id"}``."""
        return {"id": self.id, "metric": self.metric, "period_start": isoformat_utc(self.period_start),
                "period_end": isoformat_utc(self.period_end), "quantity": decimal_text(self.quantity),
                "source": self.source, "identifier": self.identifier, "reported_at": isoformat_utc(self.reported_at),
                "cancels_id": self.cancels_id}


class InvoiceReminder(db.Model):
    """One payment reminder sent for an overdue invoice (seed 002's ``invoice_reminders``): ``step``
    is the reminder step in days after the due date (``PANEL_INVOICE_REMINDER_DAYS``); the PDF of
    the invoice went with it. One row per invoice and step; append-only."""

    __tablename__ = "invoice_reminders"
    __table_args__ = (UniqueConstraint("invoice_id", "step", name="uq_invoice_reminders_invoice_id_step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    sent_at = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    sent_to: Mapped[str] = mapped_column(String(320), default="")
    last_step: Mapped[bool] = mapped_column(default=False)


append_only(InvoiceReminder, "invoice reminders")
append_only(InvoiceLine, "invoice lines")
append_only(CreditNote, "credit notes")


@event.listens_for(Invoice, "before_delete")
def _no_invoice_delete(mapper, connection, target):
    raise AppendOnlyError("issued invoices cannot be deleted (issue a credit note)")


@event.listens_for(Invoice, "before_update")
def _frozen_invoice(mapper, connection, target):
    state = inspect(target)
    changed = {attr.key for attr in state.attrs if attr.history.has_changes()} - {"lines", "credit_notes", "user"}
    frozen = changed - INVOICE_MUTABLE
    if frozen:
        raise AppendOnlyError(f"issued invoices are immutable (tried to change {', '.join(sorted(frozen))})")
    old = state.attrs.status.history.deleted
    if old and old[0] != "issued":
        raise AppendOnlyError(f"a {old[0]} invoice cannot change its status")


@event.listens_for(UsageRecord, "before_update")
def _usage_update(mapper, connection, target):
    state = inspect(target)
    changed = {attr.key for attr in state.attrs if attr.history.has_changes()}
    if changed - {"reported_at"}:
        raise AppendOnlyError("usage records are append-only")


@event.listens_for(UsageRecord, "before_delete")
def _usage_delete(mapper, connection, target):
    raise AppendOnlyError("usage records are append-only")
