"""Billing state, kept in its own tables (the core models are not touched).

* ``BillingCustomer``: one Stripe customer per panel user (``billing_customers``).
* ``Subscription``: one Stripe subscription per paid service (``subscriptions``), created when the
  checkout session is made and linked to the Stripe subscription once Stripe tells us its id.
* ``StripeEvent``: every verified webhook event, by its Stripe id (``stripe_events``): the
  dedupe key, the job's input and the audit trail.
* ``BillingInvoice``: the invoices we heard about through ``invoice.*`` events
  (``billing_invoices``), for the billing page's "last invoices" list.
* ``StripePrice`` / ``StripeProduct``: the local cache of Stripe's Price and Product objects
  (``stripe_prices``, ``stripe_products``): amounts, currency, interval, tax behaviour. Refreshed by
  ``price.*``/``product.*`` events and ``panel stripe sync``; never typed by hand.
* ``BillingTask``: one Stripe call that changes a charge (cancel a subscription, add or remove a
  subscription item, change prices, refund or credit), recorded before it is made and run by a
  job with an idempotency key per step (``billing_tasks``).
* ``AccountBilling``: per-account billing posture: complimentary ("plankowner") accounts
  (``account_billing``).

Times are timezone-aware UTC ``datetime``; Stripe's own times (``created``) stay integer Unix
seconds where we compare them (``last_event_created``).
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, Numeric, String, Text
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
    * ``term``: the billing term of the subscription (``monthly``...), from its prices.
    * ``pending_change``: an upgrade paid through Checkout for a service that already runs
      (``{"plan_id", "term", "addons": [slugs]}``), applied when Stripe confirms the payment.
    * ``end_action``: what happens when the subscription ends, overriding the plan's
      ``on_cancel``: ``terminate`` (an operator ended it at period end),
      ``downgrade:<plan slug>`` (the customer moves to a free plan at period end) or ``keep``
      (we cancelled it because the service is paid another way now: complimentary, invoiced, or
      already ended; the service is left as it is).
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
    term: Mapped[str | None] = mapped_column(String(16), nullable=True)
    pending_change: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    end_action: Mapped[str | None] = mapped_column(String(80), nullable=True)
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


class StripeProduct(db.Model):
    """A Stripe Product (``prod_...``) as last seen: its ``name`` and whether it is ``active``.

    ``last_event_created`` is the ``created`` (Unix seconds) of the newest ``product.*`` event
    applied (``None`` after a sync): an older event never overwrites a newer state.
    """

    __tablename__ = "stripe_products"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    active: Mapped[bool] = mapped_column(default=True)
    deleted: Mapped[bool] = mapped_column(default=False)
    last_event_created: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    synced_at = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class StripePrice(db.Model):
    """A Stripe Price (``price_...``) as last seen (Stripe ``GET /v1/prices/{id}``).

    * ``unit_amount``: integer minor units (cents) of ``currency`` (ISO 4217, lower case as
      Stripe gives it); ``unit_amount_decimal`` the exact decimal string Stripe also gives (it
      can carry fractions of a minor unit: NUMERIC, never a float).
    * ``type``: ``recurring`` or ``one_time``; ``interval`` (``day``/``week``/``month``/``year``)
      and ``interval_count`` for recurring prices; ``usage_type`` ``licensed``/``metered``.
    * ``tax_behavior``: ``inclusive``, ``exclusive`` or ``unspecified``.
    * ``deleted``: a ``price.deleted`` event arrived (or the price is gone from Stripe).
    * ``last_event_created``: as on ``StripeProduct``.
    """

    __tablename__ = "stripe_prices"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    product_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    active: Mapped[bool] = mapped_column(default=True)
    deleted: Mapped[bool] = mapped_column(default=False)
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    unit_amount: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    unit_amount_decimal = mapped_column(Numeric(24, 12), nullable=True)
    type: Mapped[str] = mapped_column(String(16), default="recurring")
    interval: Mapped[str | None] = mapped_column(String(8), nullable=True)
    interval_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    usage_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    tax_behavior: Mapped[str | None] = mapped_column(String(16), nullable=True)
    nickname: Mapped[str | None] = mapped_column(String(255), nullable=True)
    last_event_created: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    synced_at = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    product = relationship("StripeProduct", primaryjoin="foreign(StripePrice.product_id) == StripeProduct.id",
                           viewonly=True)

    @property
    def sellable(self) -> bool:
        """Active, not deleted, its product active, recurring and licensed (what a subscription
        item needs)."""
        product_ok = self.product is None or (self.product.active and not self.product.deleted)
        return (self.active and not self.deleted and product_ok and self.type == "recurring"
                and self.unit_amount is not None and (self.usage_type or "licensed") == "licensed")

    def __repr__(self) -> str:
        return f"<StripePrice {self.id} {self.unit_amount} {self.currency} {self.interval}x{self.interval_count}>"


# BillingTask.kind: what the job does in Stripe (see panel.billing.tasks).
TASK_KINDS = ("cancel_subscription", "cancel_at_period_end", "add_item", "remove_item", "change_prices",
              "report_usage")
TASK_UNFINISHED = ("queued", "running")


class BillingTask(DurableWork, db.Model):
    """A Stripe call that changes a charge, recorded first and run by a job (``panel.billing.tasks``).

    * ``kind``: one of ``TASK_KINDS``; ``payload`` its arguments (subscription id, prices,
      refund mode, the time the request was made...).
    * ``state``: ``queued`` -> ``running`` -> ``succeeded`` / ``failed``; ``attempts`` counts
      runs, ``last_error`` is the last failure (operators only), ``result`` what Stripe answered
      (ids, amounts in minor units).
    * ``due_at``, lease and fencing token (``DurableWork``): the task is owed while ``due_at`` is
      set; a worker runs it under a lease (``panel.work``); retries back off through ``due_at``.
    * Each Stripe POST of a task sends the idempotency key ``hostpanel-task-<id>-<step>``, so a
      retried or duplicated job never charges, cancels or refunds twice.
    """

    __tablename__ = "billing_tasks"
    __table_args__ = (Index("ix_billing_tasks_state", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict] = mapped_column(JSONType, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    actor: Mapped[str] = mapped_column(String(120), default="system")
    created_at = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    finished_at = mapped_column(DateTime(timezone=True), nullable=True)

    service = relationship("Service")

    def idempotency_key(self, step: str) -> str:
        """``hostpanel-task-<id>-<step>``: the Stripe ``Idempotency-Key`` of one step."""
        return f"hostpanel-task-{self.id}-{step}"

    def __repr__(self) -> str:
        return f"<BillingTask {self.id} {self.kind} {self.state}>"


class AccountBilling(db.Model):
    """Billing posture of one account: ``complimentary`` (seed 003's plankowner: its paid plans
    are given for free, without a subscription), who set it (``updated_by``) and a ``note``."""

    __tablename__ = "account_billing"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    complimentary: Mapped[bool] = mapped_column(default=False)
    note: Mapped[str] = mapped_column(Text, default="")
    updated_by: Mapped[str] = mapped_column(String(120), default="")
    updated_at = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    user = relationship("User")
