"""Services (what a customer bought) and operations (each backend call we owe it).

A service's ``status`` is changed only by ``panel.lifecycle``. Every backend call is an
``Operation`` row first; a job runs it by id, under a lease (``panel.work``).
"""
from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from panel.extensions import db
from panel.models.base import DurableWork, JSONType, utcnow

BILLING_MODES = ("free", "stripe", "complimentary", "invoice")
# needs_reconcile: provisioning ended without knowing whether the remote side made the service
# (an answer was lost and the backend could not tell): an operator checks, then retries or
# terminates. Never "failed with nothing recorded".
STATUSES = ("pending_payment", "provisioning", "active", "suspended", "terminating",
            "terminated", "failed", "needs_reconcile", "cancelled")
ACTIONS = ("provision", "suspend", "unsuspend", "terminate", "change_plan", "run_action", "purge")
# Operation states: pending (waits behind another operation of the same service), queued
# (owed: due at ``due_at``), running (leased by a worker), then succeeded / failed / cancelled.
OP_STATES = ("pending", "queued", "running", "succeeded", "failed", "cancelled")
OP_UNFINISHED = ("pending", "queued", "running")


# Searched by prefix (``LIKE 'q%'``): byte order ("C") on PostgreSQL, so a plain b-tree index
# serves the prefix whatever the database's collation.
SEARCH_STRING = String(255).with_variant(String(255, collation="C"), "postgresql")
NAME_PARAMS = ("name", "server_name", "space", "tenant_name", "hostname", "username")


def display_name_for(params: dict) -> str:
    """The name operators and customers know a service by: the first of the order params
    ``name``, ``server_name``, ``space``, ``tenant_name``, ``hostname`` or ``username`` ("" if
    none)."""
    for key in NAME_PARAMS:
        if (params or {}).get(key):
            return str(params[key])[:255]
    return ""


def hostname_for(params: dict, claim_key: str | None = None, data: dict | None = None) -> str | None:
    """The DNS name a service answers on, lower case, for the operator's list and search: the
    ``hostname``/``host`` the backend returned (``data``), else the order's ``hostname`` param,
    else the name the backend claimed when it is a DNS name (PDS's default hostname). ``None``
    when there is none."""
    for value in ((data or {}).get("hostname"), (data or {}).get("host"), (params or {}).get("hostname"), claim_key):
        if isinstance(value, str) and "." in value and "/" not in value and " " not in value:
            return value.strip().lower()[:255]
    return None


def new_external_id() -> str:
    """Our stable id for a service on the remote side: ``hp-`` + 16 hex chars (DNS-label safe)."""
    return "hp-" + uuid.uuid4().hex[:16]


class Service(db.Model):
    """One service a customer ordered.

    * ``params``: validated order params; ``backend_data``: the backend's non-secret state;
      ``secrets_encrypted``: Fernet token of the backend's secrets (never shown).
    * ``resource_id``: the remote id returned by ``provision``.
    * ``claim_key``: the remote name the service holds (``Backend.claim_key``); unique per backend
      among live services, cleared when the service is terminated or cancelled.
    * ``status_detail``: a human sentence about the status (progress or the failure message).
    * ``create_attempted_at``: set (once) just before the first ``provision`` call reaches the
      backend: from then on a lost answer means "it may exist remotely", resolved by lookup.
    * ``billing_mode``: how it is paid for: ``free`` (a free plan), ``stripe`` (a Stripe
      subscription), ``complimentary`` (a paid plan given for free by an operator: seed 003's
      plankowner) or ``invoice`` (to be invoiced outside Stripe Checkout).
    * ``term``: the billing term (``monthly``, ``quarterly``, ``semiannual``, ``yearly``) of a
      paid plan; ``None`` for a free one.
    """

    __tablename__ = "services"
    # The operator's list pages newest first (ORDER BY id DESC) by status, backend or both; the
    # search looks names and hostnames up by prefix, remote ids exactly.
    __table_args__ = (Index("ix_services_status_id", "status", "id"),
                      Index("ix_services_backend_id", "backend", "id"),
                      Index("ix_services_status_backend_id", "status", "backend", "id"),
                      Index("ix_services_display_name", "display_name"),
                      Index("ix_services_hostname", "hostname"),
                      Index("ix_services_resource_id", "resource_id"),  # the search by remote id
                      UniqueConstraint("backend", "claim_key", name="uq_services_backend_claim_key"))

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64), unique=True, default=new_external_id)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"), index=True, active_history=True)
    backend: Mapped[str] = mapped_column(String(64))
    # active_history: the old value is known when it changes (panel.counts keeps service_counts)
    status: Mapped[str] = mapped_column(String(32), default="pending_payment", active_history=True)
    # what the list shows and the search finds: the order's name param, and the hostname
    display_name: Mapped[str] = mapped_column(SEARCH_STRING, default="", server_default="")
    hostname: Mapped[str | None] = mapped_column(SEARCH_STRING, nullable=True)
    status_detail: Mapped[str] = mapped_column(Text, default="")
    suspension_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    params: Mapped[dict] = mapped_column(JSONType, default=dict)
    resource_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # the remote name this service holds (Backend.claim_key), freed when it ends
    claim_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    backend_data: Mapped[dict] = mapped_column(JSONType, default=dict)
    secrets_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    create_attempted_at = mapped_column(DateTime(timezone=True), nullable=True)
    billing_mode: Mapped[str] = mapped_column(String(16), default="free", server_default="free")
    term: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    user = relationship("User")
    plan = relationship("Plan")
    operations = relationship("Operation", back_populates="service", order_by="Operation.id")
    events = relationship("ServiceEvent", back_populates="service", order_by="ServiceEvent.id")
    addons = relationship("ServiceAddon", back_populates="service", order_by="ServiceAddon.id",
                          cascade="all, delete-orphan")

    def __repr__(self) -> str:
        return f"<Service {self.id} {self.backend} {self.status}>"

    @property
    def name(self) -> str:
        """A human name: ``display_name`` (from the order params, ``display_name_for``), else the
        plan's name and the service number."""
        return self.display_name or display_name_for(self.params or {}) or f"{self.plan.name} #{self.id}"

    @property
    def current_operation(self) -> "Operation | None":
        """The unfinished operation (pending, queued or running) that comes last, or ``None``."""
        for op in reversed(self.operations):
            if op.state in OP_UNFINISHED:
                return op
        return None

    @property
    def last_failed_operation(self) -> "Operation | None":
        """The failed operation after the last success (what an operator's retry re-runs), or ``None``.
        """
        for op in reversed(self.operations):
            if op.state == "failed":
                return op
            if op.state == "succeeded":
                return None
        return None

    @property
    def reconcile_reason(self) -> str:
        """Why the service needs an operator (``needs_reconcile`` / ``failed``): the technical
        message of its failed operation, for operators only ("" when there is none)."""
        op = self.last_failed_operation
        return (op.last_error or "") if op is not None else ""


class Operation(DurableWork, db.Model):
    """One backend call owed to a service: ``action`` is provision, suspend, unsuspend,
    terminate, change_plan or run_action (a backend's custom action, ``payload["name"]``).
    ``payload`` carries action arguments (e.g. the new plan id).

    ``attempts`` counts backend outcomes (answers and errors), never runs that died without
    reporting (those are ``lost_runs``); ``last_error`` is the backend's last message. The
    due time, lease and fencing token come from ``DurableWork``. ``stripe_event_id`` is the
    Stripe event (``evt_...``) that asked for it, if any. A service has at most one
    ``provision`` operation (partial unique index), and one event starts at most one
    operation of each action.
    """

    __tablename__ = "operations"
    __table_args__ = (
        Index("ix_operations_state_id", "state", "id"),  # the jobs page by state, newest first
        Index("uq_operations_one_provision", "service_id", unique=True,
              postgresql_where=text("action = 'provision'"), sqlite_where=text("action = 'provision'")),
        UniqueConstraint("stripe_event_id", "action", name="uq_operations_stripe_event_id_action"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    payload: Mapped[dict] = mapped_column(JSONType, default=dict)
    actor: Mapped[str] = mapped_column(String(120), default="system")
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    stripe_event_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    started_at = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at = mapped_column(DateTime(timezone=True), nullable=True)

    service = relationship("Service", back_populates="operations")

    @property
    def job_key(self) -> str:
        """The dispatcher's key of this operation (``op-<id>``; RQ job ids start with it)."""
        return f"op-{self.id}"

    def __repr__(self) -> str:
        return f"<Operation {self.id} {self.action} {self.state}>"


class ServiceCount(db.Model):
    """How many services each plan has in each status (``service_counts``), kept by
    ``panel.counts`` in the same transaction as every change, so the operator's pages show counts
    without counting 100k rows. ``n`` is exact as long as services change through the ORM."""

    __tablename__ = "service_counts"

    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
