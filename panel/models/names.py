"""Hostnames a customer brings: each needs a DNS TXT record before it can be ordered."""
from __future__ import annotations

import secrets

from sqlalchemy import DateTime, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from panel.extensions import db
from panel.models.base import utcnow

#: The TXT record lives at ``<RECORD_PREFIX>.<hostname>`` and holds ``<VALUE_PREFIX><token>``.
RECORD_PREFIX = "_hostpanel-challenge"
VALUE_PREFIX = "hostpanel-verification="
STATES = ("pending", "verified")


class DomainVerification(db.Model):
    """One customer's claim on one hostname outside the operator's own domains.

    ``status`` is ``pending`` until the TXT record ``record_name`` = ``record_value`` is found
    (``panel.names.check``, run by the worker every ``PANEL_DOMAIN_CHECK_INTERVAL`` seconds and
    by the customer's "Check now"), then ``verified``. ``last_error`` says, in plain words, what
    the last check saw; ``checks`` counts them.
    """

    __tablename__ = "domain_verifications"
    __table_args__ = (UniqueConstraint("user_id", "hostname", name="uq_domain_verifications_user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    hostname: Mapped[str] = mapped_column(String(253), index=True)
    token: Mapped[str] = mapped_column(String(64), default=lambda: secrets.token_urlsafe(24))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    checks: Mapped[int] = mapped_column(default=0)
    created_at = mapped_column(DateTime(timezone=True), default=utcnow)
    checked_at = mapped_column(DateTime(timezone=True), nullable=True)
    verified_at = mapped_column(DateTime(timezone=True), nullable=True)

    user = relationship("User")

    @property
    def record_name(self) -> str:
        """The TXT record's name: ``_hostpanel-challenge.<hostname>``."""
        return f"{RECORD_PREFIX}.{self.hostname}"

    @property
    def record_value(self) -> str:
        """The TXT record's value: ``hostpanel-verification=<token>``."""
        return f"{VALUE_PREFIX}{self.token}"

    def __repr__(self) -> str:
        return f"<DomainVerification {self.hostname} user={self.user_id} {self.status}>"
