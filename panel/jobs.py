"""Jobs: run one operation by id under a lease, call its backend, record the outcome through
``panel.lifecycle``.

``run_operation(id)`` is the job of work kind ``op`` (``panel.dispatch``): with
``PANEL_REDIS_URL`` an RQ job on the ``panel`` queue that ``panel worker`` runs, without it the
same function on the in-process runner. It

1. claims the operation (``panel.work.claim``; a duplicate job gets nothing and returns
   "skipped"), records ``started`` (or ``requeued`` when it took over a run that died) and, for
   a provision, the intent (``services.create_attempted_at``), and commits that;
2. calls the backend with no transaction open, renewing the lease meanwhile;
3. records the outcome in one transaction that starts with the fencing check: a run whose
   lease was taken over records nothing ("stale").

The retry budget (``PANEL_JOB_RETRIES``) counts backend outcomes only: a run that died without
reporting is a lost run (``PANEL_JOB_MAX_LOST_RUNS`` of them in a row give up). Retry delays
(``PANEL_JOB_BACKOFF``) are the operation's ``due_at``. A provision that gives up after a create
may have reached the backend asks the backend to look it up: found or unknown, the service goes
to ``needs_reconcile`` (with the remote id when found), never ``failed`` with nothing recorded.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import func
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import joinedload

from panel import actions, dispatch, lifecycle, work
from panel.addons import target_options
from panel.backends import (BackendError, InProgress, NotSupportedError, PermanentBackendError, Resource,
                            ServiceSpec, TransientBackendError)
from panel.extensions import db
from panel.models import Operation, Plan, Service
from panel.models.base import utcnow

log = logging.getLogger(__name__)


def init_app(app) -> None:
    """Register work kind ``op``, usage sampling (every ``PANEL_USAGE_INTERVAL`` seconds), the
    retention purges (``purge_expired``, every ``PANEL_PURGE_INTERVAL`` seconds) and the DNS TXT
    checks of pending hostnames (every ``PANEL_DOMAIN_CHECK_INTERVAL`` seconds)."""
    dispatch.register_kind(app, dispatch.WorkKind("op", Operation, run_operation,
                                                  before_sweep=lifecycle.unblock_pending, id_from_key=int))
    if app.config["USAGE_INTERVAL"]:
        dispatch.register_periodic(app, "usage", app.config["USAGE_INTERVAL"], sample_usage)
    if app.config.get("PURGE_INTERVAL"):  # retained data whose retention window passed (Docker volumes...)
        dispatch.register_periodic(app, "retention", app.config["PURGE_INTERVAL"], purge_expired)
    if app.config.get("DOMAIN_CHECK_INTERVAL"):  # DNS TXT checks of customers' own hostnames
        from panel import names

        dispatch.register_periodic(app, "domains", app.config["DOMAIN_CHECK_INTERVAL"], names.check_pending)


@dataclass(frozen=True)
class Outcome:
    """What one backend call gave: ``kind`` is ``ok``, ``pending`` (``InProgress``: still being
    done remotely), ``transient``, ``permanent`` (a ``BackendError``), ``internal`` (any other
    exception) or ``lost`` (not called: too many lost runs); ``value`` the result or the
    exception; ``message`` the operator's sentence."""

    kind: str
    value: Any = None
    message: str = ""
    payload: dict | None = None  # merged into the operation's payload on success (run_action's message)


# --------------------------------------------------------------------------- the job

def run_operation(operation_id: int) -> str:
    """Job: perform operation ``operation_id``. Returns "succeeded", "retrying", "waiting" (the
    backend is still doing it: asked again later), "failed",
    "needs_reconcile", "skipped" (nothing due: a duplicate job) or "stale" (the lease was taken
    over; nothing recorded). Raises only when the database cannot be reached (the lease then
    expires and another run takes over). Needs an app context."""
    from panel.plugins import get_backend

    now = utcnow()
    lease = work.claim(Operation, operation_id, now=now,
                       values={"state": "running", "updated_at": now,
                               "started_at": func.coalesce(Operation.started_at, now)})
    if lease is None:
        return "skipped"
    op = lease.item  # as the claim's RETURNING left it
    service = db.session.get(Service, op.service_id, populate_existing=True,  # with what the spec needs
                             options=[joinedload(Service.plan, innerjoin=True),
                                      joinedload(Service.user, innerjoin=True)])
    lifecycle.started(op, took_over=lease.took_over, lost_runs=lease.lost_runs)
    create_attempted_before = service.create_attempted_at is not None
    if op.action == "provision" and not create_attempted_before:
        service.create_attempted_at = now
    action, payload, backend_name = op.action, dict(op.payload or {}), service.backend
    prior_attempts, service_id = op.attempts, service.id
    try:
        spec = lifecycle.spec_for(service)
        new_plan = db.session.get(Plan, payload.get("plan_id")) if action == "change_plan" else None
        # the new plan's options with the add-ons the operation applies (panel.addons)
        new_options = target_options(service, new_plan, payload) if new_plan is not None else None
        chosen = actions.find(service, payload.get("name")) if action == "run_action" else None
    except Exception as exc:  # e.g. secrets that no longer decrypt: recorded below as internal
        spec, new_options, chosen, setup_error = None, None, None, exc
    else:
        setup_error = None
    lifecycle.commit()  # the claim, its events and the provision intent, before any backend call

    backend = None
    with work.Heartbeat(lease) as beat:
        if lease.lost_runs > current_app.config["JOB_MAX_LOST_RUNS"]:
            outcome = Outcome("lost", message=f"gave up: the worker running it stopped {lease.lost_runs} times "
                                               "without reporting (killed, out of memory or cut off from the "
                                               "database); see the worker logs")
        else:
            try:
                if setup_error is not None:
                    raise setup_error
                backend = get_backend(backend_name)
                if action == "change_plan":
                    if new_options is None:
                        raise PermanentBackendError("the plan to change to no longer exists")
                    outcome = Outcome("ok", backend.change_plan(spec, new_options))
                elif action == "run_action":
                    value, update = actions.perform(chosen, payload, backend, spec)
                    outcome = Outcome("ok", value, payload=update)
                elif action == "terminate" and payload.get("force") and _accepts_force(backend.terminate):
                    outcome = Outcome("ok", backend.terminate(spec, force=True))
                else:
                    outcome = Outcome("ok", getattr(backend, action)(spec))
            except InProgress as exc:
                outcome = Outcome("pending", exc, _message(exc))
            except TransientBackendError as exc:
                outcome = Outcome("transient", exc, _message(exc))
            except BackendError as exc:
                outcome = Outcome("permanent", exc, _message(exc))
            except Exception as exc:
                log.exception("operation %s (%s) raised an unexpected error", operation_id, action)
                outcome = Outcome("internal", exc, f"internal error in the {backend_name} backend "
                                                   f"({type(exc).__name__}); see the worker log")
        retries = current_app.config["JOB_RETRIES"]
        counted = outcome.kind not in ("lost", "pending")
        attempts = prior_attempts + (1 if counted else 0)
        gives_up = outcome.kind in ("permanent", "internal", "lost") or (
            outcome.kind == "transient" and attempts > retries)
        if outcome.kind == "pending":
            waited = _waited_seconds(payload, now)
            if waited >= float(current_app.config["JOB_MAX_WAIT"]):
                gives_up = True
                outcome = Outcome("pending", outcome.value, f"{outcome.message} (still not finished after "
                                                            f"{int(waited)} s: PANEL_JOB_MAX_WAIT)")
        resolution = None
        if gives_up and action == "provision" and (
                create_attempted_before or outcome.kind in ("transient", "internal", "lost", "pending")):
            resolution = _look_up(backend_name, backend, spec)
    if beat.lost:
        log.warning("operation %s: the lease was lost while the backend call ran", operation_id)
    try:
        return _record(lease, service_id, outcome, attempts, counted, gives_up, resolution)
    except work.StaleLease as exc:
        db.session.rollback()
        log.warning("stale completion refused: %s (outcome was %s)", exc, outcome.kind)
        return "stale"
    except DBAPIError:
        db.session.rollback()
        raise


def _record(lease: work.Lease, service_id: int, outcome: Outcome, attempts: int, counted: bool,
            gives_up: bool, resolution: tuple[str, Resource | None, str] | None) -> str:
    """The completion transaction: lock the service (loading it, its plan, customer and
    operations fresh), fence, record the outcome, commit."""
    service = lifecycle.lock_service(service_id)
    work.fence(lease)
    op = next(o for o in service.operations if o.id == lease.id)
    op_id, action = op.id, op.action
    if counted:
        op.attempts = attempts
    with lifecycle.one_transaction():
        if outcome.kind == "ok":
            if outcome.payload:
                op.payload = {**(op.payload or {}), **outcome.payload}
            lifecycle.succeed(op, outcome.value)
            result = "succeeded"
        elif outcome.kind == "pending" and not gives_up:
            exc = outcome.value
            lifecycle.waiting(op, outcome.message, float(exc.retry_after if exc.retry_after is not None else 10),
                              resource_id=getattr(exc, "resource_id", None))
            result = "waiting"
        elif not gives_up:
            lifecycle.retrying(op, outcome.message, backoff_for(op.attempts, outcome.value))
            result = "retrying"
        elif op.action == "terminate" and (op.payload or {}).get("force"):
            lifecycle.succeed(op, None, forced=outcome.message)  # an operator's force-terminate ends it anyway
            result = "succeeded"
        else:
            message = outcome.message
            if outcome.kind == "transient":
                message = f"{message} (gave up after {op.attempts} attempts)"
            result = "failed"
            if resolution is not None:
                found, resource, detail = resolution
                if found == "found" and resource.state == "failed" and outcome.kind == "permanent":
                    # the backend made it and says it failed (e.g. a Pterodactyl install): failed, with
                    # the backend's message and the remote id recorded, and a Retry
                    op.service.resource_id = str(resource.resource_id) if resource.resource_id else op.service.resource_id
                elif found == "found":
                    lifecycle.needs_reconcile(
                        op, f"{message}; but the backend has {resource.resource_id or 'an object'} "
                            f"({resource.state}) for this service, so it was made: retry adopts it, "
                            "terminate deletes it", resource_id=resource.resource_id)
                    result = "needs_reconcile"
                elif found == "unknown":
                    lifecycle.needs_reconcile(
                        op, f"{message}; it may have been made on the backend, which cannot tell "
                            f"({detail}): check it (panel reconcile) before retrying or terminating")
                    result = "needs_reconcile"
            if result == "failed":
                lifecycle.fail(op, message)
    lifecycle.commit()
    log.info("operation %s (%s): %s", op_id, action, result)
    return result


def _accepts_force(method) -> bool:
    """Whether a backend's ``terminate`` takes the ``force`` keyword (Pterodactyl's does)."""
    import inspect

    try:
        return "force" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def _waited_seconds(payload: dict, now) -> float:
    """Seconds since the operation's backend first answered ``InProgress`` (0 before that)."""
    from datetime import datetime

    since = payload.get("waiting_since")
    if not since:
        return 0.0
    try:
        return max(0.0, (now - datetime.fromisoformat(since)).total_seconds())
    except (TypeError, ValueError):
        return 0.0


def _look_up(backend_name: str, backend, spec: ServiceSpec | None) -> tuple[str, Resource | None, str]:
    """Ask the backend whether a provision that may have reached it made something:
    ``("found", resource, "")``, ``("absent", None, "")`` or ``("unknown", None, why)``."""
    from panel.plugins import get_backend

    if spec is None:
        return "unknown", None, "the service's data could not be read"
    try:
        backend = backend or get_backend(backend_name)
        resource = backend.lookup(spec)
    except NotSupportedError as exc:
        return "unknown", None, _message(exc)
    except BackendError as exc:
        return "unknown", None, f"the lookup failed: {_message(exc)}"
    except Exception as exc:
        log.exception("lookup in the %s backend failed", backend_name)
        return "unknown", None, f"the lookup failed ({type(exc).__name__})"
    return ("found", resource, "") if resource is not None else ("absent", None, "")


def _message(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:2000]


def backoff_for(attempt: int, exc: Exception | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``PANEL_JOB_BACKOFF``; a larger
    ``Retry-After`` of a ``TransientBackendError`` wins)."""
    intervals = current_app.config["JOB_BACKOFF"] or [0]
    delay = float(intervals[min(max(attempt, 1) - 1, len(intervals) - 1)])
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        delay = max(delay, float(retry_after))
    return delay


# --------------------------------------------------------------------------- usage charts

def sample_usage(now=None) -> int:
    """Record one ``UsageSample`` for every active service (for the usage charts) and, for a plan
    with metered prices, its billable usage (the ``usage_sampled`` hook: ``panel.billing.metering``); drop samples
    older than ``PANEL_USAGE_RETENTION_DAYS``. Returns how many were recorded. A backend error
    skips that service; it never stops the others."""
    from datetime import timedelta

    from panel.models import Service, UsageSample
    from panel.plugins import get_backend

    now = now or utcnow()
    recorded = 0
    services = db.session.scalars(db.select(Service).where(Service.status == "active")).all()
    for service in services:
        try:
            usage = get_backend(service.backend).usage(lifecycle.spec_for(service))
        except BackendError as exc:
            log.info("usage of service %s unavailable: %s", service.id, exc)
            continue
        except Exception:
            log.exception("usage of service %s failed", service.id)
            continue
        if usage.metrics:
            db.session.add(UsageSample(service_id=service.id, at=now,
                                       metrics=[m.to_json() for m in usage.metrics]))
            # billable usage of a metered plan (billing's hook appends usage records)
            current_app.extensions["panel"].pm.hook.usage_sampled(service=service, metrics=usage.metrics, at=now)
            recorded += 1
    cutoff = now - timedelta(days=current_app.config["USAGE_RETENTION_DAYS"])
    db.session.execute(db.delete(UsageSample).where(UsageSample.at < cutoff))
    db.session.commit()
    return recorded


# --------------------------------------------------------------------------- retention purges

def purge_expired(now=None) -> dict[str, list[str]]:
    """A periodic task of ``panel worker`` (every ``PANEL_PURGE_INTERVAL`` seconds): ask every
    installed backend that implements ``Backend.purge_expired`` and is configured (and enabled, or
    still holding services) to delete retained data whose retention window passed. Each purged
    service (by external id) gets a ``purged`` event. Returns ``{backend: [external ids]}``; a
    backend that fails is logged and skipped, never stopping the others."""
    from panel.models import Service, ServiceEvent
    from panel.plugins import BackendNotConfigured, get_backend, is_enabled, plugins

    out: dict[str, list[str]] = {}
    for name, cls in sorted(plugins().backends.items()):
        if not cls.supports("purge_expired"):
            continue
        if not is_enabled(name) and not db.session.scalar(db.select(Service.id).where(Service.backend == name).limit(1)):
            continue
        try:
            purged = list(get_backend(name).purge_expired(now) or [])
        except BackendNotConfigured:
            continue
        except BackendError as exc:
            log.warning("retention purge of %s failed: %s", name, exc)
            continue
        except Exception:
            log.exception("retention purge of %s raised", name)
            continue
        out[name] = purged
        for service in db.session.scalars(db.select(Service).where(Service.backend == name,
                                                                   Service.external_id.in_(purged))) if purged else ():
            db.session.add(ServiceEvent(service=service, kind="purged", actor="retention", from_status=service.status,
                                        to_status=service.status,
                                        detail=f"retained data deleted: its retention window on {name} passed"))
        db.session.commit()
        if purged:
            log.info("retention: %s purged %d service(s)' data", name, len(purged))
    return out
