"""What the UI and the API show about a service: details and usage from its backend, masked.

Backend calls are cached for a few seconds per service, so a polling page does not hammer the
remote API, and their failures become a message instead of an error page.
"""
from __future__ import annotations

import threading
import time

from flask import current_app

from panel import lifecycle
from panel.backends import BackendError, mask_secrets
from panel.models import Service
from panel.models.base import isoformat_utc
from panel.plugins import get_backend

_LOCK = threading.Lock()
TTL_SECONDS = 10.0
LIVE_STATUSES = ("active", "suspended")


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


def service_json(service: Service, *, live: bool = True) -> dict:
    """The API's view of a service: id, plan, backend, status, status_detail, params, details
    (masked), usage, created_at (ISO 8601) and, while one runs, the current operation."""
    op = service.current_operation
    out = {
        "id": service.id,
        "plan": service.plan.slug,
        "backend": service.backend,
        "status": service.status,
        "status_detail": service.status_detail,
        "params": mask_secrets(service.params or {}),
        "details": details(service) if live else {},
        "usage": usage(service) if live else {},
        "created_at": isoformat_utc(service.created_at),
        "operation": {"action": op.action, "state": op.state, "attempts": op.attempts} if op else None,
    }
    return out
