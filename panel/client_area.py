"""The client area: a backend's sections, credentials and actions for one service.

* ``sections(service)``: ``Backend.client_area`` plus every plugin's ``client_area_sections``
  hook, validated (only the ``panel.backends.SECTION_TYPES``), cached for a few seconds like the
  details (``panel.views``). Customers see these; operators also see the raw details.
* ``reveal(service, name)``: the value of one ``Credential`` those sections name (the route checks
  the password first); ``Backend.reveal_credential``.
* ``actions(service)``: ``Backend.actions`` plus the ``service_actions`` hook; ``request_action``
  records a ``run_action`` operation through ``panel.lifecycle`` (so it runs as a job, one at a
  time with the service's other operations, with progress on the page and a row in the event log);
  ``perform`` is what the job calls.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from flask_babel import gettext as _

from panel import lifecycle
from panel.backends import (SECTION_TYPES, Action, ActionResult, Credential, Credentials,
                            PermanentBackendError, Provisioned, Secret, ValidationError, json_schema,
                            validate_model)
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


def _valid_sections(found: list, origin: str) -> list:
    out = []
    for section in found:
        if isinstance(section, SECTION_TYPES):
            out.append(section)
        else:
            log.warning("%s returned %r, which is not a client-area section; ignored", origin, type(section))
    return out


def sections(service: Service) -> dict:
    """``{"sections": [...]}`` of a live service, or ``{"error": message}`` (for operators; the
    customer page shows a plain "unavailable right now"), ``{"sections": []}`` before it is live."""
    if service.status not in LIVE_STATUSES:
        return {"sections": []}
    from panel import views

    def fetch():
        spec = lifecycle.spec_for(service)
        found = _valid_sections(list(get_backend(service.backend).client_area(spec) or []),
                                f"{service.backend}.client_area")
        found += _valid_sections(_hook_results(plugins().pm.hook.client_area_sections,
                                               service=lifecycle.snapshot(service), spec=spec),
                                 "a client_area_sections hook")
        return {"sections": found}

    return views._cached(service, "client_area", fetch)


def credential(service: Service, name: str) -> Credential | None:
    """The ``Credential`` called ``name`` among the service's sections, or ``None``."""
    for section in sections(service).get("sections") or []:
        if isinstance(section, Credentials):
            for cred in section.credentials:
                if cred.name == name:
                    return cred
    return None


def reveal(service: Service, name: str) -> str:
    """The plain value of credential ``name`` (only one the client area offers). Raises
    ``ActionError`` when there is none and ``BackendError`` when the backend cannot tell."""
    if credential(service, name) is None:
        raise ActionError(f"this service has no credential {name!r}")
    value = get_backend(service.backend).reveal_credential(lifecycle.spec_for(service), name)
    return value.reveal() if isinstance(value, Secret) else str(value)


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


def request_action(service: Service, name: str, params: Mapping[str, Any] | None, *, actor: str) -> Operation:
    """Record action ``name`` as a ``run_action`` operation (a job runs it). Raises ``ActionError``
    (unknown or unavailable now), ``ValidationError`` (bad params) or ``LifecycleError``."""
    action = find(service, name)
    if action is None:
        raise ActionError(_("This action is not available for this service."))
    if service.status not in action.statuses:
        raise ActionError(_("%(action)s is not available while the service is %(status)s.", action=action.label,
                                status=service.status.replace("_", " ")))
    if running_action(service) is not None:
        raise ActionError(_("Another action is still running; wait until it has finished."))
    if any(f.secret for f in action.fields):  # payloads are stored in clear: no secrets in them
        raise ActionError(f"{action.label} declares a secret parameter, which actions cannot take")
    clean = validate_model(action.params, params or {}) if action.params is not None else {}
    lifecycle.request(service, "run_action", actor=actor, detail=f"{action.label} requested",
                      payload={"name": action.name, "label": action.label, "params": clean})
    return service.operations[-1]


def perform(op: Operation, backend, spec) -> Provisioned:
    """Job side of ``run_action``: run the action and return the service's new state as a
    ``Provisioned`` (``data`` = the backend data with the result's changes merged in, ``secrets`` =
    the result's new secrets) for ``lifecycle.succeed``. Keeps the result's customer message in
    ``op.payload["message"]``. Raises ``PermanentBackendError`` when the action is gone or the
    backend returned something else than an ``ActionResult``."""
    name = (op.payload or {}).get("name")
    params = dict((op.payload or {}).get("params") or {})
    action = next((a for a in actions(op.service) if a.name == name), None)
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
    op.payload = {**(op.payload or {}), "message": str(result.message or "")[:500]}
    return Provisioned(resource_id=None, data=data, secrets=dict(result.secrets or {}))


def to_json(items: list) -> list[dict]:
    """The sections as JSON (API): ``{"kind", "title", ...fields}``; credentials list only names."""
    import dataclasses

    out = []
    for section in items:
        body = dataclasses.asdict(section)
        body["kind"] = section.kind
        out.append(body)
    return out


def action_json(action: Action) -> dict:
    """An action as JSON (API): name, label, confirm, destructive, statuses, description, params."""
    return {"name": action.name, "label": action.label, "confirm": action.confirm,
            "destructive": action.destructive, "statuses": list(action.statuses),
            "description": action.description, "params": json_schema(action.params) if action.params is not None else None}


__all__ = ["sections", "credential", "reveal", "actions", "find", "request_action", "perform",
           "running_action", "to_json", "action_json", "ActionError", "ValidationError"]
