"""Add-ons of a service: what it has now (``service_addons``) and the append-only log of every
enable and disable (``addon_events``, seed 002's ``tenant_skill_events``), so a bill can be
recomputed from the database.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, String, UniqueConstraint, event
from sqlalchemy.orm import Mapped, mapped_column, relationship

from panel.extensions import db
from panel.models.base import utcnow
from panel.models.events import AppendOnlyError

# ServiceAddon.state: "adding" (asked for: charged and/or waiting for the backend), "active"
# (the backend applied it), "removing" (asked to go: still applied until the backend confirms).
ADDON_STATES = ("adding", "active", "removing")


class ServiceAddon(db.Model):
    """One add-on on one service, with the price and term it is sold at.

    ``price_id``/``term``/``unit_amount`` (minor units)/``currency`` are those in force when it
    was asked for (``None`` for a free add-on); ``stripe_subscription_item_id`` is its item
    (``si_...``) on the service's Stripe subscription, once known.
    """

    __tablename__ = "service_addons"
    __table_args__ = (UniqueConstraint("service_id", "addon_id", name="uq_service_addons_service_id_addon_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    addon_id: Mapped[int] = mapped_column(ForeignKey("addons.id"))
    state: Mapped[str] = mapped_column(String(16), default="adding")
    price_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    term: Mapped[str | None] = mapped_column(String(16), nullable=True)
    unit_amount: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    stripe_subscription_item_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    addon = relationship("Addon")
    service = relationship("Service", back_populates="addons")

    @property
    def applied(self) -> bool:
        """Whether the backend has it now (``active`` or on its way out)."""
        return self.state in ("active", "removing")

    def __repr__(self) -> str:
        return f"<ServiceAddon service={self.service_id} addon={self.addon_id} {self.state}>"


class AddonEvent(db.Model):
    """One add-on enable or disable, written when the backend confirmed it (never updated or
    deleted).

    ``kind`` is ``enabled`` or ``disabled``; ``at`` when it took effect (UTC). ``price_id``,
    ``term``, ``unit_amount`` (minor units) and ``currency`` are the price in force;
    ``billing_mode`` the service's (``stripe``, ``free``, ``complimentary``, ``invoice``).
    """

    __tablename__ = "addon_events"
    __table_args__ = (Index("ix_addon_events_service_at", "service_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"))
    addon_id: Mapped[int | None] = mapped_column(ForeignKey("addons.id"), nullable=True)
    addon_slug: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    at = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    price_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    term: Mapped[str | None] = mapped_column(String(16), nullable=True)
    unit_amount: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    billing_mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    actor: Mapped[str] = mapped_column(String(120), default="system")
    operation_id: Mapped[int | None] = mapped_column(ForeignKey("operations.id"), nullable=True)

    def to_json(self) -> dict:
        """The API's view of the event."""
        return {"addon": self.addon_slug, "kind": self.kind, "at": self.at.isoformat() if self.at else None,
                "price": self.price_id, "term": self.term, "unit_amount": self.unit_amount,
                "currency": self.currency, "billing_mode": self.billing_mode, "actor": self.actor}


@event.listens_for(AddonEvent, "before_update")
def _no_update(mapper, connection, target):
    raise AppendOnlyError("add-on events are append-only")


@event.listens_for(AddonEvent, "before_delete")
def _no_delete(mapper, connection, target):
    raise AppendOnlyError("add-on events are append-only")
