"""``audit.record(...)``: the one call every operator action makes (web console and CLI).

::

    from panel import audit
    audit.record(current_user, "service.suspend", service, before={"status": "active"})
    audit.record("cli", "plugin.setting.set", ("plugin", "pds"), after={"api_token": "••••••••"})

Rows go to ``audit_log`` (``panel.models.AuditEntry``) in the caller's transaction: commit as
usual (the CLI and the routes commit right after the change they record). Values under keys that
look secret (``password``, ``token``, ``secret``, ``key``...) are masked, whatever the caller
passed.
"""
from __future__ import annotations

import getpass
from typing import Any

from panel.backends import MASK
from panel.extensions import db
from panel.models import AuditEntry

SECRET_WORDS = ("password", "token", "secret", "api_key", "apikey", "key", "totp", "recovery", "credential")


def _mask(value: Any, key: str = "") -> Any:
    if key and any(word in key.lower() for word in SECRET_WORDS) and value not in (None, ""):
        return MASK
    if isinstance(value, dict):
        return {str(k): _mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _target(target: Any) -> tuple[str, str]:
    if target is None:
        return "", ""
    if isinstance(target, tuple):
        return str(target[0]), str(target[1])
    kind = getattr(target, "__tablename__", type(target).__name__).rstrip("s")
    ident = getattr(target, "id", None)
    if ident is None:
        ident = getattr(target, "slug", None) or getattr(target, "name", "")
    return kind, str(ident)


def _actor(actor: Any) -> tuple[str, int | None]:
    if actor is None or actor == "cli":
        try:
            who = getpass.getuser()
        except Exception:  # no login name in some containers
            who = "?"
        return f"cli:{who}", None
    if isinstance(actor, str):
        return actor, None
    email = getattr(actor, "email", None)
    role = "operator" if getattr(actor, "is_operator", False) else "customer"
    return f"{role}:{email}", getattr(actor, "id", None)


def _address() -> str:
    from flask import has_request_context, request

    return (request.remote_addr or "")[:45] if has_request_context() else ""


def record(actor: Any, action: str, target: Any = None, *, before: dict | None = None,
           after: dict | None = None, detail: str = "") -> AuditEntry:
    """Append one audit row (not committed: the caller commits with its change).

    ``actor``: a ``User`` (the operator), ``"cli"``/``None`` (the command line, with the OS user)
    or a plain string. ``action``: a dotted verb (``service.retry``). ``target``: a model row
    (type and id are taken from it) or a ``(type, id)`` tuple. ``before``/``after``: small JSON
    mappings of what changed; secret-looking keys are masked. The client address comes from the
    request (after ``PANEL_TRUSTED_PROXIES``).
    """
    name, actor_id = _actor(actor)
    kind, ident = _target(target)
    entry = AuditEntry(actor=name[:300], actor_id=actor_id, action=action[:64], target_type=kind[:32],
                       target_id=ident[:64], before=_mask(before) if before is not None else None,
                       after=_mask(after) if after is not None else None, detail=str(_mask(detail))[:2000],
                       ip_address=_address())
    db.session.add(entry)
    return entry


def commit() -> None:
    """Commit the audit rows recorded after a change that committed on its own."""
    db.session.commit()


def record_setting(actor: Any, plugin: str, key: str, value: Any) -> AuditEntry:
    """Record that setting ``key`` of backend ``plugin`` was stored (``value``) or removed (``None``)
    and commit; a secret setting (a ``SecretStr`` field of the backend's ``Settings``) is recorded
    masked."""
    from panel.backends import schema_fields
    from panel.plugins import backend_class

    try:
        secret = any(f.name == key and f.secret for f in schema_fields(backend_class(plugin).Settings))
    except Exception:  # an unknown backend: treat as secret
        secret = True
    shown = None if value is None else (MASK if secret else value)
    entry = record(actor, "plugin.setting.unset" if value is None else "plugin.setting.set",
                   ("plugin", plugin), after={"setting": key, "value": shown})
    db.session.commit()
    return entry


def record_catalog_import(actor: Any, report, *, source: str = "") -> AuditEntry:
    """Record a catalog import (``panel.catalog.ImportReport``) and commit."""
    entry = record(actor, "plans.import", ("catalog", source[:64]),
                   after={"created": list(report.created), "updated": list(report.updated),
                          "unchanged": len(report.unchanged)})
    db.session.commit()
    return entry
