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
* secrets (``SecretStr`` settings and ``Provisioned.secrets``) arrive as ``Secret`` values
  whose ``repr``/``str`` are masked; call ``.reveal()`` only where the value is sent.
* settings, plan options and order params are pydantic models (``Schema`` subclasses nested in
  the backend as ``Settings``, ``PlanOptions`` and ``OrderParams``); the panel's forms, CLI and
  OpenAPI document are generated from their JSON Schema.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, Mapping

from pydantic import BaseModel, ConfigDict, SecretStr
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import to_jsonable_python

MASK = "••••••••"

__all__ = [
    "MASK", "Secret", "Schema", "SchemaField", "ValidationError", "validate_model", "validate_field",
    "schema_fields", "json_schema", "error_messages", "BackendError",
    "TransientBackendError", "PermanentBackendError", "NotSupportedError", "NoCapacityError", "InProgress",
    "ServiceSpec", "Provisioned", "Metric", "Usage", "Resource", "Backend", "mask_secrets",
    "BillableMetric", "AGGREGATES", "billable",
]


class Secret(SecretStr):
    """A secret string whose ``repr`` and ``str`` are masked and which is never pickled.

    ``Secret`` *is* pydantic's ``SecretStr`` (a subclass): a ``SecretStr`` field of a schema accepts
    it unchanged and ``.get_secret_value()`` works on it. It adds the guarantees the plugin boundary
    needs: ``repr``/``str`` show ``MASK``; pickling (hence an RQ job payload) raises ``TypeError``;
    equality compares the revealed values (with any ``SecretStr``), so tests can compare secrets
    without printing them. The core turns every ``SecretStr`` a schema validates into a ``Secret``.

    ``Secret("ptla_abc").reveal()`` gives the value back.
    """

    def __init__(self, value: str | SecretStr | None):
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        super().__init__("" if value is None else str(value))

    def reveal(self) -> str:
        """The plain value. Call only where it is sent to the external system."""
        return self.get_secret_value()

    def __bool__(self) -> bool:
        return bool(self.get_secret_value())

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SecretStr):
            return other.get_secret_value() == self.get_secret_value()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Secret", self.get_secret_value()))

    def __reduce_ex__(self, protocol):  # never pickle a secret into a job payload by accident
        raise TypeError("Secret values cannot be pickled")

    __reduce__ = lambda self: self.__reduce_ex__(2)  # noqa: E731


# --------------------------------------------------------------------------- schemas

def _title(name: str, _info: Any) -> str:
    return name.replace("_", " ").capitalize()


class Schema(BaseModel):
    """Base of every backend's ``Settings``, ``PlanOptions`` and ``OrderParams`` (a pydantic v2 model).

    Declare fields the pydantic way; the panel reads this metadata from the generated JSON Schema::

        class Settings(Schema):
            api_url: str = Field(title="API URL", description="e.g. https://api.example.com",
                                 pattern=r"^https?://\\S+$")
            api_token: SecretStr = Field(title="API token")           # a secret: encrypted, masked
            timeout: float = Field(15, ge=1, le=300, json_schema_extra={"unit": "seconds"})
            region: Literal["eu", "us"] = "eu"                        # a choice

    * a field without a default is required; ``title`` is the form label (default: the name
      humanised), ``description`` the help text, ``json_schema_extra={"unit": ...}`` the unit of a
      number ("MiB", "GiB", "seconds", "%");
    * ``SecretStr`` marks a secret (settings: encrypted at rest, never shown); backends receive it
      as ``Secret``;
    * unknown fields are refused, strings are stripped of surrounding white space, and ``pattern``
      uses Python's ``re`` searching anywhere: anchor it (``^...$``);
    * extra checks go in ``field_validator`` methods raising ``ValueError("plain words")``: the
      message becomes that field's error.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, regex_engine="python-re",
                              field_title_generator=_title, hide_input_in_errors=True)


class ValidationError(ValueError):
    """Bad input for a schema. ``errors`` maps each bad field name to a message in plain words
    (``{"disksize_gb": "must be at least 1 GiB"}``); the key ``""`` holds errors of the whole input.

    ``validate_model`` raises it (translating pydantic's errors); backends raise it from their own
    checks too. Forms show each message beside its field; the API answers 422 with ``fields``.
    """

    def __init__(self, errors: Mapping[str, str], message: str | None = None):
        self.errors = dict(errors)
        super().__init__(message or "; ".join(f"{k}: {v}" if k else v for k, v in self.errors.items()))


@dataclass(frozen=True)
class SchemaField:
    """One property of a schema, read from its JSON Schema (for forms, the CLI and admin pages).

    ``type`` is the JSON Schema type (``string``, ``integer``, ``number``, ``boolean``, ``object``,
    ``array``) or ``""`` for any JSON value; ``choices`` lists an ``enum``'s values; ``secret`` is
    true for ``SecretStr`` fields; ``unit`` comes from ``json_schema_extra``; ``schema`` is the
    property's JSON Schema (``null`` alternatives removed).
    """

    name: str
    title: str
    type: str
    required: bool
    default: Any = None
    description: str = ""
    secret: bool = False
    unit: str = ""
    choices: tuple = ()
    schema: Mapping[str, Any] = field(default_factory=dict, compare=False)


def _flatten(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> dict:
    """A property's schema without its ``null`` alternative and with a top ``$ref`` resolved."""
    prop = dict(prop)
    options = prop.get("anyOf")
    if options:
        real = [o for o in options if o.get("type") != "null"]
        if len(real) == 1:
            merged = {k: v for k, v in prop.items() if k != "anyOf"}
            prop = {**real[0], **merged}
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in defs:
        prop = {**defs[ref.rsplit("/", 1)[-1]], **{k: v for k, v in prop.items() if k != "$ref"}}
    if "type" not in prop and "enum" in prop:
        kinds = {type(v).__name__ for v in prop["enum"]}
        prop["type"] = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            kinds.pop() if len(kinds) == 1 else "", "")
    return prop


@functools.lru_cache(maxsize=256)
def json_schema(model: type[BaseModel]) -> dict:
    """The model's JSON Schema (draft 2020-12, pydantic's ``model_json_schema()``), cached.

    Secret fields carry ``"format": "password", "writeOnly": true``; units ``"unit"``.
    Do not modify the returned dict.
    """
    return model.model_json_schema()


def schema_fields(schema: type[BaseModel] | Mapping[str, Any]) -> tuple[SchemaField, ...]:
    """The fields of a model (or of a JSON Schema document of an object) in declaration order, as
    ``SchemaField``s read from the JSON Schema."""
    doc = json_schema(schema) if isinstance(schema, type) else schema
    defs = doc.get("$defs", {})
    required = set(doc.get("required", ()))
    out = []
    for name, raw in doc.get("properties", {}).items():
        prop = _flatten(raw, defs)
        kind = prop.get("type", "")
        out.append(SchemaField(
            name=name, title=prop.get("title") or _title(name, None), type=kind if isinstance(kind, str) else "",
            required=name in required, default=prop.get("default"), description=prop.get("description", ""),
            secret=prop.get("format") == "password" or bool(prop.get("writeOnly")), unit=prop.get("unit", ""),
            choices=tuple(prop.get("enum", ())), schema=prop))
    return tuple(out)


def _plain(value: Any) -> Any:
    """Validated values as plain JSON values; every ``SecretStr`` becomes a ``Secret``."""
    if isinstance(value, SecretStr):
        return value if isinstance(value, Secret) else Secret(value)
    if isinstance(value, BaseModel):
        return {k: _plain(v) for k, v in value if v is not None}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return to_jsonable_python(value)


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _amount(value: Any, unit: str) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{text} {unit}" if unit else text


def _message(err: Mapping[str, Any], spec: SchemaField | None) -> str:
    """Plain words for one pydantic error (``pydantic_core`` error types)."""
    kind, ctx = err["type"], err.get("ctx") or {}
    unit = spec.unit if spec is not None and len(err.get("loc") or ()) == 1 else ""
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    words = {
        "missing": "is required",
        "extra_forbidden": "is not a known field",
        "string_type": "must be text",
        "bool_type": "must be true or false", "bool_parsing": "must be true or false",
        "int_type": "must be a whole number", "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_type": "must be a number", "float_parsing": "must be a number", "finite_number": "must be a number",
        "decimal_type": "must be a number", "decimal_parsing": "must be a number",
        "dict_type": "must be an object", "model_type": "must be an object", "model_attributes_type": "must be an object",
        "list_type": "must be a list", "tuple_type": "must be a list", "set_type": "must be a list",
        "string_pattern_mismatch": "has an invalid format",
        "url_parsing": "must be a URL", "url_scheme": "must be a URL starting with "
                                                      + str(ctx.get("expected_schemes", "http or https")),
        "json_invalid": "is not valid JSON",
    }
    if kind in words:
        return words[kind]
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_too_short":
        n = ctx.get("min_length")
        return "must not be empty" if n == 1 else f"must be at least {n} characters"
    if kind in ("too_long", "too_short"):
        bound = ctx.get("max_length" if kind == "too_long" else "min_length")
        return f"must have at {'most' if kind == 'too_long' else 'least'} {bound} items"
    bounds = {"greater_than_equal": ("ge", "must be at least"), "less_than_equal": ("le", "must be at most"),
              "greater_than": ("gt", "must be more than"), "less_than": ("lt", "must be less than")}
    if kind in bounds:
        key, text = bounds[kind]
        return f"{text} {_amount(ctx.get(key), unit)}"
    if kind in ("literal_error", "enum"):
        if spec is not None and spec.choices and len(err.get("loc") or ()) == 1:
            return "must be one of: " + ", ".join(map(str, spec.choices))
        return "must be one of: " + str(ctx.get("expected", "")).replace("'", "")
    text = str(err.get("msg") or kind)
    return text[:1].lower() + text[1:]


def error_messages(exc: PydanticValidationError, model: type[BaseModel] | None = None) -> dict[str, str]:
    """Translate a pydantic ``ValidationError`` into ``{field: message}`` in plain words.

    Nested locations read ``nodes[1].region``; errors of the whole input use the key ``""``.
    The first error of each field wins. Input values are never quoted (they may be secrets).
    """
    specs = {f.name: f for f in schema_fields(model)} if model is not None else {}
    out: dict[str, str] = {}
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(err.get("loc") or ())
        out.setdefault(_where(loc), _message(err, specs.get(str(loc[0])) if loc else None))
    return out


def _prepare(model: type[BaseModel], data: Mapping[str, Any]) -> tuple[dict, dict[str, str]]:
    """Empty strings and ``None`` count as missing; JSON text given for an object or list field
    (an environment variable, a CLI argument) is parsed. Returns ``(values, {key: message})`` for
    text that is not JSON (kept as text: a ``mode="before"`` validator may accept it)."""
    kinds = {f.name: f.type for f in schema_fields(model)}
    clean: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key, value in data.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if isinstance(value, str) and kinds.get(key) in ("object", "array"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:  # left to the field's validators, which may take text
                errors[key] = f"is not valid JSON ({exc.msg})"
        clean[key] = value
    return clean, errors


def _raise(model: type[BaseModel], exc: PydanticValidationError, not_json: Mapping[str, str]):
    """Raise our ``ValidationError``; a JSON field given text that is not JSON says so."""
    errors = error_messages(exc, model)
    for key, message in not_json.items():
        if errors.get(key) in ("must be a list", "must be an object"):
            errors[key] = message
    raise ValidationError(errors) from None


def validate_model(model: type[BaseModel], data: Mapping[str, Any] | None, *,
                   allow_unknown: bool = False) -> dict:
    """Validate ``data`` with ``model`` and return the clean values as a plain dict.

    Missing fields get their defaults; fields that end up ``None`` are left out; ``SecretStr``
    values come back as ``Secret``; other values as JSON values (what a JSON column stores).
    Empty strings count as missing. Unknown fields are errors unless ``allow_unknown`` (then they
    are dropped). Raises ``ValidationError`` naming every bad field in plain words.
    """
    data = dict(data or {})
    if allow_unknown:
        known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
        data = {k: v for k, v in data.items() if k in known}
    clean, not_json = _prepare(model, data)
    try:
        obj = model.model_validate(clean)
    except PydanticValidationError as exc:
        _raise(model, exc, not_json)
    return _plain(obj)


def validate_field(model: type[BaseModel], key: str, value: Any) -> Any:
    """Validate one field of ``model`` on its own (its type, constraints and ``field_validator``s),
    e.g. a setting an operator stores; returns the clean value (``None`` for an empty one).

    Raises ``ValidationError({key: message})``, also for a ``key`` the model does not have.
    The other fields are not set while this runs: a ``model_validator(mode="after")`` of the model
    sees them unset, so checks across settings belong in ``__init__`` or ``test_connection``.
    """
    if key not in model.model_fields:
        names = ", ".join(model.model_fields) or "none"
        raise ValidationError({key: f"is not a known field (fields: {names})"})
    clean, not_json = _prepare(model, {key: value})
    if key not in clean:
        return None
    draft = model.model_construct()
    try:
        model.__pydantic_validator__.validate_assignment(draft, key, clean[key])
    except PydanticValidationError as exc:
        try:
            _raise(model, exc, not_json)
        except ValidationError as err:
            raise ValidationError({key: next(iter(err.errors.values()))}) from None
    return _plain(getattr(draft, key))


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


class InProgress(TransientBackendError):
    """The remote side accepted the work and is still doing it (e.g. a Pterodactyl server that is
    installing): not a failure. Raise it from ``provision`` (or another operation) instead of
    waiting in the job; the core asks again with the same spec after ``retry_after`` seconds
    (default 10), without spending an attempt of the retry budget, for at most
    ``PANEL_JOB_MAX_WAIT`` seconds (then the operation gives up like a transient error). The message
    (e.g. "server 12 is installing") is shown to operators as the operation's progress; it is
    recorded in the event log once, not on every poll. ``resource_id``: the remote id already
    known (recorded so a terminate meanwhile finds it).

    It is a ``TransientBackendError``, so a core that does not know it retries it with backoff.
    """

    def __init__(self, message: str, retry_after: float | None = 10.0, resource_id: str | None = None):
        super().__init__(message, retry_after)
        self.resource_id = resource_id


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


#: How a billable metric's usage over a billing period becomes the billed quantity:
#: ``sum``: a counter (e.g. posts): the sum of its increases between samples;
#: ``max``: a level (e.g. storage in GiB): the highest sample of the period;
#: ``days``: package-days (seed 002): computed by the invoicing from the add-on event log (one per
#: package enabled for any part of a billable day), not from samples.
AGGREGATES = ("sum", "max", "days")


@dataclass(frozen=True)
class BillableMetric:
    """A metric a backend offers for usage-based prices (the catalog's ``metered:`` block).

    * ``name``: the metric's name, the same as the ``Metric`` that ``Backend.usage`` reports
      (e.g. ``"posts"``, ``"storage_gib"``, ``"package_days"``).
    * ``unit``: the unit of one billed quantity, the same as that ``Metric``'s ``unit``
      (``"count"``, ``"GiB"``, ``"day"``); a catalog's ``unit_price`` is per one of it.
    * ``aggregate``: the default of the catalog's ``aggregate`` (one of ``AGGREGATES``: ``"sum"``
      for a counter, ``"max"`` for a level, ``"days"`` for package-days).
    * ``label``: human words for invoices and pages (default: the name humanised).

    A plan may price only the metrics its backend declares in ``Backend.billable_metrics``
    (``panel plans import`` and ``panel doctor`` refuse any other). The contract suite checks that
    each declared metric appears in ``usage()`` with its unit. Raises ``ValueError`` for an
    aggregate not in ``AGGREGATES`` or an empty name or unit.
    """

    name: str
    unit: str
    aggregate: str = "sum"
    label: str = ""

    def __post_init__(self):
        if not self.name or not self.unit:
            raise ValueError("a billable metric needs a name and a unit")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"billable metric {self.name}: aggregate must be one of {', '.join(AGGREGATES)}")

    @property
    def title(self) -> str:
        """The label, or the name humanised (``"storage_gib"`` -> ``"Storage gib"``)."""
        return self.label or self.name.replace("_", " ").capitalize()


def billable(*metrics: BillableMetric) -> Mapping[str, BillableMetric]:
    """``Backend.billable_metrics`` from ``BillableMetric``s: a read-only mapping by name.

    ``billable(BillableMetric("posts", "count", "sum", "Posts"))`` ->
    ``{"posts": BillableMetric(...)}``; raises ``ValueError`` when a name appears twice.
    """
    from types import MappingProxyType

    out: dict[str, BillableMetric] = {}
    for metric in metrics:
        if metric.name in out:
            raise ValueError(f"billable metric {metric.name} is declared twice")
        out[metric.name] = metric
    return MappingProxyType(out)


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
    e.g. a PDS host, or for an object the panel did not make: ``Backend.list_unmanaged``);
    ``name`` is the remote name the service claims (``Backend.claim_key``'s value, e.g. a
    hostname), by which reconcile matches objects that carry no external id.

    What ``panel reconcile --adopt`` reads to make a service record of an object no service
    accounts for (all optional; seed 002's backfill):

    * ``created_at`` / ``suspended_at``: aware datetimes (UTC) of the remote object's creation
      (Kubernetes ``metadata.creationTimestamp``, the container's ``Created``) and of its current
      suspension (``status.suspendedAt``), backfilled into the event log;
    * ``customer_email``: whom the remote object says it belongs to (matched exactly, case
      insensitive, to an account);
    * ``options``: the plan options it runs with, in the ``PlanOptions`` fields' units (Docker
      ``{"memory_mib": 2048, "cpus": 1.0}``), matched against the plans of the backend;
    * ``params``: the order params it corresponds to (Docker ``{"space": "acme"}``);
    * ``packages``: add-ons/packages enabled on it (Kubernetes ``spec.packages``).
    """

    external_id: str
    resource_id: str | None
    state: str
    detail: str = ""
    name: str = ""
    created_at: datetime | None = None
    suspended_at: datetime | None = None
    customer_email: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    packages: tuple[str, ...] = ()


SECRET_KEY_PATTERN = re.compile(r"(pass(word)?|secret|token|api[_-]?key|private|credential|kube_?config(?![_-]?id)|dsn)",
                                re.I)
# The password of a URL's userinfo (RFC 3986 section 3.2.1: ``scheme://user:password@host``), as in a
# ``DATABASE_URL``/``REDIS_URL`` a backend may report under a key that does not look secret.
URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+(?=@)")


def mask_secrets(value: Any) -> Any:
    """Return a copy of a JSON value with every key that looks secret masked (recursively).

    Used on details before display: ``{"adminPassword": "x"}`` -> ``{"adminPassword": MASK}``.
    In every other string, the password of a URL with userinfo is masked too:
    ``"postgresql://app:pw@db/app"`` -> ``"postgresql://app:••••••@db/app"`` (the user and host stay
    readable for an operator).
    """
    if isinstance(value, Mapping):
        return {k: (MASK if isinstance(k, str) and SECRET_KEY_PATTERN.search(k) and v not in (None, "")
                    else mask_secrets(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v) for v in value]
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, str) and "://" in value:
        return URL_PASSWORD.sub(lambda m: m.group("head") + MASK, value)
    return value


# --------------------------------------------------------------------------- the client area
#
# What a customer sees and can do on a service page (WHMCS's ClientArea, custom buttons and
# ServiceSingleSignOn). A backend returns typed sections from ``Backend.client_area`` and declares
# ``Action``s; the core renders them. Everything here is plain, customer-facing data: no secret
# values (a ``Credential`` only names a secret) and no backend internals.

CONNECT_KINDS = ("address", "hostname", "port", "url", "command", "text")
LINK_KINDS = ("deep_link", "sso")
_ACTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


@dataclass(frozen=True)
class ConnectItem:
    """One line of a ``Connect`` section, shown with a copy button.

    * ``label``: what it is ("Server address"); ``value``: the text to copy ("203.0.113.5:25565").
    * ``kind``: "address" (host:port), "hostname", "port", "url" (also shown as a link),
      "command" (a shell command, shown monospace) or "text".
    * ``copy``: show the copy button (default True).
    """

    label: str
    value: str
    kind: str = "text"
    copy: bool = True

    def __post_init__(self):
        if self.kind not in CONNECT_KINDS:
            raise ValueError(f"ConnectItem {self.label!r}: unknown kind {self.kind!r}")


@dataclass(frozen=True)
class Connect:
    """How to reach the service: addresses, hostnames, ports and URLs (``ConnectItem``s).

    ``title`` "" means the core's (translated) default, "How to connect".
    """

    items: tuple[ConnectItem, ...]
    title: str = ""
    kind: ClassVar[str] = "connect"


@dataclass(frozen=True)
class Credential:
    """A secret the customer may reveal after re-entering their account password.

    * ``name``: the secret's key: in ``ServiceSpec.secrets`` (``Provisioned.secrets``), or one
      ``Backend.reveal_credential`` answers (e.g. fetched from the remote side).
    * ``label``: "Admin password"; ``username``: the login that goes with it (not secret), if any;
      ``help``: one sentence on where to use it.
    """

    name: str
    label: str
    username: str = ""
    help: str = ""


@dataclass(frozen=True)
class Credentials:
    """Secrets the customer may reveal (``Credential``s). The value never appears in a page until
    the customer re-enters their password; every reveal is logged in the service's event log."""

    credentials: tuple[Credential, ...]
    title: str = ""
    kind: ClassVar[str] = "credentials"


@dataclass(frozen=True)
class Limit:
    """One resource of the plan: ``label``, ``limit`` in ``unit`` (``None``: unlimited) and, when
    known, ``used`` in the same unit. Units are explicit: "MiB", "GiB", "bytes", "cores", "%",
    "count"...; ``limit`` may also be a text (``value``) for things that are not numbers (e.g. a
    list of packages)."""

    label: str
    limit: float | None = None
    unit: str = ""
    used: float | None = None
    value: str = ""


@dataclass(frozen=True)
class Resources:
    """What the plan includes, with units (``Limit``s)."""

    items: tuple[Limit, ...]
    title: str = ""
    kind: ClassVar[str] = "resources"


@dataclass(frozen=True)
class HowTo:
    """Short instructions written by the backend, in plain text: paragraphs are separated by a
    blank line; ``steps`` (optional) are shown as a numbered list after the text."""

    text: str = ""
    steps: tuple[str, ...] = ()
    title: str = ""
    kind: ClassVar[str] = "howto"


@dataclass(frozen=True)
class Link:
    """A link out of the panel: ``kind`` "deep_link" (a page on the remote system, e.g. the
    Pterodactyl server page) or "sso" (signs the customer in); ``url`` must be http(s)."""

    label: str
    url: str
    kind: str = "deep_link"

    def __post_init__(self):
        if self.kind not in LINK_KINDS:
            raise ValueError(f"Link {self.label!r}: unknown kind {self.kind!r}")
        if not self.url.startswith(("https://", "http://")):
            raise ValueError(f"Link {self.label!r}: the url must start with http:// or https://")


@dataclass(frozen=True)
class Links:
    """Buttons that open the service elsewhere (``Link``s)."""

    links: tuple[Link, ...]
    title: str = ""
    kind: ClassVar[str] = "links"


#: Every section type ``client_area`` may return.
SECTION_TYPES = (Connect, Credentials, Resources, HowTo, Links)


@dataclass(frozen=True)
class Action:
    """A button on the service page (a WHMCS custom button) that runs as an operation.

    * ``name``: a stable id, ``[a-z][a-z0-9_]*`` ("restart"); ``label``: the button text.
    * ``confirm``: a question asked before running it ("" = none); ``destructive``: styled as
      dangerous (and always confirmed).
    * ``params``: an optional ``Schema`` subclass of what the customer fills in, validated like
      order params (no ``SecretStr`` fields: action payloads are stored in clear).
    * ``statuses``: service statuses in which it is offered (default: active only).
    * ``description``: one sentence shown under the button.
    * ``handler``: for actions a *plugin* adds through the ``service_actions`` hook:
      ``handler(spec, params) -> ActionResult | None``; a backend's own actions leave it ``None``
      and are run by ``Backend.run_action``.

    Raises ``ValueError`` for a bad name.
    """

    name: str
    label: str
    confirm: str = ""
    destructive: bool = False
    params: type[Schema] | None = None
    statuses: tuple[str, ...] = ("active",)
    description: str = ""
    handler: Any = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if not _ACTION_NAME.fullmatch(self.name or ""):
            raise ValueError(f"action name {self.name!r} must match [a-z][a-z0-9_]* (at most 40)")

    @property
    def fields(self) -> tuple[SchemaField, ...]:
        """The fields of ``params`` (for the action's form), ``()`` when it takes none."""
        return schema_fields(self.params) if self.params is not None else ()


@dataclass(frozen=True)
class ActionResult:
    """What an action returns (or ``None`` for nothing to report).

    * ``message``: plain words for the customer about what happened ("Your server is restarting.").
    * ``data``: merged into ``ServiceSpec.backend_data`` (a key set to ``None`` is removed).
    * ``secrets``: merged into the stored secrets (str or ``Secret``), e.g. a new password.
    """

    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"ActionResult(message={self.message!r}, data={dict(self.data)!r}, "
                f"secrets={_mask_mapping(self.secrets)!r})")


__all__ += ["ConnectItem", "Connect", "Credential", "Credentials", "Limit", "Resources", "HowTo",
            "Link", "Links", "SECTION_TYPES", "Action", "ActionResult"]


# --------------------------------------------------------------------------- the base class

class Backend:
    """Base class of every backend. Subclass it, set ``name``, and register the class through the
    ``register_backends`` hook. The core instantiates it with validated settings.

    Class attributes:

    * ``name``: the plugin's id (lower case, e.g. ``"pds"``), used in plan files and settings.
    * ``label``: a human name.
    * ``admin_links``: ``(label, Flask endpoint)`` pairs of operator pages the plugin adds through
      ``register_blueprints``; the Plugins page links to them.
    * ``Settings``: the ``Schema`` (pydantic model) of what an operator sets with ``panel plugins
      set`` (``SecretStr`` fields are secrets: encrypted at rest, masked on display).
    * ``PlanOptions``: the ``Schema`` a plan's ``options`` must satisfy.
    * ``OrderParams``: the ``Schema`` of what the customer fills in when ordering (the order form
      and the API's JSON Schema are generated from it).
    * ``billable_metrics``: the metrics a plan may price per unit in the catalog's ``metered:``
      block, ``{name: BillableMetric}`` (build it with ``billable(...)``); each must appear in
      ``usage()`` under that name and unit. Default: none.

    Every operation method may raise ``TransientBackendError`` or ``PermanentBackendError``.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    admin_links: ClassVar[tuple[tuple[str, str], ...]] = ()
    billable_metrics: ClassVar[Mapping[str, BillableMetric]] = {}

    class Settings(Schema):
        """No settings."""

    class PlanOptions(Schema):
        """No plan options."""

    class OrderParams(Schema):
        """No order params."""

    def __init__(self, settings: Mapping[str, Any]):
        """``settings``: the values validated with ``Settings`` (the core passes
        ``validate_settings``' result). Secret settings given as plain strings are wrapped in
        ``Secret`` here, so ``self.settings`` never holds a bare secret."""
        secret = {f.name for f in schema_fields(self.Settings) if f.secret}
        self.settings = {k: (Secret(v) if k in secret and v is not None and not isinstance(v, Secret) else v)
                         for k, v in dict(settings or {}).items()}

    def __repr__(self) -> str:
        shown = {k: (MASK if isinstance(v, SecretStr) else v) for k, v in self.settings.items()}
        return f"{type(self).__name__}(name={self.name!r}, settings={shown!r})"

    # -- validation hooks (override to add checks beyond the schema)
    @classmethod
    def validate_settings(cls, settings: Mapping[str, Any]) -> dict:
        """Validate all settings with ``Settings``; returns the clean mapping (secrets as
        ``Secret``) or raises ``ValidationError`` naming every bad or missing setting."""
        return validate_model(cls.Settings, settings)

    def validate_plan_options(self, options: Mapping[str, Any]) -> dict:
        """Validate a plan's options with ``PlanOptions``; returns the cleaned mapping or raises
        ``ValidationError``."""
        return validate_model(self.PlanOptions, options)

    def validate_order_params(self, params: Mapping[str, Any], options: Mapping[str, Any]) -> dict:
        """Validate a customer's order params with ``OrderParams`` for a plan with ``options``.

        Returns the cleaned mapping or raises ``ValidationError`` (field name -> message).
        """
        return validate_model(self.OrderParams, params)

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
        """Delete the service. Terminating what is already gone succeeds.

        A backend whose remote has a "force" delete (Pterodactyl ``DELETE /servers/{id}/force``) may
        accept a keyword ``force: bool``: the core passes ``force=True`` when an operator
        force-terminates (the service ends ``terminated`` whatever the backend answers then)."""
        raise NotImplementedError

    def change_plan(self, spec: ServiceSpec, new_options: Mapping[str, Any]) -> Provisioned | None:
        """Apply a new plan's options to a running service (optional).

        Returns a new ``Provisioned`` when the stored data should change, else ``None``.
        """
        raise NotSupportedError(f"{self.label or self.name} does not support changing plans")

    def check_change_plan(self, spec: ServiceSpec, new_options: Mapping[str, Any]) -> None:
        """Raise ``PermanentBackendError`` (a ``NotSupportedError`` for "cannot be done") with a
        sentence for the customer when ``change_plan(spec, new_options)`` would be refused, e.g.
        a downgrade below what the service uses, or an option that needs a reinstall.

        Called before a plan or add-on change is charged, so nobody pays for a change the backend
        cannot make. ``new_options`` are validated already. The default refuses when the backend
        has no ``change_plan``, and accepts everything otherwise.
        """
        if not type(self).supports("change_plan"):
            raise NotSupportedError(f"{self.label or self.name} services cannot change plan or add-ons")

    def usage(self, spec: ServiceSpec) -> Usage:
        """Current usage, each metric with its unit. Every metric of ``billable_metrics`` appears
        under its name with its declared unit (a counter's running total, a level's current value,
        for package-days the packages enabled today); the usage sampler (``PANEL_USAGE_INTERVAL``)
        turns them into the usage records a bill is computed from."""
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

    def list_unmanaged(self) -> list[Resource]:
        """Remote objects of the kind this backend sells that carry none of the panel's marks (made
        before the panel, by hand or by another tool), for ``panel reconcile --adopt`` (seed 002's
        backfill of live tenants). Their ``external_id`` is ""; fill in what ``Resource`` offers for
        adoption (``created_at``, ``customer_email``, ``options``, ``params``...). Read only.
        Default: ``NotSupportedError``."""
        raise NotSupportedError(f"{self.label or self.name} cannot list objects it did not make")

    def adopt(self, spec: ServiceSpec, resource: Resource) -> Provisioned:
        """Take over ``resource`` for the new service ``spec`` (``panel reconcile --adopt``) without
        changing what runs: an object from ``list_resources`` already carries ``spec.external_id``;
        one from ``list_unmanaged`` gets the panel's marks written now (labels, annotations), so
        later calls find it. Returns what ``provision`` would have (``resource_id``, ``data`` and the
        ``secrets`` that can be read back). Raises ``PermanentBackendError`` when it cannot be
        taken over. Default: the recorded ``resource_id`` of an object that carries our external
        id; ``NotSupportedError`` for any other."""
        if resource.external_id and resource.external_id == spec.external_id:
            return Provisioned(resource_id=resource.resource_id)
        raise NotSupportedError(f"{self.label or self.name} cannot adopt objects it did not make")

    def purge(self, spec: ServiceSpec) -> None:
        """Delete the retained data of a terminated service now, whatever the retention (an
        operator's "purge"; Docker: volumes, database and role). Purging what is gone succeeds.
        Default: ``NotSupportedError`` (the backend retains nothing)."""
        raise NotSupportedError(f"{self.label or self.name} keeps no data after termination")

    def purge_expired(self, now: datetime | None = None) -> list[str]:
        """Delete the retained data of terminated services whose retention window has passed;
        returns their external ids. ``panel worker`` calls it every ``PANEL_PURGE_INTERVAL``
        seconds for every enabled, configured backend that implements it (``now``: aware UTC,
        default the current time). Idempotent. Default: ``NotSupportedError``."""
        raise NotSupportedError(f"{self.label or self.name} keeps no data after termination")

    @classmethod
    def validate_setting(cls, key: str, value: Any) -> Any:
        """Check one setting beyond ``Settings`` (its type, constraints and field validators are
        checked first) when an operator stores it; returns the value to store or raises
        ``ValidationError`` naming ``key``. Prefer a pydantic ``field_validator`` on ``Settings``."""
        return value

    # -- the client area (what the customer sees and can do; see ``Connect``, ``Action``...)
    #: Order params whose value is a DNS hostname the customer brings (e.g. PDS ``hostname``): one
    #: outside the operator's own domains needs a DNS TXT verification before it can be ordered.
    hostname_params: ClassVar[tuple[str, ...]] = ()

    def own_domains(self) -> tuple[str, ...]:
        """Domains the operator owns for this backend (names under them need no DNS verification,
        e.g. PDS's ``hostname_domain``); added to ``PANEL_OWN_DOMAINS``. Default: none."""
        return ()

    def client_area(self, spec: ServiceSpec) -> list:
        """The customer's view of a live service: a list of sections (``Connect``, ``Credentials``,
        ``Resources``, ``HowTo``, ``Links``), in display order. Plain words, no secret values and
        no internals (those stay in ``details``, which only operators see). May call the remote
        system (the core caches it for a few seconds); raise a ``BackendError`` when it cannot.
        Default: no sections."""
        return []

    def actions(self, spec: ServiceSpec) -> list[Action]:
        """The ``Action``s offered on this service (e.g. restart). Called on every page view: decide
        from ``spec`` alone, without calling the remote system. Default: none."""
        return []

    def run_action(self, spec: ServiceSpec, name: str, params: Mapping[str, Any]) -> ActionResult | None:
        """Run action ``name`` (one of ``actions(spec)``) with validated ``params``, from a job.

        Same error rules as the other operations: ``TransientBackendError`` is retried,
        ``PermanentBackendError`` fails the action (the service keeps its status)."""
        raise NotSupportedError(f"{self.label or self.name} has no action {name!r}")

    def reveal_credential(self, spec: ServiceSpec, name: str) -> Secret:
        """The value of credential ``name`` (a ``Credential`` of ``client_area``), for a customer
        who re-entered their password. Default: ``spec.secrets[name]``; override to fetch it from
        the remote side (e.g. a kubeconfig). Raises ``PermanentBackendError`` when unknown."""
        value = (spec.secrets or {}).get(name)
        if value is None or not (value.reveal() if isinstance(value, Secret) else str(value)):
            raise PermanentBackendError(f"no stored credential {name!r} for this service")
        return value if isinstance(value, Secret) else Secret(str(value))

    @classmethod
    def supports(cls, method: str) -> bool:
        """True when the subclass overrides an optional method (``change_plan``,
        ``list_resources``...).
        """
        return getattr(cls, method) is not getattr(Backend, method)
