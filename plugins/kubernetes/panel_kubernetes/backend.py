"""``KubernetesBackend``: one tenant sold as one namespaced custom resource.

Contract sources: ``shared/backends/kubernetes.md`` and seed 002 (``shared/seeds/002_*.txt``: a tenant
runs as a ``PiecedTenant`` custom resource with ``spec.packages``, ``spec.suspend`` and
``status.suspendedAt``; package diffs are computed against the custom resource the API returned).
The conventions are those of operator-managed CRDs: ``spec.suspend`` (a bool, as in CronJob and Flux),
``status.observedGeneration`` and ``status.conditions[]`` ``{type: Ready, status: True|False|Unknown,
reason, message, lastTransitionTime}``.

Every remote call goes through the official ``kubernetes`` Python client, ``CustomObjectsApi``:

* ``create_namespaced_custom_object``: ``POST /apis/{group}/{version}/namespaces/{namespace}/{plural}``
* ``get_namespaced_custom_object``: ``GET .../{plural}/{name}``
* ``patch_namespaced_custom_object``: ``PATCH .../{plural}/{name}``, ``application/merge-patch+json``
  (RFC 7386; custom resources do not support strategic merge patches)
* ``delete_namespaced_custom_object``: ``DELETE .../{plural}/{name}``, ``propagationPolicy=Background``
* ``list_namespaced_custom_object``: ``GET .../{plural}?labelSelector=...&limit=...``
* ``get_api_resources``: ``GET /apis/{group}/{version}`` (an ``APIResourceList``, for
  ``test_connection``)

``ApiException.status`` is mapped to typed errors: 401/403/400/422 and other 4xx are permanent, 404/409
are handled where they mean something (adopt, already gone, name taken), 408/410/429/5xx and transport
failures (urllib3 connection errors, timeouts) are transient. The bearer token and the kubeconfig never
appear in a message, a log record or a ``repr``.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import json
import logging
import re
import threading
import time
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from panel.backends import (MASK, Backend, BillableMetric, Connect, ConnectItem, Credential, Credentials, HowTo, Limit, Link,
                            Links, Metric, PermanentBackendError, Provisioned, Resource, Resources, Schema,
                            Secret, ServiceSpec, TransientBackendError, Usage, ValidationError,
                            billable, validate_model)

log = logging.getLogger(__name__)

__all__ = ["KubernetesBackend", "dns_label_problem", "name_from_external_id", "render_template",
           "merge_patch", "ready_condition", "package_diff", "cpu_quantity", "parse_quantity",
           "SERVICE_LABEL", "EXTERNAL_ID_ANNOTATION", "EMAIL_ANNOTATION", "PROGRESS_REASONS"]

#: Label carrying our external id (the idempotency key); ``list_resources`` selects on it.
SERVICE_LABEL = "hostpanel.dev/service"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
#: Annotations we set on every custom resource we create.
EXTERNAL_ID_ANNOTATION = "hostpanel.dev/external-id"
EMAIL_ANNOTATION = "hostpanel.dev/customer-email"
SERVICE_ID_ANNOTATION = "hostpanel.dev/service-id"
PLAN_ANNOTATION = "hostpanel.dev/plan"

#: ``Ready=False`` reasons that mean "still working on it" rather than "failed"; provision keeps waiting
#: on these (operators commonly report ``Ready=False, reason=Progressing`` while they reconcile).
PROGRESS_REASONS = frozenset({
    "progressing", "reconciling", "pending", "creating", "provisioning", "initializing", "inprogress",
    "waiting", "deploying", "starting", "scaling", "updating", "",
})

MERGE_PATCH = "application/merge-patch+json"
#: The ``name_prefix`` value meaning "no prefix" (an empty setting falls back to the default ``hp-``).
NO_PREFIX = "-"
LIST_PAGE_SIZE = 200
MAX_LABEL = 63

_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NOT_LABEL_CHARS = re.compile(r"[^a-z0-9-]+")
_VERSION = re.compile(r"v[0-9]+(?:(?:alpha|beta)[0-9]+)?")
_PACKAGE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._/@:+-]{0,251}[A-Za-z0-9])?")
_KIND = re.compile(r"[A-Z][A-Za-z0-9]{0,62}")


# --------------------------------------------------------------------------- pure helpers

def check_packages(value: Any) -> list[str]:
    """The plan option ``packages``: a list (or JSON text of a list) of distinct package names
    (letters, digits and ``._/@:+-``, at most 253 characters each); ``None`` or empty text is ``[]``.
    Raises ``ValueError`` with a field-level message."""
    packages = value
    if isinstance(packages, str):
        try:
            packages = json.loads(packages) if packages.strip() else []
        except json.JSONDecodeError:
            packages = False  # not JSON: reported below
    if packages is None:
        packages = []
    if not isinstance(packages, (list, tuple)):
        raise ValueError('must be a JSON list of package names, like ["searxng-local-search"]')
    out: list[str] = []
    for item in packages:
        if not isinstance(item, str) or not _PACKAGE.fullmatch(item):
            raise ValueError(f"has an invalid package name {str(item)[:60]!r} (use letters, "
                             "digits and . _ / @ : + -, at most 253 characters)")
        if item in out:
            raise ValueError(f"lists {item!r} twice")
        out.append(item)
    return out


def dns_label_problem(value: str, max_length: int = MAX_LABEL) -> str | None:
    """Why ``value`` is not a DNS-1123 label of at most ``max_length`` characters, or ``None``.

    A DNS-1123 label (Kubernetes object and namespace names): lower case ``a-z``, digits and ``-``,
    starting and ending with a letter or digit. The messages are field-level ("must be lower case").
    """
    if not value:
        return "must not be empty"
    if any(c.isascii() and c.isupper() for c in value):
        return "must be lower case (a-z, 0-9 and '-')"
    bad = sorted({c for c in value if not (c.isascii() and (c.islower() or c.isdigit() or c == "-"))})
    if bad:
        shown = "".join(bad[:10])
        return f"may contain only lower case letters a-z, digits 0-9 and '-' (not {shown!r})"
    if len(value) > max_length:
        return f"must be at most {max_length} characters"
    if value.startswith("-") or value.endswith("-"):
        return "must start and end with a letter or digit, not '-'"
    return None


def name_from_external_id(external_id: str, prefix: str = "") -> str:
    """A DNS-1123 label for a custom resource named after ``external_id``.

    ``"hp-1f52b066dd4080f4"`` -> ``"hp-1f52b066dd4080f4"`` (with prefix ``"hp-"`` it is not doubled);
    other characters become ``-``; a name longer than 63 characters is cut and ends in 8 hex digits of
    the external id's SHA-256, so two long ids never share a name.
    """
    text = _NOT_LABEL_CHARS.sub("-", str(external_id).strip().lower()).strip("-") or "service"
    if prefix and not text.startswith(prefix):
        text = prefix + text
    if len(text) > MAX_LABEL or not _DNS_LABEL.fullmatch(text):
        digest = hashlib.sha256(str(external_id).encode()).hexdigest()[:8]
        text = text[:MAX_LABEL - 9].strip("-") + "-" + digest
    return text


def label_value_for(external_id: str) -> str:
    """``external_id`` as a label value when it is one (at most 63 ``[A-Za-z0-9._-]`` characters,
    alphanumeric at both ends), else ``"sha256-"`` + 40 hex digits of its hash (the annotation
    ``hostpanel.dev/external-id`` always carries the full id)."""
    if external_id and len(external_id) <= MAX_LABEL and _LABEL_VALUE.fullmatch(external_id):
        return external_id
    return "sha256-" + hashlib.sha256(str(external_id).encode()).hexdigest()[:40]


def render_template(template: Any, values: Mapping[str, Any]) -> Any:
    """Fill ``{placeholders}`` in every string of a JSON ``template`` from ``values``.

    A string that is exactly one placeholder takes the value with its JSON type (``"{cpu}"`` -> ``2``);
    placeholders inside longer strings are replaced by ``str(value)``. Keys are rendered too. Raises
    ``KeyError`` naming the first unknown placeholder. ``{{`` and ``}}`` are not special.
    """
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template)
        if whole:
            return copy.deepcopy(values[whole.group(1)])

        def one(match: re.Match) -> str:
            value = values[match.group(1)]
            return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        return _PLACEHOLDER.sub(one, template)
    if isinstance(template, Mapping):
        return {render_template(k, values) if isinstance(k, str) else k: render_template(v, values)
                for k, v in template.items()}
    if isinstance(template, list):
        return [render_template(v, values) for v in template]
    return template


def template_placeholders(template: Any) -> set[str]:
    """Every placeholder name used anywhere in a JSON template."""
    found: set[str] = set()
    if isinstance(template, str):
        found.update(_PLACEHOLDER.findall(template))
    elif isinstance(template, Mapping):
        for k, v in template.items():
            found |= template_placeholders(k) | template_placeholders(v)
    elif isinstance(template, list):
        for v in template:
            found |= template_placeholders(v)
    return found


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict:
    """``base`` with ``over`` merged in: mappings merge recursively, anything else in ``over`` wins."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch (``null`` removes a key) and return the result."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = copy.deepcopy(dict(target)) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def ready_condition(obj: Mapping[str, Any]) -> dict | None:
    """The ``status.conditions[]`` entry of ``type: Ready`` of a custom resource, or ``None``."""
    status = obj.get("status") if isinstance(obj, Mapping) else None
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    for cond in conditions if isinstance(conditions, list) else ():
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return dict(cond)
    return None


def is_current(obj: Mapping[str, Any], cond: Mapping[str, Any] | None = None) -> bool:
    """True when the operator has seen the object's current ``metadata.generation``.

    Uses ``condition.observedGeneration`` or ``status.observedGeneration``; when the operator reports
    neither, the condition is taken as current.
    """
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (cond or {}).get("observedGeneration")
    if observed is None:
        observed = (obj.get("status") or {}).get("observedGeneration")
    if generation is None or observed is None:
        return True
    try:
        return int(observed) >= int(generation)
    except (TypeError, ValueError):
        return True


def packages_of(obj: Mapping[str, Any] | None) -> list[str]:
    """``spec.packages`` of a custom resource as a list of strings (``[]`` when absent)."""
    spec = (obj or {}).get("spec") if isinstance(obj, Mapping) else None
    packages = spec.get("packages") if isinstance(spec, Mapping) else None
    return [str(p) for p in packages] if isinstance(packages, list) else []


def package_diff(before: Iterable[str], after: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(added, removed)`` between two package lists, each in the order it appears (seed 002)."""
    before, after = list(before), list(after)
    added = [p for i, p in enumerate(after) if p not in before and p not in after[:i]]
    removed = [p for i, p in enumerate(before) if p not in after and p not in before[:i]]
    return added, removed


def cpu_quantity(cores: float) -> str:
    """A Kubernetes CPU quantity for ``cores``: ``2`` -> ``"2"``, ``0.5`` -> ``"500m"``."""
    millis = round(float(cores) * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


_QUANTITY = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*"
                       r"(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|K|M|G|T|P|E)?\s*$")
_SUFFIX = {None: Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
           "k": Decimal(1000), "K": Decimal(1000), "M": Decimal(1000) ** 2, "G": Decimal(1000) ** 3,
           "T": Decimal(1000) ** 4, "P": Decimal(1000) ** 5, "E": Decimal(1000) ** 6,
           "Ki": Decimal(1024), "Mi": Decimal(1024) ** 2, "Gi": Decimal(1024) ** 3,
           "Ti": Decimal(1024) ** 4, "Pi": Decimal(1024) ** 5, "Ei": Decimal(1024) ** 6}


def parse_quantity(value: Any) -> Decimal | None:
    """A Kubernetes resource quantity as a ``Decimal`` in base units (cores or bytes).

    ``"250m"`` -> 0.25, ``"512Mi"`` -> 536870912, ``"2"`` / ``2`` -> 2. ``None`` when unparseable.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    match = _QUANTITY.match(str(value))
    if not match:
        return None
    return Decimal(match.group(1)) * _SUFFIX[match.group(2)]


def _k8s_time(value: Any):
    """A Kubernetes timestamp (RFC 3339, ``2024-05-01T10:00:00Z``) as an aware datetime, or ``None``."""
    from datetime import datetime, timezone

    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _reveal(value: Any) -> str:
    if isinstance(value, Secret):
        return value.reveal()
    return "" if value is None else str(value)


def _bool(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _accepts(function: Callable, keyword: str) -> bool:
    """Does ``function`` take ``keyword`` (generated client methods differ between versions)?"""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    if keyword in parameters:
        return True
    # legacy generated methods take **kwargs and reject unknown ones; their docstrings list the known
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return takes_kwargs and keyword in (function.__doc__ or "")


class _NotFound(PermanentBackendError):
    """HTTP 404 from the API server (callers decide whether that is fine)."""


class _Conflict(PermanentBackendError):
    """HTTP 409 from the API server: AlreadyExists on create, Conflict on a precondition."""


# --------------------------------------------------------------------------- the backend

class KubernetesBackend(Backend):
    """A tenant as one namespaced custom resource of an operator-managed CRD (seed 002).

    Settings (see README.md): ``api_url`` + ``token`` (a service account's bearer token) or
    ``kubeconfig`` (YAML text), ``verify_tls``, ``ca_cert`` (PEM), the CRD's ``group``/``version``/
    ``plural``/``kind``, the ``namespace`` the custom resources live in, ``name_prefix``,
    ``ready_timeout_seconds`` (seconds provision waits for ``Ready=True``; 0: no wait),
    ``timeout_seconds`` (per HTTP request) and ``spec_template`` (extra ``spec`` fields, JSON, with
    ``{placeholders}``).

    Plan options: ``packages`` (list of enabled packages/skills, ``spec.packages``), ``cpu`` (cores),
    ``memory_mib`` (MiB), ``storage_gib`` (GiB), written to ``spec.resources`` as Kubernetes quantities.
    Order param: ``tenant_name`` (optional DNS-1123 label).

    Naming: the custom resource is ``<name_prefix><tenant_name>`` when the customer chose a tenant name
    (``claim_key`` keeps it unique among our live services; a custom resource of that name that does not
    carry our ``hostpanel.dev/service`` label is a collision), else it is derived from the service's
    external id (``name_from_external_id``). ``Provisioned.resource_id`` is that name.
    """

    name = "kubernetes"
    label = "Kubernetes tenant"
    #: Seed 002's package-days: one per package (``spec.packages``, an add-on) enabled for any part of
    #: a billable day. The invoicing counts them from the add-on event log (aggregate ``days``), so a
    #: bill never depends on when the sampler ran; ``usage`` reports today's figure.
    billable_metrics = billable(BillableMetric("package_days", "day", "days", "Package-days"))

    class Settings(Schema):
        api_url: str | None = Field(None, max_length=500, title="API server URL",
                                    description="e.g. https://k8s.example.com:6443; leave empty to take the "
                                                "server from kubeconfig")
        token: SecretStr | None = Field(None, title="Bearer token",
                                        description="A service account token allowed to get/list/create/patch/"
                                                    "delete the custom resources")
        kubeconfig: SecretStr | None = Field(None, title="kubeconfig",
                                             description="Optional: a kubeconfig file's YAML text (its current "
                                                         "context is used); api_url and token, when set, override "
                                                         "its server and credentials")
        verify_tls: bool = Field(True, title="Verify TLS", description="Verify the API server's certificate "
                                                                       "(turn off only for test clusters)")
        ca_cert: str | None = Field(None, max_length=20000, title="CA certificate",
                                    description="Optional PEM text of the CA that signed the API server's "
                                                "certificate")
        group: str = Field("hostpanel.dev", max_length=253, title="API group",
                           description="The CRD's group, e.g. pieced.ch")
        version: str = Field("v1", max_length=63, title="API version", description="The CRD's version, e.g. v1")
        plural: str = Field("tenants", max_length=63, title="Plural",
                            description="The CRD's plural resource name, e.g. piecedtenants")
        kind: str = Field("Tenant", max_length=63, title="Kind", description="The CRD's kind, e.g. PiecedTenant")
        namespace: str = Field("tenants", max_length=63, title="Namespace",
                               description="The namespace the custom resources are created in")
        name_prefix: str = Field("hp-", max_length=30, title="Name prefix",
                                 description="Prepended to tenant names to form custom resource names; '-' for none")
        ready_timeout_seconds: float = Field(120, ge=0, le=3600, title="Ready timeout",
                                             json_schema_extra={"unit": "seconds"},
                                             description="How long provision waits for status.conditions "
                                                         "Ready=True; 0 = do not wait")
        timeout_seconds: float = Field(15, ge=0.1, le=300, title="Request timeout",
                                       json_schema_extra={"unit": "seconds"},
                                       description="Connect and read timeout of each call to the API server")
        tenant_url: str | None = Field(
            None, max_length=500, title="Tenant URL",
            description="The customer's address, e.g. https://{tenant_name}.example.com (same placeholders as "
                        "spec_template); empty: the status.url the operator reports")
        spec_template: dict[str, Any] | None = Field(
            None, title="Spec template",
            description='Extra spec fields as a JSON object, e.g. {"domain": "{tenant_name}.example.com"}; '
                        "placeholders: " + ", ".join("{%s}" % n for n in (
                            "tenant_name", "name", "namespace", "external_id", "service_id", "customer_email",
                            "customer_id", "plan")) + " and every plan option and order param")

    class PlanOptions(Schema):
        packages: list[str] = Field([], title="Packages",
                                    description='Enabled packages/skills, a JSON list of names (spec.packages), '
                                                'e.g. ["searxng-local-search"]')
        cpu: float | None = Field(None, ge=0.001, le=1024, title="CPU", json_schema_extra={"unit": "cores"},
                                  description="CPU limit in cores (spec.resources.cpu, e.g. 0.5 -> 500m)")
        memory_mib: int | None = Field(None, ge=1, le=16 * 1024 * 1024, title="Memory",
                                       json_schema_extra={"unit": "MiB"},
                                       description="Memory limit in MiB (spec.resources.memory, e.g. 4096 -> 4096Mi)")
        storage_gib: int | None = Field(None, ge=1, le=1024 * 1024, title="Storage",
                                        json_schema_extra={"unit": "GiB"},
                                        description="Storage in GiB (spec.resources.storage, e.g. 20 -> 20Gi)")

        @field_validator("packages", mode="before")
        @classmethod
        def _packages(cls, value: Any) -> list[str]:
            """A JSON list of distinct package names (letters, digits and ``._/@:+-``, at most 253
            characters each)."""
            return check_packages(value)

    class OrderParams(Schema):
        tenant_name: str | None = Field(None, max_length=63, title="Tenant name",
                                        description="Lower case letters, digits and '-' (a DNS label); leave "
                                                    "empty for a generated name")

    #: Placeholders a ``spec_template`` may use besides plan options and order params.
    TEMPLATE_VALUES = ("tenant_name", "name", "namespace", "external_id", "service_id", "customer_email",
                       "customer_id", "plan")

    def __init__(self, settings: Mapping[str, Any]):
        raw = dict(settings or {})
        self._settings_error: str | None = None
        secrets = {k: raw.get(k) for k in ("token", "kubeconfig")}
        plain = {k: v for k, v in raw.items() if k not in secrets}
        try:
            clean = validate_model(self.Settings, plain, allow_unknown=True)
        except ValidationError as exc:
            self._settings_error = "; ".join(f"{k}: {v}" for k, v in exc.errors.items())
            clean = {name: plain.get(name, f.default) for name, f in self.Settings.model_fields.items()
                     if name not in secrets}
        for key, value in secrets.items():
            clean[key] = value if isinstance(value, Secret) else Secret(_reveal(value))
        clean["api_url"] = str(clean.get("api_url") or "").strip().rstrip("/")
        if str(plain.get("name_prefix", "hp-")).strip() in ("", NO_PREFIX):  # "-": no prefix at all
            clean["name_prefix"] = ""
        clean["name_prefix"] = "" if clean.get("name_prefix") is None else str(clean["name_prefix"])
        if not self._settings_error:
            for key in ("api_url", "group", "version", "plural", "kind", "namespace", "name_prefix",
                        "spec_template", "ca_cert"):
                try:
                    clean[key] = self._check_setting(key, clean.get(key))
                except ValidationError as exc:
                    self._settings_error = "; ".join(f"{k}: {v}" for k, v in exc.errors.items())
                    break
        if not self._settings_error and not clean["api_url"] and not clean["kubeconfig"]:
            self._settings_error = "set api_url (with token) or kubeconfig"
        super().__init__(clean)
        self._lock = threading.Lock()
        self._api: Any = None
        self._api_client: Any = None

    # ------------------------------------------------------------------ settings

    @classmethod
    def validate_setting(cls, key: str, value: Any) -> Any:
        """Check one setting beyond its field: ``api_url`` is an http(s) URL, ``group`` a DNS
        subdomain, ``version`` like ``v1``/``v1beta1``, ``plural``/``namespace`` DNS labels, ``kind``
        CamelCase, ``name_prefix`` a DNS label start, ``spec_template`` a JSON object using known
        placeholders, ``kubeconfig`` YAML with a current context, ``ca_cert`` PEM. Raises
        ``ValidationError`` naming ``key`` (never quoting a secret)."""
        if key == "kubeconfig":
            text = _reveal(value)
            if text:
                cls._parse_kubeconfig(text, error=lambda msg: ValidationError({key: msg}))
            return value
        return cls._check_setting(key, value)

    @classmethod
    def _check_setting(cls, key: str, value: Any) -> Any:
        def bad(message: str):
            return ValidationError({key: message})
        if key == "api_url":
            text = str(value or "").strip().rstrip("/")
            if text:
                parts = urlsplit(text)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise bad("must be an http:// or https:// URL, like https://k8s.example.com:6443")
                if parts.username or parts.password:
                    raise bad("must not carry credentials; use the token setting")
            return text
        if key == "group":
            text = str(value or "").strip()
            if not _DNS_SUBDOMAIN.fullmatch(text) or "." not in text:
                raise bad("must be an API group like hostpanel.dev (lower case, with a dot)")
            return text
        if key == "version":
            text = str(value or "").strip()
            if not _VERSION.fullmatch(text):
                raise bad("must be an API version like v1, v1beta1 or v2alpha1")
            return text
        if key in ("plural", "namespace"):
            text = str(value or "").strip()
            problem = dns_label_problem(text)
            if problem:
                raise bad(problem)
            return text
        if key == "kind":
            text = str(value or "").strip()
            if not _KIND.fullmatch(text):
                raise bad("must be a CamelCase kind like Tenant")
            return text
        if key == "name_prefix":
            text = "" if value is None else str(value)
            if text.strip() == NO_PREFIX:
                return NO_PREFIX
            if text and (not re.fullmatch(r"[a-z0-9][a-z0-9-]*", text) or len(text) > 30):
                raise bad("must be lower case letters, digits and '-', starting with a letter or digit "
                          "(at most 30 characters)")
            return text
        if key == "spec_template":
            if value in (None, ""):
                return None
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise bad(f"is not valid JSON ({exc.msg})") from None
            if not isinstance(value, Mapping):
                raise bad('must be a JSON object of spec fields, like {"domain": "{tenant_name}.example.com"}')
            known = set(cls.TEMPLATE_VALUES) | set(cls.PlanOptions.model_fields) | set(cls.OrderParams.model_fields)
            unknown = sorted(template_placeholders(value) - known)
            if unknown:
                raise bad(f"uses unknown placeholder {{{unknown[0]}}}; known: "
                          + ", ".join("{%s}" % n for n in sorted(known)))
            reserved = sorted({"suspend"} & set(value))
            if reserved:
                raise bad("must not set spec.suspend (the panel owns it)")
            return dict(value)
        if key == "ca_cert":
            text = str(value or "").strip()
            if text and "-----BEGIN CERTIFICATE-----" not in text:
                raise bad("must be PEM text starting with -----BEGIN CERTIFICATE-----")
            return text or None
        return value

    @staticmethod
    def _parse_kubeconfig(text: str, error: Callable[[str], Exception]) -> dict:
        """Parse kubeconfig YAML; raises ``error(message)`` without quoting the text."""
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" near line {mark.line + 1}" if mark is not None else ""
            raise error(f"is not valid YAML{where}") from None
        if not isinstance(data, dict) or not data.get("clusters") or not data.get("contexts"):
            raise error("is not a kubeconfig (it needs clusters, contexts and current-context)")
        if not data.get("current-context"):
            raise error("has no current-context")
        return data

    @property
    def group(self) -> str:
        """The CRD's API group (setting ``group``)."""
        return self.settings["group"]

    @property
    def version(self) -> str:
        """The CRD's API version (setting ``version``)."""
        return self.settings["version"]

    @property
    def plural(self) -> str:
        """The CRD's plural resource name (setting ``plural``)."""
        return self.settings["plural"]

    @property
    def namespace(self) -> str:
        """The namespace the custom resources live in (setting ``namespace``)."""
        return self.settings["namespace"]

    @property
    def resource_label(self) -> str:
        """``<plural>.<group>/<version>`` for messages."""
        return f"{self.plural}.{self.group}/{self.version}"

    # ------------------------------------------------------------------ validation

    def validate_order_params(self, params: Mapping[str, Any], options: Mapping[str, Any]) -> dict:
        """Validate ``tenant_name``: a DNS-1123 label of at most ``63 - len(name_prefix)`` characters
        (lower case ``a-z``, ``0-9``, ``-``; no leading or trailing ``-``). Empty means a generated name.
        Raises ``ValidationError`` with a field-level message."""
        params = dict(params or {})
        errors: dict[str, str] = {k: "is not a known field" for k in sorted(set(params) - {"tenant_name"})}
        raw = params.get("tenant_name")
        clean: dict[str, Any] = {}
        if raw is not None and not (isinstance(raw, str) and raw.strip() == ""):
            if not isinstance(raw, str):
                errors["tenant_name"] = "must be a string"
            else:
                text = raw.strip()
                room = MAX_LABEL - len(self.settings.get("name_prefix") or "")
                problem = dns_label_problem(text, room)
                if problem and "at most" in problem and room < MAX_LABEL:
                    problem += f" (the name prefix {self.settings.get('name_prefix')!r} takes the rest of 63)"
                if problem:
                    errors["tenant_name"] = problem
                else:
                    clean["tenant_name"] = text
        if errors:
            raise ValidationError(errors)
        return clean

    def claim_key(self, spec: ServiceSpec) -> tuple[str, str] | None:
        """``("tenant_name", name)`` when the customer chose a tenant name, so the core refuses a second
        live service for it; ``None`` for generated names (they derive from unique external ids)."""
        name = str((spec.params or {}).get("tenant_name") or "").strip()
        if not name:
            return None
        problem = dns_label_problem(name, MAX_LABEL - len(self.settings.get("name_prefix") or ""))
        if problem:
            raise PermanentBackendError(f"tenant_name {problem}", fields={"tenant_name": problem})
        return ("tenant_name", name)

    def cr_name(self, spec: ServiceSpec) -> str:
        """The custom resource's name for ``spec``: the recorded ``resource_id``, else
        ``<name_prefix><tenant_name>``, else ``name_from_external_id(external_id, name_prefix)``."""
        if spec.resource_id:
            return str(spec.resource_id)
        tenant = str((spec.params or {}).get("tenant_name") or "").strip()
        prefix = self.settings.get("name_prefix") or ""
        if tenant:
            name = prefix + tenant
            problem = dns_label_problem(name)
            if problem:
                raise PermanentBackendError(f"tenant_name: the custom resource name {name!r} {problem}",
                                            fields={"tenant_name": problem})
            return name
        if not spec.external_id:
            raise PermanentBackendError("the service has no external id to name its custom resource after")
        return name_from_external_id(spec.external_id, prefix)

    # ------------------------------------------------------------------ the client

    def _check_settings(self) -> None:
        if self._settings_error:
            raise PermanentBackendError(f"the kubernetes backend is misconfigured: {self._settings_error}")

    def _timeout(self) -> tuple[float, float]:
        total = float(self.settings.get("timeout_seconds") or 15)
        return (min(total, 10.0), total)

    def _custom_api(self):
        """The ``CustomObjectsApi`` (built once, thread-safe). Raises ``PermanentBackendError`` when the
        settings or the kubeconfig cannot make a client."""
        self._check_settings()
        with self._lock:
            if self._api is None:
                from kubernetes import client

                configuration = self._configuration()
                self._api_client = client.ApiClient(configuration)
                self._api = client.CustomObjectsApi(self._api_client)
            return self._api

    def _configuration(self):
        from kubernetes import client
        from urllib3.util.retry import Retry

        configuration = client.Configuration()
        kubeconfig = _reveal(self.settings.get("kubeconfig"))
        if kubeconfig:
            from kubernetes import config as kube_config

            data = self._parse_kubeconfig(
                kubeconfig, error=lambda msg: PermanentBackendError(f"the kubeconfig setting {msg}"))
            try:
                kube_config.load_kube_config_from_dict(data, client_configuration=configuration,
                                                       persist_config=False)
            except Exception as exc:  # ConfigException and friends; their text may quote the file
                raise PermanentBackendError(
                    f"the kubeconfig setting cannot be used ({type(exc).__name__}); check its current "
                    "context, cluster and user") from None
        if self.settings.get("api_url"):
            configuration.host = self.settings["api_url"]
        token = _reveal(self.settings.get("token"))
        if token:
            configuration.api_key = {"authorization": token}
            configuration.api_key_prefix = {"authorization": "Bearer"}
        configuration.verify_ssl = _bool(self.settings.get("verify_tls"), True)
        if self.settings.get("ca_cert"):
            configuration.ca_cert_data = self.settings["ca_cert"]
        # one quick retry of a refused connection; never a blind retry of a request that was sent
        configuration.retries = Retry(total=1, connect=1, read=0, status=0, redirect=0, other=0)
        configuration.debug = False
        return configuration

    def _secret_strings(self) -> list[str]:
        """Every secret string we know: the token, the kubeconfig text, each credential of the
        kubeconfig's users (token, password, key data...) and the API key the client ended up with."""
        values = [_reveal(self.settings.get("token")), _reveal(self.settings.get("kubeconfig"))]
        kubeconfig = values[1]
        if kubeconfig:
            try:
                import yaml

                data = yaml.safe_load(kubeconfig)
            except Exception:  # noqa: BLE001 - an unparseable kubeconfig is masked as a whole above
                data = None

            def walk(node: Any) -> None:
                if isinstance(node, Mapping):
                    for v in node.values():
                        walk(v)
                elif isinstance(node, list):
                    for v in node:
                        walk(v)
                elif isinstance(node, str):
                    values.append(node)
            if isinstance(data, Mapping):
                for user in data.get("users") or []:
                    walk((user or {}).get("user") if isinstance(user, Mapping) else None)
        client = self._api_client
        if client is not None:
            for value in (client.configuration.api_key or {}).values():
                values.append(str(value).split(" ", 1)[-1])
        return sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)

    def _scrub(self, text: str) -> str:
        """``text`` with every secret string (see ``_secret_strings``) and any bearer value masked."""
        for value in self._secret_strings():
            text = text.replace(value, MASK)
        return re.sub(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+", "Bearer " + MASK, text)

    def _call(self, what: str, method: str, *args, **kwargs) -> Any:
        """Call ``CustomObjectsApi.<method>`` with the request timeout; map every failure to a typed
        error. ``what`` (e.g. ``"create Tenant hp-alice"``) leads each message."""
        api = self._custom_api()
        kwargs.setdefault("_request_timeout", self._timeout())
        function = getattr(api, method)
        if "_headers" in kwargs and not _accepts(function, "_headers"):
            kwargs.pop("_headers")  # older clients: the API server reads a body without a type as JSON
        try:
            return function(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes typed below
            raise self._map_error(what, exc) from None

    def _map_error(self, what: str, exc: Exception) -> Exception:
        from kubernetes.client.exceptions import ApiException
        import urllib3

        where = f"Kubernetes API {self.settings.get('api_url') or '(kubeconfig)'}"
        if isinstance(exc, ApiException):
            status = int(exc.status or 0)
            body = self._status_body(exc)
            message = self._scrub(str(body.get("message") or exc.reason or "").strip())[:500]
            reason = str(body.get("reason") or exc.reason or "").strip()
            detail = f": {message}" if message else ""
            retry_after = self._retry_after(exc)
            if status == 0:  # the client's own failures: TLS errors, or a request it could not build
                text = self._scrub(str(exc.reason or ""))
                first = text.splitlines()[0][:200] if text else "no answer"
                if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text.lower():
                    return PermanentBackendError(
                        f"{what}: the {where} presented a certificate that cannot be verified; set ca_cert "
                        "(or verify_tls=false for a test cluster)")
                if "Cannot prepare a request" in text:
                    return PermanentBackendError(f"{what}: the kubernetes client could not build the request")
                return TransientBackendError(f"{what}: cannot reach the {where} ({first})")
            if status == 401:
                return PermanentBackendError(
                    f"{what}: the {where} refused the credentials (401 Unauthorized); check the token "
                    "or kubeconfig setting")
            if status == 403:
                return PermanentBackendError(
                    f"{what}: forbidden (403) by the {where}; the service account needs RBAC rights on "
                    f"{self.plural}.{self.group} in namespace {self.namespace}{detail}")
            if status == 404:
                return _NotFound(f"{what}: not found (404){detail}")
            if status == 409:
                return _Conflict(f"{what}: conflict (409 {reason or 'Conflict'}){detail}")
            if status == 422:
                causes = [c for c in ((body.get("details") or {}).get("causes") or []) if isinstance(c, Mapping)]
                listed = "; ".join(self._scrub(f"{c.get('field') or c.get('reason') or '?'}: {c.get('message') or ''}")
                                   for c in causes)[:800]
                fields = {str(c.get("field")): self._scrub(str(c.get("message") or "is invalid"))
                          for c in causes if c.get("field")}
                return PermanentBackendError(
                    f"{what}: the {where} rejected the {self.settings.get('kind')} as invalid (422)"
                    + (f": {listed}" if listed else detail), fields=fields)
            if status in (408, 410, 429) or status >= 500:
                label = {408: "timeout", 410: "gone", 429: "too many requests"}.get(status, "server error")
                return TransientBackendError(f"{what}: the {where} answered {status} ({label}){detail}",
                                             retry_after=retry_after)
            return PermanentBackendError(f"{what}: the {where} answered {status} {reason}{detail}")
        if isinstance(exc, (urllib3.exceptions.HTTPError, OSError, TimeoutError)):
            kind = type(exc).__name__
            reason = getattr(exc, "reason", None)
            if reason is not None:
                kind = f"{kind}: {type(reason).__name__}"
            if "timeout" in kind.lower() or "Timeout" in str(reason):
                return TransientBackendError(f"{what}: the {where} did not answer within "
                                             f"{self.settings.get('timeout_seconds')} seconds ({kind})")
            return TransientBackendError(f"{what}: cannot reach the {where} ({kind})")
        if isinstance(exc, PermanentBackendError | TransientBackendError):
            return exc
        log.warning("%s: unexpected %s from the kubernetes client", what, type(exc).__name__)
        return PermanentBackendError(f"{what}: unexpected error from the kubernetes client ({type(exc).__name__})")

    @staticmethod
    def _status_body(exc: Any) -> dict:
        try:
            body = json.loads(exc.body) if exc.body else {}
        except (TypeError, ValueError):
            return {}
        return body if isinstance(body, dict) else {}

    @staticmethod
    def _retry_after(exc: Any) -> float | None:
        headers = getattr(exc, "headers", None) or {}
        try:
            value = headers.get("Retry-After")
            return float(value) if value not in (None, "") else None
        except (TypeError, ValueError, AttributeError):
            return None

    def _crd_args(self) -> tuple[str, str, str, str]:
        return (self.group, self.version, self.namespace, self.plural)

    def _get(self, name: str, what: str | None = None) -> dict | None:
        """GET one custom resource; ``None`` when it does not exist."""
        try:
            return self._call(what or f"get {self.settings['kind']} {name}", "get_namespaced_custom_object",
                              *self._crd_args(), name)
        except _NotFound:
            return None

    def _list(self, label_selector: str) -> list[dict]:
        """LIST custom resources in the namespace matching ``label_selector`` (all pages)."""
        items: list[dict] = []
        token: str | None = None
        for _ in range(1000):
            kwargs: dict[str, Any] = {"label_selector": label_selector, "limit": LIST_PAGE_SIZE}
            if token:
                kwargs["_continue"] = token
            page = self._call(f"list {self.plural} in namespace {self.namespace}", "list_namespaced_custom_object",
                              *self._crd_args(), **kwargs)
            items += [i for i in (page or {}).get("items") or [] if isinstance(i, Mapping)]
            token = ((page or {}).get("metadata") or {}).get("continue")
            if not token:
                break
        return items

    def _patch(self, name: str, body: Mapping[str, Any], what: str) -> dict:
        """PATCH a custom resource with a JSON merge patch (``application/merge-patch+json``)."""
        return self._call(what, "patch_namespaced_custom_object", *self._crd_args(), name, dict(body),
                          _content_type=MERGE_PATCH)

    @staticmethod
    def _owner(obj: Mapping[str, Any]) -> str:
        """The external id a custom resource says it belongs to (annotation, else label), or ``""``."""
        meta = obj.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        labels = meta.get("labels") or {}
        return str(annotations.get(EXTERNAL_ID_ANNOTATION) or labels.get(SERVICE_LABEL) or "")

    @staticmethod
    def _is_ours(obj: Mapping[str, Any] | None, spec: ServiceSpec) -> bool:
        if not obj:
            return False
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return labels.get(SERVICE_LABEL) == label_value_for(spec.external_id) and (
            KubernetesBackend._owner(obj) == spec.external_id)

    def _find(self, spec: ServiceSpec) -> dict | None:
        """The custom resource of ``spec``: by name (recorded ``resource_id`` or derived), checked to
        carry our label; else the one our label selects (e.g. after ``name_prefix`` changed)."""
        try:
            name = self.cr_name(spec)
        except PermanentBackendError:
            name = None
        if name:
            obj = self._get(name)
            if self._is_ours(obj, spec):
                return obj
        found = [o for o in self._list(f"{SERVICE_LABEL}={label_value_for(spec.external_id)}")
                 if self._is_ours(o, spec)]
        return found[0] if found else None

    def _require(self, spec: ServiceSpec, action: str) -> dict:
        obj = self._find(spec)
        if obj is None:
            raise PermanentBackendError(
                f"cannot {action}: no {self.settings['kind']} for service {spec.external_id} in namespace "
                f"{self.namespace} (was it deleted outside the panel?)")
        return obj

    # ------------------------------------------------------------------ building the object

    def template_values(self, spec: ServiceSpec, name: str) -> dict:
        """The values ``spec_template`` placeholders take: plan options, order params, then
        ``tenant_name``, ``name``, ``namespace``, ``external_id``, ``service_id``, ``customer_email``,
        ``customer_id`` and ``plan``."""
        values: dict[str, Any] = {name: None for name in (*self.PlanOptions.model_fields, *self.OrderParams.model_fields)}
        values.update(dict(spec.options or {}))
        values.update(dict(spec.params or {}))
        prefix = self.settings.get("name_prefix") or ""
        values.update({
            "tenant_name": (spec.params or {}).get("tenant_name")
            or (name[len(prefix):] if prefix and name.startswith(prefix) else name),
            "name": name, "namespace": self.namespace, "external_id": spec.external_id,
            "service_id": spec.service_id, "customer_email": spec.customer_email,
            "customer_id": spec.customer_id, "plan": spec.plan,
        })
        return values

    @staticmethod
    def resources_for(options: Mapping[str, Any]) -> dict:
        """``spec.resources`` for plan options: ``cpu`` (cores) -> ``"500m"``/``"2"``, ``memory_mib``
        -> ``"<n>Mi"``, ``storage_gib`` -> ``"<n>Gi"``; ``None`` for an option the plan does not set
        (a merge patch then removes it)."""
        return {
            "cpu": cpu_quantity(options["cpu"]) if options.get("cpu") else None,
            "memory": f"{int(options['memory_mib'])}Mi" if options.get("memory_mib") else None,
            "storage": f"{int(options['storage_gib'])}Gi" if options.get("storage_gib") else None,
        }

    def build_body(self, spec: ServiceSpec, name: str) -> dict:
        """The custom resource ``provision`` creates (see README.md for an example)::

            apiVersion: <group>/<version>
            kind: <kind>
            metadata: {name, namespace, labels: {hostpanel.dev/service: <external id>,
                       app.kubernetes.io/managed-by: hostpanel},
                       annotations: {hostpanel.dev/external-id, hostpanel.dev/customer-email,
                                     hostpanel.dev/service-id, hostpanel.dev/plan}}
            spec: <spec_template rendered> + {packages: [...], suspend: false, resources: {...}}

        Raises ``PermanentBackendError`` when ``spec_template`` uses an unknown placeholder.
        """
        options = dict(spec.options or {})
        template = self.settings.get("spec_template") or {}
        try:
            base = render_template(template, self.template_values(spec, name))
        except KeyError as exc:
            raise PermanentBackendError(
                f"the spec_template setting uses an unknown placeholder {{{exc.args[0]}}}") from None
        ours: dict[str, Any] = {"packages": list(options.get("packages") or []), "suspend": False}
        resources = {k: v for k, v in self.resources_for(options).items() if v is not None}
        if resources:
            ours["resources"] = resources
        body_spec = deep_merge(base if isinstance(base, Mapping) else {}, ours)
        return {
            "apiVersion": f"{self.group}/{self.version}",
            "kind": self.settings["kind"],
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {SERVICE_LABEL: label_value_for(spec.external_id), MANAGED_BY_LABEL: "hostpanel"},
                "annotations": {
                    EXTERNAL_ID_ANNOTATION: spec.external_id,
                    EMAIL_ANNOTATION: str(spec.customer_email or ""),
                    SERVICE_ID_ANNOTATION: str(spec.service_id),
                    PLAN_ANNOTATION: str(spec.plan or ""),
                },
            },
            "spec": body_spec,
        }

    def _data(self, obj: Mapping[str, Any], spec: ServiceSpec, **extra) -> dict:
        """``Provisioned.data`` for a custom resource (non-secret, JSON)."""
        meta = obj.get("metadata") or {}
        cond = ready_condition(obj)
        data = {
            "name": meta.get("name"),
            "namespace": meta.get("namespace") or self.namespace,
            "uid": meta.get("uid"),
            "generation": meta.get("generation"),
            "api_version": obj.get("apiVersion") or f"{self.group}/{self.version}",
            "kind": obj.get("kind") or self.settings["kind"],
            "created_at": meta.get("creationTimestamp"),
            "tenant_name": (spec.params or {}).get("tenant_name") or None,
            "packages": packages_of(obj),
            "ready": bool(cond and cond.get("status") == "True" and is_current(obj, cond)),
        }
        status = obj.get("status") or {}
        if isinstance(status.get("url"), str) and status["url"].startswith(("https://", "http://")):
            data["url"] = status["url"]
        ref = status.get("kubeconfigSecretRef")
        if isinstance(ref, Mapping) and ref.get("name"):
            data["kubeconfig_secret"] = {"name": str(ref["name"]), "key": str(ref.get("key") or "kubeconfig")}
        data.update(extra)
        return data

    # ------------------------------------------------------------------ the client area

    def tenant_url(self, spec: ServiceSpec) -> str | None:
        """The tenant's URL: the ``tenant_url`` setting rendered (placeholders as ``spec_template``),
        else the ``status.url`` the operator reported (kept in ``backend_data["url"]``)."""
        template = self.settings.get("tenant_url")
        name = spec.resource_id or (spec.backend_data or {}).get("name")
        if template and name:
            try:
                url = render_template(str(template), self.template_values(spec, name))
            except KeyError:
                url = None
            if isinstance(url, str) and url.startswith(("https://", "http://")):
                return url
        url = (spec.backend_data or {}).get("url")
        return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None

    def client_area(self, spec: ServiceSpec) -> list:
        """The tenant URL (connect + a button), the tenant's kubeconfig as a credential when the
        operator made one (``status.kubeconfigSecretRef``), and the plan: packages, CPU (cores),
        memory (MiB), storage (GiB). From the stored data and plan options: no API call."""
        data, options = dict(spec.backend_data or {}), dict(spec.options or {})
        sections: list = []
        url = self.tenant_url(spec)
        items = [ConnectItem("Tenant URL", url, "url")] if url else []
        if data.get("name"):
            items.append(ConnectItem("Tenant", str(data.get("tenant_name") or data["name"]), "text"))
        if items:
            sections.append(Connect(tuple(items)))
        if url:
            sections.append(Links((Link("Open your tenant", url),)))
        if data.get("kubeconfig_secret"):
            sections.append(Credentials((Credential(
                "kubeconfig", "kubeconfig", help="Save it as a file and use it with kubectl: "
                                                 "kubectl --kubeconfig <file> get pods"),)))
        packages = list(data.get("packages") or options.get("packages") or [])
        limits = [Limit("Packages", value=", ".join(packages) if packages else "none")]
        if options.get("cpu"):
            limits.append(Limit("CPU", float(options["cpu"]), "cores"))
        if options.get("memory_mib"):
            limits.append(Limit("Memory", float(options["memory_mib"]), "MiB"))
        if options.get("storage_gib"):
            limits.append(Limit("Storage", float(options["storage_gib"]), "GiB"))
        sections.append(Resources(tuple(limits)))
        if url:
            sections.append(HowTo(f"Your tenant is at {url}. It runs the packages of your plan; change the plan "
                                  "to add or remove packages."))
        return sections

    def reveal_credential(self, spec: ServiceSpec, name: str) -> Secret:
        """``kubeconfig``: core/v1 ``read_namespaced_secret`` (``GET /api/v1/namespaces/{namespace}/
        secrets/{name}``) of the Secret the operator named in ``status.kubeconfigSecretRef``,
        base64-decoded. Raises ``PermanentBackendError`` when there is none (404) or it has no such key."""
        if name != "kubeconfig":
            return super().reveal_credential(spec, name)
        ref = (spec.backend_data or {}).get("kubeconfig_secret")
        if not ref:
            obj = self._find(spec)
            ref = self._data(obj, spec).get("kubeconfig_secret") if obj else None
        if not ref:
            raise PermanentBackendError("the operator reports no kubeconfig for this tenant")
        import base64

        from kubernetes import client

        self._custom_api()
        core = client.CoreV1Api(self._api_client)
        what = f"read the kubeconfig Secret {self.namespace}/{ref['name']}"
        try:
            secret = core.read_namespaced_secret(ref["name"], self.namespace, _request_timeout=self._timeout())
        except Exception as exc:  # noqa: BLE001 - typed below
            error = self._map_error(what, exc)
            if isinstance(error, _NotFound):
                raise PermanentBackendError(f"{what}: it does not exist (404)") from None
            raise error from None
        encoded = (secret.data or {}).get(ref.get("key") or "kubeconfig")
        if not encoded:
            raise PermanentBackendError(f"{what}: it has no key {ref.get('key')!r}")
        return Secret(base64.b64decode(encoded).decode("utf-8"))

    # ------------------------------------------------------------------ operations

    def test_connection(self) -> str:
        """Check that the API server answers, that the CRD is served (``GET /apis/{group}/{version}``
        lists ``plural``) and that we may list custom resources in ``namespace``; returns a summary."""
        self._check_settings()
        self._custom_api()
        try:
            found = self._call(f"discover {self.group}/{self.version}", "get_api_resources", self.group, self.version)
        except _NotFound:
            raise PermanentBackendError(
                f"the API server does not serve {self.group}/{self.version}; is the CRD installed?") from None
        names = []
        resource = None
        for item in getattr(found, "resources", None) or []:
            item_name = getattr(item, "name", None) if not isinstance(item, Mapping) else item.get("name")
            names.append(item_name)
            if item_name == self.plural:
                resource = item
        if resource is None:
            raise PermanentBackendError(
                f"{self.group}/{self.version} has no resource {self.plural!r} (it serves: "
                f"{', '.join(n for n in names if n and '/' not in n) or 'nothing'}); check the plural setting")
        namespaced = getattr(resource, "namespaced", None)
        kind = getattr(resource, "kind", None)
        if namespaced is False:
            raise PermanentBackendError(f"{self.resource_label} is cluster-scoped; this backend needs a namespaced CRD")
        page = self._call(f"list {self.plural} in namespace {self.namespace}", "list_namespaced_custom_object",
                          *self._crd_args(), label_selector=SERVICE_LABEL, limit=LIST_PAGE_SIZE)
        count = len((page or {}).get("items") or [])
        more = " or more" if ((page or {}).get("metadata") or {}).get("continue") else ""
        kind_note = "" if not kind or kind == self.settings["kind"] else (
            f"; note: the CRD's kind is {kind}, the kind setting says {self.settings['kind']}")
        return (f"Kubernetes API {self.settings.get('api_url') or '(kubeconfig)'}: {self.resource_label} is served; "
                f"{count}{more} {self.plural} of ours in namespace {self.namespace}{kind_note}")

    def provision(self, spec: ServiceSpec) -> Provisioned:
        """Create the custom resource (``create_namespaced_custom_object``, POST
        /apis/{group}/{version}/namespaces/{namespace}/{plural}) or adopt the one an earlier try made,
        then wait up to ``ready_timeout_seconds`` for ``status.conditions[type=Ready].status == "True"``.

        * 409 AlreadyExists: GET it; adopt when its ``hostpanel.dev/service`` label and external-id
          annotation are ours, else ``PermanentBackendError`` naming the collision (``fields`` names
          ``tenant_name`` when the customer chose the name).
        * ``Ready=False`` with a reason that is not a progress reason (``PROGRESS_REASONS``):
          ``PermanentBackendError`` with the reason and message.
        * timeout: ``TransientBackendError`` (the job retries and adopts).

        Returns ``Provisioned(resource_id=<name>, data={name, namespace, uid, generation, api_version,
        kind, created_at, tenant_name, packages, ready, adopted})``.
        """
        self._check_settings()
        name = self.cr_name(spec)
        kind = self.settings["kind"]
        body = self.build_body(spec, name)
        adopted = False
        try:
            obj = self._call(f"create {kind} {name}", "create_namespaced_custom_object", *self._crd_args(), body,
                             _headers={"Content-Type": "application/json"})
            log.info("created %s %s/%s for %s", kind, self.namespace, name, spec.external_id)
        except _Conflict:
            obj = self._get(name)
            if obj is None:
                raise TransientBackendError(
                    f"create {kind} {name}: it already existed but is gone now (being deleted?); retrying") from None
            if not self._is_ours(obj, spec):
                owner = self._owner(obj)
                chosen = bool((spec.params or {}).get("tenant_name"))
                whose = f"it belongs to {owner}" if owner else f"it has no {SERVICE_LABEL} label"
                message = (f"a {kind} named {name} already exists in namespace {self.namespace} and does not "
                           f"belong to this service ({whose})")
                raise PermanentBackendError(
                    message + ("; choose another tenant name" if chosen else ""),
                    fields={"tenant_name": "is already taken in the cluster"} if chosen else None) from None
            adopted = True
            log.info("adopted %s %s/%s for %s", kind, self.namespace, name, spec.external_id)
        if ((obj or {}).get("metadata") or {}).get("deletionTimestamp"):
            raise TransientBackendError(f"{kind} {name} is still being deleted; retry once it is gone")
        obj = self._wait_ready(name, obj)
        return Provisioned(resource_id=name, data=self._data(obj, spec, adopted=adopted))

    def _wait_ready(self, name: str, obj: dict) -> dict:
        """Poll the custom resource until its current generation is ``Ready=True``; see ``provision``."""
        timeout = float(self.settings.get("ready_timeout_seconds") or 0)
        if timeout <= 0:
            return obj
        kind = self.settings["kind"]
        deadline = time.monotonic() + timeout
        delay = 0.2
        last = "no Ready condition yet"
        while True:
            cond = ready_condition(obj)
            if cond and is_current(obj, cond):
                status = str(cond.get("status"))
                reason = str(cond.get("reason") or "")
                message = self._scrub(str(cond.get("message") or ""))[:500]
                if status == "True":
                    return obj
                if status == "False" and reason.lower() not in PROGRESS_REASONS:
                    raise PermanentBackendError(
                        f"{kind} {name} is not Ready: {reason}" + (f": {message}" if message else ""))
                why = reason + (f": {message}" if message else "")
                last = f"Ready={status}" + (f" ({why})" if why else "")
            elif cond:
                last = "the operator has not observed the latest generation yet"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransientBackendError(
                    f"{kind} {name} was created but is not Ready after {timeout:g} seconds ({last}); "
                    "the retry adopts it")
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 2.0)
            fresh = self._get(name, f"wait for {kind} {name}")
            if fresh is None:
                raise TransientBackendError(f"{kind} {name} disappeared while waiting for it to become Ready")
            obj = fresh

    def _set_suspend(self, spec: ServiceSpec, value: bool) -> None:
        action = "suspend" if value else "unsuspend"
        obj = self._require(spec, action)
        current = bool((obj.get("spec") or {}).get("suspend"))  # from the object the API returned
        name = obj["metadata"]["name"]
        if current == value:
            log.info("%s %s/%s: spec.suspend is already %s", action, self.namespace, name, str(value).lower())
            return
        self._patch(name, {"spec": {"suspend": value}}, f"{action} {self.settings['kind']} {name}")
        log.info("%s %s/%s: spec.suspend=%s", action, self.namespace, name, str(value).lower())

    def suspend(self, spec: ServiceSpec) -> None:
        """Merge-patch ``spec.suspend: true`` (a no-op when the returned object already has it)."""
        self._check_settings()
        self._set_suspend(spec, True)

    def unsuspend(self, spec: ServiceSpec) -> None:
        """Merge-patch ``spec.suspend: false`` (a no-op when the returned object is not suspended)."""
        self._check_settings()
        self._set_suspend(spec, False)

    def terminate(self, spec: ServiceSpec) -> None:
        """Delete the custom resource (``delete_namespaced_custom_object``, DELETE
        /apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}, ``propagationPolicy=Background``,
        precondition: its uid). Gone already (404), or a same-named object that is not ours: success;
        nothing that is not ours is ever deleted. The operator's finalizers may keep it a while."""
        self._check_settings()
        obj = self._find(spec)
        if obj is None:
            return
        meta = obj["metadata"]
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        if meta.get("uid"):
            body["preconditions"] = {"uid": meta["uid"]}
        try:
            self._call(f"delete {self.settings['kind']} {meta['name']}", "delete_namespaced_custom_object",
                       *self._crd_args(), meta["name"], propagation_policy="Background", body=body,
                       _headers={"Content-Type": "application/json"})
        except (_NotFound, _Conflict):  # gone, or replaced by another object of the same name
            return
        log.info("deleted %s %s/%s of %s", self.settings["kind"], self.namespace, meta["name"], spec.external_id)

    def change_plan(self, spec: ServiceSpec, new_options: Mapping[str, Any]) -> Provisioned:
        """Merge-patch ``spec.packages`` and ``spec.resources`` from the new plan's options.

        The patch carries the ``resourceVersion`` of the object just read, so the package diff
        (``packages_added``/``packages_removed`` in ``Provisioned.data``) is exact: it is computed from
        the object the API returned before and after the patch (seed 002), not from our plans. A 409
        (someone changed it in between) reads again, up to 3 times, then is transient.
        """
        self._check_settings()
        try:
            options = self.validate_plan_options(new_options)
        except ValidationError as exc:
            raise PermanentBackendError(f"the new plan's options are invalid: {exc}", fields=exc.errors) from None
        kind = self.settings["kind"]
        for attempt in range(3):
            before = self._require(spec, "change the plan")
            name = before["metadata"]["name"]
            patch = {"metadata": {"resourceVersion": before["metadata"].get("resourceVersion")},
                     "spec": {"packages": list(options.get("packages") or []),
                              "resources": self.resources_for(options)}}
            if not patch["metadata"]["resourceVersion"]:
                patch.pop("metadata")
            if not any(v is not None for v in patch["spec"]["resources"].values()) and not (
                    before.get("spec") or {}).get("resources"):
                patch["spec"].pop("resources")
            try:
                after = self._patch(name, patch, f"change the plan of {kind} {name}")
            except _Conflict:
                continue
            added, removed = package_diff(packages_of(before), packages_of(after))
            log.info("changed the plan of %s %s/%s: packages +%s -%s", kind, self.namespace, name, added, removed)
            data = self._data(after, spec, packages_added=added, packages_removed=removed,
                              resources={k: v for k, v in ((after.get("spec") or {}).get("resources") or {}).items()})
            return Provisioned(resource_id=name, data=data)
        raise TransientBackendError(f"change the plan of {kind}: it kept changing under us (409 Conflict 3 times)")

    def usage(self, spec: ServiceSpec) -> Usage:
        """Usage from ``status.usage`` when the operator reports it: ``cpu`` (a quantity, in cores),
        ``memory`` (bytes quantity, reported in MiB) and ``storage`` (bytes quantity, in GiB), each with
        the plan's limit; plus ``packages`` (count of ``spec.packages``) and ``package_days`` (day:
        the package-days today, one per enabled package; the billable metric). Without
        ``status.usage`` the plan's limits are shown as ``*_limit`` metrics with a note."""
        self._check_settings()
        obj = self._require(spec, "read usage")
        options = dict(spec.options or {})
        limits = {"cpu": options.get("cpu"), "memory": options.get("memory_mib"), "storage": options.get("storage_gib")}
        units = {"cpu": ("cores", Decimal(1), "CPU"), "memory": ("MiB", Decimal(1024) ** 2, "Memory"),
                 "storage": ("GiB", Decimal(1024) ** 3, "Storage")}
        reported = (obj.get("status") or {}).get("usage")
        metrics: list[Metric] = []
        note = ""
        if isinstance(reported, Mapping) and reported:
            for key, (unit, scale, label) in units.items():
                value = parse_quantity(reported.get(key))
                if value is None:
                    continue
                limit = limits[key]
                metrics.append(Metric(key if key == "cpu" else f"{key}_{unit.lower()}", round(float(value / scale), 3),
                                      unit, label, float(limit) if limit else None))
            note = "reported by the operator in status.usage"
        else:
            for key, (unit, _scale, label) in units.items():
                if limits[key]:
                    metrics.append(Metric(f"{key}_limit", float(limits[key]), unit, f"{label} (plan limit)",
                                          float(limits[key])))
            note = "the operator reports no status.usage; showing the plan's limits"
        enabled = float(len(packages_of(obj)))
        metrics.append(Metric("packages", enabled, "count", "Enabled packages"))
        metrics.append(Metric("package_days", enabled, "day", "Package-days today"))
        return Usage(metrics=tuple(metrics), note=note)

    def details(self, spec: ServiceSpec) -> dict:
        """What the customer sees: ``name``, ``namespace``, ``phase``, ``ready`` (with reason and
        message), ``conditions``, ``suspended`` (``spec.suspend``), ``suspended_at``
        (``status.suspendedAt``), ``packages``, ``generation``, ``observed_generation`` and
        ``created_at``; ``{"state": "absent"}`` when the custom resource is gone."""
        self._check_settings()
        obj = self._find(spec)
        if obj is None:
            return {"name": spec.resource_id, "namespace": self.namespace, "state": "absent"}
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        cond = ready_condition(obj) or {}
        return {
            "name": meta.get("name"),
            "namespace": meta.get("namespace") or self.namespace,
            "kind": obj.get("kind") or self.settings["kind"],
            "phase": status.get("phase"),
            "ready": cond.get("status") == "True" and is_current(obj, cond),
            "ready_reason": cond.get("reason"),
            "ready_message": self._scrub(str(cond.get("message") or "")) or None,
            "conditions": [{k: c.get(k) for k in ("type", "status", "reason", "message", "lastTransitionTime")}
                           for c in status.get("conditions") or [] if isinstance(c, Mapping)],
            "suspended": bool((obj.get("spec") or {}).get("suspend")),
            "suspended_at": status.get("suspendedAt"),
            "packages": packages_of(obj),
            "resources": (obj.get("spec") or {}).get("resources") or {},
            "generation": meta.get("generation"),
            "observed_generation": status.get("observedGeneration"),
            "created_at": meta.get("creationTimestamp"),
        }

    def list_resources(self) -> list[Resource]:
        """Every custom resource in ``namespace`` with our ``hostpanel.dev/service`` label
        (``list_namespaced_custom_object`` with ``labelSelector``, paged). State: ``suspended`` when
        ``spec.suspend``, else ``active`` when Ready=True, ``failed`` when Ready=False with a failure
        reason, ``provisioning`` otherwise. For adoption each carries what seed 002's backfill reads:
        ``created_at`` (``metadata.creationTimestamp``), ``suspended_at`` (``status.suspendedAt``),
        ``packages`` (``spec.packages``), ``customer_email`` (annotation
        ``hostpanel.dev/customer-email``), ``options`` (``packages``, ``cpu`` in cores, ``memory_mib``,
        ``storage_gib`` from ``spec.resources``) and ``params`` (``tenant_name``: the name without
        ``name_prefix``)."""
        self._check_settings()
        return [self._resource(obj) for obj in self._list(SERVICE_LABEL)]

    def list_unmanaged(self) -> list[Resource]:
        """Custom resources in ``namespace`` without our ``hostpanel.dev/service`` label
        (``labelSelector=!hostpanel.dev/service``), e.g. seed 002's tenants made by the portal before
        the panel; as ``Resource``s like ``list_resources``' with ``external_id`` "" (read only)."""
        self._check_settings()
        return [self._resource(obj) for obj in self._list(f"!{SERVICE_LABEL}")]

    def _resource(self, obj: Mapping[str, Any]) -> Resource:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        cond = ready_condition(obj) or {}
        if spec.get("suspend"):
            state = "suspended"
        elif cond.get("status") == "True":
            state = "active"
        elif cond.get("status") == "False" and str(cond.get("reason") or "").lower() not in PROGRESS_REASONS:
            state = "failed"
        else:
            state = "provisioning"
        detail = str(cond.get("reason") or "")
        if state == "failed" and cond.get("message"):
            detail += f": {self._scrub(str(cond.get('message')))[:300]}"
        detail += " (deleting)" if meta.get("deletionTimestamp") else ""
        name = str(meta.get("name") or "")
        prefix = self.settings.get("name_prefix") or ""
        tenant = name[len(prefix):] if prefix and name.startswith(prefix) else ""
        resources = spec.get("resources") if isinstance(spec.get("resources"), Mapping) else {}
        options: dict[str, Any] = {"packages": packages_of(obj)}
        cpu, memory, storage = (parse_quantity(resources.get(k)) for k in ("cpu", "memory", "storage"))
        if cpu is not None:
            options["cpu"] = float(cpu)
        if memory is not None:
            options["memory_mib"] = int(memory / (1024 ** 2))
        if storage is not None:
            options["storage_gib"] = int(storage / (1024 ** 3))
        annotations = meta.get("annotations") or {}
        return Resource(external_id=self._owner(obj), resource_id=name or None, state=state, detail=detail.strip(),
                        created_at=_k8s_time(meta.get("creationTimestamp")),
                        suspended_at=_k8s_time(status.get("suspendedAt")) if state == "suspended" else None,
                        customer_email=str(annotations.get(EMAIL_ANNOTATION) or ""), options=options,
                        params={"tenant_name": tenant} if tenant and not dns_label_problem(tenant) else {},
                        packages=tuple(packages_of(obj)))

    def adopt(self, spec: ServiceSpec, resource: Resource) -> Provisioned:
        """Take over a custom resource for ``spec`` without changing its ``spec``: one of ours is read
        (``get_namespaced_custom_object``); one from ``list_unmanaged`` first gets our marks with a
        JSON merge patch of ``metadata`` only (label ``hostpanel.dev/service``, managed-by, the
        external-id, customer-email and plan annotations; carrying the ``resourceVersion`` read, so a
        concurrent change is not overwritten). Returns ``Provisioned(resource_id=<name>, data)``.
        Raises ``PermanentBackendError`` when it is gone or belongs to another service."""
        self._check_settings()
        name = str(resource.resource_id or "")
        obj = self._get(name) if name else None
        kind = self.settings["kind"]
        if obj is None:
            raise PermanentBackendError(f"{kind} {name or '?'} is gone from namespace {self.namespace}")
        owner = self._owner(obj)
        if owner and owner != spec.external_id:
            raise PermanentBackendError(f"{kind} {name} belongs to {owner}, not {spec.external_id}")
        if not self._is_ours(obj, spec):
            meta = obj.get("metadata") or {}
            patch = {"metadata": {
                "resourceVersion": meta.get("resourceVersion"),
                "labels": {SERVICE_LABEL: label_value_for(spec.external_id), MANAGED_BY_LABEL: "hostpanel"},
                "annotations": {EXTERNAL_ID_ANNOTATION: spec.external_id,
                                EMAIL_ANNOTATION: str(spec.customer_email or ""), PLAN_ANNOTATION: str(spec.plan or "")}}}
            if not patch["metadata"]["resourceVersion"]:
                patch["metadata"].pop("resourceVersion")
            obj = self._patch(name, patch, f"adopt {kind} {name}")
            log.info("adopted %s %s/%s for %s", kind, self.namespace, name, spec.external_id)
        return Provisioned(resource_id=name, data=self._data(obj, spec, adopted=True))
