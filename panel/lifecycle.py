"""The service state machine: the ONE place where a service's status changes.

    pending_payment -> provisioning -> active <-> suspended -> terminating -> terminated
          |                 |            |            |             |
       cancelled         failed <--------+------------+-------------+   (an operator retries)

A request never calls a backend. It writes the status change and an ``Operation`` row in one
transaction, commits, then enqueues a job for the operation (``panel.jobs``). The job reports
back through ``claim`` / ``succeed`` / ``retrying`` / ``fail``. Operations of one service run one
at a time, in order: a request made while another operation is unfinished waits (``pending``)
and is started when the one before it succeeds. Every change appends a ``ServiceEvent``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import update

from panel import crypto
from panel.backends import Provisioned, Secret, ServiceSpec
from panel.extensions import db
from panel.models import Operation, Plan, Service, ServiceEvent, User
from panel.models.base import utcnow
from panel.models.services import OP_UNFINISHED

log = logging.getLogger(__name__)

FINAL = ("terminated", "cancelled")


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
    "terminate": Rule(frozenset({"provisioning", "active", "suspended", "failed", "terminating"}),
                      "terminating", "terminated"),
}

RUNNING_WORDS = {"provision": "Provisioning", "suspend": "Suspending", "unsuspend": "Resuming",
                 "change_plan": "Changing plan", "terminate": "Terminating"}


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


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


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
        pending = db.session.info.setdefault("panel_status_changes", [])
        pending.append((service.id, old, new))


def _commit() -> None:
    """Commit, then run ``service_status_changed`` hooks for what changed."""
    changes = db.session.info.pop("panel_status_changes", [])
    db.session.commit()
    if changes:
        from panel.plugins import notify_status_changed

        for service_id, old, new in changes:
            service = db.session.get(Service, service_id)
            if service is not None:
                notify_status_changed(snapshot(service), old, new)


def _enqueue(ops: list[Operation]) -> None:
    from panel import jobs

    for op in ops:
        jobs.enqueue(op.id)


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


def create_service(user: User, plan: Plan, params: dict[str, Any], *, actor: str,
                   claim_key: str | None = None) -> Service:
    """Record a new order. A free plan starts provisioning at once; a paid plan waits in
    ``pending_payment`` until billing calls ``request(service, "provision")``. Commits and
    enqueues. ``params`` must already be validated by the backend.
    """
    service = Service(user=user, plan=plan, backend=plan.backend, params=dict(params),
                      status="pending_payment", status_detail="", claim_key=claim_key)
    db.session.add(service)
    db.session.flush()
    _event(service, "created", actor, f"ordered plan {plan.slug}", old=None, new="pending_payment")
    if plan.is_free:
        return request(service, "provision", actor=actor, detail="free plan: no payment needed")
    service.status_detail = "Waiting for payment"
    _commit()
    return service


def request(service: Service, action: str, *, actor: str, detail: str = "",
            payload: dict | None = None) -> Service:
    """Ask for ``action`` (provision, suspend, unsuspend, terminate, change_plan) on ``service``.

    Writes the operation row (and the status change for provision/terminate), commits, and
    enqueues the job unless another operation of the service is still unfinished, in which case
    the new one waits its turn. Raises ``LifecycleError`` when the action is not allowed from
    the service's (projected) status.
    """
    if action not in RULES:
        raise LifecycleError(f"unknown action {action!r}")
    rule = RULES[action]
    if service.status in FINAL:
        raise LifecycleError(f"the service is {service.status}")
    unfinished = _unfinished(service)
    if action == "terminate":
        if service.status == "pending_payment":
            raise LifecycleError("the service was never paid for: cancel it instead")
        if service.status not in rule.allowed_from:
            raise LifecycleError(f"cannot terminate a service that is {service.status}")
        if any(op.action == "terminate" for op in unfinished):
            return service  # already on its way out: idempotent
        for op in unfinished:  # supersede whatever has not started yet
            if op.state in ("pending", "queued"):
                _cancel_op(op, actor, "superseded by terminate")
        unfinished = [op for op in unfinished if op.state == "running"]
    else:
        current = projected_status(service)
        if current not in rule.allowed_from:
            raise LifecycleError(f"cannot {action.replace('_', ' ')} a service that is {current}")
        if action != "provision" and service.status == "failed":
            raise LifecycleError("the service has failed: an operator must retry or terminate it first")
    op = Operation(service=service, action=action, actor=actor or "system",
                   payload=dict(payload or {}), state="pending" if unfinished else "queued")
    op.payload["prior_status"] = service.status
    db.session.add(op)
    db.session.flush()
    _event(service, "requested", actor, detail or f"{action.replace('_', ' ')} requested", op=op)
    to_enqueue = []
    if op.state == "queued":
        _start(service, op, actor)
        to_enqueue.append(op)
    _commit()
    _enqueue(to_enqueue)
    return service


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
    op.finished_at = utcnow()
    op.last_error = why
    _event(op.service, "cancelled", actor, f"{op.action} cancelled: {why}", op=op)


def cancel(service: Service, *, actor: str, detail: str = "") -> Service:
    """Cancel an order that was never paid (``pending_payment`` -> ``cancelled``); commits."""
    if service.status != "pending_payment":
        raise LifecycleError(f"only an unpaid order can be cancelled (this one is {service.status})")
    for op in _unfinished(service):
        _cancel_op(op, actor, "order cancelled")
    _set_status(service, "cancelled", actor=actor, kind="cancelled", detail=detail or "order cancelled",
                status_detail=detail or "Cancelled before payment")
    _commit()
    return service


def retry(service: Service, *, actor: str) -> Operation:
    """An operator retries the failed operation of a ``failed`` service; commits and enqueues.

    The service goes back to the status the operation runs in (e.g. ``provisioning``).
    """
    if service.status != "failed":
        raise LifecycleError(f"only a failed service can be retried (this one is {service.status})")
    op = service.last_failed_operation
    if op is None:
        raise LifecycleError("this service has no failed operation to retry")
    rule = RULES[op.action]
    back_to = rule.running or op.payload.get("prior_status") or "active"
    op.state = "queued"
    op.attempts = 0
    op.finished_at = None
    _set_status(service, back_to, actor=actor, kind="retry", op=op,
                detail=f"{op.action} retried by {actor}", status_detail=RUNNING_WORDS[op.action] + "…")
    _commit()
    _enqueue([op])
    return op


# --------------------------------------------------------------------------- job reports

def claim(operation_id: int) -> Operation | None:
    """Atomically move a queued operation to ``running`` (attempts + 1) for the calling job.

    Returns the operation, or ``None`` when it is not queued (already running elsewhere,
    finished, cancelled): the job then does nothing, which makes duplicate jobs harmless.
    """
    now = utcnow()
    result = db.session.execute(
        update(Operation).where(Operation.id == operation_id, Operation.state == "queued")
        .values(state="running", attempts=Operation.attempts + 1, started_at=now, updated_at=now)
        .execution_options(synchronize_session=False))
    db.session.commit()
    if result.rowcount != 1:
        return None
    op = db.session.get(Operation, operation_id)
    db.session.refresh(op)
    if op.attempts == 1:
        _event(op.service, "started", "worker", f"{op.action} started", op=op)
        _commit()
    return op


def spec_for(service: Service) -> ServiceSpec:
    """The plain ``ServiceSpec`` a backend receives for ``service`` (secrets decrypted)."""
    secrets = {k: Secret(v) for k, v in crypto.decrypt_json(service.secrets_encrypted).items()}
    return ServiceSpec(service_id=service.id, external_id=service.external_id, plan=service.plan.slug,
                       options=dict(service.plan.options or {}), params=dict(service.params or {}),
                       customer_id=service.user_id, customer_email=service.user.email,
                       resource_id=service.resource_id, backend_data=dict(service.backend_data or {}),
                       secrets=secrets)


def _store_result(service: Service, result: Provisioned | None) -> None:
    if not isinstance(result, Provisioned):
        return
    if result.resource_id is not None:
        service.resource_id = str(result.resource_id)
    service.backend_data = dict(result.data or {})
    if result.secrets:
        merged = crypto.decrypt_json(service.secrets_encrypted)
        merged.update({k: (v.reveal() if isinstance(v, Secret) else str(v)) for k, v in result.secrets.items()})
        service.secrets_encrypted = crypto.encrypt_json(merged)


def succeed(op: Operation, result: Any = None) -> None:
    """Record a successful operation, move the service on, and start its next waiting operation."""
    service = op.service
    rule = RULES[op.action]
    op.state = "succeeded"
    op.finished_at = utcnow()
    op.last_error = None
    detail = f"{op.action.replace('_', ' ')} succeeded"
    if op.action == "provision":
        _store_result(service, result)
    elif op.action == "change_plan":
        new_plan = db.session.get(Plan, op.payload.get("plan_id"))
        if new_plan is not None:
            detail = f"plan changed from {service.plan.slug} to {new_plan.slug}"
            service.plan = new_plan
        _store_result(service, result)
    if op.action == "unsuspend":
        service.suspension_reason = None
    if op.action == "suspend":
        service.suspension_reason = op.payload.get("reason") or "operator"
    new = rule.done or service.status
    if service.status == "failed":  # a retried non-status-changing operation recovers the service
        new = rule.done or op.payload.get("prior_status") or "active"
    _set_status(service, new, actor="worker", kind="succeeded", op=op, detail=detail, status_detail="")
    to_enqueue = _promote_next(service)
    _commit()
    _enqueue(to_enqueue)


def _promote_next(service: Service) -> list[Operation]:
    for op in service.operations:
        if op.state != "pending":
            continue
        rule = RULES[op.action]
        if op.action != "terminate" and service.status not in rule.allowed_from:
            _cancel_op(op, "system", f"no longer applies: the service is {service.status}")
            continue
        op.state = "queued"
        _start(service, op, "system")
        return [op]
    return []


def retrying(op: Operation, message: str, delay_seconds: float) -> None:
    """Record a transient failure that will be retried in ``delay_seconds``."""
    op.state = "queued"
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
    op.state = "failed"
    op.finished_at = utcnow()
    op.last_error = message
    _set_status(service, "failed", actor="worker", kind="failed", op=op,
                detail=f"{op.action} failed after {op.attempts} attempt(s): {message}",
                status_detail=message)
    _commit()


# --------------------------------------------------------------------------- the sweeper

def stale_operations(older_than_seconds: int, now: datetime | None = None) -> list[Operation]:
    """Unfinished operations not touched for ``older_than_seconds`` (candidates for re-enqueue)."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=older_than_seconds)
    ops = db.session.scalars(db.select(Operation).where(Operation.state.in_(("queued", "running")))
                             .order_by(Operation.id)).all()
    return [op for op in ops if _aware(op.updated_at) is None or _aware(op.updated_at) <= cutoff]


def requeue(op: Operation, why: str) -> None:
    """Put a lost operation back in ``queued`` (the sweeper found no live job for it); commits."""
    if op.state == "running":
        op.state = "queued"
    op.updated_at = utcnow()
    _event(op.service, "requeued", "sweeper", f"{op.action} re-enqueued: {why}", op=op)
    _commit()


def unblock_pending() -> list[Operation]:
    """Start pending operations whose predecessors are all finished (e.g. after a crash)."""
    started = []
    pending = db.session.scalars(db.select(Operation).where(Operation.state == "pending")).all()
    for op in pending:
        service = op.service
        if service.status == "failed":
            continue
        if not [o for o in service.operations if o.state in ("queued", "running")]:
            started += _promote_next(service)
    _commit()
    return started


def mark_lost(service: Service, message: str, *, actor: str) -> Operation:
    """Record that a live service's remote object is gone (found by reconcile): the service goes
    to ``failed`` with a failed ``provision`` operation, so an operator's retry rebuilds it
    (provision is idempotent on the external id). Commits."""
    op = Operation(service=service, action="provision", actor=actor, state="failed", attempts=0,
                   last_error=message, payload={"prior_status": service.status}, finished_at=utcnow())
    db.session.add(op)
    db.session.flush()
    _set_status(service, "failed", actor=actor, kind="failed", op=op, detail=message, status_detail=message)
    _commit()
    return op
