"""``PdsBackend``: AT Protocol PDS hosts made through a PDS deploy API.

Contract source: the seed (``shared/seeds/000_*.txt``) and ``shared/backends/pds.md``:

* ``POST {api_url}/api/v1/deploy`` with ``Authorization: Bearer <api_token>`` and the JSON body
  ``{"username", "password", "email", "hostname", "disksize"}`` (hostname: a bare FQDN; disksize: a
  number in GiB; password: generated base64url). A 2xx answer carries the service id in one of
  ``service_id``, ``serviceId``, ``id``, ``service.id``, ``data.id``, ``data.serviceId`` (that order).
* ``GET {api_url}/api/v1/service/{id}`` with ``Accept: application/json`` and
  ``X-Requested-With: XMLHttpRequest``; the body may be JSON encoded twice.

Defined by this plugin (README.md, "What a PDS host must offer"), because the seed names none:

* ``POST /api/v1/service/{id}/suspend``, ``POST /api/v1/service/{id}/resume``,
  ``DELETE /api/v1/service/{id}``; a 404/405 there means the host does not support it.
* a repeated ``POST /api/v1/deploy`` of an existing hostname (same username and email) answers
  ``409 {"error": "exists", "serviceId": N}``; the backend adopts N instead of failing.
* ``GET /api/v1/services`` (or ``GET /api/v1/health``), authenticated, for ``test_connection``;
  ``GET /api/v1/services?hostname=<fqdn>`` -> ``{"services": [{"id", "hostname", "username",
  "state", ...}]}`` for ``lookup`` (what a deploy whose answer was lost made) and, without the
  query, ``list_resources`` (``panel reconcile pds``).
* ``POST /api/v1/service/{id}/admin-password`` ``{"password"}``: sets the PDS admin password
  (``PDS_ADMIN_PASSWORD``) and restarts the PDS; 404/405 = not supported.

The API token and the PDS admin password never appear in a message, a log record or a ``repr``.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

# requests (about 5 MB of RSS) is imported on the first API call, not with the plugin: a web worker
# that only renders pages does not carry it (issue 14)
if TYPE_CHECKING:
    import requests
    from urllib3.util.retry import Retry

from pydantic import Field, SecretStr, field_validator

from panel.backends import (MASK, Action, ActionResult, Backend, Connect, ConnectItem, Credential,
                            Credentials, HowTo, Limit, Metric, NotSupportedError, PermanentBackendError,
                            Provisioned, Resource, Resources, Schema, Secret, ServiceSpec, TransientBackendError, Usage,
                            ValidationError, mask_secrets)

log = logging.getLogger(__name__)

__all__ = ["PdsBackend", "DeployTarget", "extract_service_id", "normalize_username",
           "username_from_email", "clean_hostname", "decode_json_body", "parse_storage_gib",
           "SERVICE_ID_PATHS", "REDEPLOY_STATUSES"]

DEPLOY_PATH = "/api/v1/deploy"
SERVICE_PATH = "/api/v1/service/{id}"
ADMIN_PASSWORD_PATH = "/api/v1/service/{id}/admin-password"
SERVICES_PATH = "/api/v1/services"
PREVIEW_CHARS = 200

#: Where a deploy answer may carry the service id, tried in this order (seed 000).
SERVICE_ID_PATHS: tuple[tuple[str, ...], ...] = (
    ("service_id",), ("serviceId",), ("id",), ("service", "id"), ("data", "id"), ("data", "serviceId"))

#: ``backend_data["status"]`` values after which a deploy is tried again (seed 000). Anything that
#: carries a service id is never deployed again, whatever its status.
REDEPLOY_STATUSES = frozenset({"deploy_failed", "deploy_succeeded_no_id"})

#: Remote ``state`` values that count as running / suspended (the stand-in uses the first of each).
RUNNING_STATES = frozenset({"running", "active", "ready", "deployed", "healthy", "deploying", "provisioning"})
SUSPENDED_STATES = frozenset({"suspended", "paused", "stopped", "scaled_down", "takendown"})

_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NOT_LABEL_CHARS = re.compile(r"[^a-z0-9-]+")
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@\"']+):[^@\s\"'/]+@")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")
_KEY_VALUE_SECRET = re.compile(
    r"(?i)((?:pass(?:word)?|secret|token|api[_-]?key|credential)[\"']?\s*[:=]\s*[\"']?)[^\"'\s,&;}]+")


# --------------------------------------------------------------------------- pure helpers

def _as_id(value: Any) -> str | None:
    """A service id as a URL-safe string, or ``None`` when ``value`` is not a usable id."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and _ID_RE.fullmatch(value.strip()):
        return value.strip()
    return None


def extract_service_id(body: Any) -> str | None:
    """The service id in a deploy answer, looked up in ``SERVICE_ID_PATHS`` order (seed 000).

    ``{"serviceId": 800}`` -> ``"800"``; ``{"data": {"id": "abc"}}`` -> ``"abc"``; no id -> ``None``.
    Ids are returned as strings (``Provisioned.resource_id``); values that are not an int or a
    short ``[A-Za-z0-9._:-]`` string are ignored (they end up in a URL path).
    """
    if not isinstance(body, Mapping):
        return None
    for path in SERVICE_ID_PATHS:
        node: Any = body
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        found = _as_id(node)
        if found is not None:
            return found
    return None


def normalize_username(value: Any) -> str:
    """Normalize a PDS username to one DNS label: lower case, ``[a-z0-9-]``, at most 63 characters.

    Runs of other characters become one ``-``; leading/trailing ``-`` are dropped.
    ``"John.Doe"`` -> ``"john-doe"``. Raises ``ValueError`` (a field-level message) when nothing is
    left or the result is longer than 63 characters.
    """
    text = _NOT_LABEL_CHARS.sub("-", str(value).strip().lower()).strip("-")
    if not text:
        raise ValueError("must contain at least one letter or digit (a-z, 0-9)")
    if len(text) > 63:
        raise ValueError("must be at most 63 characters (it becomes a DNS label)")
    return text


def username_from_email(email: str) -> str | None:
    """The default username: the email's local part without a ``+tag``, normalized and cut to 63.

    ``"Jane.Doe+pds@example.com"`` -> ``"jane-doe"``; ``None`` when nothing usable is left.
    """
    local = str(email or "").split("@", 1)[0].split("+", 1)[0]
    text = _NOT_LABEL_CHARS.sub("-", local.strip().lower()).strip("-")[:63].rstrip("-")
    return text or None


def clean_hostname(value: Any) -> str:
    """Clean a hostname to a bare, lower-case FQDN (what the deploy API expects).

    Strips a scheme, user info, path/query/fragment, a port and a trailing dot; IDN labels become
    punycode. ``"https://PDS.Example.com:443/xrpc/"`` -> ``"pds.example.com"``. Raises ``ValueError``
    with a field-level message when the result is not a fully qualified domain name.
    """
    text = str(value).strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = re.split(r"[/?#]", text, maxsplit=1)[0]
    text = text.rsplit("@", 1)[-1]
    if text.startswith("["):
        raise ValueError("must be a host name, not an IP address")
    text = text.split(":", 1)[0].rstrip(".").lower()
    if not text:
        raise ValueError("must be a fully qualified domain name, like pds.example.com")
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("is not a valid international domain name") from None
    labels = text.split(".")
    if len(labels) < 2:
        raise ValueError("must be a fully qualified domain name with a dot, like pds.example.com")
    if len(text) > 253:
        raise ValueError("must be at most 253 characters")
    for label in labels:
        if not _LABEL_RE.fullmatch(label):
            raise ValueError(f"has an invalid label {label[:63]!r} (use a-z, 0-9 and '-', 1-63 "
                             "characters, not starting or ending with '-')")
    if labels[-1].isdigit():
        raise ValueError("must be a host name, not an IP address")
    return text


def decode_json_body(text: str) -> Any:
    """Parse a JSON body, decoding it again when it is a JSON string holding JSON (seed 000).

    ``'"{\\"id\\": 1}"'`` -> ``{"id": 1}``. An empty body is ``{}``. Raises ``ValueError`` when the body
    is not JSON.
    """
    if not text or not text.strip():
        return {}
    value = json.loads(text)
    for _ in range(3):  # a string holding JSON, possibly more than once
        if isinstance(value, str) and value.strip()[:1] in ("{", "["):
            try:
                value = json.loads(value)
                continue
            except ValueError:
                break
        break
    return value


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)b?\s*$", re.I)
_POWERS = {"": 3, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_storage_gib(value: Any) -> float | None:
    """A storage size in GiB: a bare number is GiB (the deploy API's unit); ``"10Gi"`` -> 10.0,
    ``"512Mi"`` -> 0.5, ``"10G"`` (decimal, Kubernetes style) -> 9.313. ``None`` when unparseable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    match = _SIZE_RE.match(str(value))
    if not match:
        return None
    number, prefix, binary = float(match.group(1)), match.group(2).lower(), match.group(3)
    if not prefix:
        return number
    size_bytes = number * ((1024 if binary else 1000) ** _POWERS[prefix])
    return round(size_bytes / 1024 ** 3, 3)


def _reveal(value: Any) -> str:
    if isinstance(value, Secret):
        return value.reveal()
    return "" if value is None else str(value)


@dataclass(frozen=True)
class DeployTarget:
    """What a deploy sends for one service (the password aside): ``username`` (a DNS label),
    ``hostname`` (a bare FQDN), ``email`` (the customer's) and ``disksize_gb`` (GiB)."""

    username: str
    hostname: str
    email: str
    disksize_gb: int


class _Answer:
    """One HTTP answer, read once: status, headers, text and the decoded JSON (or ``_NO_JSON``)."""

    def __init__(self, method: str, path: str, response: requests.Response):
        self.method, self.path = method, path
        self.status = response.status_code
        self.headers = response.headers
        self.content_type = response.headers.get("Content-Type", "")
        self.text = response.text
        try:
            self.json: Any = decode_json_body(self.text)
            self.is_json = True
        except ValueError:
            self.json, self.is_json = None, False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def where(self) -> str:
        return f"{self.method} {self.path}"


# --------------------------------------------------------------------------- the backend

class PdsBackend(Backend):
    """AT Protocol PDS hosts through a PDS deploy API (seed 000; see the module docstring).

    Settings: ``api_url`` (base URL), ``api_token`` (secret Bearer token), ``hostname_domain``
    (default hostnames are ``<username>.<hostname_domain>``), ``default_disksize_gb`` (GiB) and
    ``timeout_seconds`` (per HTTP call). Plan option ``disksize_gb`` (GiB). Order params
    ``username`` and ``hostname`` (both optional).

    ``Provisioned``: ``resource_id`` is the PDS service id (a string); ``data`` holds
    ``pds_service_id``, ``status``, ``hostname``, ``username``, ``email``, ``disksize_gb`` and
    ``adopted``; ``secrets["admin_password"]`` is the PDS admin password (when known).
    """

    name = "pds"
    label = "AT Protocol PDS"
    class Settings(Schema):
        api_url: str = Field(title="Deploy API URL",
                             description="Base URL of the PDS deploy API, e.g. https://k8s-pds.example.com (no /api/v1)")
        api_token: SecretStr = Field(title="API token", description="Bearer token for the PDS deploy API")
        hostname_domain: str = Field(
            "pds.example.test", title="Hostname domain",
            description="Default hostnames are <username>.<this domain> (the seed's is eny.k8s.frx.pub)")
        default_disksize_gb: int = Field(10, ge=1, le=16384, title="Default disk size",
                                         description="Used when a plan sets no disksize_gb",
                                         json_schema_extra={"unit": "GiB"})
        timeout_seconds: float = Field(15, ge=1, le=300, title="HTTP timeout",
                                       description="Connect and read timeout of each call to the deploy API",
                                       json_schema_extra={"unit": "seconds"})

        @field_validator("api_url")
        @classmethod
        def _http_url(cls, value: str) -> str:
            value = value.rstrip("/")
            if urlsplit(value).scheme not in ("http", "https"):
                raise ValueError("must start with http:// or https://")
            return value

        @field_validator("hostname_domain")
        @classmethod
        def _domain(cls, value: str) -> str:
            return clean_hostname(value)

    class PlanOptions(Schema):
        disksize_gb: int | None = Field(None, ge=1, le=16384, title="Disk size",
                                        description="PDS data volume size; defaults to the default_disksize_gb setting",
                                        json_schema_extra={"unit": "GiB"})

    class OrderParams(Schema):
        username: str | None = Field(None, max_length=320, title="Username",
                                     description="Lower case letters, digits and '-'; defaults to your email's local part")
        hostname: str | None = Field(None, max_length=300, title="Hostname",
                                     description="A domain name like pds.example.com; defaults to <username>.<hostname domain>")

        # Fallbacks (username from the customer's email, hostname <username>.<hostname_domain>) are
        # applied at provision time, where the email is known; see ``PdsBackend.target``.
        @field_validator("username")
        @classmethod
        def _username(cls, value: str | None) -> str | None:
            return None if value is None else normalize_username(value)

        @field_validator("hostname")
        @classmethod
        def _hostname(cls, value: str | None) -> str | None:
            return None if value is None else clean_hostname(value)

    def __init__(self, settings: Mapping[str, Any]):
        """Validate ``settings``; an invalid configuration is reported by each operation."""
        raw = dict(settings or {})
        self._settings_error: str | None = None
        try:
            clean = self.validate_settings({k: v for k, v in raw.items() if k in self.Settings.model_fields})
        except ValidationError as exc:
            self._settings_error = str(exc)
            clean = {**{k: f.default for k, f in self.Settings.model_fields.items() if not f.is_required()}, **raw}
            clean["api_token"] = Secret(_reveal(raw.get("api_token")))
        super().__init__(clean)
        self._reads: requests.Session | None = None
        self._writes: requests.Session | None = None

    def claim_key(self, spec: ServiceSpec) -> tuple[str, str]:
        """``("hostname", <the hostname a deploy would use>)``: one panel service per PDS hostname,
        so a second order that would fall back to the same default hostname is refused at
        order time instead of adopting the first one's PDS. Raises ``PermanentBackendError``."""
        return ("hostname", self.target(spec).hostname)

    def target(self, spec: ServiceSpec) -> DeployTarget:
        """The username, hostname, email and disk size (GiB) a deploy for ``spec`` sends.

        username: ``params.username`` normalized, else the customer's email local part.
        hostname: ``params.hostname`` cleaned, else ``<username>.<hostname_domain>``.
        disksize_gb: plan option ``disksize_gb``, else the ``default_disksize_gb`` setting.
        Raises ``PermanentBackendError`` with ``fields`` when any of them is invalid.
        """
        params, options = spec.params or {}, spec.options or {}
        errors: dict[str, str] = {}
        username = hostname = ""
        try:
            if params.get("username"):
                username = normalize_username(params["username"])
            else:
                username = username_from_email(spec.customer_email) or ""
                if not username:
                    errors["username"] = "is required: none can be derived from the customer's email"
        except ValueError as exc:
            errors["username"] = str(exc)
        if params.get("hostname"):
            try:
                hostname = clean_hostname(params["hostname"])
            except ValueError as exc:
                errors["hostname"] = str(exc)
        elif username:
            fallback = f"{username}.{self.settings.get('hostname_domain') or ''}"
            try:
                hostname = clean_hostname(fallback)
            except ValueError as exc:
                errors["hostname"] = f"the default {fallback!r} {exc} (check the hostname_domain setting)"
        email = str(spec.customer_email or "").strip()
        if "@" not in email:
            errors["email"] = "the customer has no valid email address"
        size = options.get("disksize_gb") or self.settings.get("default_disksize_gb") or 10
        try:
            disksize = int(size)
            if disksize < 1:
                raise ValueError
        except (TypeError, ValueError):
            errors["disksize_gb"] = "must be a whole number of GiB, at least 1"
            disksize = 0
        if errors:
            raise PermanentBackendError(
                "cannot deploy a PDS: " + "; ".join(f"{k} {v}" for k, v in errors.items()), fields=errors)
        return DeployTarget(username=username, hostname=hostname, email=email, disksize_gb=disksize)

    # ------------------------------------------------------------------ the client area

    hostname_params = ("hostname",)

    def own_domains(self) -> tuple[str, ...]:
        """The ``hostname_domain`` setting: default hostnames live under it (no DNS proof needed)."""
        domain = self.settings.get("hostname_domain")
        return (domain,) if domain and not self._settings_error else ()

    def client_area(self, spec: ServiceSpec) -> list:
        """The PDS URL and hostname (copy), the admin password (revealed on request; user name
        ``admin``, the PDS admin API's Basic auth), the storage, and how to start. From the stored
        data only: no call to the deploy API."""
        data = dict(spec.backend_data or {})
        hostname = data.get("hostname")
        if not hostname:
            return []
        url = f"https://{hostname}"
        sections: list = [Connect((ConnectItem("PDS URL", url, "url"), ConnectItem("Hostname", hostname, "hostname")))]
        if (spec.secrets or {}).get("admin_password"):
            sections.append(Credentials((Credential(
                "admin_password", "PDS admin password", username="admin",
                help="For the PDS admin API and the pdsadmin tool (Basic auth, user name admin)."),)))
        size = data.get("disksize_gb") or (spec.options or {}).get("disksize_gb")
        if size:
            sections.append(Resources((Limit("Storage", float(size), "GiB"),)))
        steps = (f"In a Bluesky app, choose another hosting provider and enter {url}.",
                 f"Create accounts on it with the PDS admin password: pdsadmin account create, or "
                 f"POST {url}/xrpc/com.atproto.server.createInviteCode with user name admin.",
                 f"Check that it runs: {url}/xrpc/_health answers with its version.")
        text = f"Your PDS is at {url}."
        if not (spec.secrets or {}).get("admin_password"):
            text += " We do not know its admin password: use \"Reset admin password\" to set a new one."
        sections.append(HowTo(text, steps=steps))
        return sections

    def actions(self, spec: ServiceSpec) -> list[Action]:
        """``reset_admin_password``: a new PDS admin password, set on the host."""
        if not self._service_id(spec):
            return []
        return [Action("reset_admin_password", "Reset admin password",
                       confirm="Set a new PDS admin password? The old one stops working at once.",
                       description="Sets a new admin password on your PDS and restarts it.")]

    def run_action(self, spec: ServiceSpec, name: str, params: Mapping[str, Any]) -> ActionResult:
        """``reset_admin_password``: ``POST /api/v1/service/{id}/admin-password`` ``{"password"}``
        with a new ``secrets.token_urlsafe(24)`` (defined by this plugin, README "What a PDS host must
        offer"); the new password replaces ``secrets["admin_password"]``. 404/405/501 ->
        ``NotSupportedError``; other errors as for the other calls."""
        if name != "reset_admin_password":
            return super().run_action(spec, name, params)
        self._check_settings()
        service_id = self._service_id(spec)
        if service_id is None:
            raise PermanentBackendError("cannot reset the admin password: no PDS service id is recorded")
        password = secrets.token_urlsafe(24)
        path = ADMIN_PASSWORD_PATH.format(id=service_id)
        answer = self._call("POST", path, json_body={"password": password}, extra_secrets=(password,))
        if answer.ok:
            data = {"note": None} if (spec.backend_data or {}).get("note") else {}
            return ActionResult("The PDS admin password was changed; the old one no longer works.",
                                data=data, secrets={"admin_password": Secret(password)})
        if answer.status == 404 and not self._exists(service_id):
            raise PermanentBackendError(f"PDS service {service_id} does not exist on the host (HTTP 404)")
        if answer.status in (404, 405, 501):
            raise NotSupportedError(
                f"this PDS host does not support resetting the admin password (HTTP {answer.status} on "
                f"POST {path}); see the pds plugin README for the endpoints a host must offer")
        raise self._http_error(answer, password)

    # ------------------------------------------------------------------ operations

    def test_connection(self) -> str:
        """One authenticated GET: ``/api/v1/services``, else ``/api/v1/health``. Returns a summary."""
        self._check_settings()
        for path in ("/api/v1/services", "/api/v1/health"):
            answer = self._call("GET", path)
            if answer.status in (404, 405):
                continue
            if not answer.ok:
                raise self._http_error(answer)
            if not answer.is_json:
                raise self._non_json_error(answer)
            body = answer.json
            services = body.get("services") if isinstance(body, Mapping) else body
            if isinstance(services, list):
                return f"PDS deploy API at {self._base()}: token accepted, {len(services)} service(s)"
            return f"PDS deploy API at {self._base()}: token accepted (GET {path}: HTTP {answer.status})"
        raise NotSupportedError(
            f"the PDS host at {self._base()} offers neither GET /api/v1/services nor GET /api/v1/health "
            "(HTTP 404/405), so the token cannot be checked without deploying")

    def provision(self, spec: ServiceSpec) -> Provisioned:
        """Deploy a PDS (``POST /api/v1/deploy``), or adopt the one already made.

        Redeploy rules (seed 000): a recorded id (``spec.resource_id`` or
        ``backend_data["pds_service_id"]``) is never deployed again, whatever
        ``backend_data["status"]`` says; it is returned as is. Without one (first try,
        ``deploy_failed``, ``deploy_succeeded_no_id``) the deploy is sent, with the password from
        ``spec.secrets["admin_password"]`` when there is one, else a new ``secrets.token_urlsafe``.

        Answers: 2xx with an id -> done; 2xx without an id (or not JSON) -> ``TransientBackendError``
        (retried: the retry is answered 409 with the id, see README); 409 with an id -> adopt, after
        checking the remote hostname/email match; 409 without one -> hostname taken (permanent).
        """
        self._check_settings()
        data = dict(spec.backend_data or {})
        known = _as_id(spec.resource_id) or _as_id(data.get("pds_service_id"))
        if known:
            if data.get("status") in REDEPLOY_STATUSES or not data.get("status"):
                data["status"] = "provisioning"
            data["pds_service_id"] = known
            return Provisioned(resource_id=known, data=data, secrets=dict(spec.secrets or {}))

        target = self.target(spec)
        reused = _reveal((spec.secrets or {}).get("admin_password"))
        password = reused or secrets.token_urlsafe(24)
        body = {"username": target.username, "password": password, "email": target.email,
                "hostname": target.hostname, "disksize": target.disksize_gb}
        answer = self._call("POST", DEPLOY_PATH, json_body=body, extra_secrets=(password,))
        log.info("PDS deploy of %s: HTTP %s", target.hostname, answer.status)
        if answer.ok:
            if not (answer.is_json and isinstance(answer.json, Mapping)):
                raise TransientBackendError(
                    f"PDS deploy of {target.hostname} answered HTTP {answer.status} with a non-JSON body "
                    f"(Content-Type {answer.content_type or 'none'}): {self._preview(answer, password)}; "
                    "it may have been deployed, so the deploy is retried (a PDS host answers the "
                    "repeat with 409 and the service id)")
            service_id = extract_service_id(answer.json)
            if service_id is None:
                raise TransientBackendError(
                    f"deploy succeeded but returned no service id (HTTP {answer.status}: "
                    f"{self._preview(answer, password)}); the deploy is retried, and a PDS host answers "
                    "the repeat with 409 and the service id")
            status = answer.json.get("status")
            return self._provisioned(service_id, target, password, adopted=False,
                                     remote_status=status if isinstance(status, str) else None)
        if answer.status == 409:
            service_id = extract_service_id(answer.json) if answer.is_json else None
            if service_id is not None:
                return self._adopt(service_id, target, password if reused else None)
            raise PermanentBackendError(
                f"hostname {target.hostname} is already in use on the PDS host (HTTP 409: "
                f"{self._preview(answer, password)}); order with another hostname",
                fields={"hostname": "is already in use on the PDS host"})
        raise self._http_error(answer, password)

    def details(self, spec: ServiceSpec) -> dict:
        """The service as the PDS host reports it (``GET /api/v1/service/{id}``), masked.

        Keys (when the host gives them): ``id``, ``service``, ``namespace``, ``state``,
        ``kubeconfig_id``, ``hostname``, ``storage`` (as given) and ``storage_gb`` (GiB), ``email``
        (the email settings), ``install_cmd``, ``created_at``, ``updated_at`` and
        ``encrypted_config`` with ``adminPassword`` and every secret-looking value masked.
        """
        service_id = self._service_id(spec)
        if service_id is None:
            return {**self._mask(dict(spec.backend_data or {}), spec), "state": "not deployed",
                    "note": "no PDS service id is recorded for this service"}
        raw = self._fetch_service(service_id)
        config = self._config(raw)
        secret_values = [str(config.get(k)) for k in config
                         if isinstance(k, str) and re.search(r"(?i)pass|secret|token", k) and config.get(k)]
        storage = self._storage(config)
        out: dict[str, Any] = {
            "id": raw.get("id", service_id),
            "service": raw.get("service"),
            "namespace": raw.get("namespace"),
            "state": raw.get("state"),
            "kubeconfig_id": raw.get("kubeconfig_id"),
            "hostname": config.get("hostname") or (spec.backend_data or {}).get("hostname"),
            "storage": storage[0],
            "storage_gb": storage[1],
            "email": {k: v for k, v in config.items()
                      if isinstance(k, str) and re.search(r"(?i)e-?mail|smtp", k)} or None,
            "install_cmd": raw.get("install_cmd"),
            "created_at": raw.get("created_at") or raw.get("createdAt"),
            "updated_at": raw.get("updated_at") or raw.get("updatedAt"),
            "encrypted_config": config or None,
        }
        out = {k: v for k, v in out.items() if v is not None}
        return self._mask(out, spec, *secret_values)

    def usage(self, spec: ServiceSpec) -> Usage:
        """Allocated storage (GiB, with the plan's size as limit) and whether the PDS runs (count).

        The deploy API reports no storage *used*, so ``storage_allocated`` is the volume size.
        """
        service_id = self._service_id(spec)
        planned = (spec.backend_data or {}).get("disksize_gb") or (spec.options or {}).get("disksize_gb")
        if service_id is None:
            return Usage(note="no PDS service id is recorded for this service")
        raw = self._fetch_service(service_id)
        _, size = self._storage(self._config(raw))
        if size is None and planned is not None:
            size = float(planned)
        state = str(raw.get("state") or "unknown")
        metrics = []
        if size is not None:
            metrics.append(Metric("storage_allocated", float(size), "GiB", label="Storage allocated",
                                  limit=float(planned) if planned else float(size)))
        metrics.append(Metric("running", 1.0 if state.lower() in RUNNING_STATES else 0.0, "count",
                              label="PDS running", limit=1.0))
        return Usage(metrics=tuple(metrics),
                     note=f"state: {state}; the deploy API reports allocated storage, not storage used")

    def suspend(self, spec: ServiceSpec) -> None:
        """``POST /api/v1/service/{id}/suspend``; repeats succeed. 404/405 -> ``NotSupportedError``."""
        self._lifecycle(spec, "suspend", "suspend")

    def unsuspend(self, spec: ServiceSpec) -> None:
        """``POST /api/v1/service/{id}/resume``; repeats succeed. 404/405 -> ``NotSupportedError``."""
        self._lifecycle(spec, "resume", "resume (unsuspend)")

    def terminate(self, spec: ServiceSpec) -> None:
        """``DELETE /api/v1/service/{id}``. Gone already (404 and the service is absent) succeeds;
        405/501, or a 404 while the service still exists, -> ``NotSupportedError``.

        Without a recorded id (a deploy whose answer was lost) the service is looked up by hostname
        (``lookup``) and deleted if it is this order's; when nothing is found there is nothing to
        delete.
        """
        self._check_settings()
        service_id = self._service_id(spec)
        if service_id is None:
            found = self.lookup(spec)
            if found is None:
                log.info("PDS terminate of %s: no service id recorded and none found by hostname",
                         spec.external_id)
                return
            service_id = found.resource_id
        path = SERVICE_PATH.format(id=service_id)
        answer = self._call("DELETE", path)
        if answer.ok:
            return
        if answer.status == 404 and not self._exists(service_id):
            return
        if answer.status in (404, 405, 501):
            raise NotSupportedError(
                f"this PDS host does not support delete (HTTP {answer.status} on DELETE {path}); "
                "delete the service on the host by hand, see the pds plugin README")
        raise self._http_error(answer)

    def lookup(self, spec: ServiceSpec) -> Resource | None:
        """The PDS service a deploy for ``spec`` made, found by hostname: ``GET
        /api/v1/services?hostname=<fqdn>`` (defined by this plugin, see the README). Only a
        service with this order's hostname and username counts; ``None`` when there is none.
        Raises ``NotSupportedError`` when the host has no listing (404/405), else the usual
        typed errors."""
        self._check_settings()
        target = self.target(spec)
        for item in self._list(hostname=target.hostname):
            try:
                same_host = clean_hostname(item.get("hostname") or "") == target.hostname
            except ValueError:
                same_host = False
            username = item.get("username")
            if same_host and (not username or str(username) == target.username):
                return self._resource(item, external_id=spec.external_id)
        return None

    def list_resources(self) -> list[Resource]:
        """Every PDS service on the host (``GET /api/v1/services``), by id and hostname (a PDS
        carries no external id of ours: ``panel reconcile`` matches them by id and hostname)."""
        self._check_settings()
        return [self._resource(item) for item in self._list()]

    def _list(self, hostname: str | None = None) -> list[Mapping[str, Any]]:
        path = SERVICES_PATH + (f"?hostname={hostname}" if hostname else "")
        answer = self._call("GET", path)
        if answer.status in (404, 405, 501):
            raise NotSupportedError(
                f"this PDS host does not list its services (HTTP {answer.status} on GET {SERVICES_PATH}); "
                "see the pds plugin README for the endpoints a host must offer")
        if not answer.ok:
            raise self._http_error(answer)
        if not answer.is_json:
            raise self._non_json_error(answer)
        body = answer.json
        items = body.get("services", body.get("data")) if isinstance(body, Mapping) else body
        if not isinstance(items, list):
            raise PermanentBackendError(f"the PDS deploy API answered GET {SERVICES_PATH} without a "
                                        f"list of services: {self._preview(answer)}")
        return [item for item in items if isinstance(item, Mapping) and _as_id(item.get("id"))]

    @staticmethod
    def _resource(item: Mapping[str, Any], external_id: str = "") -> Resource:
        state = str(item.get("state") or "").lower()
        shown = ("active" if state in RUNNING_STATES else "suspended" if state in SUSPENDED_STATES
                 else "unknown")
        hostname = str(item.get("hostname") or "")
        return Resource(external_id=external_id, resource_id=_as_id(item.get("id")), state=shown,
                        detail=f"{item.get('service') or 'pds'} {hostname} ({state or 'no state'})",
                        name=hostname)

    # ------------------------------------------------------------------ internals

    def _lifecycle(self, spec: ServiceSpec, action: str, verb: str) -> None:
        self._check_settings()
        service_id = self._service_id(spec)
        if service_id is None:
            raise PermanentBackendError(f"cannot {verb}: no PDS service id is recorded for this service")
        path = SERVICE_PATH.format(id=service_id) + "/" + action
        answer = self._call("POST", path)
        if answer.ok:
            return
        if answer.status == 404 and not self._exists(service_id):
            raise PermanentBackendError(
                f"cannot {verb}: PDS service {service_id} does not exist on the host (HTTP 404)")
        if answer.status in (404, 405, 501):
            raise NotSupportedError(
                f"this PDS host does not support {action} (HTTP {answer.status} on POST {path}); "
                "see the pds plugin README for the endpoints a host must offer")
        raise self._http_error(answer)

    def _provisioned(self, service_id: str, target: DeployTarget, password: str | None, *,
                     adopted: bool, remote_status: str | None = None) -> Provisioned:
        data = {"pds_service_id": service_id, "status": "provisioning", "hostname": target.hostname,
                "username": target.username, "email": target.email, "disksize_gb": target.disksize_gb,
                "adopted": adopted}
        if remote_status:
            data["deploy_status"] = remote_status[:40]
        secrets_out = {"admin_password": Secret(password)} if password else {}
        if not password:
            data["note"] = ("adopted an existing PDS whose admin password this panel does not know; "
                            "reset it on the PDS host")
        return Provisioned(resource_id=service_id, data=data, secrets=secrets_out)

    def _adopt(self, service_id: str, target: DeployTarget, reused_password: str | None) -> Provisioned:
        """A 409 named an existing service: check it is this order's, and recover its password."""
        raw = self._fetch_service(service_id)
        config = self._config(raw)
        remote_host = config.get("hostname")
        if isinstance(remote_host, str) and remote_host.strip():
            try:
                same = clean_hostname(remote_host) == target.hostname
            except ValueError:
                same = False
            if not same:
                raise PermanentBackendError(
                    f"the PDS host answered 409 for {target.hostname} with service {service_id}, "
                    "which has another hostname; not adopting it")
        remote_email = next((config[k] for k in ("adminEmail", "admin_email", "email") if config.get(k)), None)
        if isinstance(remote_email, str) and remote_email.strip().lower() != target.email.lower():
            raise PermanentBackendError(
                f"hostname {target.hostname} is already in use on the PDS host by another account; "
                "order with another hostname", fields={"hostname": "is already in use on the PDS host"})
        remote_password = config.get("adminPassword")
        password = remote_password if isinstance(remote_password, str) and remote_password else reused_password
        log.info("PDS deploy of %s: adopted existing service %s", target.hostname, service_id)
        return self._provisioned(service_id, target, password, adopted=True)

    def _fetch_service(self, service_id: str) -> dict:
        """``GET /api/v1/service/{id}``: the decoded mapping (unwrapping ``{"data": {...}}``)."""
        self._check_settings()
        answer = self._call("GET", SERVICE_PATH.format(id=service_id))
        if answer.status == 404:
            raise PermanentBackendError(
                f"PDS service {service_id} was not found on the host (HTTP 404 on GET {answer.path})")
        if not answer.ok:
            raise self._http_error(answer)
        if not (answer.is_json and isinstance(answer.json, Mapping)):
            raise self._non_json_error(answer)
        body = dict(answer.json)
        inner = body.get("data")
        if isinstance(inner, str):
            try:
                inner = decode_json_body(inner)
            except ValueError:
                pass
        if isinstance(inner, Mapping) and not ({"state", "service", "namespace"} & set(body)):
            body = dict(inner)
        return body

    def _exists(self, service_id: str) -> bool:
        """Whether ``GET /api/v1/service/{id}`` finds the service (404 -> False)."""
        answer = self._call("GET", SERVICE_PATH.format(id=service_id))
        if answer.status == 404:
            return False
        if answer.ok:
            return True
        raise self._http_error(answer)

    @staticmethod
    def _config(raw: Mapping[str, Any]) -> dict:
        config = raw.get("encrypted_config") or raw.get("config") or {}
        if isinstance(config, str):
            try:
                config = decode_json_body(config)
            except ValueError:
                config = {}
        return dict(config) if isinstance(config, Mapping) else {}

    @staticmethod
    def _storage(config: Mapping[str, Any]) -> tuple[Any, float | None]:
        for key in ("storageSize", "storage_size", "storage", "disksize", "diskSize", "disk_size",
                    "storageGb", "storage_gb"):
            if config.get(key) not in (None, ""):
                return config[key], parse_storage_gib(config[key])
        return None, None

    @staticmethod
    def _service_id(spec: ServiceSpec) -> str | None:
        return _as_id(spec.resource_id) or _as_id((spec.backend_data or {}).get("pds_service_id"))

    def _check_settings(self) -> None:
        if self._settings_error:
            raise PermanentBackendError(f"the pds backend settings are invalid: {self._settings_error}")
        if not self.settings["api_token"]:
            raise PermanentBackendError("the pds backend settings are invalid: api_token is required")

    def _base(self) -> str:
        return self.settings["api_url"]

    def _timeout(self) -> float:
        try:
            return float(self.settings.get("timeout_seconds") or 15)
        except (TypeError, ValueError):
            return 15.0

    def _session(self, method: str) -> requests.Session:
        """Reads retry connection errors (twice, short backoff); writes are never retried here."""
        from urllib3.util.retry import Retry

        if method == "GET":
            if self._reads is None:
                retry = Retry(total=2, connect=2, read=False, status=0, other=0, redirect=0,
                              allowed_methods=frozenset({"GET"}), status_forcelist=(),
                              backoff_factor=0.2, raise_on_status=False)
                self._reads = self._new_session(retry, self._base())
            return self._reads
        if self._writes is None:
            self._writes = self._new_session(Retry(total=0, connect=0, read=False, status=0, other=0,
                                                   redirect=0, raise_on_status=False), self._base())
        return self._writes

    @staticmethod
    def _new_session(retry: Retry, base_url: str) -> requests.Session:
        """A keep-alive session for ``base_url``. The proxy settings of the environment
        (``HTTPS_PROXY``, ``NO_PROXY``...) are read once here instead of on every request
        (requests' ``trust_env`` re-reads them and looks for a ``.netrc`` per call: about a
        millisecond of a worker's CPU per backend call, issue 14); the token is a header, so
        ``.netrc`` never applied."""
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        session.trust_env = False
        session.proxies.update(requests.utils.get_environ_proxies(base_url))
        adapter = HTTPAdapter(max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update({"User-Agent": "hostpanel-pds/0.1", "Accept": "application/json",
                                "X-Requested-With": "XMLHttpRequest"})
        return session

    def _call(self, method: str, path: str, *, json_body: Any = None,
              extra_secrets: tuple[str, ...] = ()) -> _Answer:
        """One HTTP call; connection problems become ``TransientBackendError``. Never raises a raw
        ``requests`` exception and never returns without a status."""
        import requests

        url = self._base() + path
        headers = {"Authorization": "Bearer " + self.settings["api_token"].reveal()}
        timeout = self._timeout()
        try:
            response = self._session(method).request(method, url, json=json_body, headers=headers,
                                                      timeout=(min(timeout, 10.0), timeout),
                                                      allow_redirects=False)
        except requests.exceptions.Timeout:
            raise TransientBackendError(
                f"the PDS deploy API did not answer {method} {path} within {timeout:g} s "
                f"({self._base()})") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            raise PermanentBackendError(
                f"the pds api_url {self._base()!r} is not usable ({type(exc).__name__})") from None
        except requests.exceptions.RequestException as exc:
            raise TransientBackendError(
                f"cannot reach the PDS deploy API at {self._base()} for {method} {path} "
                f"({self._reason(exc, extra_secrets)})") from None
        answer = _Answer(method, path, response)
        log.debug("PDS %s %s -> HTTP %s", method, path, answer.status)
        return answer

    def _reason(self, exc: Exception, extra: tuple[str, ...] = ()) -> str:
        text = str(exc)
        match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
        reason = match.group(1).strip() if match else type(exc).__name__
        return self._scrub(reason, *extra)[:120]

    def _scrub(self, text: str, *extra: str) -> str:
        """``text`` with the token, the given secrets and credential-looking parts masked."""
        for value in (self.settings["api_token"].reveal(), *extra):
            if value and len(value) >= 4:
                text = text.replace(value, MASK)
        text = _URL_CREDENTIALS.sub(lambda m: m.group(1) + ":" + MASK + "@", text)
        text = _BEARER.sub("Bearer " + MASK, text)
        return _KEY_VALUE_SECRET.sub(lambda m: m.group(1) + MASK, text)

    def _preview(self, answer: _Answer, *extra: str) -> str:
        """At most ``PREVIEW_CHARS`` characters of the body, secrets masked, whitespace folded."""
        if answer.is_json and isinstance(answer.json, (Mapping, list)):
            text = json.dumps(mask_secrets(answer.json), ensure_ascii=False)
        else:
            text = answer.text or ""
        text = " ".join(self._scrub(text, *extra).split())
        if not text:
            return "(empty body)"
        return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS - 1] + "…"

    def _non_json_error(self, answer: _Answer) -> PermanentBackendError:
        return PermanentBackendError(
            f"the PDS deploy API answered {answer.where} with HTTP {answer.status} and a non-JSON body "
            f"(Content-Type {answer.content_type or 'none'}): {self._preview(answer)}")

    def _http_error(self, answer: _Answer, *extra: str) -> Exception:
        """Map a non-2xx answer to a typed error carrying the status and a short body preview."""
        status, preview = answer.status, self._preview(answer, *extra)
        base = f"the PDS deploy API answered {answer.where} with HTTP {status}: {preview}"
        if status in (401, 403):
            return PermanentBackendError(
                f"the PDS deploy API rejected the api_token (HTTP {status} on {answer.where}); "
                f"check the pds api_token setting: {preview}")
        if status == 429:
            return TransientBackendError(base, retry_after=self._retry_after(answer))
        if status >= 500:
            return TransientBackendError(base, retry_after=self._retry_after(answer))
        if 300 <= status < 400:
            location = self._scrub(str(answer.headers.get("Location", "")))[:120]
            return PermanentBackendError(
                f"the PDS deploy API redirected {answer.where} (HTTP {status}) to {location or '?'}; "
                "set api_url to the final address")
        fields: dict[str, str] = {}
        if answer.is_json and isinstance(answer.json, Mapping):
            errors = answer.json.get("errors") or answer.json.get("fields")
            if isinstance(errors, Mapping):
                fields = {str(k): self._scrub(str(v), *extra)[:200] for k, v in errors.items()}
        return PermanentBackendError(base, fields=fields)

    @staticmethod
    def _retry_after(answer: _Answer) -> float | None:
        try:
            value = float(answer.headers.get("Retry-After", ""))
        except ValueError:
            return None
        return value if value >= 0 else None

    def _mask(self, value: Any, spec: ServiceSpec, *extra: str) -> Any:
        """``mask_secrets`` plus masking of known secret values and URL credentials in strings."""
        known = [_reveal(v) for v in (spec.secrets or {}).values()] + [e for e in extra if e]

        def walk(node: Any) -> Any:
            if isinstance(node, Mapping):
                return {k: walk(v) for k, v in node.items()}
            if isinstance(node, list):
                return [walk(v) for v in node]
            if isinstance(node, str):
                return self._scrub(node, *known)
            return node

        return walk(mask_secrets(value))
