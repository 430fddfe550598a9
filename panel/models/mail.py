"""Outgoing email as durable work (``panel.notify``): a row first, sent by a worker under a lease."""
from __future__ import annotations

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from panel.extensions import db
from panel.models.base import DurableWork, JSONType, utcnow

MAIL_KINDS = ("plain", "invoice_reminder")
MAIL_STATES = ("queued", "running", "sent", "failed")


class OutboundMail(DurableWork, db.Model):
    """One email to send (seed 002's ``invoice_reminders`` mail and every notice of ``panel.notify``).

    * ``recipients``: a JSON list of addresses; ``subject`` in plain text.
    * ``body_encrypted``: the plain-text body, encrypted with ``PANEL_SECRET_KEY`` (``panel.crypto``:
      bodies carry password-reset and confirmation links); cleared once the mail is sent or given
      up, so those links do not stay in the database.
    * ``kind``: ``plain``, or ``invoice_reminder`` (``ref_id`` is the ``InvoiceReminder``; subject,
      body and the PDF attachment are rendered from the invoice when it is sent).
    * ``state``: ``queued`` -> ``running`` -> ``sent`` / ``failed``; ``attempts`` counts SMTP tries,
      ``last_error`` the last SMTP failure (operators only, on ``/admin/mail``).
    * ``due_at``, lease and fencing token (``DurableWork``): owed while ``due_at`` is set; retries back
      off through ``due_at`` (``PANEL_MAIL_RETRIES``).
    """

    __tablename__ = "outbound_mail"
    __table_args__ = (Index("ix_outbound_mail_state", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), default="plain")
    ref_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"), nullable=True, index=True)
    recipients: Mapped[list] = mapped_column(JSONType, default=list)
    subject: Mapped[str] = mapped_column(String(300), default="")
    body_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at = mapped_column(DateTime(timezone=True), nullable=True)

    def __repr__(self) -> str:
        return f"<OutboundMail {self.id} {self.kind} {self.state}>"
