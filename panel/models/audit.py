"""The audit log: one append-only row per operator action (web console or command line)."""
from __future__ import annotations

from sqlalchemy import DateTime, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from panel.extensions import db
from panel.models.base import AppendOnlyError, JSONType, append_only, isoformat_utc, utcnow  # noqa: F401


class AuditEntry(db.Model):
    """Who did what to which object, from where, with the state before and after where it matters.

    ``actor`` is ``operator:<email>`` for the web console or ``cli`` (plus the OS user) for the
    ``panel`` command; ``action`` is a dotted verb such as ``service.suspend`` or
    ``plugin.setting.set``; ``target_type``/``target_id`` name the object (``service``/``42``).
    Rows are never updated or deleted (the ORM refuses to); secrets are masked before they get
    here (``panel.audit.record``).
    """

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_target", "target_type", "target_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    actor: Mapped[str] = mapped_column(String(300))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32), default="")
    target_id: Mapped[str] = mapped_column(String(64), default="")
    before: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    after: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    ip_address: Mapped[str] = mapped_column(String(45), default="")

    def to_json(self) -> dict:
        """The row as a plain mapping (``at`` in ISO 8601 with offset)."""
        return {"id": self.id, "at": isoformat_utc(self.at), "actor": self.actor, "action": self.action,
                "target_type": self.target_type, "target_id": self.target_id, "before": self.before,
                "after": self.after, "detail": self.detail, "ip_address": self.ip_address}


append_only(AuditEntry, "audit_log rows")
