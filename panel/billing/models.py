"""Billing state, kept in its own tables (the core models are not touched).

* ``BillingCustomer``: one Stripe customer per panel user (``billing_customers``).
* ``Subscription``: one Stripe subscription per paid service (``subscriptions``), created when the
  checkout session is made and linked to the Stripe subscription once Stripe tells us its id.
* ``StripeEvent``: every verified webhook event, by its Stripe id (``stripe_events``): the
  dedupe key, the job's input and the audit trail.
* ``BillingInvoice``: the invoices we heard about through ``invoice.*`` events
  (``billing_invoices``), for the billing page's "last invoices" list.

Times are timezone-aware UTC ``datetime``; Stripe's own times (``created``) stay integer Unix
seconds where we compare them (``last_event_created``).
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from panel.extensions import db
from panel.models.base import DurableWork, JSONType, utcnow


def aware(value: datetime | None) -> datetime | None:
    """``value`` with UTC attached when the database gave it back naive (SQLite)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def from_unix(seconds) -> datetime | None:
    """A Stripe timestamp (Unix seconds, int) as an aware UTC ``datetime`` (``None`` stays ``None``)."""
    if seconds in (None, ""):
        return None
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc)


class BillingCustomer(db.Model):
    """The Stripe customer (``cus_...``) of a panel user; one per user, reused across orders."""

    __tablename__ = "billing_customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    stripe_customer_id: Mapped[str] = mapped_column(String(255), unique=True)
    created_at = mapped_column(DateTime(timezone=True), default=utcnow)

    user = relationship("User")

    def __repr__(self) -> str:
        return f"<BillingCustomer user={self.user_id} {self.stripe_customer_id}>"


class Subscription(db.Model):
    """Billing state of one paid service.

    * ``status``: Stripe's subscription status (``active``, ``trialing``, ``past_due``,
      ``unpaid``, ``paused``, ``canceled``, ``incomplete``...), or ``checkout`` before Stripe
      told us anything.
    * ``stripe_price``: the price the subscription is on, as last seen in an event.
    * ``current_period_end``: the next renewal (or the end date when ``cancel_at_period_end``).
    * ``last_event_created``: Stripe's ``created`` (Unix seconds) of the newest event applied:
      an older event never undoes a newer state.
    * ``payment_failed_at`` / ``grace_until``: dunning; the service is suspended for
      non-payment once ``grace_until`` passes unpaid (``panel cron``).
    * ``deleted_at`` / ``terminate_at`` / ``terminate_requested_at``: after
      ``customer.subscription.deleted`` the service is suspended at once and terminated at
      ``terminate_at`` (``PANEL_TERMINATE_AFTER_DAYS`` later).
    * ``notice``: a sentence shown to the customer on the service and billing pages.
    """

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    checkout_session_id: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    stripe_price: Mapped[str | None] = mapped_column(String(255), nullable=True)
    requested_price: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str] = mapped_column(String(32), default="checkout")
    current_period_end = mapped_column(DateTime(timezone=True), nullable=True)
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    cancel_at = mapped_column(DateTime(timezone=True), nullable=True)
    last_event_created: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    payment_failed_at = mapped_column(DateTime(timezone=True), nullable=True)
    grace_until = mapped_column(DateTime(timezone=True), nullable=True)
    deleted_at = mapped_column(DateTime(timezone=True), nullable=True)
    terminate_at = mapped_column(DateTime(timezone=True), nullable=True)
    terminate_requested_at = mapped_column(DateTime(timezone=True), nullable=True)
    notice: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    service = relationship("Service")

    def __repr__(self) -> str:
        return f"<Subscription service={self.service_id} {self.stripe_subscription_id} {self.status}>"

    @property
    def ends_on(self) -> datetime | None:
        """When the service stops because of a requested cancellation (``None`` when it renews)."""
        if self.cancel_at_period_end:
            return aware(self.current_period_end) or aware(self.cancel_at)
        return aware(self.cancel_at)

    @property
    def renews_on(self) -> datetime | None:
        """The next renewal date, when the subscription renews."""
        if self.cancel_at_period_end or self.cancel_at or self.deleted_at:
            return None
        return aware(self.current_period_end)


class StripeEvent(DurableWork, db.Model):
    """A verified Stripe event (``evt_...``), stored before anything else happens.

    ``created`` is Stripe's Unix seconds; ``payload`` the whole event JSON. ``processed_at`` is
    set once its job applied it (or at once for types we ignore), in the same transaction as
    its effects; ``outcome`` says what was done, ``error`` the last failure and ``attempts``
    how many handler outcomes were recorded (runs that died do not count: ``lost_runs``). Due
    time and lease come from ``DurableWork``: ``due_at`` is ``None`` once processed, or when
    the event was given up (``error`` says why; an operator looks at it).
    """

    __tablename__ = "stripe_events"
    __table_args__ = (Index("ix_stripe_events_unprocessed", "processed_at", "received_at"),)

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100), index=True)
    created: Mapped[int] = mapped_column(BigInteger)
    livemode: Mapped[bool] = mapped_column(default=False)
    payload: Mapped[dict] = mapped_column(JSONType)
    received_at = mapped_column(DateTime(timezone=True), default=utcnow)
    processed_at = mapped_column(DateTime(timezone=True), nullable=True)
    outcome: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)

    def __repr__(self) -> str:
        return f"<StripeEvent {self.id} {self.type}>"

    @property
    def state(self) -> str:
        """``processed``, ``failed`` (given up: see ``error``), ``running`` or ``queued``."""
        if self.processed_at is not None:
            return "processed"
        if self.due_at is None:
            return "failed"
        return "running" if self.lease_owner else "queued"


class BillingInvoice(db.Model):
    """An invoice of a subscription, as last seen in an ``invoice.*`` event.

    Amounts are in the currency's minor unit (cents); ``hosted_invoice_url`` is Stripe's hosted
    invoice page.
    """

    __tablename__ = "billing_invoices"

    id: Mapped[int] = mapped_column(primary_key=True)
    stripe_invoice_id: Mapped[str] = mapped_column(String(255), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"), nullable=True, index=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    currency: Mapped[str | None] = mapped_column(String(8), nullable=True)
    amount_due: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_paid: Mapped[int] = mapped_column(BigInteger, default=0)
    hosted_invoice_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    created = mapped_column(DateTime(timezone=True), nullable=True)
    last_event_created: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    def __repr__(self) -> str:
        return f"<BillingInvoice {self.stripe_invoice_id} {self.status}>"
