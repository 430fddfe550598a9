"""The service state machine: the ONE place where a service's status changes.

    pending_payment -> provisioning -> active <-> suspended -> terminating -> terminated
          |                 |            |            |             |
       cancelled         failed <--------+------------+-------------+   (an operator retries)

A request never calls a backend. It writes the status change and an ``Operation`` row (due
now) in one transaction and commits; the row is handed to a worker after the commit
(``panel.work.wake_after_commit``; ``panel.dispatch`` does the handing, and its sweep finds
whatever a lost hand-over missed). This module decides and records: it imports neither the
job machinery nor billing. A job reports back through ``started`` / ``succeed`` / ``retrying`` /
``fail`` / ``needs_reconcile`` inside ``one_transaction()``, so the outcome commits together
with its lease release. Operations of one service run one at a time, in order: a request made
while another operation is unfinished waits (``pending``) and is started when the one before it
succeeds (a ``terminate`` also when it fails). Every change appends a ``ServiceEvent``.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

from sqlalchemy import event

from panel import crypto
from panel.backends import Provisioned, Secret, ServiceSpec
from panel.extensions import db
from panel.models import Operation, Plan, Service, ServiceEvent, User
from panel.models.base import utcnow
from panel.models.services import OP_UNFINISHED, display_name_for, hostname_for
from panel.work import wake_after_commit

log = logging.getLogger(__name__)

FINAL = ("terminated", "cancelled")
#: Statuses an operator must act on: retry the failed operation or terminate.
NEEDS_OPERATOR = ("failed", "needs_reconcile")
CHANGES_KEY = "panel_status_changes"
DEFER_KEY = "panel_defer_commit"
RECONCILE_DETAIL = ("We could not confirm that your service was set up. Our team has been told and "
                    "will finish it; you do not need to do anything.")


@dataclass(frozen=True)
class Rule:
    """Which statuses an action may start from, the status while it runs, and the one after."""

    allowed_from: frozenset
    running: str | None  # None: the status does not change while it runs
    done: str | None     # None: the status does not change when it succeeds


RULES: dict[str, Rule] = {
    "provision": Rule(frozenset({"pending_payment"}), "provisioning", "active"),
    "suspend": Rule(frozenset({"active", "suspended"}), None, "suspended"),
    "unsuspend": Rule(frozenset({"suspended", "active"}), None, "active"),
    "change_plan": Rule(frozenset({"active", "suspended"}), None, None),
    "terminate": Rule(frozenset({"provisioning", "active", "suspended", "failed", "needs_reconcile",
                                 "terminating"}), "terminating", "terminated"),
    # a backend's custom action (panel.client_area): payload {"name", "label", "params"}
    "run_action": Rule(frozenset({"active", "suspended"}), None, None),
    # delete a terminated service's retained data now (Backend.purge); the service stays terminated
    "purge": Rule(frozenset({"terminated"}), None, None),
}
#: Actions whose failure leaves the service's status as it was (the service is not broken).
KEEPS_STATUS_ON_FAILURE = ("run_action", "purge")

RUNNING_WORDS = {"provision": "Provisioning", "suspend": "Suspending", "unsuspend": "Resuming",
                 "change_plan": "Changing plan", "terminate": "Terminating",
                 "run_action": "Working", "purge": "Purging retained data"}


class LifecycleError(Exception):
    """A transition that the state machine does not allow; the message is shown to the user."""


@dataclass(frozen=True)
class ServiceSnapshot:
    """A plain view of a service, given to ``service_status_changed`` hooks."""

    id: int
    external_id: str
    backend: str
    plan: str
    status: str
    status_detail: str
    customer_id: int
    customer_email: str


def snapshot(service: Service) -> ServiceSnapshot:
    """The plain ``ServiceSnapshot`` of ``service``."""
    return ServiceSnapshot(service.id, service.external_id, service.backend, service.plan.slug,
                           service.status, service.status_detail, service.user_id, service.user.email)


# --------------------------------------------------------------------------- recording

_SAME = object()


def _event(service: Service, kind: str, actor: str, detail: str = "", *, old=_SAME, new=_SAME,
           op: Operation | None = None) -> ServiceEvent:
    ev = ServiceEvent(service=service, kind=kind, actor=actor or "system", detail=detail[:4000],
                      from_status=service.status if old is _SAME else old,
                      to_status=service.status if new is _SAME else new,
                      operation_id=op.id if op is not None else None)
    db.session.add(ev)
    return ev


def _set_status(service: Service, new: str, *, actor: str, kind: str, detail: str = "",
                op: Operation | None = None, status_detail: str | None = None) -> None:
    """Change ``service.status`` and append the event. Hooks run after commit (``_notify``)."""
    old = service.status
    service.status = new
    if new in FINAL:
        service.claim_key = None  # the remote name is free again
    if status_detail is not None:
        service.status_detail = status_detail
    _event(service, kind, actor, detail, old=old, new=new, op=op)
    if old != new:
        pending = db.session.info.setdefault(CHANGES_KEY, [])
        pending.append((service.id, old, new))


@contextlib.contextmanager
def one_transaction():
    """Inside this block, every function of this module flushes instead of committing, so the
    caller commits once, with ``commit()`` after the block: a job's effects, outcome and lease
    release, a Stripe event's effects and its ``processed_at``. Nests."""
    info = db.session.info
    info[DEFER_KEY] = info.get(DEFER_KEY, 0) + 1
    try:
        yield
    finally:
        info[DEFER_KEY] -= 1


def commit() -> None:
    """Commit (only flush inside ``one_transaction``), then run the ``service_status_changed``
    hooks for the status changes that committed. Their snapshots are taken from the session
    before the commit (the values being committed), so nothing is selected again after it."""
    if db.session.info.get(DEFER_KEY):
        db.session.flush()
        return
    changes = db.session.info.pop(CHANGES_KEY, [])
    snapshots = []
    if changes:
        db.session.flush()
        for service_id, old, new in changes:
            service = db.session.get(Service, service_id)
            if service is not None:
                snapshots.append((snapshot(service), old, new))
    db.session.commit()
    if snapshots:
        from panel.plugins import notify_status_changed

        for snap, old, new in snapshots:
            notify_status_changed(snap, old, new)


_commit = commit


@event.listens_for(db.session, "after_soft_rollback")
def _forget_rolled_back_changes(session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(CHANGES_KEY, None)


def lock_service(service_id: int) -> Service | None:
    """Lock the service for the rest of the transaction and load it fresh, with its plan, its
    customer and its operations, so requests, job completions and billing handlers of one
    service never decide on stale state: ``SELECT ... FOR UPDATE OF services`` on PostgreSQL
    (plan and user joined in, the operations in a second ``SELECT``); on SQLite a no-op write,
    which takes the database's write lock before anything is read. Pending changes are flushed
    first."""
    from sqlalchemy.orm import joinedload, selectinload

    db.session.flush()
    query = db.select(Service).where(Service.id == service_id).options(
        joinedload(Service.plan, innerjoin=True), joinedload(Service.user, innerjoin=True),
        selectinload(Service.operations))
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=Service)
    else:
        db.session.execute(db.update(Service).where(Service.id == service_id)
                           .values(status=Service.status, updated_at=Service.updated_at)
                           .execution_options(synchronize_session=False))
    return db.session.scalars(query.execution_options(populate_existing=True)).unique().first()


def _due_now(op: Operation) -> None:
    """Make ``op`` owed now and hand it to a worker once the transaction commits."""
    op.state = "queued"
    op.due_at = utcnow()
    wake_after_commit("op", op.id)


def note(service: Service, detail: str, *, actor: str = "system", kind: str = "note") -> None:
    """Append an event that does not change the status (e.g. a billing notice); commits."""
    _event(service, kind, actor, detail)
    _commit()


# --------------------------------------------------------------------------- requests

def _unfinished(service: Service) -> list[Operation]:
    return [op for op in service.operations if op.state in OP_UNFINISHED]


def projected_status(service: Service) -> str:
    """The status the service will have once its unfinished operations succeed."""
    status = service.status
    for op in _unfinished(service):
        rule = RULES[op.action]
        if rule.done:
            status = rule.done
    return status


NO_PAYMENT = {"free": "free plan: no payment needed", "complimentary": "complimentary: no payment needed",
              "invoice": "to be invoiced: no payment at checkout"}


def create_service(user: User, plan: Plan, params: dict[str, Any], *, actor: str,
                   claim_key: str | None = None, billing_mode: str | None = None, term: str | None = None,
                   addons: Any = (), record_with: Callable[[Service], Any] | None = None) -> Service:
    """Record a new order. ``billing_mode`` (default ``free`` for a free plan, else ``stripe``):
    a ``stripe`` order waits in ``pending_payment`` until billing calls ``request(service,
    "provision")``; ``free``, ``complimentary`` and ``invoice`` orders start provisioning at once.
    ``term`` is the billing term, ``addons`` the ``ServiceAddon`` rows ordered with it (applied by
    ``provision``). Commits (and the provision is handed to a worker). ``params`` must already be
    validated by the backend.

    ``record_with(service)`` is called once the service row is flushed and before the commit,
    to add rows that must commit with it (the orders API's idempotency key).
    """
    mode = billing_mode or ("free" if plan.is_free else "stripe")
    service = Service(user=user, plan=plan, backend=plan.backend, params=dict(params),
                      status="pending_payment", status_detail="", claim_key=claim_key,
                      billing_mode=mode, term=term,
                      display_name=display_name_for(params), hostname=hostname_for(params, claim_key))
    service.operations = []  # new: nothing to load
    for row in addons:
        service.addons.append(row)
    db.session.add(service)
    db.session.flush()
    if record_with is not None:
        record_with(service)
    _event(service, "created", actor, f"ordered plan {plan.slug}" + (f" ({term})" if term else ""),
           old=None, new="pending_payment")
    if mode in NO_PAYMENT:
        # the row is this transaction's own (no one else sees it before the commit): no lock to
        # take and nothing to load again; its operations are the empty list set above
        _request(service, "provision", actor=actor, detail=NO_PAYMENT[mode])
    else:
        service.status_detail = "Waiting for payment"
    _commit_keeping_loaded()
    return service


def _commit_keeping_loaded() -> None:
    """``commit()`` without expiring what the session holds: a new order's service, operation
    and events hold what was just written (ids and Python-side defaults included), so the answer
    built from them after the commit selects nothing again (issue 14: three statements per order)."""
    session = db.session()
    keep, session.expire_on_commit = session.expire_on_commit, False
    try:
        _commit()
    finally:
        session.expire_on_commit = keep


def adopt_service(user: User, plan: Plan, *, external_id: str, params: dict[str, Any], status: str,
                  result: Provisioned, actor: str, claim_key: str | None = None, created_at=None,
                  suspended_at=None, packages: tuple[str, ...] = (), detail: str = "") -> tuple[Service, int]:
    """Record a service for a remote object that already runs (``panel reconcile --adopt``): no
    operation is made and no backend is called. ``status`` is ``active`` or ``suspended``
    (suspension reason ``operator``); ``result`` is what ``Backend.adopt`` returned (remote id, data,
    secrets). The event log is backfilled from the remote state, as seed 002's backfill does:
    ``created`` at ``created_at`` (the service's own ``created_at`` too), one ``package`` event per
    enabled package, ``suspended`` at ``suspended_at``, then ``adopted`` now with ``detail``.
    Commits; returns ``(service, events inserted)``. Raises ``LifecycleError`` for another status
    and lets ``sqlalchemy.exc.IntegrityError`` through when the external id or claimed name is
    taken meanwhile (the caller rolls back)."""
    if status not in ("active", "suspended"):
        raise LifecycleError(f"only an active or suspended object can be adopted (this one is {status})")
    born = created_at or utcnow()
    service = Service(user=user, plan=plan, backend=plan.backend, params=dict(params), external_id=external_id,
                      status=status, status_detail="", claim_key=claim_key, created_at=born,
                      display_name=display_name_for(params),
                      suspension_reason="operator" if status == "suspended" else None,
                      create_attempted_at=born)
    db.session.add(service)
    _store_result(service, result)
    db.session.flush()
    events = [_event(service, "created", actor, f"created on the {plan.backend} backend (backfilled when "
                     f"adopted: remote {service.resource_id or '?'})", old=None, new="active")]
    for package in packages:
        events.append(_event(service, "package", actor, f"package {package} enabled (backfilled from the "
                             "remote state)", old="active", new="active"))
    if status == "suspended":
        events.append(_event(service, "suspended", actor, "suspended on the backend (backfilled from the "
                             "remote state)", old="active", new="suspended"))
    for ev in events:
        ev.at = born
    if suspended_at is not None and status == "suspended":
        events[-1].at = suspended_at
    events.append(_event(service, "adopted", actor, detail or f"adopted by {actor}"))
    _commit()
    return service, len(events)


def request(service: Service, action: str, *, actor: str, detail: str = "",
            payload: dict | None = None, stripe_event_id: str | None = None) -> Service:
    """Ask for ``action`` (a key of ``RULES``: provision, suspend, unsuspend, terminate,
    change_plan, run_action, purge) on ``service``.

    Writes the operation row (and the status change for provision/terminate) and commits; the
    operation is due at once unless another operation of the service is still unfinished, in
    which case the new one waits its turn (``pending``). ``stripe_event_id`` names the Stripe
    event that asked for it (one operation per event and action). Raises ``LifecycleError``
    when the action is not allowed from the service's (projected) status.
    """
    if action not in RULES:
        raise LifecycleError(f"unknown action {action!r}")
    lock_service(service.id)
    if _request(service, action, actor=actor, detail=detail, payload=payload, stripe_event_id=stripe_event_id):
        _commit()
    return service


def _request(service: Service, action: str, *, actor: str, detail: str = "", payload: dict | None = None,
             stripe_event_id: str | None = None) -> bool:
    """``request`` on a service that is locked (or new in this transaction), without the commit;
    ``False`` when there is nothing to commit. Raises ``LifecycleError`` as ``request`` does
    (``action`` must be a key of ``RULES``)."""
    rule = RULES[action]
    if service.status in FINAL and not (service.status in rule.allowed_from):
        raise LifecycleError(f"the service is {service.status}")
    if action == "purge" and service.status in rule.allowed_from:  # a status refusal comes first
        from panel.plugins import backend_class

        cls = backend_class(service.backend)
        if cls is None or not cls.supports("purge"):
            raise LifecycleError(f"the {service.backend} backend keeps no data after termination")
    unfinished = _unfinished(service)
    if action == "terminate":
        if service.status == "pending_payment":
            raise LifecycleError("the service was never paid for: cancel it instead")
        if service.status not in rule.allowed_from:
            raise LifecycleError(f"cannot terminate a service that is {service.status}")
        running = next((op for op in unfinished if op.action == "terminate"), None)
        if running is not None:  # already on its way out: idempotent (a force makes it forced)
            if (payload or {}).get("force") and not (running.payload or {}).get("force"):
                running.payload = {**(running.payload or {}), "force": True}
                _event(service, "requested", actor, detail or "terminate forced", op=running)
                if running.state == "queued" and running.lease_owner is None:
                    _due_now(running)
                return True
            return False
        for op in unfinished:  # supersede whatever has not started yet
            if op.state in ("pending", "queued"):
                _cancel_unstarted(op, actor, "superseded by terminate")
        unfinished = [op for op in unfinished if op.state != "cancelled"]
    else:
        current = projected_status(service)
        if current not in rule.allowed_from:
            raise LifecycleError(f"cannot {action.replace('_', ' ')} a service that is {current}")
        if action != "provision" and service.status in NEEDS_OPERATOR:
            state = "has failed" if service.status == "failed" else "needs reconciling"
            raise LifecycleError(f"the service {state}: an operator must retry or terminate it first")
    op = Operation(service=service, action=action, actor=actor or "system", stripe_event_id=stripe_event_id,
                   payload=dict(payload or {}), state="pending")
    op.payload["prior_status"] = service.status
    if not unfinished:  # due at once: inserted so (one INSERT, no UPDATE after it)
        op.state, op.due_at = "queued", utcnow()
    db.session.add(op)
    db.session.flush()
    _event(service, "requested", actor, detail or f"{action.replace('_', ' ')} requested", op=op)
    if not unfinished:
        wake_after_commit("op", op.id)  # as _due_now
        _start(service, op, actor)
    return True


def _start(service: Service, op: Operation, actor: str) -> None:
    rule = RULES[op.action]
    word = RUNNING_WORDS[op.action] + "…"
    if rule.running and service.status != rule.running:
        _set_status(service, rule.running, actor=actor, kind="queued", op=op, status_detail=word,
                    detail=f"{op.action.replace('_', ' ')} queued")
    else:
        service.status_detail = word


def _cancel_op(op: Operation, actor: str, why: str) -> None:
    op.state = "cancelled"
    op.due_at = None
    op.finished_at = utcnow()
    op.last_error = why
    _event(op.service, "cancelled", actor, f"{op.action} cancelled: {why}", op=op)


def _cancel_unstarted(op: Operation, actor: str, why: str) -> None:
    """Cancel ``op`` unless a worker claimed it meanwhile (a guarded UPDATE decides; a claimed
    one stays unfinished and what supersedes it waits for it)."""
    claimed = db.session.execute(
        db.update(Operation).where(Operation.id == op.id, Operation.state.in_(("pending", "queued")),
                                   Operation.lease_owner.is_(None))
        .values(state="cancelled", due_at=None).execution_options(synchronize_session=False)).rowcount != 1
    if claimed:
        db.session.refresh(op)
        return
    _cancel_op(op, actor, why)


def cancel(service: Service, *, actor: str, detail: str = "") -> Service:
    """Cancel an order that was never paid (``pending_payment`` -> ``cancelled``); commits."""
    lock_service(service.id)
    if service.status != "pending_payment":
        raise LifecycleError(f"only an unpaid order can be cancelled (this one is {service.status})")
    for op in _unfinished(service):
        _cancel_op(op, actor, "order cancelled")
    _set_status(service, "cancelled", actor=actor, kind="cancelled", detail=detail or "order cancelled",
                status_detail=detail or "Cancelled before payment")
    _commit()
    return service


def retry(service: Service, *, actor: str) -> Operation:
    """An operator retries the failed operation of a ``failed`` or ``needs_reconcile`` service;
    commits (the operation is due at once, with a fresh retry budget).

    The service goes back to the status the operation runs in (e.g. ``provisioning``). A provision
    retried after ``needs_reconcile`` adopts what the backend made (provision is idempotent).
    """
    lock_service(service.id)
    if service.status not in NEEDS_OPERATOR:
        raise LifecycleError(f"only a failed service can be retried (this one is {service.status})")
    op = service.last_failed_operation
    if op is None:
        raise LifecycleError("this service has no failed operation to retry")
    rule = RULES[op.action]
    back_to = rule.running or op.payload.get("prior_status") or "active"
    op.attempts = 0
    op.lost_runs = 0
    op.finished_at = None
    op.payload = {k: v for k, v in (op.payload or {}).items() if k not in ("waiting_since", "waiting")}
    _due_now(op)
    _set_status(service, back_to, actor=actor, kind="retry", op=op,
                detail=f"{op.action} retried by {actor}", status_detail=RUNNING_WORDS[op.action] + "…")
    _commit()
    return op


# --------------------------------------------------------------------------- job reports

def started(op: Operation, *, took_over: bool = False, lost_runs: int = 0) -> None:
    """Record that a worker claimed ``op``: ``started`` on its first run, ``requeued`` when the
    claim took over a run that ended without reporting. Does not commit."""
    if took_over:
        _event(op.service, "requeued", "worker",
               f"{op.action} taken over: the run before ended without reporting (worker killed or cut "
               f"off; {lost_runs} such run(s) so far, not counted as attempts)", op=op)
    elif op.lease_token <= 1 and op.attempts == 0:
        _event(op.service, "started", "worker", f"{op.action} started", op=op)


def spec_for(service: Service) -> ServiceSpec:
    """The plain ``ServiceSpec`` a backend receives for ``service`` (secrets decrypted)."""
    secrets = {k: Secret(v) for k, v in crypto.decrypt_json(service.secrets_encrypted).items()}
    from panel.addons import effective_options

    return ServiceSpec(service_id=service.id, external_id=service.external_id, plan=service.plan.slug,
                       options=effective_options(service), params=dict(service.params or {}),
                       customer_id=service.user_id, customer_email=service.user.email,
                       resource_id=service.resource_id, backend_data=dict(service.backend_data or {}),
                       secrets=secrets)


def _store_result(service: Service, result: Provisioned | None) -> None:
    if not isinstance(result, Provisioned):
        return
    if result.resource_id is not None:
        service.resource_id = str(result.resource_id)
    service.backend_data = dict(result.data or {})
    service.hostname = hostname_for(service.params or {}, service.claim_key, service.backend_data) or service.hostname
    if result.secrets:
        merged = crypto.decrypt_json(service.secrets_encrypted)
        merged.update({k: (v.reveal() if isinstance(v, Secret) else str(v)) for k, v in result.secrets.items()})
        service.secrets_encrypted = crypto.encrypt_json(merged)


def succeed(op: Operation, result: Any = None, *, forced: str | None = None) -> None:
    """Record a successful operation, move the service on, and start its next waiting operation.

    ``forced``: for an operator's force-terminate that the backend could not carry out, the
    backend's message (kept as ``last_error``): the service is terminated all the same."""
    service = op.service
    rule = RULES[op.action]
    op.state = "succeeded"
    op.due_at = None
    op.finished_at = utcnow()
    op.last_error = forced
    detail = f"{op.action.replace('_', ' ')} succeeded"
    if forced is not None:
        detail = (f"terminated by force although the backend could not delete it ({forced}); what "
                  "remains on the backend is listed by panel reconcile")
    elif op.action == "purge":
        detail = "retained data purged"
    if op.action == "provision":
        _store_result(service, result)
    elif op.action == "change_plan":
        new_plan = db.session.get(Plan, op.payload.get("plan_id"))
        if new_plan is not None and new_plan.id != service.plan_id:
            detail = f"plan changed from {service.plan.slug} to {new_plan.slug}"
            service.plan = new_plan
        _store_result(service, result)
    elif op.action == "run_action":  # result: panel.client_area.perform's Provisioned (merged data)
        _store_result(service, result)
        detail = f"action {op.payload.get('name')} succeeded"
    if op.action in ("provision", "change_plan"):
        from panel.addons import confirm

        enabled, disabled = confirm(service, op.action, op.payload, operation_id=op.id)
        if enabled or disabled:
            detail += "; add-ons " + ", ".join([f"+{s}" for s in enabled] + [f"-{s}" for s in disabled])
    if op.action == "unsuspend":
        service.suspension_reason = None
    if op.action == "suspend":
        service.suspension_reason = op.payload.get("reason") or "operator"
    new = rule.done or service.status
    if service.status in NEEDS_OPERATOR:  # a retried non-status-changing operation recovers it
        new = rule.done or op.payload.get("prior_status") or "active"
    _set_status(service, new, actor="worker", kind="succeeded", op=op, detail=detail, status_detail="")
    _promote_next(service)
    _commit()


def _promote_next(service: Service) -> list[Operation]:
    """Start the first pending operation that still applies (cancelling those that do not)."""
    for op in service.operations:
        if op.state != "pending":
            continue
        rule = RULES[op.action]
        if op.action != "terminate" and service.status not in rule.allowed_from:
            _cancel_op(op, "system", f"no longer applies: the service is {service.status}")
            continue
        _due_now(op)
        _start(service, op, "system")
        return [op]
    return []


def waiting(op: Operation, message: str, delay_seconds: float, *, resource_id: str | None = None) -> None:
    """Record that the backend is still doing ``op`` (``panel.backends.InProgress``): it is asked
    again in ``delay_seconds`` (its ``due_at``), no attempt is spent. ``payload["waiting_since"]``
    (ISO 8601) marks when the wait began; the event log gets one ``waiting`` event per new
    ``message``, not one per poll. ``resource_id``: the remote id already known."""
    now = utcnow()
    op.state = "queued"
    op.due_at = now + timedelta(seconds=max(delay_seconds, 0))
    wake_after_commit("op", op.id, op.due_at)
    payload = dict(op.payload or {})
    payload.setdefault("waiting_since", now.isoformat())
    changed = payload.get("waiting") != message
    payload["waiting"] = message
    op.payload = payload
    service = op.service
    if resource_id and op.action == "provision":
        service.resource_id = str(resource_id)
    service.status_detail = f"{RUNNING_WORDS[op.action]}… ({message})"
    if changed:
        _event(service, "waiting", "worker", f"{op.action} in progress on the backend: {message}", op=op)
    _commit()


def retrying(op: Operation, message: str, delay_seconds: float) -> None:
    """Record a transient failure that will be retried in ``delay_seconds`` (its ``due_at``)."""
    op.state = "queued"
    op.due_at = utcnow() + timedelta(seconds=max(delay_seconds, 0))
    wake_after_commit("op", op.id, op.due_at)
    op.last_error = message
    service = op.service
    service.status_detail = f"{RUNNING_WORDS[op.action]}… (attempt {op.attempts} failed: {message}; " \
                            f"retrying in {int(delay_seconds)} s)"
    _event(service, "retrying", "worker", f"attempt {op.attempts} failed: {message}", op=op)
    _commit()


def fail(op: Operation, message: str) -> None:
    """Record a failed operation: the service goes to ``failed`` with ``message`` (shown to the
    customer and to operators, who can retry)."""
    service = op.service
    _finish_failed(op, message)
    if op.action in KEEPS_STATUS_ON_FAILURE:  # a failed custom action or purge leaves the service as it was
        what = f"action {op.payload.get('name')}" if op.action == "run_action" else op.action
        _event(service, "failed", "worker", f"{what} failed after {op.attempts} attempt(s): {message}", op=op)
        service.status_detail = ""
        _promote_next(service)
        _commit()
        return
    _set_status(service, "failed", actor="worker", kind="failed", op=op,
                detail=f"{op.action} failed after {op.attempts} attempt(s): {message}",
                status_detail=message)
    _after_giving_up(service)
    _commit()


def needs_reconcile(op: Operation, reason: str, *, resource_id: str | None = None) -> None:
    """Record a provision that ended without knowing what the backend made: the service goes to
    ``needs_reconcile``. ``reason`` (technical, for operators) is kept on the operation and the
    event; the customer reads a plain sentence. ``resource_id``: the remote id a lookup found,
    recorded so terminate can delete it and a retry adopts it. Does not commit inside
    ``one_transaction``."""
    service = op.service
    _finish_failed(op, reason)
    if resource_id:
        service.resource_id = str(resource_id)
    _set_status(service, "needs_reconcile", actor="worker", kind="needs_reconcile", op=op,
                detail=f"{op.action} needs an operator after {op.attempts} attempt(s): {reason}",
                status_detail=RECONCILE_DETAIL)
    _after_giving_up(service)
    _commit()


def _finish_failed(op: Operation, message: str) -> None:
    op.state = "failed"
    op.due_at = None
    op.finished_at = utcnow()
    op.last_error = message


def _after_giving_up(service: Service) -> None:
    """After a failure: a waiting terminate starts (it applies to a failed service); other waiting
    operations are cancelled, since an operator decides first."""
    for op in service.operations:
        if op.state == "pending" and op.action != "terminate":
            _cancel_op(op, "system", f"no longer applies: the service is {service.status.replace('_', ' ')}")
    _promote_next(service)


# --------------------------------------------------------------------------- the sweeper

def unblock_pending() -> list[Operation]:
    """Start pending operations whose predecessors are all finished (e.g. after a crash); the
    dispatcher runs it before each sweep. Commits when it started something."""
    started_ops = []
    service_ids = db.session.scalars(db.select(Operation.service_id).where(Operation.state == "pending")
                                     .distinct()).all()
    for service_id in service_ids:
        service = lock_service(service_id)  # a completion may be promoting it right now
        pending = [o for o in service.operations if o.state == "pending"]
        if not pending or (service.status in NEEDS_OPERATOR and pending[0].action != "terminate"):
            db.session.rollback()
            continue
        if not [o for o in service.operations if o.state in ("queued", "running")]:
            started_ops += _promote_next(service)
            _commit()
        else:
            db.session.rollback()
    return started_ops


def mark_lost(service: Service, message: str, *, actor: str) -> Operation:
    """Record that a live service's remote object is gone (found by reconcile): the service goes
    to ``failed`` with its ``provision`` operation failed again (a service has one), so an
    operator's retry rebuilds it (provision is idempotent on the external id). The remote id
    that no longer exists is forgotten. Commits."""
    return _fail_provision(service, message, actor=actor, forget_resource=True)


def mark_failed_remotely(service: Service, message: str, *, actor: str) -> Operation:
    """Record that a service active here has failed on the backend (reconcile: e.g. a Pterodactyl
    install that failed, a custom resource ``Ready=False``): the service goes to ``failed`` with
    ``message`` (the remote reason) and its ``provision`` operation failed again, so an operator's
    Retry runs provision, which adopts the remote object and reports what it finds. The remote id
    is kept. Commits."""
    return _fail_provision(service, message, actor=actor, forget_resource=False)


def _fail_provision(service: Service, message: str, *, actor: str, forget_resource: bool) -> Operation:
    op = next((o for o in service.operations if o.action == "provision"), None)
    if op is None:
        op = Operation(service=service, action="provision", actor=actor, payload={})
        db.session.add(op)
    op.state, op.attempts, op.lost_runs, op.due_at = "failed", 0, 0, None
    op.last_error, op.finished_at = message, utcnow()
    op.payload = {**(op.payload or {}), "prior_status": service.status}
    if forget_resource:
        service.resource_id = None
    db.session.flush()
    _set_status(service, "failed", actor=actor, kind="failed", op=op, detail=message, status_detail=message)
    _commit()
    return op
