"""The client area: a backend's sections, credentials and actions for one service.

* ``sections(service)``: ``Backend.client_area`` plus every plugin's ``client_area_sections``
  hook, validated (only the ``panel.backends.SECTION_TYPES``), cached for a few seconds like the
  details (``panel.views``). Customers see these; operators also see the raw details.
* ``reveal(service, name)``: the value of one ``Credential`` those sections name (the route checks
  the password first); ``Backend.reveal_credential``.
* ``actions(service)``: ``Backend.actions`` plus the ``service_actions`` hook; ``request_action``
  records a ``run_action`` operation through ``panel.lifecycle`` (so it runs as a job, one at a
  time with the service's other operations, with progress on the page and a row in the event log);
  ``perform`` is what the job calls. ``actions``, ``find``, ``running_action`` and ``perform`` live
  in ``panel.actions`` (re-exported here), so the job path does not reach the page code.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from flask_babel import gettext as _

from panel import lifecycle
from panel.backends import (SECTION_TYPES, Action, ActionResult, Credential, Credentials,
                            PermanentBackendError, Provisioned, Secret, ValidationError, json_schema,
                            validate_model)
from panel.actions import LIVE_STATUSES, ActionError, _hook_results, actions, find, perform, running_action
from panel.models import Operation, Service
from panel.plugins import get_backend, plugins

log = logging.getLogger(__name__)

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
