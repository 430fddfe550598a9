"""What the UI and the API show about a service: details and usage from its backend, masked.

Backend calls are cached for a few seconds per service, so a polling page does not hammer the
remote API, and their failures become a message instead of an error page.
"""
from __future__ import annotations

import threading
import time

from flask import current_app
from sqlalchemy.orm import joinedload

from panel import lifecycle
from panel.backends import BackendError, mask_secrets
from panel.models import Service
from panel.models.base import isoformat_utc
from panel.plugins import get_backend

_LOCK = threading.Lock()
TTL_SECONDS = 10.0
LIVE_STATUSES = ("active", "suspended")


def load_service(service_id: int) -> Service | None:
    """The service ``service_id`` with its operations, read in one SELECT, or ``None``.

    A service page shows the status and the operation in progress, and polls only while one runs.
    Read apart (the service first, its operations lazily after the backend calls that build the
    page), a job that finishes in between leaves the old status with no operation: a page that
    never updates. One statement is one snapshot, on PostgreSQL and on SQLite alike."""
    from panel.extensions import db

    return db.session.get(Service, service_id, options=[joinedload(Service.operations)])


def _cache() -> dict:
    return current_app.extensions.setdefault("panel_view_cache", {})


def _cached(service: Service, what: str, fetch) -> dict:
    key = (service.id, what, service.status, service.updated_at)
    now = time.monotonic()
    cache = _cache()
    with _LOCK:
        hit = cache.get(key)
        if hit and now - hit[0] < TTL_SECONDS:
            return hit[1]
    try:
        value = fetch()
    except BackendError as exc:
        value = {"error": str(exc)}
    except Exception as exc:  # a plugin bug must not break the page
        value = {"error": f"{what} unavailable ({type(exc).__name__})"}
    with _LOCK:
        if len(cache) > 10000:
            cache.clear()
        cache[key] = (now, value)
    return value


def details(service: Service) -> dict:
    """The backend's details of a live service, secrets masked (``{}`` before it is live)."""
    if service.status not in LIVE_STATUSES:
        return {}
    return _cached(service, "details", lambda: mask_secrets(
        get_backend(service.backend).details(lifecycle.spec_for(service))))


def usage(service: Service) -> dict:
    """``Usage.to_json()`` of a live service (``{}`` before it is live)."""
    if service.status not in LIVE_STATUSES:
        return {}
    return _cached(service, "usage", lambda: get_backend(service.backend).usage(
        lifecycle.spec_for(service)).to_json())


def service_json(service: Service, *, live: bool = True, operator: bool = True) -> dict:
    """The API's view of a service: id, plan, backend, status, status_detail, params, usage,
    created_at (ISO 8601) and, while one runs, the current operation.

    ``operator=True`` (operators' tokens and pages) adds the raw ``details`` and keeps
    ``status_detail`` as the backend said it. For customers (``operator=False``) ``status_detail``
    is the customer's sentence (``panel.messages``: never upstream text), ``message`` holds the
    headline/text/tone, and ``client_area`` (the backend's sections, no secret values) and
    ``actions`` replace the raw details."""
    from panel import client_area, messages

    op = service.current_operation
    out = {
        "id": service.id,
        "plan": service.plan.slug,
        "backend": service.backend,
        "status": service.status,
        "status_detail": service.status_detail,
        "params": mask_secrets(service.params or {}),
        "usage": usage(service) if live else {},
        "created_at": isoformat_utc(service.created_at),
        "operation": {"action": op.action, "state": op.state, "attempts": op.attempts,
                      "label": (op.payload or {}).get("label") if op.action == "run_action" else None}
        if op else None,
    }
    if operator:
        out["details"] = details(service) if live else {}
        return out
    message = messages.customer_status(service)
    out["status_label"] = messages.status_label(service.status)
    out["status_detail"] = " ".join(p for p in (message.headline, message.text) if p)
    out["message"] = message.to_json()
    if op is not None and op.attempts and op.state == "queued":
        out["operation"]["attempts"] = op.attempts  # a retry: no upstream error for customers
    if live:
        found = client_area.sections(service)
        out["client_area"] = client_area.to_json(found.get("sections") or [])
        out["actions"] = [client_area.action_json(a) for a in client_area.actions(service)]
        if isinstance(out["usage"], dict) and out["usage"].get("error"):
            out["usage"] = {"error": "usage is unavailable right now"}
    return out
