"""The plan catalog: what customers can order, with which backend and options."""
from __future__ import annotations

from sqlalchemy import DateTime, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from panel.extensions import db
from panel.models.base import JSONType, utcnow


class Plan(db.Model):
    """A sellable plan. ``options`` are validated by the backend's ``PlanOptions`` schema.

    ``stripe_price`` is a Stripe price id (``price_...``); ``None`` means the plan is free.
    """

    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    backend: Mapped[str] = mapped_column(String(64), index=True)
    options: Mapped[dict] = mapped_column(JSONType, default=dict)
    stripe_price: Mapped[str | None] = mapped_column(String(255), nullable=True)
    active: Mapped[bool] = mapped_column(default=True)
    sort_order: Mapped[int] = mapped_column(default=0)
    created_at = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    @property
    def is_free(self) -> bool:
        """No Stripe price: the plan is free."""
        return not self.stripe_price

    @classmethod
    def by_slug(cls, slug: str) -> "Plan | None":
        """The plan ``slug`` or ``None``."""
        return db.session.scalar(db.select(cls).where(cls.slug == slug))

    def to_json(self) -> dict:
        """The API's view of the plan."""
        return {"slug": self.slug, "name": self.name, "description": self.description,
                "backend": self.backend, "options": self.options, "free": self.is_free,
                "stripe_price": self.stripe_price, "active": self.active}
