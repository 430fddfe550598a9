"""The plan catalog: what customers can order (plans and add-ons), with which backend and options.

Prices are Stripe price ids per billing term; their amounts, currency and interval live in
Stripe (cached in ``stripe_prices``, ``panel.billing.prices``), never here.
"""
from __future__ import annotations

from sqlalchemy import DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from panel.extensions import db
from panel.models.base import JSONType, utcnow

# Billing terms: name -> the Stripe recurring (interval, interval_count) a price of that term has.
TERMS: dict[str, tuple[str, int]] = {
    "monthly": ("month", 1),
    "quarterly": ("month", 3),
    "semiannual": ("month", 6),
    "yearly": ("year", 1),
}

# What happens when a paid plan's subscription is paused or ends (seed 003): "suspend" (suspend,
# then terminate after PANEL_TERMINATE_AFTER_DAYS), "terminate" (at once), or "downgrade:<slug>"
# (change to that free plan, keeping the data).
ON_CANCEL_DEFAULT = "suspend"


def term_of(interval: str | None, interval_count: int | None) -> str | None:
    """The term name of a Stripe ``recurring`` (``("month", 3)`` -> ``"quarterly"``), or ``None``."""
    for name, shape in TERMS.items():
        if shape == (interval, int(interval_count or 1)):
            return name
    return None


def ordered_terms(prices: dict | None) -> list[str]:
    """The terms of a ``{term: price id}`` mapping, in ``TERMS`` order."""
    return [t for t in TERMS if (prices or {}).get(t)]


class _Sellable:
    """What plans and add-ons share: lookup by slug and a price per term."""

    @classmethod
    def by_slug(cls, slug: str):
        """The row ``slug`` or ``None``."""
        return db.session.scalar(db.select(cls).where(cls.slug == slug))

    def price_for(self, term: str | None) -> str | None:
        """The Stripe price id of ``term`` (``None`` when there is none)."""
        return self.term_prices.get(term or "")


class Plan(_Sellable, db.Model):
    """A sellable plan. ``options`` are validated by the backend's ``PlanOptions`` schema.

    * ``prices``: ``{term: Stripe price id}`` (``{"monthly": "price_...", "yearly": "price_..."}``);
      empty means the plan is free. ``stripe_price`` is kept equal to the first term's price (the
      catalog's ``stripe_price:`` shorthand means ``monthly``).
    * ``addons``: slugs of the add-ons (``Addon``) offered with this plan.
    * ``max_per_customer``: how many live services of this plan one account may have (``None``:
      no limit), e.g. one free service per customer.
    * ``on_cancel``: ``suspend``, ``terminate`` or ``downgrade:<plan slug>`` (see ``ON_CANCEL_DEFAULT``).
    """

    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    backend: Mapped[str] = mapped_column(String(64), index=True)
    options: Mapped[dict] = mapped_column(JSONType, default=dict)
    stripe_price: Mapped[str | None] = mapped_column(String(255), nullable=True)
    prices: Mapped[dict] = mapped_column(JSONType, default=dict)
    addons: Mapped[list] = mapped_column(JSONType, default=list)
    # billable metrics: {metric: {"unit_price": "0.01", "currency": "usd", "free": 1, "aggregate":
    # "sum"|"max", "meter": Stripe meter event_name, "price": Stripe metered price id}}
    metered: Mapped[dict] = mapped_column(JSONType, default=dict, server_default="{}")
    max_per_customer: Mapped[int | None] = mapped_column(Integer, nullable=True)
    on_cancel: Mapped[str] = mapped_column(String(80), default=ON_CANCEL_DEFAULT)
    active: Mapped[bool] = mapped_column(default=True)
    sort_order: Mapped[int] = mapped_column(default=0)
    created_at = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    @property
    def term_prices(self) -> dict[str, str]:
        """``{term: price id}`` in ``TERMS`` order; a plan with only ``stripe_price`` (older rows)
        sells it as ``monthly``."""
        prices = dict(self.prices or {})
        if not prices and self.stripe_price:
            prices = {"monthly": self.stripe_price}
        return {t: prices[t] for t in ordered_terms(prices)}

    @property
    def terms(self) -> list[str]:
        """The terms this plan is sold on (``[]`` for a free plan)."""
        return list(self.term_prices)

    @property
    def default_term(self) -> str | None:
        """``monthly`` when offered, else the first term (``None`` for a free plan)."""
        terms = self.terms
        return "monthly" if "monthly" in terms else (terms[0] if terms else None)

    @property
    def is_free(self) -> bool:
        """No price on any term: the plan is free."""
        return not self.term_prices

    @property
    def downgrade_slug(self) -> str | None:
        """The plan slug of ``on_cancel: downgrade:<slug>`` (``None`` otherwise)."""
        value = self.on_cancel or ""
        return value.split(":", 1)[1] if value.startswith("downgrade:") else None

    def to_json(self) -> dict:
        """The API's view of the plan (prices are added by ``panel.billing.prices.plan_json``)."""
        return {"slug": self.slug, "name": self.name, "description": self.description,
                "backend": self.backend, "options": self.options, "free": self.is_free,
                "stripe_price": self.stripe_price, "prices": self.term_prices, "terms": self.terms,
                "addons": list(self.addons or []), "max_per_customer": self.max_per_customer,
                "on_cancel": self.on_cancel or ON_CANCEL_DEFAULT, "active": self.active}


class Addon(_Sellable, db.Model):
    """An add-on sold with some plans (seed 001's ``addons``, seed 002's packages).

    * ``prices``: ``{term: Stripe price id}``; empty means the add-on is free. An add-on is
      offered on a term only when it has a price for that term (a subscription's items share one
      billing interval).
    * ``options``: merged into the plan's options before the backend sees them: a string
      ``"+N"`` adds N to a number option, ``'+["x"]'`` appends to a list option, any other value
      replaces the option (``panel.addons.merge_options``).
    """

    __tablename__ = "addons"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    prices: Mapped[dict] = mapped_column(JSONType, default=dict)
    options: Mapped[dict] = mapped_column(JSONType, default=dict)
    active: Mapped[bool] = mapped_column(default=True)
    sort_order: Mapped[int] = mapped_column(default=0)
    created_at = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    @property
    def term_prices(self) -> dict[str, str]:
        """``{term: price id}`` in ``TERMS`` order."""
        return {t: self.prices[t] for t in ordered_terms(self.prices)}

    @property
    def is_free(self) -> bool:
        """No price at all: the add-on costs nothing."""
        return not self.term_prices

    def offered_on(self, term: str | None) -> bool:
        """Whether it can be added to a subscription of ``term`` (free add-ons: always; a free plan,
        ``term`` ``None``: only free add-ons)."""
        return self.is_free or self.price_for(term) is not None

    def to_json(self) -> dict:
        """The API's view of the add-on (prices are added by ``panel.billing.prices``)."""
        return {"slug": self.slug, "name": self.name, "description": self.description,
                "options": self.options, "free": self.is_free, "prices": self.term_prices,
                "terms": list(self.term_prices), "active": self.active}
