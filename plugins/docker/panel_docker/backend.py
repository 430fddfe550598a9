"""The Docker backend: one single-container app per customer "space" on a Docker Engine.

By default the app is Postiz (``ghcr.io/gitroomhq/postiz-app``); an operator sells another
single-container app by changing ``image``, ``postiz_env``/``env_template``, ``volume_mounts``,
``container_port`` and ``health_path``.

For each service (keyed on ``ServiceSpec.external_id``, carried as the Docker label
``panel.service``) ``provision`` makes, or adopts from an earlier try:

* a PostgreSQL role and database on the shared server (``postgres_url``, an admin with CREATEDB and
  CREATEROLE), with a generated password. The role's comment ``panel.service=<external id>`` marks
  it as ours (and ``panel.terminated_at=<ISO time>`` while a terminated service is retained);
* named volumes ``<prefix>-<space>-<name>`` for each ``volume_mounts`` entry (Postiz: ``/config``
  and ``/uploads``), labelled like the container;
* a container ``<prefix>-<space>`` with the app's environment, memory and CPU limits from the plan,
  ``panel.*`` labels, Traefik routing labels for ``Host(`<space>.<base_domain>`)`` and a restart
  policy, started with ``init=True``;

and then waits (bounded by ``health_timeout_seconds``) until ``GET <health_path>`` answers.

Contract sources: the Docker Engine API v1.41 (containers, volumes, ``/containers/{id}/stats``,
``/system/df``) through the ``docker`` SDK 7.x, and Postiz's ``docker-compose.yaml`` (port 5000,
``/api/`` answering "App is running!", volumes ``/config`` and ``/uploads``, the environment).
"""
from __future__ import annotations

import ast
import json
import logging
import re
import secrets as _secrets
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Literal, Mapping
from urllib.parse import quote, unquote, urlsplit

import docker
import docker.errors
import psycopg2
import requests
from psycopg2 import sql
from psycopg2.extensions import parse_dsn

from pydantic import Field, SecretStr, field_validator

from panel.backends import (MASK, Action, ActionResult, Backend, BackendError, BillableMetric, Connect, ConnectItem,
                            Credential, Credentials, HowTo, Limit, Link, Links, Metric, PermanentBackendError,
                            Provisioned, Resource, Resources, Schema, Secret, ServiceSpec,
                            TransientBackendError, Usage, ValidationError, billable, schema_fields,
                            validate_model)

log = logging.getLogger(__name__)

__all__ = ["DockerBackend", "DEFAULT_RESERVED_NAMES", "POSTIZ_ENV"]

#: Sub-domains a customer may not pick (the ``reserved_names`` setting's default).
DEFAULT_RESERVED_NAMES = (
    "www", "api", "admin", "administrator", "mail", "smtp", "imap", "pop", "pop3", "mx", "ftp", "sftp",
    "ns", "ns1", "ns2", "dns", "app", "apps", "panel", "dashboard", "status", "traefik", "proxy",
    "static", "assets", "cdn", "media", "uploads", "help", "support", "billing", "docs", "blog",
    "auth", "login", "sso", "account", "accounts", "root", "postmaster", "webmaster", "hostmaster",
    "test", "staging", "dev", "localhost", "internal", "postiz",
)

#: The Postiz environment (docker-compose.yaml of gitroomhq/postiz-app), rendered per tenant.
#: ``DISABLE_REGISTRATION=true`` is Postiz's own switch that lets only the *first* organisation
#: register, so the community's owner signs up once and registration closes after that.
POSTIZ_ENV: Mapping[str, str] = {
    "MAIN_URL": "{url}",
    "FRONTEND_URL": "{url}",
    "NEXT_PUBLIC_BACKEND_URL": "{url}/api",
    "BACKEND_INTERNAL_URL": "http://localhost:3000",
    "JWT_SECRET": "{jwt_secret}",
    "DATABASE_URL": "{database_url}",
    "REDIS_URL": "{redis_url}",
    "IS_GENERAL": "true",
    "STORAGE_PROVIDER": "local",
    "UPLOAD_DIRECTORY": "/uploads",
    "NEXT_PUBLIC_UPLOAD_DIRECTORY": "/uploads",
    "DISABLE_REGISTRATION": "{disable_registration}",
}

#: Placeholders an env template may use (``{name}``; ``{{`` and ``}}`` for literal braces).
PLACEHOLDERS = ("space", "host", "url", "external_id", "service_id", "plan", "customer_email",
                "database_name", "database_user", "database_password", "database_host",
                "database_url", "redis_url", "jwt_secret", "container_port", "disable_registration")

SPACE_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
DOMAIN_RE = r"(?i)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
PG_IDENTIFIER_MAX = 63
CPU_PERIOD_US = 100_000  # CFS period (microseconds); cpu_quota = cpus * period
MIB = 1024 * 1024
GIB = 1024 * MIB
LABEL_SERVICE = "panel.service"
LABEL_BACKEND = "panel.backend"
LABEL_SPACE = "panel.space"
LABEL_CUSTOMER = "panel.customer_email"

# In-process usage cache shared by every DockerBackend instance (the core may build a new instance
# per request): key -> (monotonic time measured, Usage). Guarded by _CACHE_LOCK.
_USAGE_CACHE: dict[tuple, tuple[float, Usage]] = {}
_USAGE_REFRESHING: set[tuple] = set()
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Names:
    """Every remote name derived from one space (all deterministic, so a retry finds them)."""

    space: str
    host: str
    url: str
    container: str
    router: str
    volumes: Mapping[str, str]  # volume key -> volume name
    database: str
    role: str


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _parse_comment(comment: str | None) -> dict[str, str]:
    """``"panel.service=x;panel.terminated_at=t"`` -> ``{"panel.service": "x", ...}``."""
    out: dict[str, str] = {}
    for part in (comment or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _as_json(value: Any, what: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else {}
        except ValueError:
            raise ValueError(f"{what} must be JSON") from None
    return value


def _secret_json(value: Any) -> Any:
    """A secret JSON setting as a Python value: a mapping, or JSON text (possibly in a Secret)."""
    if isinstance(value, Secret):
        value = value.reveal()
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        try:
            return json.loads(text)
        except ValueError:
            try:  # a mapping stored through str() (Python literal) rather than JSON
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise ValueError("secret_env must be a JSON object") from None
    return value


class DockerBackend(Backend):
    """Runs one container (Postiz by default) per customer space on a Docker Engine.

    Settings are described by ``DockerBackend.Settings`` (see the plugin README). Plan options:
    ``memory_mib`` (MiB, the container's memory limit, no swap) and ``cpus`` (CPU cores, a CFS
    quota). Order params: ``space``, a DNS label that becomes ``<space>.<base_domain>``.

    Errors: Docker connection errors, timeouts and API 5xx/429 raise ``TransientBackendError``;
    a missing image, a name collision, a refused PostgreSQL login or missing rights, a health
    timeout and other 4xx answers raise ``PermanentBackendError``. No other exception escapes an
    operation. Secrets (the admin URL, the tenants' database passwords and JWT secrets) never appear
    in messages, logs or ``repr``.
    """

    name = "docker"
    label = "Docker (Postiz)"
    #: Seed 004's usage prices: posts (a counter) and storage in GiB (a level, billed at its highest).
    billable_metrics = billable(BillableMetric("posts", "count", "sum", "Posts"),
                                BillableMetric("storage_gib", "GiB", "max", "Storage"))

    class Settings(Schema):
        docker_url: str | None = Field(
            None, title="Docker URL",
            description="Docker Engine API address, e.g. unix:///var/run/docker.sock or tcp://10.0.0.5:2375. "
                        "Empty: DOCKER_HOST, else the local socket.")
        image: str = Field("ghcr.io/gitroomhq/postiz-app:latest",
                           description="Image every instance runs. It must already be on the engine: the "
                                       "backend never pulls.")
        base_domain: str = Field(pattern=f"(?i)^{DOMAIN_RE.removeprefix('(?i)')}$", max_length=190,
                                 description="Instances live at https://<space>.<base_domain> (a wildcard DNS "
                                             "record to Traefik).")
        network: str | None = Field(None, description="Docker network the containers join (the one Traefik "
                                                      "watches). Empty: the default bridge.")
        publish_host: str | None = Field(
            None, description="Host IP to publish the container port on (an ephemeral host port), used for the "
                              "health check, e.g. 127.0.0.1. Empty: the panel reaches the container by its IP "
                              "on the network.")
        postgres_url: SecretStr = Field(title="PostgreSQL admin URL",
                                        description="postgresql://admin:password@host:5432/postgres; the role "
                                                    "needs CREATEDB and CREATEROLE.")
        database_host: str | None = Field(None, description="host[:port] the containers use to reach PostgreSQL. "
                                                            "Empty: the host and port of the admin URL.")
        redis_url: SecretStr = Field(title="Redis URL", description="The shared Redis the instances use "
                                                                    "(REDIS_URL), as the containers reach it.")
        container_port: int = Field(5000, ge=1, le=65535, description="The port the app listens on inside the "
                                                                      "container.")
        health_path: str = Field("/api/", pattern=r"^/[^\s]*$",
                                 description="GET path that answers 2xx when the app is up (Postiz: /api/).")
        health_timeout_seconds: int = Field(180, ge=1, le=3600, json_schema_extra={"unit": "seconds"},
                                            description="How long provision/unsuspend wait for the health path.")
        postiz_env: bool = Field(True, description="Start from the Postiz environment (MAIN_URL, DATABASE_URL, "
                                                   "JWT_SECRET...). Turn off to sell another app and give its "
                                                   "whole environment in env_template.")
        env_template: dict[str, Any] = Field(
            {}, description='Extra environment as a JSON object, e.g. {"TEMPORAL_ADDRESS": "temporal:7233"}; '
                            "values may use {placeholders}; null removes a Postiz variable.")
        secret_env: SecretStr | None = Field(
            None, description="Extra environment whose values are secrets, as a JSON object (e.g. the social "
                              "networks' API keys Postiz needs), used literally; kept encrypted, never shown.")
        volume_mounts: dict[str, Any] = Field({"config": "/config", "uploads": "/uploads"},
                                              description="Named volumes as a JSON object: volume suffix -> "
                                                          "path in the container.")
        disable_registration: bool = Field(True, description="Postiz DISABLE_REGISTRATION: true lets only the "
                                                             "first organisation register.")
        admin_signup_path: str = Field(
            "/api/auth/register", max_length=200, pattern=r"^(/[^\s]*)?$",
            description="After the first start, register the instance's first account for the customer here "
                        "(Postiz: POST /api/auth/register {email, password, company, provider: LOCAL}), so "
                        "nobody else can claim a fresh instance; the password becomes the customer's admin "
                        "credential. Empty: the customer signs up first themselves.")
        retention_days: int = Field(0, ge=0, le=3650, json_schema_extra={"unit": "days"},
                                    description="0: terminate drops volumes and database at once. N: they are "
                                                "kept N days and a later terminate or purge_expired() drops them.")
        reserved_names: str = Field(",".join(DEFAULT_RESERVED_NAMES),
                                    description="Comma-separated space names customers may not pick.")
        name_prefix: str = Field("postiz", pattern=r"^[a-z][a-z0-9]{0,15}$",
                                 description="Prefix of container, volume, database and role names.")
        restart_policy: Literal["unless-stopped", "always", "on-failure", "no"] = Field(
            "unless-stopped", description="unless-stopped keeps a suspended (stopped) container stopped across "
                                          "engine restarts.")
        traefik_entrypoints: str = Field("websecure", description="Traefik entry points of the router.")
        traefik_cert_resolver: str | None = Field(None, description="Traefik certificate resolver (e.g. "
                                                                    "letsencrypt); empty: none.")
        usage_cache_seconds: int = Field(30, ge=0, le=3600, json_schema_extra={"unit": "seconds"},
                                         description="How long usage figures are reused before they are "
                                                     "measured again.")
        api_timeout_seconds: int = Field(60, ge=1, le=600, json_schema_extra={"unit": "seconds"},
                                         description="Timeout of one Docker Engine API call.")

        @field_validator("secret_env", mode="before")
        @classmethod
        def _secret_env_text(cls, value: Any) -> Any:
            """A mapping given for the secret environment is kept as its JSON text."""
            return json.dumps(value) if isinstance(value, (dict, list)) else value

    class PlanOptions(Schema):
        memory_mib: int = Field(2048, ge=64, le=1_048_576, json_schema_extra={"unit": "MiB"},
                                description="Memory limit of the container (no swap).")
        cpus: float = Field(1.0, ge=0.01, le=512, json_schema_extra={"unit": "CPUs"},
                            description="CPU limit in cores (a CFS quota).")

    class OrderParams(Schema):
        space: str = Field(max_length=63, title="Space name",
                           description="Your instance's address: <space>.<base domain>. Lower-case letters, "
                                       "digits and hyphens.")

    # ------------------------------------------------------------------ setup

    def __init__(self, settings: Mapping[str, Any]):
        """Validate ``settings``; an invalid configuration is reported by each operation."""
        super().__init__(settings)
        self._settings_error: str | None = None
        self._docker: docker.DockerClient | None = None
        self._docker_lock = threading.Lock()
        raw = dict(settings)
        secret_names = {f.name for f in schema_fields(self.Settings) if f.secret}
        try:
            clean = validate_model(self.Settings, raw, allow_unknown=True)
            clean["env_template"] = _as_json(clean.get("env_template"), "env_template")
            clean["volume_mounts"] = _as_json(clean.get("volume_mounts"), "volume_mounts")
            if clean.get("secret_env") is not None:
                clean["secret_env"] = _secret_json(clean["secret_env"])
            self._check_settings(clean)
        except ValidationError as exc:
            self._settings_error = "; ".join(f"{k} {v}" for k, v in exc.errors.items())
            clean = raw
        except ValueError as exc:
            self._settings_error = str(exc)
            clean = raw
        for key in secret_names:  # keep secrets wrapped, whatever form they came in
            if key in clean and clean[key] is not None and not isinstance(clean[key], Secret):
                value = clean[key]
                clean[key] = Secret(json.dumps(value) if isinstance(value, (dict, list)) else value)
        self.settings = clean
        self._secret_values: set[str] = set()
        for key in secret_names:
            value = self.settings.get(key)
            if isinstance(value, Secret) and value.reveal():
                self._remember_secret(value.reveal())
                try:  # the password inside a URL, too
                    password = urlsplit(value.reveal()).password
                except ValueError:
                    password = None
                if password:
                    self._remember_secret(unquote(password))
                    self._remember_secret(password)
        for value in self._secret_env().values():
            self._remember_secret(value)

    @classmethod
    def validate_setting(cls, key: str, value: Any) -> Any:
        """Check the JSON settings' shape when an operator stores them (``panel plugins set``).

        ``env_template``: an object of variable -> string/number/boolean/null with known placeholders;
        ``secret_env``: an object of variable -> value (stored as JSON text); ``volume_mounts``: an
        object of short name -> absolute path. Raises ``ValidationError({key: message})``.
        """
        if key not in ("env_template", "secret_env", "volume_mounts") or value is None:
            return value
        try:
            parsed = _secret_json(value) if key == "secret_env" else _as_json(value, key)
            cls._check_settings({"env_template": {}, "volume_mounts": {}, key: parsed})
        except ValueError as exc:
            message = str(exc)
            raise ValidationError({key: message.split(": ", 1)[1] if message.startswith(key + ": ")
                                   else message.replace(key + " ", "", 1)}) from None
        return json.dumps(parsed) if key == "secret_env" else parsed

    @staticmethod
    def _check_settings(s: dict) -> None:
        dummy = {k: "x" for k in PLACEHOLDERS}
        for setting in ("env_template", "secret_env"):
            env = s.get(setting)
            if env is None and setting == "secret_env":
                continue
            if not isinstance(env, Mapping):
                raise ValueError(f"{setting} must be a JSON object")
            for key, value in env.items():
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", str(key)):
                    raise ValueError(f"{setting}: {key!r} is not a valid variable name")
                if isinstance(value, (dict, list)):
                    raise ValueError(f"{setting}: {key} must be a string, number, boolean or null")
                if isinstance(value, str) and setting == "env_template":
                    try:
                        value.format_map(dummy)
                    except KeyError as exc:
                        raise ValueError(f"{setting}: {key} uses an unknown placeholder {{{exc.args[0]}}}; "
                                         f"known: {', '.join(PLACEHOLDERS)}") from None
                    except (IndexError, ValueError):
                        raise ValueError(f"{setting}: {key} has a stray brace or a positional placeholder "
                                         "(write {{ and }} for literal braces)") from None
        mounts = s.get("volume_mounts")
        if not isinstance(mounts, Mapping):
            raise ValueError("volume_mounts must be a JSON object")
        for key, path in mounts.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,30}", str(key)):
                raise ValueError(f"volume_mounts: {key!r} must be a short lower-case name")
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(f"volume_mounts: {key} must map to an absolute container path")

    def _require_settings(self) -> None:
        if self._settings_error:
            raise PermanentBackendError(f"docker backend settings are invalid: {self._settings_error}")

    def _s(self, key: str, default: Any = None) -> Any:
        value = self.settings.get(key)
        return default if value is None else value

    def _remember_secret(self, value: str | None) -> None:
        if value and len(value) >= 4:
            self._secret_values.add(value)

    def _scrub(self, text: Any) -> str:
        """``text`` with every secret this backend knows replaced by the mask."""
        out = str(text)
        for value in sorted(self._secret_values, key=len, reverse=True):
            out = out.replace(value, MASK)
        return out

    def close(self) -> None:
        """Close the Docker API connection (a new one is opened on the next call)."""
        with self._docker_lock:
            if self._docker is not None:
                try:
                    self._docker.close()
                finally:
                    self._docker = None

    # ------------------------------------------------------------------ docker plumbing

    @property
    def _where(self) -> str:
        return self._s("docker_url") or "the local Docker Engine (DOCKER_HOST or the socket)"

    @contextmanager
    def _docker_errors(self, what: str) -> Iterator[None]:
        """Translate Docker SDK / transport errors into typed backend errors."""
        try:
            yield
        except BackendError:
            raise
        except docker.errors.ImageNotFound as exc:
            raise PermanentBackendError(self._image_missing_message()) from exc
        except docker.errors.APIError as exc:
            code = exc.status_code or 0
            detail = self._scrub(exc.explanation or exc)
            if code >= 500 or code == 429 or code == 0:
                raise TransientBackendError(f"{what}: Docker Engine error {code}: {detail}") from None
            raise PermanentBackendError(f"{what}: Docker Engine refused ({code}): {detail}") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                ConnectionError, TimeoutError) as exc:
            raise TransientBackendError(
                f"{what}: cannot reach {self._where}: {self._scrub(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise TransientBackendError(f"{what}: Docker API request failed: {self._scrub(exc)}") from None
        except docker.errors.DockerException as exc:
            text = self._scrub(exc)
            if "fetching server API version" in text or "Connection" in text or "timed out" in text:
                raise TransientBackendError(f"{what}: cannot reach {self._where}: {text}") from None
            raise PermanentBackendError(f"{what}: Docker client error: {text}") from None

    def _client(self) -> docker.DockerClient:
        with self._docker_lock:
            if self._docker is None:
                timeout = int(self._s("api_timeout_seconds", 60))
                with self._docker_errors("connect"):
                    url = self._s("docker_url")
                    if url:
                        self._docker = docker.DockerClient(base_url=url, timeout=timeout)
                    else:
                        self._docker = docker.from_env(timeout=timeout)
            return self._docker

    def _image_missing_message(self) -> str:
        image = self._s("image")
        return (f"image {image} is not present on {self._where}; this backend never pulls "
                f"(no registry is assumed): load it first, e.g. `docker pull {image}` or `docker load`")

    def _require_image(self, client: docker.DockerClient):
        try:
            return client.images.get(self._s("image"))
        except docker.errors.ImageNotFound:
            raise PermanentBackendError(self._image_missing_message()) from None

    def _find_container(self, client: docker.DockerClient, external_id: str):
        found = client.containers.list(all=True, filters={"label": f"{LABEL_SERVICE}={external_id}"})
        if len(found) > 1:
            log.warning("docker: %d containers carry %s=%s; using the oldest", len(found),
                        LABEL_SERVICE, external_id)
            found.sort(key=lambda c: c.attrs.get("Created", ""))
        return found[0] if found else None

    def _get_container(self, client: docker.DockerClient, name_or_id: str):
        try:
            return client.containers.get(name_or_id)
        except docker.errors.NotFound:
            return None

    def _get_volume(self, client: docker.DockerClient, name: str):
        try:
            return client.volumes.get(name)
        except docker.errors.NotFound:
            return None

    # ------------------------------------------------------------------ names and params

    def _names(self, space: str) -> Names:
        prefix = self._s("name_prefix", "postiz")
        base = f"{prefix}-{space}"
        ident = f"{prefix}_{space.replace('-', '_')}"
        host = f"{space}.{self._s('base_domain')}"
        mounts = self._s("volume_mounts") or {}
        return Names(space=space, host=host, url=f"https://{host}", container=base, router=base,
                     volumes={key: f"{base}-{key}" for key in mounts}, database=ident, role=ident)

    def _space(self, spec: ServiceSpec) -> str:
        space = (spec.params or {}).get("space") or (spec.backend_data or {}).get("space")
        if not isinstance(space, str) or not SPACE_RE.fullmatch(space.strip().lower()):
            raise PermanentBackendError(f"service {spec.external_id} has no valid space name")
        return space.strip().lower()

    def _reserved(self) -> set[str]:
        raw = self._s("reserved_names", ",".join(DEFAULT_RESERVED_NAMES))
        if isinstance(raw, (list, tuple)):
            items = raw
        else:
            items = str(raw).replace("\n", ",").split(",")
        return {str(item).strip().lower() for item in items if str(item).strip()}

    def max_space_length(self) -> int:
        """The longest space name allowed: a DNS label (63) that also fits a PostgreSQL identifier."""
        prefix = self._s("name_prefix", "postiz")
        return min(63, PG_IDENTIFIER_MAX - len(prefix) - 1)

    def validate_order_params(self, params: Mapping[str, Any], options: Mapping[str, Any]) -> dict:
        """Validate the customer's ``space``: a DNS label, not reserved, not taken.

        Returns ``{"space": <lower-cased name>}`` or raises ``ValidationError({"space": ...})``.
        "Taken" means a container, volume, database or role for that space already exists (for
        another service, or still retained after a termination). The check is best effort: when
        the Docker Engine or PostgreSQL cannot be reached it is skipped (logged) and ``provision``
        still refuses a collision with a ``PermanentBackendError``.
        """
        clean = validate_model(self.OrderParams, params)
        space = clean["space"].strip().lower()
        clean["space"] = space
        limit = self.max_space_length()
        if not SPACE_RE.fullmatch(space):
            raise ValidationError({"space": "must be a DNS label: lower-case letters, digits and "
                                            "hyphens, starting and ending with a letter or digit"})
        if len(space) > limit:
            raise ValidationError({"space": f"must be at most {limit} characters"})
        if space in self._reserved():
            raise ValidationError({"space": f"{space!r} is reserved; pick another name"})
        if self._settings_error is None:
            try:
                taken_by = self._space_taken(space)
            except BackendError as exc:
                log.warning("docker: could not check whether space %r is free: %s", space, exc)
                taken_by = None
            if taken_by:
                raise ValidationError({"space": f"{space!r} is already taken; pick another name"})
        return clean

    def claim_key(self, spec: ServiceSpec) -> tuple[str, str] | None:
        """``("space", <space>)``: the core refuses a second live service for the same space.

        Raises ``PermanentBackendError`` with ``fields={"space": ...}`` for a name that is not a
        valid, unreserved DNS label.
        """
        raw = (spec.params or {}).get("space")
        space = raw.strip().lower() if isinstance(raw, str) else ""
        if not space:
            raise PermanentBackendError("space: is required", fields={"space": "is required"})
        if not SPACE_RE.fullmatch(space) or len(space) > self.max_space_length() or space in self._reserved():
            message = "is not a valid, unreserved DNS label"
            raise PermanentBackendError(f"space: {message}", fields={"space": message})
        return ("space", space)

    def _space_taken(self, space: str) -> str | None:
        """What already uses ``space`` (a description), or ``None`` when it is free."""
        n = self._names(space)
        client = self._client()
        with self._docker_errors("check space"):
            if self._get_container(client, n.container) is not None:
                return f"container {n.container}"
            for volume in n.volumes.values():
                if self._get_volume(client, volume) is not None:
                    return f"volume {volume}"
        with self._pg() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s UNION ALL "
                        "SELECT 1 FROM pg_roles WHERE rolname = %s", (n.database, n.role))
            if cur.fetchone():
                return f"database {n.database}"
        return None

    # ------------------------------------------------------------------ postgres plumbing

    def _pg_error(self, exc: psycopg2.Error, what: str) -> BackendError:
        diag = getattr(exc, "diag", None)
        text = (diag.message_primary if diag is not None and diag.message_primary else "") or \
            (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        text = self._scrub(text)
        code = getattr(exc, "pgcode", None) or ""
        if not code and isinstance(exc, psycopg2.OperationalError):
            lower = text.lower()
            if any(w in lower for w in ("authentication", "pg_hba.conf", "does not exist",
                                        "permission denied", "invalid", "ssl")):
                return PermanentBackendError(f"{what}: PostgreSQL refused: {text}")
            return TransientBackendError(f"{what}: cannot reach PostgreSQL: {text}")
        if code[:2] in ("08", "53", "57", "40") or code == "55P03":
            return TransientBackendError(f"{what}: PostgreSQL error {code}: {text}")
        if code == "42501":
            return PermanentBackendError(f"{what}: the PostgreSQL admin role lacks a right: {text}")
        return PermanentBackendError(f"{what}: PostgreSQL error {code or type(exc).__name__}: {text}")

    @contextmanager
    def _pg(self, dbname: str | None = None, what: str = "postgres"):
        """An autocommit admin connection (to ``dbname`` when given); errors become typed."""
        url = self.settings.get("postgres_url")
        dsn = url.reveal() if isinstance(url, Secret) else str(url or "")
        extra = {"dbname": dbname} if dbname else {}
        try:
            conn = psycopg2.connect(dsn, connect_timeout=5, application_name="hostpanel-docker", **extra)
        except psycopg2.Error as exc:
            raise self._pg_error(exc, what) from None
        try:
            conn.autocommit = True
            yield conn
        except psycopg2.Error as exc:
            raise self._pg_error(exc, what) from None
        finally:
            conn.close()

    def _admin_rights(self, cur) -> tuple[str, bool]:
        """``(user, is_superuser)``; raises Permanent unless the admin may create databases and roles."""
        cur.execute("SELECT current_user, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
                    "WHERE rolname = current_user")
        user, superuser, createdb, createrole = cur.fetchone()
        if not (superuser or (createdb and createrole)):
            missing = [name for name, ok in (("CREATEDB", createdb), ("CREATEROLE", createrole)) if not ok]
            raise PermanentBackendError(
                f"the PostgreSQL admin role {user!r} lacks {' and '.join(missing)}; "
                f"grant them (ALTER ROLE {user} CREATEDB CREATEROLE) or use another admin")
        return user, bool(superuser)

    def _database_host(self) -> str:
        explicit = self._s("database_host")
        if explicit:
            return explicit
        url = self.settings.get("postgres_url")
        try:
            params = parse_dsn(url.reveal() if isinstance(url, Secret) else str(url))
        except psycopg2.Error:
            params = {}
        host = params.get("host") or "localhost"
        if "," in host or host.startswith("/"):
            host = "localhost"
        port = params.get("port") or "5432"
        return f"{host}:{port}"

    def _role_owner(self, cur, role: str) -> tuple[bool, dict[str, str]]:
        cur.execute("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s", (role,))
        row = cur.fetchone()
        if row is None:
            return False, {}
        return True, _parse_comment(row[0])

    def _ensure_database(self, n: Names, external_id: str, password: str) -> None:
        """Create or adopt the tenant's role (password set to ``password``) and database."""
        what = f"database for {n.space}"
        with self._pg(what=what) as conn, conn.cursor() as cur:
            admin, superuser = self._admin_rights(cur)
            exists, comment = self._role_owner(cur, n.role)
            marker = f"{LABEL_SERVICE}={external_id}"
            if exists:
                if comment.get(LABEL_SERVICE) != external_id:
                    raise PermanentBackendError(
                        f"name collision: PostgreSQL role {n.role} already exists and belongs to "
                        f"{comment.get(LABEL_SERVICE) or 'something the panel did not make'}")
                # Adopt: reset the password to the one this try uses (and clear a retention mark).
                cur.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD %s").format(sql.Identifier(n.role)),
                            (password,))
                cur.execute(sql.SQL("COMMENT ON ROLE {} IS %s").format(sql.Identifier(n.role)), (marker,))
                log.info("docker: adopted PostgreSQL role %s for %s", n.role, external_id)
            else:
                conn.autocommit = False  # role + its ownership mark in one transaction
                cur.execute(sql.SQL("CREATE ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                                    "PASSWORD %s").format(sql.Identifier(n.role)), (password,))
                cur.execute(sql.SQL("COMMENT ON ROLE {} IS %s").format(sql.Identifier(n.role)), (marker,))
                conn.commit()
                conn.autocommit = True
                log.info("docker: created PostgreSQL role %s for %s", n.role, external_id)
            if not superuser:  # CREATE DATABASE ... OWNER needs membership in the owner role
                cur.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", (n.role,))
                if not cur.fetchone()[0]:
                    cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(n.role), sql.Identifier(admin)))
            cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (n.database,))
            row = cur.fetchone()
            if row is None:
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0").format(
                    sql.Identifier(n.database), sql.Identifier(n.role)))
                log.info("docker: created database %s for %s", n.database, external_id)
            elif row[0] != n.role:
                raise PermanentBackendError(
                    f"name collision: database {n.database} already exists, owned by {row[0]}, not {n.role}")
            cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(n.database)))

    def _drop_database(self, n: Names, external_id: str) -> bool:
        """Drop the tenant's database and role if they are ours; True when nothing of ours is left."""
        with self._pg(what=f"drop database of {n.space}") as conn, conn.cursor() as cur:
            exists, comment = self._role_owner(cur, n.role)
            if exists and comment.get(LABEL_SERVICE) != external_id:
                log.warning("docker: role %s is not %s's; left alone", n.role, external_id)
                return True
            cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (n.database,))
            row = cur.fetchone()
            if row is not None:
                if row[0] != n.role:
                    log.warning("docker: database %s is owned by %s, not %s; left alone",
                                n.database, row[0], n.role)
                else:
                    cur.execute("SHOW server_version_num")
                    force = int(cur.fetchone()[0]) >= 130000
                    stmt = "DROP DATABASE IF EXISTS {} WITH (FORCE)" if force else "DROP DATABASE IF EXISTS {}"
                    cur.execute(sql.SQL(stmt).format(sql.Identifier(n.database)))
                    log.info("docker: dropped database %s of %s", n.database, external_id)
            if exists:
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(n.role)))
                log.info("docker: dropped role %s of %s", n.role, external_id)
        return True

    # ------------------------------------------------------------------ environment and labels

    def _plan_limits(self, options: Mapping[str, Any]) -> tuple[int, float]:
        try:
            clean = validate_model(self.PlanOptions, options or {}, allow_unknown=True)
        except ValidationError as exc:
            raise PermanentBackendError(f"invalid plan options: {exc}", fields=exc.errors) from None
        return int(clean["memory_mib"]), float(clean["cpus"])

    def _secret_env(self) -> dict[str, str]:
        value = self.settings.get("secret_env")
        if not isinstance(value, Secret) or not value.reveal():
            return {}
        try:
            data = _secret_json(value)
        except ValueError:
            return {}
        return {str(k): ("true" if v is True else "false" if v is False else str(v))
                for k, v in data.items() if v is not None} if isinstance(data, dict) else {}

    def _env_template(self) -> dict[str, Any]:
        template: dict[str, Any] = dict(POSTIZ_ENV) if self._s("postiz_env", True) else {}
        template.update(self._s("env_template") or {})
        return {k: v for k, v in template.items() if v is not None}

    def _placeholders(self, spec: ServiceSpec, n: Names, db_password: str, jwt: str) -> dict[str, str]:
        redis = self.settings.get("redis_url")
        db_host = self._database_host()
        return {
            "space": n.space, "host": n.host, "url": n.url, "external_id": spec.external_id,
            "service_id": str(spec.service_id), "plan": spec.plan or "",
            "customer_email": spec.customer_email or "", "database_name": n.database,
            "database_user": n.role, "database_password": db_password, "database_host": db_host,
            "database_url": f"postgresql://{quote(n.role, safe='')}:{quote(db_password, safe='')}"
                            f"@{db_host}/{quote(n.database, safe='')}",
            "redis_url": redis.reveal() if isinstance(redis, Secret) else str(redis or ""),
            "jwt_secret": jwt, "container_port": str(self._s("container_port", 5000)),
            "disable_registration": "true" if self._s("disable_registration", True) else "false",
        }

    def _render_env(self, spec: ServiceSpec, n: Names, db_password: str, jwt: str) -> dict[str, str]:
        values = self._placeholders(spec, n, db_password, jwt)
        env = {}
        for key, value in self._env_template().items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            env[key] = value.format_map(values) if isinstance(value, str) else str(value)
        env.update(self._secret_env())  # literal values, no placeholders
        return env

    def _secrets_from_env(self, container) -> dict[str, str]:
        """Read the tenant secrets back from an existing container's environment (adoption)."""
        env = {}
        for item in container.attrs.get("Config", {}).get("Env") or []:
            key, _, value = item.partition("=")
            env[key] = value
        found: dict[str, str] = {}
        for key, template in self._env_template().items():
            if key not in env or not isinstance(template, str):
                continue
            if template == "{jwt_secret}":
                found["jwt_secret"] = env[key]
            elif template == "{database_password}":
                found["database_password"] = env[key]
            elif template == "{database_url}":
                try:
                    password = urlsplit(env[key]).password
                except ValueError:
                    password = None
                if password:
                    found["database_password"] = unquote(password)
        for value in found.values():
            self._remember_secret(value)
        return found

    def _labels(self, spec: ServiceSpec, n: Names) -> dict[str, str]:
        labels = {LABEL_SERVICE: spec.external_id, LABEL_BACKEND: self.name, LABEL_SPACE: n.space,
                  "panel.service_id": str(spec.service_id), LABEL_CUSTOMER: spec.customer_email or ""}
        r = n.router
        labels.update({
            "traefik.enable": "true",
            f"traefik.http.routers.{r}.rule": f"Host(`{n.host}`)",
            f"traefik.http.routers.{r}.tls": "true",
            f"traefik.http.routers.{r}.service": r,
            f"traefik.http.services.{r}.loadbalancer.server.port": str(self._s("container_port", 5000)),
        })
        if self._s("traefik_entrypoints"):
            labels[f"traefik.http.routers.{r}.entrypoints"] = self._s("traefik_entrypoints")
        if self._s("traefik_cert_resolver"):
            labels[f"traefik.http.routers.{r}.tls.certresolver"] = self._s("traefik_cert_resolver")
        if self._s("network"):
            labels["traefik.docker.network"] = self._s("network")
        return labels

    # ------------------------------------------------------------------ provision

    def _ensure_volumes(self, client, spec: ServiceSpec, n: Names) -> None:
        for name in n.volumes.values():
            volume = self._get_volume(client, name)
            if volume is None:
                client.volumes.create(name=name, labels={LABEL_SERVICE: spec.external_id,
                                                         LABEL_BACKEND: self.name, LABEL_SPACE: n.space})
                log.info("docker: created volume %s for %s", name, spec.external_id)

    def _check_volumes_free(self, client, spec: ServiceSpec, n: Names) -> None:
        for name in n.volumes.values():
            volume = self._get_volume(client, name)
            if volume is not None:
                owner = (volume.attrs.get("Labels") or {}).get(LABEL_SERVICE)
                if owner != spec.external_id:
                    raise PermanentBackendError(
                        f"name collision: volume {name} already exists and belongs to "
                        f"{owner or 'something the panel did not make'} (label {LABEL_SERVICE})")

    def _collision(self, container, external_id: str) -> PermanentBackendError:
        owner = (container.labels or {}).get(LABEL_SERVICE)
        return PermanentBackendError(
            f"name collision: a container named {container.name} already exists and is not "
            f"{external_id}'s (its {LABEL_SERVICE} label is {owner or 'missing'}); remove or rename it")

    def _create_container(self, client, spec: ServiceSpec, n: Names, env: dict[str, str]):
        memory_mib, cpus = self._plan_limits(spec.options)
        port = int(self._s("container_port", 5000))
        policy = self._s("restart_policy", "unless-stopped")
        kwargs: dict[str, Any] = dict(
            image=self._s("image"), name=n.container, detach=True, init=True, environment=env,
            labels=self._labels(spec, n), hostname=n.space[:63],
            volumes={vol: {"bind": self._s("volume_mounts")[key], "mode": "rw"}
                     for key, vol in n.volumes.items()},
            mem_limit=memory_mib * MIB, memswap_limit=memory_mib * MIB,
            cpu_period=CPU_PERIOD_US, cpu_quota=max(1000, int(round(cpus * CPU_PERIOD_US))),
            restart_policy={"Name": policy, **({"MaximumRetryCount": 5} if policy == "on-failure" else {})},
        )
        if self._s("network"):
            kwargs["network"] = self._s("network")
        if self._s("publish_host"):
            kwargs["ports"] = {f"{port}/tcp": (self._s("publish_host"), None)}
        try:
            container = client.containers.create(**kwargs)
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # the name is in use: ours (a parallel try) or a collision
                existing = self._get_container(client, n.container)
                if existing is not None and (existing.labels or {}).get(LABEL_SERVICE) == spec.external_id:
                    return existing
                if existing is not None:
                    raise self._collision(existing, spec.external_id) from None
            if exc.status_code == 404 and "network" in str(exc.explanation or "").lower():
                raise PermanentBackendError(f"Docker network {self._s('network')} does not exist") from None
            raise
        log.info("docker: created container %s (%s) for %s", n.container, container.short_id,
                 spec.external_id)
        return container

    def provision(self, spec: ServiceSpec) -> Provisioned:
        """Create the tenant's database, volumes and container, or adopt them, and wait until healthy.

        Idempotent on ``spec.external_id`` (the ``panel.service`` label and the role comment): a
        retry adopts the container, volumes, database and role an earlier try made. Secrets come
        from the running container's environment, else ``spec.secrets``, else are generated; an
        existing role gets that password again. Returns ``Provisioned(resource_id=<container id>,
        data={space, url, host, container, volumes, database, ...}, secrets={database_password,
        jwt_secret})``.

        Raises ``PermanentBackendError`` for a missing image, a name collision, missing PostgreSQL
        rights or a health timeout ("container <name> did not answer <path> within N s"), and
        ``TransientBackendError`` when the engine or PostgreSQL cannot be reached.
        """
        self._require_settings()
        space = self._space(spec)
        n = self._names(space)
        client = self._client()
        what = f"provision {n.container}"
        with self._docker_errors(what):
            self._require_image(client)
            container = self._find_container(client, spec.external_id)
            if container is None:
                other = self._get_container(client, n.container)
                if other is not None:
                    raise self._collision(other, spec.external_id)
            self._check_volumes_free(client, spec, n)
            found = self._secrets_from_env(container) if container is not None else {}
        if container is not None and not self._needed_secrets() <= set(found):
            # An adopted container whose secrets cannot be read back: make it again (data lives in
            # the volumes and the database, so nothing is lost).
            with self._docker_errors(what):
                container.remove(force=True)
            container, found = None, {}
        given = {k: v.reveal() if isinstance(v, Secret) else str(v) for k, v in (spec.secrets or {}).items()}
        db_password = found.get("database_password") or given.get("database_password") or \
            _secrets.token_urlsafe(24)
        jwt = found.get("jwt_secret") or given.get("jwt_secret") or _secrets.token_urlsafe(48)
        self._remember_secret(db_password)
        self._remember_secret(jwt)
        self._ensure_database(n, spec.external_id, db_password)
        with self._docker_errors(what):
            self._ensure_volumes(client, spec, n)
            if container is None:
                container = self._create_container(client, spec, n, self._render_env(spec, n, db_password, jwt))
            else:
                log.info("docker: adopted container %s for %s", container.name, spec.external_id)
            container.reload()
            if container.status != "running":
                container.start()
        self._forget_usage(spec)
        self._wait_healthy(client, container, n)
        data = self._data(n, container)
        tenant_secrets = {"database_password": db_password, "jwt_secret": jwt}
        admin_password = given.get("admin_password")
        if self._s("admin_signup_path"):
            if not admin_password:
                candidate = _secrets.token_urlsafe(18)
                self._remember_secret(candidate)
                if self._claim_admin(container, spec, n, candidate):
                    admin_password = candidate
            data["admin_claimed"] = bool(admin_password)
        if admin_password:
            tenant_secrets["admin_password"] = admin_password
        return Provisioned(resource_id=container.id, data=data, secrets=tenant_secrets)

    def _claim_admin(self, container, spec: ServiceSpec, n: Names, password: str) -> bool:
        """Register the instance's first account for the customer: ``POST <admin_signup_path>``
        ``{"email", "password", "company", "provider": "LOCAL"}`` (Postiz's CreateOrgUserDto) on the
        container. With ``DISABLE_REGISTRATION=true`` that closes registration, so nobody else can
        claim a fresh instance. Never raises: a refusal (e.g. an account exists already) is logged and
        the customer is told to sign up (or reset their password) on the instance."""
        health = self._health_url(container)
        if not health:
            return False
        parts = urlsplit(health)
        url = f"{parts.scheme}://{parts.netloc}{self._s('admin_signup_path')}"
        body = {"email": spec.customer_email, "password": password, "company": n.space, "provider": "LOCAL"}
        try:
            answer = requests.post(url, json=body, timeout=15, allow_redirects=False,
                                   proxies={"http": None, "https": None})
        except requests.exceptions.RequestException as exc:
            log.warning("docker: could not register the first account of %s: %s", n.container,
                        self._scrub(type(exc).__name__))
            return False
        if 200 <= answer.status_code < 300:
            log.info("docker: registered the first account of %s for %s", n.container, spec.external_id)
            return True
        log.warning("docker: %s refused the first account (HTTP %s): %s", n.container, answer.status_code,
                    self._scrub(answer.text[:200]))
        return False

    def _needed_secrets(self) -> set[str]:
        """Which tenant secrets the container's environment carries (to read back on adoption)."""
        templates = [v for v in self._env_template().values() if isinstance(v, str)]
        uses = lambda name: any("{" + name + "}" in t for t in templates)  # noqa: E731
        needed = set()
        if uses("jwt_secret"):
            needed.add("jwt_secret")
        if uses("database_password") or uses("database_url"):
            needed.add("database_password")
        return needed

    def _data(self, n: Names, container) -> dict:
        return {"space": n.space, "host": n.host, "url": n.url, "container": n.container,
                "container_id": container.id, "volumes": sorted(n.volumes.values()),
                "database": n.database, "database_user": n.role, "image": self._s("image"),
                "network": self._s("network") or "bridge"}

    # ------------------------------------------------------------------ health

    def _health_url(self, container) -> str | None:
        port = int(self._s("container_port", 5000))
        path = self._s("health_path", "/api/")
        settings = container.attrs.get("NetworkSettings") or {}
        publish = self._s("publish_host")
        if publish:
            bindings = (settings.get("Ports") or {}).get(f"{port}/tcp") or []
            for binding in bindings:
                if binding.get("HostPort"):
                    host = publish if publish not in ("0.0.0.0", "::", "") else "127.0.0.1"
                    host = f"[{host}]" if ":" in host else host
                    return f"http://{host}:{binding['HostPort']}{path}"
            return None
        networks = settings.get("Networks") or {}
        preferred = networks.get(self._s("network") or "bridge") or {}
        ip = preferred.get("IPAddress") or next(
            (net.get("IPAddress") for net in networks.values() if net.get("IPAddress")), None)
        return f"http://{ip}:{port}{path}" if ip else None

    @staticmethod
    def _probe(url: str, timeout: float) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxies
        try:
            with opener.open(url, timeout=max(0.2, timeout)) as response:
                return 200 <= response.status < 400
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _wait_healthy(self, client, container, n: Names) -> None:
        """Poll the health path until it answers 2xx/3xx or ``health_timeout_seconds`` pass."""
        limit = int(self._s("health_timeout_seconds", 180))
        path = self._s("health_path", "/api/")
        deadline = time.monotonic() + limit
        status = "unknown"
        while True:
            with self._docker_errors(f"health check of {n.container}"):
                container.reload()
            status = container.status
            url = self._health_url(container) if status == "running" else None
            remaining = deadline - time.monotonic()
            if url and self._probe(url, min(3.0, remaining)):
                log.info("docker: %s answers %s", n.container, path)
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        raise PermanentBackendError(
            f"container {n.container} did not answer {path} within {limit} s (container state: {status})")

    # ------------------------------------------------------------------ suspend / unsuspend

    def _container_for(self, client, spec: ServiceSpec):
        container = self._find_container(client, spec.external_id)
        if container is None:
            raise PermanentBackendError(f"no container carries {LABEL_SERVICE}={spec.external_id}; "
                                        f"it was removed or never made (provision it again)")
        return container

    def suspend(self, spec: ServiceSpec) -> None:
        """Stop the container (volumes and database stay). A stopped container is left as it is.

        Raises ``PermanentBackendError`` when no container carries the service's label.
        """
        self._require_settings()
        client = self._client()
        with self._docker_errors(f"suspend {spec.external_id}"):
            container = self._container_for(client, spec)
            if container.status in ("running", "restarting", "paused"):
                container.stop(timeout=30)
                log.info("docker: stopped %s for %s", container.name, spec.external_id)
        self._forget_usage(spec)

    def unsuspend(self, spec: ServiceSpec) -> None:
        """Start the container again and wait (bounded) for the health path. Running: a no-op start.

        Raises ``PermanentBackendError`` when there is no container or it does not become healthy.
        """
        self._require_settings()
        client = self._client()
        with self._docker_errors(f"unsuspend {spec.external_id}"):
            container = self._container_for(client, spec)
            if container.status == "paused":
                container.unpause()
            elif container.status != "running":
                container.start()
                log.info("docker: started %s for %s", container.name, spec.external_id)
        self._forget_usage(spec)
        self._wait_healthy(client, container, self._names(self._space(spec)))

    # ------------------------------------------------------------------ terminate / purge

    def terminate(self, spec: ServiceSpec) -> None:
        """Remove the container, then drop the volumes, database and role (now, or after retention).

        With ``retention_days`` 0 everything goes at once. Otherwise the container goes, and the
        role's comment records ``panel.terminated_at``; volumes and database stay until a later
        ``terminate`` (or ``purge_expired()``) runs after the window, or ``purge(spec)`` forces it.
        What is already gone counts as done. Never removes a container, volume or database that
        carries another service's mark.
        """
        self._require_settings()
        space = self._space(spec)
        n = self._names(space)
        client = self._client()
        with self._docker_errors(f"terminate {n.container}"):
            for container in client.containers.list(
                    all=True, filters={"label": f"{LABEL_SERVICE}={spec.external_id}"}):
                container.remove(force=True)
                log.info("docker: removed container %s of %s", container.name, spec.external_id)
        self._forget_usage(spec)
        days = int(self._s("retention_days", 0))
        if days <= 0:
            self._purge(client, spec.external_id, n)
            return
        with self._pg(what=f"terminate {n.container}") as conn, conn.cursor() as cur:
            exists, comment = self._role_owner(cur, n.role)
            if not exists or comment.get(LABEL_SERVICE) != spec.external_id:
                expired = True  # nothing of ours is retained in PostgreSQL: clear any leftovers
            else:
                since = comment.get("panel.terminated_at")
                if since is None:
                    marker = f"{LABEL_SERVICE}={spec.external_id};panel.terminated_at={_now().isoformat()}"
                    cur.execute(sql.SQL("COMMENT ON ROLE {} IS %s").format(sql.Identifier(n.role)), (marker,))
                    log.info("docker: retaining data of %s for %d days", spec.external_id, days)
                    expired = False
                else:
                    expired = _now() >= datetime.fromisoformat(since) + timedelta(days=days)
        if expired:
            self._purge(client, spec.external_id, n)

    def purge(self, spec: ServiceSpec) -> None:
        """Force teardown: remove container, volumes, database and role now, whatever the retention."""
        self._require_settings()
        n = self._names(self._space(spec))
        client = self._client()
        with self._docker_errors(f"purge {n.container}"):
            for container in client.containers.list(
                    all=True, filters={"label": f"{LABEL_SERVICE}={spec.external_id}"}):
                container.remove(force=True)
        self._purge(client, spec.external_id, n)

    def purge_expired(self, now: datetime | None = None) -> list[str]:
        """Drop the retained data of terminated services whose retention window has passed.

        Finds them through the role comments (``panel.terminated_at``); returns their external ids.
        Meant for a periodic job or an operator (``DockerBackend(settings).purge_expired()``).
        """
        self._require_settings()
        now = now or _now()
        days = int(self._s("retention_days", 0))
        prefix = self._s("name_prefix", "postiz") + "_"
        with self._pg(what="purge expired") as conn, conn.cursor() as cur:
            cur.execute("SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles "
                        "WHERE starts_with(rolname, %s)", (prefix,))
            rows = cur.fetchall()
        client = self._client()
        purged = []
        for rolname, comment in rows:
            marks = _parse_comment(comment)
            since, external_id = marks.get("panel.terminated_at"), marks.get(LABEL_SERVICE)
            if not since or not external_id:
                continue
            if now < datetime.fromisoformat(since) + timedelta(days=days):
                continue
            # The volumes carry the space label; recover the space from them or the role name.
            space = rolname[len(prefix):].replace("_", "-")
            self._purge(client, external_id, self._names(space))
            purged.append(external_id)
        return purged

    def _purge(self, client, external_id: str, n: Names) -> None:
        with self._docker_errors(f"remove volumes of {n.container}"):
            for volume in client.volumes.list(filters={"label": f"{LABEL_SERVICE}={external_id}"}):
                volume.remove(force=True)
                log.info("docker: removed volume %s of %s", volume.name, external_id)
        self._drop_database(n, external_id)

    # ------------------------------------------------------------------ change plan

    def change_plan(self, spec: ServiceSpec, new_options: Mapping[str, Any]) -> Provisioned | None:
        """Apply a new plan's ``memory_mib`` (MiB) and ``cpus`` to the running container in place.

        Returns ``None`` (the stored data does not change). Raises ``PermanentBackendError`` when
        the container is missing or the engine refuses the limits.
        """
        self._require_settings()
        memory_mib, cpus = self._plan_limits(new_options)
        client = self._client()
        with self._docker_errors(f"change plan of {spec.external_id}"):
            container = self._container_for(client, spec)
            container.update(mem_limit=memory_mib * MIB, memswap_limit=memory_mib * MIB,
                             cpu_period=CPU_PERIOD_US, cpu_quota=max(1000, int(round(cpus * CPU_PERIOD_US))))
        self._forget_usage(spec)
        return None

    # ------------------------------------------------------------------ details / resources

    @staticmethod
    def _state(status: str | None) -> str:
        return {"running": "active", "exited": "suspended", "paused": "suspended",
                "created": "provisioning", "restarting": "failed", "dead": "failed"}.get(status or "", "unknown")

    def details(self, spec: ServiceSpec) -> dict:
        """What the customer sees: ``url`` (https://<space>.<base_domain>), ``state`` ("active",
        "suspended", "absent", ...), ``health`` ("healthy", "unhealthy", "stopped") and names.

        Never raises for an unreachable engine: it then reports ``state: "unknown"`` and ``error``.
        """
        try:
            self._require_settings()
            n = self._names(self._space(spec))
        except BackendError as exc:
            return {**dict(spec.backend_data or {}), "state": "unknown", "error": str(exc)}
        out: dict[str, Any] = {"url": n.url, "space": n.space, "host": n.host, "container": n.container,
                               "database": n.database, "volumes": sorted(n.volumes.values())}
        try:
            client = self._client()
            with self._docker_errors("details"):
                container = self._find_container(client, spec.external_id)
                if container is None:
                    out.update(state="absent", health="absent", container_status="absent")
                    return out
                out.update(state=self._state(container.status), container_status=container.status,
                           container_id=container.id, image=self._s("image"),
                           started_at=(container.attrs.get("State") or {}).get("StartedAt"))
                if container.status == "running":
                    url = self._health_url(container)
                    out["health"] = "healthy" if url and self._probe(url, 2.0) else "unhealthy"
                else:
                    out["health"] = "stopped"
        except BackendError as exc:
            out.update(state="unknown", health="unknown", error=str(exc))
        return out

    # ------------------------------------------------------------------ the client area

    def client_area(self, spec: ServiceSpec) -> list:
        """The instance's URL (``https://<space>.<base_domain>``), the customer's admin credential
        when the backend registered the first account (user name: the customer's email), the
        plan's memory and CPU, and how to sign in. From names and stored data: no engine call."""
        try:
            n = self._names(self._space(spec))
        except BackendError:
            return []
        options = dict(spec.options or {})
        memory_mib, cpus = self._plan_limits(options)
        sections: list = [Connect((ConnectItem("Your instance", n.url, "url"), ConnectItem("Host name", n.host, "hostname"))),
                          Links((Link("Open your instance", n.url),))]
        claimed = bool((spec.secrets or {}).get("admin_password"))
        if claimed:
            sections.append(Credentials((Credential(
                "admin_password", "Admin password", username=spec.customer_email,
                help=f"Sign in at {n.url} with your email and this password."),)))
        sections.append(Resources((Limit("Memory", float(memory_mib), "MiB"), Limit("CPU", float(cpus), "cores"))))
        if claimed:
            text = (f"Sign in at {n.url} with your email and the admin password. Registration is closed "
                    "after this first account, so only people you invite can join.")
        else:
            text = (f"Open {n.url} and create your account: the first account becomes the owner, and "
                    "registration closes after it.")
        sections.append(HowTo(text))
        return sections

    def actions(self, spec: ServiceSpec) -> list[Action]:
        """``restart``: restart the container and wait until it answers again."""
        return [Action("restart", "Restart", description="Restarts your instance (about a minute offline).")]

    def run_action(self, spec: ServiceSpec, name: str, params: Mapping[str, Any]) -> ActionResult:
        """``restart``: ``POST /containers/{id}/restart?t=30`` (the SDK's ``container.restart``), then
        the health path must answer again within ``health_timeout_seconds``. Raises like
        ``unsuspend`` (no container, unhealthy: permanent; engine unreachable: transient)."""
        if name != "restart":
            return super().run_action(spec, name, params)
        self._require_settings()
        client = self._client()
        with self._docker_errors(f"restart {spec.external_id}"):
            container = self._container_for(client, spec)
            container.restart(timeout=30)
            log.info("docker: restarted %s for %s", container.name, spec.external_id)
        self._forget_usage(spec)
        self._wait_healthy(client, container, self._names(self._space(spec)))
        return ActionResult("Your instance was restarted and answers again.")

    def list_resources(self) -> list[Resource]:
        """Every container labelled ``panel.service`` by this backend, as ``Resource``s.

        ``state``: running -> "active", exited/paused -> "suspended", created -> "provisioning",
        restarting/dead -> "failed". For adoption each carries ``created_at`` (the container's
        ``Created``), ``suspended_at`` (``State.FinishedAt`` of a stopped one), ``customer_email``
        (label ``panel.customer_email``), ``params`` ``{"space"}`` (label ``panel.space``) and
        ``options`` ``{"memory_mib", "cpus"}`` read from ``HostConfig`` (``Memory`` bytes / MiB,
        ``NanoCpus`` or ``CpuQuota``/``CpuPeriod``). Raises ``TransientBackendError`` when the engine
        is unreachable.
        """
        self._require_settings()
        client = self._client()
        with self._docker_errors("list resources"):
            containers = client.containers.list(
                all=True, filters={"label": [LABEL_SERVICE, f"{LABEL_BACKEND}={self.name}"]})
            return [self._resource(c) for c in containers]

    def _resource(self, container) -> Resource:
        labels = container.labels or {}
        attrs = container.attrs or {}
        host = attrs.get("HostConfig") or {}
        state = attrs.get("State") or {}
        options: dict[str, Any] = {}
        if host.get("Memory"):
            options["memory_mib"] = int(host["Memory"]) // MIB
        if host.get("NanoCpus"):
            options["cpus"] = round(int(host["NanoCpus"]) / 1e9, 3)
        elif host.get("CpuQuota") and host.get("CpuPeriod"):
            options["cpus"] = round(int(host["CpuQuota"]) / int(host["CpuPeriod"]), 3)
        status = self._state(container.status)
        detail = f"{container.name} ({container.status})"
        if status == "failed":
            detail = (f"{container.name} is {container.status}"
                      + (f" (exit code {state.get('ExitCode')})" if state.get("ExitCode") else "")
                      + (f": {self._scrub(state.get('Error'))}" if state.get("Error") else ""))
        return Resource(external_id=labels.get(LABEL_SERVICE, ""), resource_id=container.id, state=status,
                        detail=detail, name=labels.get(LABEL_SPACE, ""), created_at=_docker_time(attrs.get("Created")),
                        suspended_at=_docker_time(state.get("FinishedAt")) if status == "suspended" else None,
                        customer_email=labels.get(LABEL_CUSTOMER, ""),
                        params={"space": labels[LABEL_SPACE]} if labels.get(LABEL_SPACE) else {}, options=options)

    def adopt(self, spec: ServiceSpec, resource: Resource) -> Provisioned:
        """Take over the labelled container of ``spec.external_id`` (``panel reconcile --adopt``)
        without touching it: ``Provisioned(resource_id=<container id>, data=<as provision>,
        secrets=<database_password and jwt_secret read back from its environment>)``. Raises
        ``PermanentBackendError`` when no container carries the label (containers the panel did
        not make cannot be adopted: Docker labels cannot be added to a container)."""
        self._require_settings()
        client = self._client()
        with self._docker_errors(f"adopt {spec.external_id}"):
            container = self._container_for(client, spec)
            secrets = self._secrets_from_env(container)
        return Provisioned(resource_id=container.id, data=self._data(self._names(self._space(spec)), container),
                           secrets=secrets)

    # ------------------------------------------------------------------ test_connection

    def test_connection(self) -> str:
        """Check the engine, the image's presence, the network and the PostgreSQL admin's rights.

        Returns a one-line summary; raises ``PermanentBackendError`` (image missing, network
        missing, login refused, CREATEDB/CREATEROLE missing) or ``TransientBackendError``.
        """
        self._require_settings()
        client = self._client()
        with self._docker_errors("test connection"):
            version = client.version().get("Version", "?")
            image = self._require_image(client)
            if self._s("network"):
                try:
                    client.networks.get(self._s("network"))
                except docker.errors.NotFound:
                    raise PermanentBackendError(f"Docker network {self._s('network')} does not exist") from None
        with self._pg(what="test connection") as conn, conn.cursor() as cur:
            user, superuser = self._admin_rights(cur)
            cur.execute("SHOW server_version")
            pg_version = cur.fetchone()[0]
        rights = "superuser" if superuser else "CREATEDB, CREATEROLE"
        return (f"Docker Engine {version} ok; image {self._s('image')} present ({image.short_id}); "
                f"PostgreSQL {pg_version} ok, admin {user} has {rights}")

    # ------------------------------------------------------------------ usage

    def _cache_key(self, spec: ServiceSpec) -> tuple:
        return (self._s("docker_url") or "", self._s("name_prefix"), spec.external_id)

    def _forget_usage(self, spec: ServiceSpec) -> None:
        with _CACHE_LOCK:
            _USAGE_CACHE.pop(self._cache_key(spec), None)

    def usage(self, spec: ServiceSpec) -> Usage:
        """CPU (%), memory (bytes), storage (bytes, for charts), ``storage_gib`` (the same in GiB,
        2**30 bytes, six decimals: the billable metric) and posts (count; 0 before the Postiz schema
        exists), cached in-process. A figure that cannot be read (the database or the volume sizes)
        is left out and named in ``note``, so nothing is billed from a guess.

        A figure younger than ``usage_cache_seconds`` is returned as is. An older one (up to ten
        times that age) is returned at once while a background thread measures again, so the
        dashboard does not wait on ``stats`` (about 1 s per container); otherwise it is measured now.
        ``collected_at`` says when. Raises ``TransientBackendError`` if the engine is unreachable.
        """
        self._require_settings()
        ttl = float(self._s("usage_cache_seconds", 30))
        key = self._cache_key(spec)
        now = time.monotonic()
        with _CACHE_LOCK:
            entry = _USAGE_CACHE.get(key)
            if entry and ttl > 0:
                age = now - entry[0]
                if age < ttl:
                    return entry[1]
                if age < ttl * 10:
                    if key not in _USAGE_REFRESHING:
                        _USAGE_REFRESHING.add(key)
                        threading.Thread(target=self._refresh_usage, args=(key, spec), daemon=True,
                                         name=f"usage-{spec.external_id}").start()
                    return entry[1]
        usage = self._measure_usage(spec)
        if ttl > 0:
            with _CACHE_LOCK:
                _USAGE_CACHE[key] = (time.monotonic(), usage)
        return usage

    def _refresh_usage(self, key: tuple, spec: ServiceSpec) -> None:
        try:
            usage = self._measure_usage(spec)
            with _CACHE_LOCK:
                _USAGE_CACHE[key] = (time.monotonic(), usage)
        except Exception as exc:  # a background refresh must never kill the process; keep the old figure
            log.debug("docker: usage refresh of %s failed: %s", spec.external_id, self._scrub(exc))
        finally:
            with _CACHE_LOCK:
                _USAGE_REFRESHING.discard(key)

    def _measure_usage(self, spec: ServiceSpec) -> Usage:
        n = self._names(self._space(spec))
        memory_mib, cpus = self._plan_limits(spec.options)
        client = self._client()
        metrics: list[Metric] = []
        notes: list[str] = []
        with self._docker_errors(f"usage of {n.container}"):
            container = self._find_container(client, spec.external_id)
            cpu_pct, mem_bytes = 0.0, 0
            if container is None:
                notes.append("no container")
            elif container.status == "running":
                stats = container.stats(stream=False)
                cpu_pct = _cpu_percent(stats)
                mem_bytes = _memory_bytes(stats)
            metrics.append(Metric("cpu", round(cpu_pct, 2), "%", label="CPU (100% = one core)",
                                  limit=round(cpus * 100, 2)))
            metrics.append(Metric("memory", int(mem_bytes), "bytes", label="Memory",
                                  limit=memory_mib * MIB))
            storage = self._volume_bytes(client, spec.external_id)
            if storage is None:
                notes.append("volume sizes unavailable")
            else:
                metrics.append(Metric("storage", int(storage), "bytes", label="Storage (volumes)"))
                metrics.append(Metric("storage_gib", round(storage / GIB, 6), "GiB", label="Storage"))
        posts, why = self._post_count(n)
        if posts is None:
            notes.append(f"posts omitted: {why}")
        else:
            metrics.append(Metric("posts", posts, "count", label="Posts"))
        return Usage(metrics=tuple(metrics), note="; ".join(notes))

    def _volume_bytes(self, client, external_id: str) -> int | None:
        # /system/df computes volume sizes; newer engines honour type=volume, older ones ignore it.
        api = client.api
        result = api._result(api._get(api._url("/system/df"), params={"type": "volume"}), True)
        total, seen = 0, False
        for volume in result.get("Volumes") or []:
            if (volume.get("Labels") or {}).get(LABEL_SERVICE) != external_id:
                continue
            size = (volume.get("UsageData") or {}).get("Size", -1)
            if size is not None and size >= 0:
                total += size
                seen = True
        return total if seen else None

    def _post_count(self, n: Names) -> tuple[int | None, str]:
        """Posts in the tenant's Postiz schema (``"Post"``, not soft-deleted), or (None, why)."""
        try:
            with self._pg(dbname=n.database, what="post count") as conn, conn.cursor() as cur:
                cur.execute("""SELECT to_regclass('public."Post"')""")
                if cur.fetchone()[0] is None:
                    return 0, ""  # the Postiz schema is not there yet: nothing posted
                cur.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' "
                            "AND table_name = 'Post' AND column_name = 'deletedAt'")
                where = ' WHERE "deletedAt" IS NULL' if cur.fetchone() else ""
                cur.execute('SELECT count(*) FROM public."Post"' + where)
                return int(cur.fetchone()[0]), ""
        except BackendError as exc:
            return None, str(exc)


def _docker_time(value: Any) -> datetime | None:
    """A Docker Engine timestamp (RFC 3339 with nanoseconds, ``2024-05-01T10:00:00.123456789Z``) as
    an aware datetime; ``None`` for none or the zero time (``0001-01-01T00:00:00Z``)."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    text = value.replace("Z", "+00:00")
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", text)
    if match:
        text = match.group(1) + (match.group(2)[:7] if match.group(2) else "") + match.group(3)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _cpu_percent(stats: Mapping[str, Any]) -> float:
    """CPU use in % of one core from a Docker stats sample (the ``docker stats`` formula)."""
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - \
        (pre.get("cpu_usage") or {}).get("total_usage", 0)
    system_delta = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    if cpu_delta <= 0 or system_delta <= 0:
        return 0.0
    return cpu_delta / system_delta * online * 100.0


def _memory_bytes(stats: Mapping[str, Any]) -> int:
    """Memory in bytes without the page cache (cgroup v1 total_inactive_file, v2 inactive_file)."""
    mem = stats.get("memory_stats") or {}
    usage = mem.get("usage") or 0
    detail = mem.get("stats") or {}
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0)) or 0
    return max(0, int(usage) - int(cache))
