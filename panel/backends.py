"""The plugin boundary: the ``Backend`` base class and the plain values that cross it.

A backend plugin is an adapter between hostpanel and one external system (a PDS deploy API,
Pterodactyl, Docker, Kubernetes...). The core hands it plain values and gets plain values back;
a backend never touches the panel's database or ORM objects.

Contract (ARCHITECTURE.md, "The plugin boundary"):

* every method is idempotent. ``provision`` is keyed on ``ServiceSpec.external_id`` and adopts
  what an earlier try made; suspending a suspended service or terminating a terminated one succeeds.
* errors are typed: ``TransientBackendError`` (timeouts, 5xx, 429: retried with backoff) or
  ``PermanentBackendError`` (validation, not found, unsupported: the service goes to ``failed``
  with the message, and an operator can retry). Any other exception is treated as permanent.
* secrets (settings marked ``secret=True`` and ``Provisioned.secrets``) arrive as ``Secret``
  values whose ``repr``/``str`` are masked; call ``.reveal()`` only where the value is sent.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, Iterable, Mapping

MASK = "••••••••"

__all__ = [
    "MASK", "Secret", "Field", "ValidationError", "validate_fields", "BackendError",
    "TransientBackendError", "PermanentBackendError", "NotSupportedError", "NoCapacityError",
    "ServiceSpec", "Provisioned", "Metric", "Usage", "Resource", "Backend", "mask_secrets",
]


class Secret:
    """A secret string whose ``repr`` and ``str`` are masked.

    ``Secret("ptla_abc").reveal()`` gives the value back. Equality compares the revealed values,
    so tests can compare secrets without printing them.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = "" if value is None else str(value)

    def reveal(self) -> str:
        """The plain value. Call only where it is sent to the external system."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    __str__ = lambda self: MASK  # noqa: E731

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return other._value == self._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):  # never pickle a secret into a job payload by accident
        raise TypeError("Secret values cannot be pickled")


# --------------------------------------------------------------------------- schemas

FIELD_TYPES = ("string", "integer", "number", "boolean", "choice", "json")


@dataclass(frozen=True)
class Field:
    """One declared field of a settings, plan-options or order-params schema.

    ``type`` is one of ``string``, ``integer``, ``number``, ``boolean``, ``choice`` or ``json``
    (any JSON value). ``minimum``/``maximum`` bound numbers, ``max_length`` and ``pattern``
    (a full-match regular expression) bound strings, ``choices`` lists allowed values.
    ``secret=True`` marks a value that is encrypted at rest and masked on display.
    ``unit`` documents the unit of a number ("MiB", "GiB", "%", "seconds").
    """

    name: str
    type: str = "string"
    label: str = ""
    required: bool = False
    default: Any = None
    secret: bool = False
    help: str = ""
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    pattern: str | None = None
    unit: str = ""

    def __post_init__(self):
        if self.type not in FIELD_TYPES:
            raise ValueError(f"field {self.name!r}: unknown type {self.type!r}")

    @property
    def title(self) -> str:
        """The label shown in forms (``label`` or the name humanised)."""
        return self.label or self.name.replace("_", " ").capitalize()

    def to_json(self) -> dict:
        """A JSON-schema-like description, used by the API and the OpenAPI document."""
        out = {"name": self.name, "type": self.type, "label": self.title, "required": self.required}
        for key in ("default", "help", "minimum", "maximum", "max_length", "pattern", "unit"):
            value = getattr(self, key)
            if value not in (None, "") and not (key == "default" and self.secret):
                out[key] = value
        if self.choices:
            out["choices"] = list(self.choices)
        if self.secret:
            out["secret"] = True
        return out


class ValidationError(ValueError):
    """Raised by ``validate_fields``; ``errors`` maps each bad field name to a message."""

    def __init__(self, errors: Mapping[str, str], message: str | None = None):
        self.errors = dict(errors)
        super().__init__(message or "; ".join(f"{k}: {v}" for k, v in self.errors.items()))


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _coerce(f: Field, value: Any) -> Any:
    """Coerce one value to the field's type or raise ``ValueError`` with a user-facing message."""
    if f.type == "string":
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError("must be a string")
        value = str(value).strip()
        if f.max_length is not None and len(value) > f.max_length:
            raise ValueError(f"must be at most {f.max_length} characters")
        if f.pattern and not re.fullmatch(f.pattern, value):
            raise ValueError(f"has an invalid format (expected {f.pattern})")
        return value
    if f.type in ("integer", "number"):
        if isinstance(value, bool):
            raise ValueError(f"must be a{'n integer' if f.type == 'integer' else ' number'}")
        try:
            if f.type == "integer":
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                num = int(str(value).strip()) if not isinstance(value, (int, float)) else int(value)
            else:
                num = float(value)
                if not math.isfinite(num):
                    raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"must be a{'n integer' if f.type == 'integer' else ' number'}") from None
        if f.minimum is not None and num < f.minimum:
            raise ValueError(f"must be at least {f.minimum:g}{' ' + f.unit if f.unit else ''}")
        if f.maximum is not None and num > f.maximum:
            raise ValueError(f"must be at most {f.maximum:g}{' ' + f.unit if f.unit else ''}")
        return num
    if f.type == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError("must be true or false")
    if f.type == "choice":
        for choice in f.choices:
            if value == choice or str(value) == str(choice):
                return choice
        raise ValueError("must be one of: " + ", ".join(map(str, f.choices)))
    return value  # json: any JSON value


def validate_fields(schema: Iterable[Field], data: Mapping[str, Any] | None, *,
                    allow_unknown: bool = False, apply_defaults: bool = True) -> dict:
    """Validate ``data`` against ``schema`` and return the cleaned values.

    Missing optional fields get their default (when ``apply_defaults``). Raises
    ``ValidationError`` whose ``errors`` name every bad field, including unknown ones unless
    ``allow_unknown``. Empty strings count as missing.
    """
    data = dict(data or {})
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    fields = list(schema)
    known = {f.name for f in fields}
    for f in fields:
        value = data.get(f.name)
        if value is None or (isinstance(value, str) and value.strip() == "" and f.type != "boolean"):
            if f.required:
                errors[f.name] = "is required"
            elif apply_defaults and f.default is not None:
                clean[f.name] = f.default
            continue
        try:
            clean[f.name] = _coerce(f, value)
        except ValueError as exc:
            errors[f.name] = str(exc)
    if not allow_unknown:
        for name in sorted(set(data) - known):
            errors[name] = "is not a known field"
    if errors:
        raise ValidationError(errors)
    return clean


# --------------------------------------------------------------------------- errors

class BackendError(Exception):
    """Base of the errors a backend raises. ``str(err)`` is shown to operators: keep secrets out."""


class TransientBackendError(BackendError):
    """A failure worth retrying: timeouts, connection errors, HTTP 5xx and 429.

    Jobs retry it with backoff; when the retries run out the service goes to ``failed``.
    ``retry_after`` (seconds) may carry the upstream's Retry-After hint.
    """

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class PermanentBackendError(BackendError):
    """A failure that retrying will not fix: validation, not found, unsupported, no capacity.

    The service goes to ``failed`` with this message; an operator fixes the cause and retries.
    ``fields`` may map input field names to messages (e.g. an upstream 422).
    """

    def __init__(self, message: str, fields: Mapping[str, str] | None = None):
        super().__init__(message)
        self.fields = dict(fields or {})


class NotSupportedError(PermanentBackendError):
    """The backend (or the remote host) does not offer this operation."""


class NoCapacityError(PermanentBackendError):
    """The backend cannot take this plan now (e.g. every node in the region is full)."""


# --------------------------------------------------------------------------- values

def _mask_mapping(values: Mapping[str, Any]) -> dict:
    return {k: MASK for k in values}


@dataclass(frozen=True)
class ServiceSpec:
    """What the core tells a backend about one service.

    * ``service_id``: our database id (int).
    * ``external_id``: our stable, unique id for the service (e.g. ``"hp-svc-42"``); use it as the
      idempotency key on the remote side (Pterodactyl ``external_id``, a Docker label, a K8s name).
    * ``plan``: the plan slug; ``options``: the plan's validated options.
    * ``params``: the customer's validated order params.
    * ``customer_id`` / ``customer_email``: the owning panel user.
    * ``resource_id``: the remote id that ``provision`` returned before (``None`` before that).
    * ``backend_data``: the ``Provisioned.data`` returned before (a plain JSON mapping).
    * ``secrets``: the ``Provisioned.secrets`` returned before, as ``Secret`` values.
    """

    service_id: int
    external_id: str
    plan: str
    options: Mapping[str, Any]
    params: Mapping[str, Any]
    customer_id: int
    customer_email: str
    resource_id: str | None = None
    backend_data: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, Secret] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return (f"ServiceSpec(service_id={self.service_id!r}, external_id={self.external_id!r}, "
                f"plan={self.plan!r}, resource_id={self.resource_id!r}, "
                f"secrets={_mask_mapping(self.secrets)!r})")


@dataclass(frozen=True)
class Provisioned:
    """What ``provision`` (and optionally ``change_plan``) returns.

    * ``resource_id``: the remote system's id for what was made (PDS service id, Pterodactyl
      server id, container id, custom resource name), as a string; ``None`` if it gave none.
    * ``data``: non-secret JSON state kept for later calls (``ServiceSpec.backend_data``) and shown
      to operators.
    * ``secrets``: values kept encrypted at rest (str or ``Secret``) and given back in
      ``ServiceSpec.secrets``; never shown.
    """

    resource_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"Provisioned(resource_id={self.resource_id!r}, data={dict(self.data)!r}, "
                f"secrets={_mask_mapping(self.secrets)!r})")


@dataclass(frozen=True)
class Metric:
    """One usage figure. ``unit`` is explicit: "bytes", "MiB", "GiB", "%", "seconds", "count".

    ``limit`` is the plan's limit in the same unit, when there is one.
    """

    name: str
    value: float
    unit: str
    label: str = ""
    limit: float | None = None

    def to_json(self) -> dict:
        """A JSON-ready dict of this value."""
        return dataclasses.asdict(self) | {"label": self.label or self.name.replace("_", " ")}


@dataclass(frozen=True)
class Usage:
    """What ``usage`` returns: metrics with units, and when they were measured (UTC)."""

    metrics: tuple[Metric, ...] = ()
    collected_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    note: str = ""

    def to_json(self) -> dict:
        """A JSON-ready dict of this value."""
        return {"metrics": [m.to_json() for m in self.metrics],
                "collected_at": self.collected_at.isoformat(), "note": self.note}


@dataclass(frozen=True)
class Resource:
    """One remote object we made, as listed by ``Backend.list_resources`` or found by
    ``Backend.lookup``.

    ``state`` is one of "active", "suspended", "provisioning", "failed" or "unknown".
    ``external_id`` is our external id when the remote object carries it ("" when it cannot,
    e.g. a PDS host); ``name`` is the remote name the service claims (``Backend.claim_key``'s
    value, e.g. a hostname), by which reconcile matches objects that carry no external id.
    """

    external_id: str
    resource_id: str | None
    state: str
    detail: str = ""
    name: str = ""


SECRET_KEY_PATTERN = re.compile(r"(pass(word)?|secret|token|api[_-]?key|private|credential)", re.I)


def mask_secrets(value: Any) -> Any:
    """Return a copy of a JSON value with every key that looks secret masked (recursively).

    Used on details before display: ``{"adminPassword": "x"}`` -> ``{"adminPassword": MASK}``.
    """
    if isinstance(value, Mapping):
        return {k: (MASK if isinstance(k, str) and SECRET_KEY_PATTERN.search(k) and v not in (None, "")
                    else mask_secrets(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v) for v in value]
    if isinstance(value, Secret):
        return MASK
    return value


# --------------------------------------------------------------------------- the base class

class Backend:
    """Base class of every backend. Subclass it, set ``name``, and register the class through the
    ``register_backends`` hook. The core instantiates it with validated settings.

    Class attributes:

    * ``name``: the plugin's id (lower case, e.g. ``"pds"``), used in plan files and settings.
    * ``label``: a human name.
    * ``admin_links``: ``(label, Flask endpoint)`` pairs of operator pages the plugin adds through
      ``register_blueprints``; the Plugins page links to them.
    * ``settings_schema``: ``Field``s an operator sets with ``panel plugins set`` (secrets marked).
    * ``plan_options_schema``: ``Field``s a plan's ``options`` must satisfy.
    * ``order_params_schema``: ``Field``s the customer fills in when ordering.

    Every operation method may raise ``TransientBackendError`` or ``PermanentBackendError``.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    admin_links: ClassVar[tuple[tuple[str, str], ...]] = ()
    settings_schema: ClassVar[tuple[Field, ...]] = ()
    plan_options_schema: ClassVar[tuple[Field, ...]] = ()
    order_params_schema: ClassVar[tuple[Field, ...]] = ()

    def __init__(self, settings: Mapping[str, Any]):
        """``settings`` are validated against ``settings_schema``; secret ones are ``Secret``."""
        self.settings = dict(settings)

    def __repr__(self) -> str:
        shown = {k: (MASK if isinstance(v, Secret) else v) for k, v in self.settings.items()}
        return f"{type(self).__name__}(name={self.name!r}, settings={shown!r})"

    # -- validation hooks (override to add checks beyond the schema)
    def validate_plan_options(self, options: Mapping[str, Any]) -> dict:
        """Validate a plan's options; returns the cleaned mapping or raises ``ValidationError``."""
        return validate_fields(self.plan_options_schema, options)

    def validate_order_params(self, params: Mapping[str, Any], options: Mapping[str, Any]) -> dict:
        """Validate a customer's order params for a plan with ``options``.

        Returns the cleaned mapping or raises ``ValidationError`` (field name -> message).
        """
        return validate_fields(self.order_params_schema, params)

    # -- operations
    def test_connection(self) -> str:
        """Check the settings against the remote system; returns a one-line summary."""
        raise NotSupportedError(f"{self.name}: test_connection is not implemented")

    def check_capacity(self, options: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        """Raise ``NoCapacityError`` if a service of this plan cannot be placed now.

        Called before checkout so a customer is never charged for a server that cannot be made.
        The default accepts everything.
        """

    def claim_key(self, spec: ServiceSpec) -> tuple[str, str] | None:
        """The name this service will take on the remote side, as ``(order param, value)``, e.g.
        ``("hostname", "alice.pds.example.com")``; ``None`` when names cannot collide.

        The core refuses an order whose key a live service of the same backend already holds
        (a field-level "already in use"), so two services never map to one remote object.
        Called with a draft spec (``service_id`` 0, ``external_id`` ""). Raise
        ``PermanentBackendError`` (with ``fields``) for params that cannot be resolved.
        """
        return None

    def provision(self, spec: ServiceSpec) -> Provisioned:
        """Create the service, or adopt the one an earlier try made for ``spec.external_id``."""
        raise NotImplementedError

    def suspend(self, spec: ServiceSpec) -> None:
        """Stop the service without losing data. Suspending a suspended service succeeds."""
        raise NotImplementedError

    def unsuspend(self, spec: ServiceSpec) -> None:
        """Resume a suspended service. Unsuspending a running service succeeds."""
        raise NotImplementedError

    def terminate(self, spec: ServiceSpec) -> None:
        """Delete the service. Terminating what is already gone succeeds."""
        raise NotImplementedError

    def change_plan(self, spec: ServiceSpec, new_options: Mapping[str, Any]) -> Provisioned | None:
        """Apply a new plan's options to a running service (optional).

        Returns a new ``Provisioned`` when the stored data should change, else ``None``.
        """
        raise NotSupportedError(f"{self.label or self.name} does not support changing plans")

    def usage(self, spec: ServiceSpec) -> Usage:
        """Current usage, each metric with its unit."""
        return Usage()

    def details(self, spec: ServiceSpec) -> dict:
        """What the customer sees about the service (hostname, address, state...).

        A JSON mapping; the core masks secret-looking keys again before display.
        """
        return dict(spec.backend_data)

    def list_resources(self) -> list[Resource]:
        """Every remote object this backend made for the panel (for ``panel reconcile``)."""
        raise NotSupportedError(f"{self.label or self.name} cannot list its resources")

    def lookup(self, spec: ServiceSpec) -> Resource | None:
        """Find what ``provision`` made for ``spec`` without changing anything: the ``Resource``,
        or ``None`` when nothing exists. The core asks after a provision whose answer was lost
        gave up, to tell "never made" (the service fails) from "made" or "cannot tell" (the
        service goes to ``needs_reconcile``). Raise ``TransientBackendError`` when the remote
        cannot answer now, ``NotSupportedError`` when it cannot be looked up at all.

        The default searches ``list_resources()`` for ``spec.external_id``; override it when the
        remote has a cheaper lookup (the PDS backend asks by hostname).
        """
        if not self.supports("list_resources"):
            raise NotSupportedError(f"{self.label or self.name} can neither look up nor list what it made")
        for resource in self.list_resources():
            if resource.external_id and resource.external_id == spec.external_id:
                return resource
        return None

    @classmethod
    def validate_setting(cls, key: str, value: Any) -> Any:
        """Check one setting beyond its ``Field`` (e.g. the shape of a JSON setting) when an operator
        stores it; returns the value to store or raises ``ValidationError`` naming ``key``."""
        return value

    @classmethod
    def supports(cls, method: str) -> bool:
        """True when the subclass overrides an optional method (``change_plan``,
        ``list_resources``...).
        """
        return getattr(cls, method) is not getattr(Backend, method)
