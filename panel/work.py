"""Durable work items: the database decides what is owed and who runs it.

An ``Operation`` or a ``StripeEvent`` (columns from ``panel.models.base.DurableWork``) is owed
while its ``due_at`` is set. A worker runs one like this:

1. ``claim(model, id)``: one atomic ``UPDATE ... SET lease_owner, lease_expires_at,
   lease_token = lease_token + 1 WHERE id = :id AND due_at <= now AND (lease_expires_at IS NULL
   OR lease_expires_at < now) RETURNING lease_token``. At most one worker wins; the token it
   gets is the fencing token of this run. Taking over an expired lease counts a lost run
   (``lost_runs``), never an attempt.
2. ``Heartbeat(lease)`` renews the lease every third of ``PANEL_LEASE_SECONDS`` on its own
   connection while the work runs; no transaction stays open meanwhile.
3. ``fence(lease)`` is the first write of the completion transaction: it releases the lease if
   the row still carries this run's token, else raises ``StaleLease`` and the caller rolls back.
   So the effects, the outcome and the lease release commit together, and a run whose lease was
   taken over (it stalled, its worker was thought dead) records nothing.

Times are the workers' clocks (aware UTC): keep them in sync (NTP); a lease is tens of seconds.

Nothing here talks to Redis: ``wake_after_commit`` only notes, on the session, which items to
hand to a worker once the transaction commits (``panel.dispatch`` does the handing). That keeps
``panel.lifecycle`` free of the job queue.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.orm.util import identity_key
from sqlalchemy.orm.attributes import set_committed_value

from panel.extensions import db
from panel.models.base import utcnow

log = logging.getLogger(__name__)

WAKE_KEY = "panel_wake"


class StaleLease(RuntimeError):
    """The run's lease was taken over (its token is no longer the row's): its completion is
    refused and must be rolled back."""


@dataclass(frozen=True)
class Lease:
    """A won claim: ``model`` and ``id`` of the item, the fencing ``token``, the ``owner``
    string written to the row, ``lost_runs`` (runs of this item that ended without reporting,
    including one this claim just took over), ``took_over`` (whether it did) and ``item``: the
    claimed row as the claim left it (an ORM object in the session), so the caller need not
    select it again."""

    model: type
    id: Any
    token: int
    owner: str
    lost_runs: int
    took_over: bool
    item: Any = None


def owner_name() -> str:
    """``<host>:<pid>:<thread id>``: who holds a lease (shown to operators)."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{threading.get_ident() % 100000}"


def lease_seconds() -> float:
    """``PANEL_LEASE_SECONDS``: how long a claim holds without a heartbeat (default 30 s)."""
    return float(current_app.config["LEASE_SECONDS"])


def due(model, now: datetime):
    """The SQL condition "owed now and nobody holds a live lease" for a ``DurableWork`` model."""
    return and_(model.due_at.is_not(None), model.due_at <= now,
                or_(model.lease_expires_at.is_(None), model.lease_expires_at < now))


def claim(model, item_id: Any, *, values: dict | None = None, now: datetime | None = None) -> Lease | None:
    """Claim item ``item_id`` of ``model`` for the calling worker, or return ``None`` when it is
    not due, or someone holds a live lease on it (so duplicate jobs are harmless).

    ``values`` are extra columns set by the same ``UPDATE`` (e.g. an operation's ``state``). The
    claim is flushed, not committed: the caller adds what belongs with it (an event, the
    provision intent) and commits.
    """
    now = now or utcnow()
    owner = owner_name()
    sets = dict(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds()),
                lease_token=model.lease_token + 1,
                lost_runs=model.lost_runs + case((model.lease_expires_at.is_not(None), 1), else_=0),
                **(values or {}))
    if db.session.get_bind().dialect.name == "postgresql":
        # One round trip: the row as it was (locked) joined to the UPDATE, so RETURNING can say
        # whether this claim took over a lease that was never released.
        prior = (select(model.id.label("id"), model.lease_expires_at.label("expiry"))
                 .where(model.id == item_id).with_for_update().subquery("prior"))
        stmt = (update(model).where(model.id == prior.c.id, due(model, now)).values(**sets)
                .returning(model, prior.c.expiry.is_not(None)))
        row = db.session.execute(stmt.execution_options(synchronize_session=False, populate_existing=True)).first()
        took_over = bool(row[1]) if row is not None else False
    else:  # SQLite: RETURNING sees only the updated table; a read first costs no round trip there
        before = db.session.execute(select(model.lease_expires_at).where(model.id == item_id)).first()
        stmt = update(model).where(model.id == item_id, due(model, now)).values(**sets).returning(model)
        row = db.session.execute(stmt.execution_options(synchronize_session=False, populate_existing=True)).first()
        took_over = before is not None and before[0] is not None
    if row is None:
        db.session.rollback()
        return None
    item = row[0]
    return Lease(model, item_id, int(item.lease_token), owner, int(item.lost_runs), took_over=took_over, item=item)


def renew(engine, lease: Lease, seconds: float) -> bool:
    """Extend ``lease`` by ``seconds`` on a connection of its own; ``False`` when the row no longer
    carries its token (taken over or released)."""
    table = lease.model.__table__
    with engine.begin() as conn:
        result = conn.execute(update(table).where(table.c.id == lease.id, table.c.lease_token == lease.token,
                                                  table.c.lease_owner == lease.owner)
                              .values(lease_expires_at=utcnow() + timedelta(seconds=seconds)))
    return result.rowcount == 1


def fence(lease: Lease) -> None:
    """Release ``lease`` inside the current transaction if its token is still the row's; raises
    ``StaleLease`` otherwise. Call it first in the completion transaction, then record effects
    and outcome, then commit (or roll back on ``StaleLease``)."""
    result = db.session.execute(
        update(lease.model).where(lease.model.id == lease.id, lease.model.lease_token == lease.token,
                                  lease.model.lease_owner == lease.owner)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise StaleLease(f"{lease.model.__tablename__} {lease.id}: lease {lease.token} of {lease.owner} "
                         "was taken over; this run's completion is refused")
    loaded = db.session.identity_map.get(identity_key(lease.model, lease.id))
    if loaded is not None:  # what the UPDATE wrote, without selecting the row again
        set_committed_value(loaded, "lease_owner", None)
        set_committed_value(loaded, "lease_expires_at", None)


class Heartbeat:
    """Renews a lease in a daemon thread while the work runs (``with Heartbeat(lease): ...``).

    Renewals happen every ``seconds / 3`` on their own database connection. A failed renewal
    (database unreachable) is logged and tried again; a refused one (the row carries another
    token) sets ``lost`` and stops: the run's completion will be refused by ``fence``. After
    ``max_seconds`` (default ``PANEL_JOB_TIMEOUT``) renewals stop: a run that hangs longer is
    given up, its lease runs out and another worker takes the item over (``panel worker`` cannot
    kill a job thread; fencing refuses the hung run's completion if it ever returns).
    """

    def __init__(self, lease: Lease, seconds: float | None = None, max_seconds: float | None = None):
        self.lease = lease
        self.seconds = float(seconds if seconds is not None else lease_seconds())
        self.max_seconds = float(max_seconds if max_seconds is not None
                                 else current_app.config.get("JOB_TIMEOUT") or 600)
        self.engine = db.engine
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        interval = max(self.seconds / 3.0, 0.2)
        started = time.monotonic()
        while not self._stop.wait(interval):
            if time.monotonic() - started > self.max_seconds:
                log.error("%s %s: still running after %.0f s (PANEL_JOB_TIMEOUT): the lease is no longer "
                          "renewed, another worker takes it over", self.lease.model.__tablename__,
                          self.lease.id, self.max_seconds)
                return
            try:
                if not renew(self.engine, self.lease, self.seconds):
                    self.lost = True
                    log.warning("%s %s: lease %s was taken over while running", self.lease.model.__tablename__,
                                self.lease.id, self.lease.token)
                    return
            except Exception as exc:  # the database is away: keep trying, the lease may still hold
                log.warning("%s %s: lease renewal failed (%s)", self.lease.model.__tablename__,
                            self.lease.id, type(exc).__name__)

    def __enter__(self) -> "Heartbeat":
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.lease.id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def wake_after_commit(kind: str, item_id: Any, due_at: datetime | None = None) -> None:
    """Note that item ``item_id`` of work kind ``kind`` (``"op"``, ``"stripe"``) should be handed to
    a worker once the current transaction commits (dropped if it rolls back). ``due_at``: when it
    is due (``None``: now)."""
    db.session.info.setdefault(WAKE_KEY, []).append((kind, item_id, due_at))
