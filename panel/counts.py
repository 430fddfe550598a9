"""Service counts per plan and status (``service_counts``), kept in the transaction that changes them.

The operator's pages show how many services each status has, and each plan's live services;
counting them with ``GROUP BY`` reads the whole ``services`` table on every view (100k rows and
more). Instead every transaction that inserts a service, changes its status or its plan, or
deletes one adds the difference to ``service_counts`` before it commits, so the counts commit
(or roll back) with the change itself:

* ``after_flush``: the differences of what was flushed are noted on the session (a new service
  +1 at its plan and status; a status or plan change -1 at the old, +1 at the new; a deletion
  -1). ``Service.status`` and ``Service.plan_id`` keep their old value (``active_history``).
* ``before_commit``: one ``INSERT ... ON CONFLICT (plan_id, status) DO UPDATE SET n = n + ...``
  for all of them, rows in a fixed order (so two transactions never lock them in opposite
  orders).

Changes made with bulk ``UPDATE`` statements that bypass the ORM are not seen; none of the
panel's do (``recount()`` rebuilds the table from ``services``: ``panel recount``).
"""
from __future__ import annotations

from collections import Counter

from sqlalchemy import event, func, inspect, select

from panel.extensions import db
from panel.models import Plan, Service, ServiceCount

DELTAS = "panel_service_count_deltas"
LIVE_EXCLUDED = ("terminated", "cancelled")


def init_app(app) -> None:
    """Hook the bookkeeping onto the session (once per process)."""
    if not event.contains(db.session, "after_flush", _collect):
        event.listen(db.session, "after_flush", _collect)
        event.listen(db.session, "before_commit", _apply)
        event.listen(db.session, "after_soft_rollback", _forget)


def _old(state, key: str):
    history = state.attrs[key].history
    if history.deleted:
        return history.deleted[0]
    return getattr(state.object, key)


def _collect(session, flush_context) -> None:
    deltas: Counter | None = session.info.get(DELTAS)
    for obj in session.new:
        if isinstance(obj, Service):
            deltas = deltas if deltas is not None else session.info.setdefault(DELTAS, Counter())
            deltas[(obj.plan_id, obj.status)] += 1
    for obj in session.dirty:
        if not isinstance(obj, Service):
            continue
        state = inspect(obj)
        if not (state.attrs.status.history.has_changes() or state.attrs.plan_id.history.has_changes()):
            continue
        old = (_old(state, "plan_id"), _old(state, "status"))
        new = (obj.plan_id, obj.status)
        if old != new:
            deltas = deltas if deltas is not None else session.info.setdefault(DELTAS, Counter())
            deltas[old] -= 1
            deltas[new] += 1
    for obj in session.deleted:
        if isinstance(obj, Service):
            state = inspect(obj)
            deltas = deltas if deltas is not None else session.info.setdefault(DELTAS, Counter())
            deltas[(_old(state, "plan_id"), _old(state, "status"))] -= 1


def _apply(session) -> None:
    if not session.info.get(DELTAS) and not any(isinstance(o, Service) for o in (*session.new, *session.dirty,
                                                                                   *session.deleted)):
        return
    session.flush()  # the last changes are noted too
    deltas = session.info.pop(DELTAS, None)
    rows = [{"plan_id": plan_id, "status": status, "n": n}
            for (plan_id, status), n in sorted((deltas or {}).items(), key=lambda kv: (kv[0][0] or 0, kv[0][1] or ""))
            if n and plan_id is not None and status]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(ServiceCount).values(rows)
    stmt = stmt.on_conflict_do_update(index_elements=["plan_id", "status"],
                                      set_={"n": ServiceCount.n + stmt.excluded.n})
    session.execute(stmt)


def _forget(session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(DELTAS, None)


def by_status(backend: str | None = None) -> dict[str, int]:
    """``{status: services}`` (of one backend's plans, or all)."""
    query = select(ServiceCount.status, func.sum(ServiceCount.n)).group_by(ServiceCount.status)
    if backend:
        query = query.join(Plan, Plan.id == ServiceCount.plan_id).where(Plan.backend == backend)
    return {status: int(n) for status, n in db.session.execute(query).all() if n}


def live_by_plan() -> dict[int, int]:
    """``{plan id: services not terminated or cancelled}``."""
    query = (select(ServiceCount.plan_id, func.sum(ServiceCount.n))
             .where(ServiceCount.status.not_in(LIVE_EXCLUDED)).group_by(ServiceCount.plan_id))
    return {plan_id: int(n) for plan_id, n in db.session.execute(query).all() if n}


def recount() -> int:
    """Rebuild ``service_counts`` from ``services`` (locks ``service_counts`` meanwhile on
    PostgreSQL); returns how many (plan, status) rows it wrote. Commits."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(db.text("LOCK TABLE service_counts IN EXCLUSIVE MODE"))
    db.session.execute(db.delete(ServiceCount))
    rows = db.session.execute(select(Service.plan_id, Service.status, func.count())
                              .group_by(Service.plan_id, Service.status)).all()
    if rows:
        db.session.execute(db.insert(ServiceCount), [{"plan_id": p, "status": s, "n": n} for p, s, n in rows])
    db.session.info.pop(DELTAS, None)
    db.session.commit()
    return len(rows)
