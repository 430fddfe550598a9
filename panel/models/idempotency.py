"""Idempotency keys of ``POST /api/v1/orders`` (the ``Idempotency-Key`` header).

A key is stored in the same transaction as the service its request created, so a retried
request (the answer was lost, a 500 after the commit) finds the first answer instead of
ordering twice. Keys are per account and expire after ``KEY_TTL`` (24 hours, as Stripe's).
"""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from panel.extensions import db
from panel.models.base import JSONType, utcnow

KEY_TTL = timedelta(hours=24)


class IdempotencyKey(db.Model):
    """One ``Idempotency-Key`` an account sent with an order.

    * ``key``: the header value (1-255 printable ASCII characters), unique per ``user_id``.
    * ``request_hash``: SHA-256 (hex) of the request body in canonical JSON; the same key with
      another body is refused (422).
    * ``service_id``: the service the first request created.
    * ``response_status`` / ``response_body``: the first answer once it was built (``None`` if
      the request died after its commit: the answer is then rebuilt from the service).
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_id_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"), nullable=True)
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_body: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    created_at = mapped_column(DateTime(timezone=True), default=utcnow)

    service = relationship("Service")

    def __repr__(self) -> str:
        return f"<IdempotencyKey user={self.user_id} service={self.service_id}>"
