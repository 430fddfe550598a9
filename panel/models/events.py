"""The append-only service event log (seed 002's lifecycle tables, generalised)."""
from sqlalchemy import DateTime, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from panel.extensions import db
from panel.models.base import AppendOnlyError, append_only, isoformat_utc, utcnow  # noqa: F401 (re-exported)


class ServiceEvent(db.Model):
    """One entry of a service's history: when, who (``actor``), status ``from``/``to`` and detail.

    ``kind`` says what happened: created, requested, started, succeeded, retrying, failed,
    cancelled, billing, note. Rows are never updated or deleted (enforced below).
    """

    __tablename__ = "service_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    operation_id: Mapped[int | None] = mapped_column(ForeignKey("operations.id"), nullable=True)
    at = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(120), default="system")
    kind: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    to_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")

    service = relationship("Service", back_populates="events")

    def to_json(self) -> dict:
        """The API's view of the event."""
        return {"id": self.id, "at": isoformat_utc(self.at), "actor": self.actor,
                "kind": self.kind, "from": self.from_status, "to": self.to_status,
                "detail": self.detail, "operation_id": self.operation_id}


append_only(ServiceEvent, "service events")
