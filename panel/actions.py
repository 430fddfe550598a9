"""A service's custom actions (WHMCS custom buttons): what the job path needs of the client area.

``actions(service)`` is ``Backend.actions`` plus the ``service_actions`` hook; ``find`` picks one by
name; ``running_action`` is the service's unfinished ``run_action`` operation; ``perform`` is what
the ``run_action`` job calls. The pages' side (sections, credentials, ``request_action``) is
``panel.client_area``, which re-exports these.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from panel import lifecycle
from panel.backends import Action, ActionResult, PermanentBackendError, Provisioned
from panel.models import Operation, Service
from panel.plugins import get_backend, plugins

log = logging.getLogger(__name__)

LIVE_STATUSES = ("active", "suspended")


class ActionError(LookupError):
    """The action does not exist for this service or is not available now (message for people)."""


def _hook_results(hook, **kwargs) -> list:
    out = []
    try:
        results = hook(**kwargs)
    except Exception:  # a plugin's hook must never break the service page
        log.exception("a %s hook failed", getattr(hook, "name", "client area"))
        return out
    for result in results or []:
        if result is None:
            continue
        out.extend(result if isinstance(result, (list, tuple)) else [result])
    return out


def actions(service: Service) -> list[Action]:
    """Every action of the service: the backend's first, then the ``service_actions`` hook's
    (a name the backend already uses is ignored). Empty unless the service is live."""
    if service.status not in LIVE_STATUSES:
        return []
    try:
        spec = lifecycle.spec_for(service)
        found = list(get_backend(service.backend).actions(spec) or [])
    except Exception:  # an unconfigured backend or a plugin bug: no buttons, not an error page
        log.exception("actions of service %s", service.id)
        return []
    names = {a.name for a in found if isinstance(a, Action)}
    out = [a for a in found if isinstance(a, Action)]
    for action in _hook_results(plugins().pm.hook.service_actions, service=lifecycle.snapshot(service), spec=spec):
        if not isinstance(action, Action) or action.handler is None:
            log.warning("a service_actions hook returned %r without a handler; ignored", action)
        elif action.name not in names:
            names.add(action.name)
            out.append(action)
    return out


def find(service: Service, name: str) -> Action | None:
    """The action ``name`` of ``service``, or ``None``."""
    return next((a for a in actions(service) if a.name == name), None)


def running_action(service: Service) -> Operation | None:
    """The unfinished ``run_action`` operation of the service, if any."""
    op = service.current_operation
    return op if op is not None and op.action == "run_action" else None


def perform(action: Action | None, payload: Mapping[str, Any], backend, spec) -> tuple[Provisioned, dict]:
    """Job side of ``run_action`` (called with no transaction open): run ``action`` (found with
    ``find`` before the call; ``payload`` is the operation's) and return the service's new state
    as a ``Provisioned`` (``data`` = the backend data with the result's changes merged in,
    ``secrets`` = the result's new secrets) for ``lifecycle.succeed``, with the payload update
    ``{"message": ...}`` (the result's customer message, at most 500 characters). Raises
    ``PermanentBackendError`` when the action is gone or the backend returned something else
    than an ``ActionResult``."""
    name = payload.get("name")
    params = dict(payload.get("params") or {})
    if action is None:
        raise PermanentBackendError(f"action {name!r} is no longer offered for this service")
    result = action.handler(spec, params) if action.handler is not None else backend.run_action(spec, name, params)
    if result is None:
        result = ActionResult()
    if not isinstance(result, ActionResult):
        raise PermanentBackendError(f"action {name!r} returned {type(result).__name__}, not an ActionResult")
    data = dict(spec.backend_data or {})
    for key, value in dict(result.data or {}).items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return (Provisioned(resource_id=None, data=data, secrets=dict(result.secrets or {})),
            {"message": str(result.message or "")[:500]})


