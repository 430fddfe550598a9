"""``PterodactylBackend``: sells Pterodactyl game servers through the hostpanel ``Backend`` contract.

What seed 001 did by hand (a ``ptero_nodes`` table, hard-coded egg ids, "first free allocation",
an ``external_accounts`` link) becomes settings and plan data here:

* settings: ``panel_url``, ``application_api_key`` (``ptla_``, secret), ``client_api_key``
  (``ptlc_``, secret, optional: live stats), ``nodes`` (region, enabled, headroom per node id),
  ``games`` (game name -> nest and egg id), ``force_delete`` and a few knobs;
* plan options: an egg (``game`` or ``nest`` + ``egg``), limits in MiB and %, feature limits, region;
* order params: ``server_name`` and ``region``.

Every remote call is described with its Pterodactyl route (v1.11, ``routes/api-application.php``
and ``routes/api-client.php``).
"""
from __future__ import annotations

import logging
import re
import secrets as _random
from typing import Any, Mapping
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator

from panel.backends import (Action, ActionResult, Backend, BackendError, Connect, ConnectItem, Credential,
                            Credentials, HowTo, InProgress, Limit, Link, Links, Metric, NoCapacityError,
                            NotSupportedError, PermanentBackendError, Provisioned, Resource, Resources,
                            Schema, Secret, ServiceSpec, TransientBackendError, Usage, ValidationError,
                            validate_model)

from panel_pterodactyl.client import NotFound, PterodactylClient
from panel_pterodactyl.eggs import build_environment, default_image
from panel_pterodactyl.nodes import NodeCapacity, merge, validate_nodes

log = logging.getLogger("panel_pterodactyl")

MIB = 1024 * 1024
_INCLUDE = {"include": "allocations"}
_USERNAME_OK = re.compile(r"[a-z0-9][\w.-]*[a-z0-9]")


def _secret(value: Any) -> Secret:
    return value if isinstance(value, Secret) else Secret("" if value is None else value)


class PterodactylBackend(Backend):
    """Game servers on a Pterodactyl panel (application API v1, client API for live stats).

    Settings (``panel plugins set pterodactyl KEY VALUE``):

    * ``panel_url``: the panel's base URL, e.g. ``https://panel.example.com``.
    * ``application_api_key``: a ``ptla_`` application key of a root admin with read/write on
      servers, users, nodes, allocations, nests/eggs (secret).
    * ``client_api_key``: optional ``ptlc_`` account key of a root admin, for live usage (secret).
    * ``nodes``: JSON list of ``{"id", "region", "enabled", "headroom_memory" (MiB),
      "headroom_disk" (MiB)}``; see :func:`panel_pterodactyl.nodes.validate_nodes`.
    * ``games``: JSON mapping game name -> ``{"nest": id, "egg": id}``, used by plans that say
      ``game: minecraft`` instead of ``nest``/``egg``.
    * ``force_delete``: when true, a delete that Pterodactyl cannot finish (Wings unreachable, 5xx)
      falls back to ``DELETE /servers/{id}/force``. Off by default: force leaves files on the node.
    * ``user_external_id_prefix`` (``hp-user-``), ``resource_prefix`` (``hp-``), ``timeout``
      (seconds).

    Errors: every operation raises ``TransientBackendError`` (unreachable, timeouts, 429, 5xx) or
    ``PermanentBackendError`` (401/403 keys, 404, 422 with ``fields``, no capacity).
    """

    name = "pterodactyl"
    admin_links = (("Nodes", "pterodactyl_admin.nodes"),)
    label = "Pterodactyl game servers"

    class Settings(Schema):
        panel_url: str = Field(title="Panel URL", pattern=r"^https?://[^\s/]+(/\S*)?$",
                               description="Base URL of the Pterodactyl panel, e.g. https://panel.example.com")
        application_api_key: SecretStr = Field(
            title="Application API key", description="ptla_ key of a root admin (Admin > Application API), "
            "read/write on servers, users, nodes, allocations, nests and eggs")
        client_api_key: SecretStr | None = Field(
            None, title="Client API key",
            description="Optional ptlc_ account key of a root admin, for live CPU/memory/disk/network usage")
        nodes: list[dict[str, Any]] | None = Field(
            None, description='[{"id": 1, "region": "us-east", "enabled": true, "headroom_memory": 2048, '
                              '"headroom_disk": 10240}] (headroom in MiB)')
        games: dict[str, Any] | None = Field(None, description='Game to egg table: {"minecraft": {"nest": 1, "egg": 39}, ...}')
        force_delete: bool = Field(False, description="Operator confirmation: if a normal delete fails (Wings down), "
                                                      "use DELETE /force")
        user_external_id_prefix: str = Field("hp-user-", max_length=100, pattern=r"^[A-Za-z0-9._:-]+$",
                                             description="Pterodactyl users get external_id <prefix><customer id>")
        resource_prefix: str = Field("hp-", max_length=100, pattern=r"^[A-Za-z0-9._:-]+$",
                                     description="list_resources/reconcile report servers whose external_id "
                                                 "starts with this")
        timeout: int = Field(30, ge=1, le=300, description="Read timeout of one API request",
                             json_schema_extra={"unit": "seconds"})
        install_poll_seconds: float = Field(
            10, ge=0, le=600, json_schema_extra={"unit": "seconds"},
            description="While a new server installs, provision is asked again this often (the job does not "
                        "wait; PANEL_JOB_MAX_WAIT bounds the whole install)")

        @field_validator("games")
        @classmethod
        def _games(cls, value: dict | None) -> dict | None:
            return None if value is None else _field_check(validate_games, value)

    class PlanOptions(Schema):
        game: str | None = Field(None, max_length=64, description="A key of the games setting (instead of nest and egg)")
        nest: int | None = Field(None, ge=1, description="Pterodactyl nest id")
        egg: int | None = Field(None, ge=1, description="Pterodactyl egg id")
        memory: int = Field(ge=0, description="0 = unlimited", json_schema_extra={"unit": "MiB"})
        swap: int = Field(0, ge=-1, description="-1 = unlimited", json_schema_extra={"unit": "MiB"})
        disk: int = Field(ge=0, description="0 = unlimited", json_schema_extra={"unit": "MiB"})
        cpu: int = Field(100, ge=0, description="100 = one core; 0 = unlimited", json_schema_extra={"unit": "%"})
        io: int = Field(500, ge=10, le=1000, description="Block IO weight")
        databases: int = Field(0, ge=0, json_schema_extra={"unit": "count"})
        backups: int = Field(0, ge=0, json_schema_extra={"unit": "count"})
        allocations: int = Field(1, ge=1, json_schema_extra={"unit": "count"})
        region: str | None = Field(None, max_length=64, description="Default region when the customer does not choose one")
        docker_image: str | None = Field(None, max_length=191, description="Default: the egg's image")
        startup: str | None = Field(None, max_length=2000, description="Default: the egg's startup command")
        environment: dict[str, str | int | float | bool | None] | None = Field(
            None, description="{VAR: value} over the egg variables' defaults")
        start_on_completion: bool = True
        oom_disabled: bool = True
        force_delete: bool = Field(False, description="Operator confirmation for this plan: allow DELETE /force "
                                                      "when a delete fails")

    class OrderParams(Schema):
        server_name: str = Field(max_length=191, title="Server name")
        region: str | None = Field(None, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$", title="Region")

    @classmethod
    def validate_setting(cls, key: str, value: Any) -> Any:
        """``nodes`` is checked entry by entry when stored (``panel plugins set``), not only on use."""
        return validate_nodes(value) if key == "nodes" else value

    def __init__(self, settings: Mapping[str, Any]):
        """Build the backend from validated settings (secret ones as ``Secret``)."""
        settings = dict(settings)
        for key in ("application_api_key", "client_api_key"):
            if settings.get(key) is not None and not isinstance(settings[key], Secret):
                settings[key] = Secret(settings[key])
        super().__init__(settings)
        self.panel_url = str(settings.get("panel_url") or "").rstrip("/")
        self.client = PterodactylClient(
            self.panel_url, _secret(settings.get("application_api_key")),
            _secret(settings.get("client_api_key")) if settings.get("client_api_key") else None,
            timeout=float(settings.get("timeout") or 30))

    # ------------------------------------------------------------------ settings
    @property
    def node_config(self) -> list[dict]:
        """The validated ``nodes`` setting. Raises ``PermanentBackendError`` when it is invalid."""
        try:
            return validate_nodes(self.settings.get("nodes"))
        except ValidationError as exc:
            raise PermanentBackendError(f"setting nodes is invalid: {exc}", fields=exc.errors) from None

    @property
    def games(self) -> dict[str, dict]:
        """The ``games`` setting: game name -> ``{"nest": int, "egg": int}``."""
        try:
            return validate_games(self.settings.get("games"))
        except ValidationError as exc:
            raise PermanentBackendError(f"setting games is invalid: {exc}", fields=exc.errors) from None

    validate_nodes = staticmethod(validate_nodes)

    def _user_external_id(self, customer_id: int) -> str:
        return f"{self.settings.get('user_external_id_prefix') or 'hp-user-'}{customer_id}"

    def _link(self, identifier: str | None) -> str | None:
        return f"{self.panel_url}/server/{identifier}" if identifier else None

    # ------------------------------------------------------------------ validation
    def validate_plan_options(self, options: Mapping[str, Any]) -> dict:
        """Validate a plan's options, resolve ``game`` to ``nest``/``egg`` and check the egg.

        The egg is read from Pterodactyl (``GET /api/application/nests/{nest}/eggs/{egg}
        ?include=variables``) and the plan's ``environment`` merged over the variables' defaults
        must satisfy each variable's rules. Raises ``ValidationError`` naming the field, e.g.
        ``{"environment.SERVER_JARFILE": "does not match ..."}`` or ``{"egg": "not found"}``.
        When the panel cannot be reached (or refuses the key) the egg check is skipped with a
        warning: ``provision`` checks the environment again and fails permanently if it is wrong.
        """
        clean = validate_model(self.PlanOptions, options)
        errors: dict[str, str] = {}
        game = clean.get("game")
        if game:
            try:
                table = self.games
            except PermanentBackendError as exc:
                raise ValidationError({"game": str(exc)}) from None
            if game not in table:
                known = ", ".join(sorted(table)) or "none (set the games setting)"
                errors["game"] = f"unknown game {game!r}; known games: {known}"
            elif clean.get("nest") or clean.get("egg"):
                if (clean.get("nest"), clean.get("egg")) != (table[game]["nest"], table[game]["egg"]):
                    errors["egg"] = f"give either game or nest and egg (game {game!r} is egg {table[game]['egg']})"
            else:
                clean["nest"], clean["egg"] = table[game]["nest"], table[game]["egg"]
        elif not (clean.get("nest") and clean.get("egg")):
            for key in ("nest", "egg"):
                if not clean.get(key):
                    errors[key] = "is required (or set game)"
        env = clean.get("environment")
        if env is not None and (not isinstance(env, Mapping) or any(
                not isinstance(v, (str, int, float, bool)) and v is not None for v in env.values())):
            errors["environment"] = "must be a mapping of VARIABLE: value"
        region = clean.get("region")
        if region:
            regions = self._configured_regions()
            if regions is not None and region not in regions:
                errors["region"] = f"no enabled node is configured in region {region!r} (known: {', '.join(sorted(regions)) or 'none'})"
        if errors:
            raise ValidationError(errors)
        try:
            egg = self._egg(clean["nest"], clean["egg"])
        except NotFound:
            raise ValidationError({"egg": f"egg {clean['egg']} not found in nest {clean['nest']}"}) from None
        except BackendError as exc:
            log.warning("pterodactyl: could not check egg %s of plan options (%s); provision will check it",
                        clean["egg"], exc)
            return clean
        _, env_errors = build_environment(egg, clean.get("environment"))
        if env_errors:
            raise ValidationError(env_errors)
        return clean

    def validate_order_params(self, params: Mapping[str, Any], options: Mapping[str, Any]) -> dict:
        """Validate the customer's ``server_name`` and ``region``.

        The region defaults to the plan's ``region``; when nodes are configured it must be one
        where an enabled node is. Raises ``ValidationError`` (field name -> message).
        """
        clean = validate_model(self.OrderParams, params)
        region = clean.get("region") or (options or {}).get("region")
        if not region:
            raise ValidationError({"region": "is required"})
        regions = self._configured_regions()
        if regions is not None and region not in regions:
            raise ValidationError({"region": f"must be one of: {', '.join(sorted(regions)) or 'none'}"})
        clean["region"] = region
        return clean

    def _configured_regions(self) -> set[str] | None:
        try:
            nodes = validate_nodes(self.settings.get("nodes"))
        except ValidationError:
            return None
        if not nodes:
            return None
        return {n["region"] for n in nodes if n["enabled"]}

    # ------------------------------------------------------------------ remote reads
    def _egg(self, nest: int, egg: int) -> dict:
        """``GET /api/application/nests/{nest}/eggs/{egg}?include=variables`` attributes."""
        return self.client.get_item(f"nests/{int(nest)}/eggs/{int(egg)}", {"include": "variables"})

    def _find_server(self, spec: ServiceSpec) -> dict | None:
        """The server of ``spec`` (attributes with ``include=allocations``), or ``None``.

        Tries the recorded id (``GET /servers/{id}``, checking its ``external_id``), then
        ``GET /servers/external/{external_id}`` (404 = none).
        """
        sid = spec.resource_id or (spec.backend_data or {}).get("server_id")
        if sid and str(sid).isdigit():
            try:
                attrs = self.client.get_item(f"servers/{int(sid)}", _INCLUDE)
                if attrs.get("external_id") in (None, spec.external_id):
                    return attrs
            except NotFound:
                pass
        try:
            return self.client.get_item(f"servers/external/{quote(spec.external_id, safe='')}", _INCLUDE)
        except NotFound:
            return None

    def _require_server(self, spec: ServiceSpec) -> dict:
        server = self._find_server(spec)
        if server is None:
            raise PermanentBackendError(f"Pterodactyl has no server with external_id {spec.external_id}")
        return server

    def live_nodes(self, *, with_location: bool = False) -> list[NodeCapacity]:
        """Every node of the panel (``GET /api/application/nodes``, all pages) merged with our config.

        ``with_location`` adds ``?include=location`` so each node carries its location's short code
        (for the operator page and ``panel pterodactyl nodes``; placement does not need it).
        """
        config = {n["id"]: n for n in self.node_config}
        params = {"include": "location"} if with_location else None
        return [merge(node, config.get(int(node.get("id") or 0)))
                for node in self.client.iter_list("nodes", params)]

    # ------------------------------------------------------------------ placement
    def _place(self, region: str, memory: int, disk: int, *, exclude: set[int] = frozenset(),
               nodes: list[NodeCapacity] | None = None) -> tuple[NodeCapacity, dict]:
        """Pick a node and a free allocation for a server of ``memory``/``disk`` MiB in ``region``.

        A node qualifies when it is configured for the region, enabled, not in maintenance, and
        ``memory * (1 + memory_overallocate/100) - allocated - headroom >= memory`` (same for disk).
        Qualifying nodes are tried with the most free memory first; on each, allocations are paged
        through (``GET /nodes/{id}/allocations``) for the first with ``assigned = false``.
        Raises ``NoCapacityError("no capacity in region X")``.
        """
        nodes = self.live_nodes() if nodes is None else nodes
        in_region = [n for n in nodes if n.configured and n.region == region]
        candidates = sorted((n for n in in_region if n.fits(memory, disk)),
                            key=lambda n: (-n.free_memory, n.id))
        for node in candidates:
            for allocation in self.client.iter_list(f"nodes/{node.id}/allocations"):
                if not allocation.get("assigned") and int(allocation.get("id") or 0) not in exclude:
                    return node, allocation
        reasons = [f"node {n.id}: {n.why_not(memory, disk) or 'no free allocation'}" for n in in_region]
        raise NoCapacityError(f"no capacity in region {region}" + (f" ({'; '.join(reasons)})" if reasons
                                                                   else " (no node configured)"))

    def check_capacity(self, options: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        """Raise ``NoCapacityError`` when no node in the order's region can take the plan now.

        Same rules as provisioning (see ``_place``): memory and disk in MiB against the live node
        figures, over-allocation, headroom, maintenance, and at least one free allocation.
        """
        region = (params or {}).get("region") or (options or {}).get("region")
        if not region:
            raise NoCapacityError("no capacity: no region given")
        self._place(region, int(options.get("memory") or 0), int(options.get("disk") or 0))

    # ------------------------------------------------------------------ account link
    def _ensure_user(self, spec: ServiceSpec) -> dict:
        """Find or create the customer's Pterodactyl user; returns its attributes.

        1. ``GET /users/external/{hp-user-<customer_id>}``;
        2. ``GET /users?filter[email]=`` (a LIKE match: only an exact, case-insensitive email counts);
        3. ``POST /users`` with that external_id (201). A 422 because the email or external id was
           taken meanwhile repeats the lookups; a taken username retries once with a suffix.
        """
        ext = self._user_external_id(spec.customer_id)
        found = self._lookup_user(ext, spec.customer_email)
        if found:
            return found
        local = spec.customer_email.split("@", 1)[0].lower()
        base = re.sub(r"[^a-z0-9._-]", "", local).strip("._-")[:60] or "user"
        username = f"{base}-{spec.customer_id}"
        for attempt in range(2):
            if not _USERNAME_OK.fullmatch(username):
                username = f"user-{spec.customer_id}"
            body = {"email": spec.customer_email, "username": username, "first_name": base[:191] or "Customer",
                    "last_name": f"#{spec.customer_id}", "external_id": ext}
            try:
                created = self.client.request("POST", "users", json=body)
                user = dict((created or {}).get("attributes") or {})
                log.info("pterodactyl: created user %s (%s) for customer %s", user.get("id"), ext, spec.customer_id)
                return user
            except PermanentBackendError as exc:
                if {"email", "external_id"} & set(exc.fields):
                    found = self._lookup_user(ext, spec.customer_email)
                    if found:
                        return found
                if "username" in exc.fields and attempt == 0:
                    username = f"{base}-{spec.customer_id}-{_random.token_hex(2)}"
                    continue
                raise
        raise PermanentBackendError("could not create a Pterodactyl user")  # pragma: no cover

    def _lookup_user(self, external_id: str, email: str) -> dict | None:
        try:
            return self.client.get_item(f"users/external/{quote(external_id, safe='')}")
        except NotFound:
            pass
        wanted = email.strip().lower()
        for user in self.client.iter_list("users", {"filter[email]": email.strip()}):
            if str(user.get("email") or "").strip().lower() == wanted:
                return user
        return None

    # ------------------------------------------------------------------ provision
    def provision(self, spec: ServiceSpec) -> Provisioned:
        """Create the game server for ``spec``, or adopt the one an earlier try made.

        Contract: ``GET /api/application/servers/external/{external_id}`` first (found = adopt);
        else find/create the user, read the egg, place on a node and
        ``POST /api/application/servers`` with ``external_id = spec.external_id`` and
        ``allocation.default`` = a free allocation (201). Never retried automatically: a lost
        answer is adopted by the next call. A 422 raises ``PermanentBackendError`` whose ``fields``
        map each source field to its detail; no room raises ``NoCapacityError``; 429/5xx/timeouts
        raise ``TransientBackendError``.
        """
        existing = self._find_server(spec)
        if existing is not None:
            log.info("pterodactyl: adopting server %s for %s", existing.get("id"), spec.external_id)
            return self._installed(existing, spec)
        options, params = spec.options, spec.params
        nest, egg_id = options.get("nest"), options.get("egg")
        if not (nest and egg_id):
            raise PermanentBackendError("plan options name no egg (set game, or nest and egg)")
        try:
            egg = self._egg(nest, egg_id)
        except NotFound:
            raise PermanentBackendError(f"egg {egg_id} not found in nest {nest}", fields={"egg": "not found"}) from None
        environment, env_errors = build_environment(egg, options.get("environment"))
        if env_errors:
            raise PermanentBackendError(
                "plan environment breaks the egg rules: " + "; ".join(f"{k}: {v}" for k, v in env_errors.items()),
                fields=env_errors)
        region = params.get("region") or options.get("region")
        if not region:
            raise PermanentBackendError("no region given", fields={"region": "is required"})
        user = self._ensure_user(spec)
        memory, disk = int(options.get("memory") or 0), int(options.get("disk") or 0)
        refused: set[int] = set()
        for attempt in range(3):
            node, allocation = self._place(region, memory, disk, exclude=refused)
            body = {
                "external_id": spec.external_id,
                "name": str(params.get("server_name") or spec.external_id)[:191],
                "description": f"hostpanel service {spec.service_id} ({spec.plan})",
                "user": int(user["id"]),
                "egg": int(egg_id),
                "docker_image": options.get("docker_image") or default_image(egg),
                "startup": options.get("startup") or egg.get("startup") or "",
                "environment": environment,
                "limits": self._limits(options),
                "feature_limits": self._feature_limits(options),
                "allocation": {"default": int(allocation["id"])},
                "start_on_completion": bool(options.get("start_on_completion", True)),
                "oom_disabled": bool(options.get("oom_disabled", True)),
            }
            try:
                created = self.client.request("POST", "servers", json=body)
            except PermanentBackendError as exc:
                if "external_id" in exc.fields:
                    # Made by a concurrent or earlier try whose answer was lost: adopt it.
                    existing = self._find_server(spec)
                    if existing is not None:
                        return self._installed(existing, spec, user=user)
                if "allocation.default" in exc.fields and attempt < 2:
                    refused.add(int(allocation["id"]))  # taken meanwhile: pick another
                    continue
                raise
            attrs = dict((created or {}).get("attributes") or {})
            log.info("pterodactyl: created server %s (%s) on node %s", attrs.get("id"), spec.external_id, node.id)
            return self._installed(attrs, spec, user=user, allocation=allocation, region=region)
        raise PermanentBackendError("could not claim a free allocation")  # pragma: no cover

    def _installed(self, server: Mapping[str, Any], spec: ServiceSpec, *, user: Mapping | None = None,
                   **extra) -> Provisioned:
        """The ``Provisioned`` of a server whose install finished; raises ``InProgress`` while Wings
        installs it (the core asks again after ``install_poll_seconds``) and ``PermanentBackendError``
        naming server, egg and node when the install failed (``status: install_failed``)."""
        state = self._state(server)
        if state == "installing":
            raise InProgress(f"Pterodactyl server {server.get('id')} ({server.get('identifier')}) is installing "
                             f"(egg {server.get('egg')} on node {server.get('node')})",
                             retry_after=float(self.settings.get("install_poll_seconds", 10)),
                             resource_id=str(server.get("id")))
        if state == "install_failed":
            raise PermanentBackendError(self._install_failed_message(server))
        if user is None and server.get("user"):
            try:  # adopted (or polled until installed): the user name for the client area
                user = self.client.get_item(f"users/{int(server['user'])}")
            except NotFound:
                user = None
        return self._provisioned(server, spec, user=user, **extra)

    def _install_failed_message(self, server: Mapping[str, Any]) -> str:
        """``server N (identifier) failed to install: egg E "name" (nest N) on node N "name"``, with
        what to do. Egg and node names are read best effort (``GET /nests/{n}/eggs/{e}``,
        ``GET /nodes/{id}``)."""
        egg, nest, node = server.get("egg"), server.get("nest"), server.get("node")
        egg_name = node_name = ""
        try:
            egg_name = str(self._egg(int(nest), int(egg)).get("name") or "")
        except (BackendError, TypeError, ValueError):
            pass
        try:
            node_name = str(self.client.get_item(f"nodes/{int(node)}").get("name") or "")
        except (BackendError, TypeError, ValueError):
            pass
        return (f"Pterodactyl server {server.get('id')} ({server.get('identifier')}) failed to install: egg {egg}"
                + (f' "{egg_name}"' if egg_name else "") + f" (nest {nest}) on node {node}"
                + (f' "{node_name}"' if node_name else "")
                + ". Check the egg's install script and the node's Wings log, then reinstall the server in "
                  "Pterodactyl (or delete it) and retry")

    @staticmethod
    def _limits(options: Mapping[str, Any]) -> dict:
        return {"memory": int(options.get("memory") or 0), "swap": int(options.get("swap") or 0),
                "disk": int(options.get("disk") or 0), "io": int(options.get("io") or 500),
                "cpu": int(options.get("cpu") if options.get("cpu") is not None else 100)}

    @staticmethod
    def _feature_limits(options: Mapping[str, Any]) -> dict:
        return {"databases": int(options.get("databases") or 0), "backups": int(options.get("backups") or 0),
                "allocations": int(options.get("allocations") or 1)}

    def _allocation_of(self, server: Mapping[str, Any]) -> dict | None:
        rel = ((server.get("relationships") or {}).get("allocations") or {}).get("data") or []
        for item in rel:
            attrs = item.get("attributes") or {}
            if attrs.get("id") == server.get("allocation"):
                return dict(attrs)
        return None

    def _provisioned(self, server: Mapping[str, Any], spec: ServiceSpec, *, user: Mapping | None = None,
                     allocation: Mapping | None = None, region: str | None = None) -> Provisioned:
        allocation = allocation or self._allocation_of(server)
        data = dict(spec.backend_data or {})
        data.update({
            "server_id": server.get("id"), "identifier": server.get("identifier"),
            "uuid": server.get("uuid"), "external_id": spec.external_id, "name": server.get("name"),
            "node_id": server.get("node"), "allocation_id": server.get("allocation"),
            "panel_link": self._link(server.get("identifier")),
            "pterodactyl_user_id": server.get("user"),
            "user_external_id": self._user_external_id(spec.customer_id),
            "region": region or data.get("region") or spec.params.get("region") or spec.options.get("region"),
        })
        if allocation:
            data["address"] = _address(allocation)
        if user:
            data["panel_username"] = user.get("username")
            data["pterodactyl_user_id"] = user.get("id", data["pterodactyl_user_id"])
        return Provisioned(resource_id=str(server.get("id")), data=data)

    # ------------------------------------------------------------------ lifecycle
    def suspend(self, spec: ServiceSpec) -> None:
        """``POST /api/application/servers/{id}/suspend`` (204); a suspended server is left alone.

        Raises ``PermanentBackendError`` when the server does not exist.
        """
        server = self._require_server(spec)
        if server.get("suspended") or server.get("status") == "suspended":
            return
        self._post_state(server, "suspend")

    def unsuspend(self, spec: ServiceSpec) -> None:
        """``POST /api/application/servers/{id}/unsuspend`` (204); a running server is left alone."""
        server = self._require_server(spec)
        if not (server.get("suspended") or server.get("status") == "suspended"):
            return
        self._post_state(server, "unsuspend")

    def _post_state(self, server: Mapping[str, Any], action: str) -> None:
        try:
            self.client.request("POST", f"servers/{int(server['id'])}/{action}")
        except NotFound:
            raise PermanentBackendError(f"Pterodactyl server {server['id']} is gone ({action})") from None

    def terminate(self, spec: ServiceSpec, force: bool | None = None) -> None:
        """Delete the server: ``DELETE /api/application/servers/{id}`` (204; 404 counts as done).

        ``DELETE /servers/{id}/force`` is used only when a normal delete fails transiently (e.g.
        Wings is unreachable) AND the operator confirmed it: ``force=True`` here, or the setting
        ``force_delete``, or the plan option ``force_delete`` (``force=False`` overrides both).
        Force removes the panel record even if the files stay on the node.
        """
        server = self._find_server(spec)
        if server is None:
            return
        sid = int(server["id"])
        try:
            self.client.request("DELETE", f"servers/{sid}")
            return
        except NotFound:
            return
        except TransientBackendError as exc:
            allowed = force if force is not None else bool(
                self.settings.get("force_delete") or (spec.options or {}).get("force_delete"))
            if not allowed:
                raise TransientBackendError(
                    f"{exc} (set force_delete to let the panel force the delete)", exc.retry_after) from None
            log.warning("pterodactyl: delete of server %s failed (%s); forcing", sid, exc)
        try:
            self.client.request("DELETE", f"servers/{sid}/force")
        except NotFound:
            return

    def check_change_plan(self, spec: ServiceSpec, new_options: Mapping[str, Any]) -> None:
        """Refuse, before anything is charged, a change to another egg (it needs a reinstall):
        ``GET /api/application/servers/{id}``."""
        options = validate_model(self.PlanOptions, new_options)
        if options.get("egg") is None:
            return
        server = self._require_server(spec)
        if int(options["egg"]) != int(server.get("egg") or 0):
            raise NotSupportedError("this plan runs another game: moving to it needs a new server, not a plan change")

    def change_plan(self, spec: ServiceSpec, new_options: Mapping[str, Any]) -> Provisioned | None:
        """Apply new limits: ``PATCH /api/application/servers/{id}/build``.

        Sends ``allocation`` (the current default allocation id), ``limits`` (memory, swap, disk
        in MiB, cpu in %, io) and ``feature_limits``. Growing memory or disk is checked against
        the node's free room (headroom included): ``NoCapacityError`` when it does not fit.
        Changing the egg is not supported (``NotSupportedError``: it needs a reinstall).
        """
        try:
            options = validate_model(self.PlanOptions, new_options)
        except ValidationError as exc:
            raise PermanentBackendError(f"invalid plan options: {exc}", fields=exc.errors) from None
        server = self._require_server(spec)
        if options.get("egg") and int(options["egg"]) != int(server.get("egg") or 0):
            raise NotSupportedError("changing the egg of a Pterodactyl server needs a reinstall; not supported")
        limits = self._limits(options)
        current = server.get("limits") or {}
        grow_memory = max(0, limits["memory"] - int(current.get("memory") or 0))
        grow_disk = max(0, limits["disk"] - int(current.get("disk") or 0))
        if grow_memory or grow_disk:
            config = {n["id"]: n for n in self.node_config}
            live = self.client.get_item(f"nodes/{int(server['node'])}")
            node = merge(live, config.get(int(server["node"])) or {"enabled": True})
            if grow_memory > node.free_memory or grow_disk > node.free_disk:
                raise NoCapacityError(f"no capacity on node {node.id} for the new plan "
                                      f"(+{grow_memory} MiB memory, +{grow_disk} MiB disk)")
        body = {"allocation": int(server["allocation"]), "limits": limits,
                "feature_limits": self._feature_limits(options),
                "oom_disabled": bool(options.get("oom_disabled", True))}
        updated = self.client.request("PATCH", f"servers/{int(server['id'])}/build", json=body)
        attrs = dict((updated or {}).get("attributes") or server)
        attrs.setdefault("relationships", server.get("relationships"))
        result = self._provisioned(attrs, spec)
        return Provisioned(result.resource_id, {**result.data, "limits": limits})

    # ------------------------------------------------------------------ what the customer sees
    @staticmethod
    def _state(server: Mapping[str, Any]) -> str:
        status = server.get("status")
        if server.get("suspended") or status == "suspended":
            return "suspended"
        if status in ("install_failed", "reinstall_failed"):
            return "install_failed"
        if status == "installing" or not (server.get("container") or {}).get("installed", 1):
            return "installing"
        if status == "restoring_backup":
            return "restoring_backup"
        return "running"

    def details(self, spec: ServiceSpec) -> dict:
        """Address (``ip:port``), ``state`` (installing, install_failed, running, suspended,
        restoring_backup; ``deleted`` / ``unknown`` when the server is gone / the panel is down)
        and ``panel_link`` (``panel_url/server/<identifier>``). Source: ``GET /servers/{id}
        ?include=allocations``. Never raises for an unreachable panel: shows the stored data.
        """
        data = dict(spec.backend_data or {})
        base = {k: data.get(k) for k in ("address", "identifier", "panel_link", "region", "node_id", "name")
                if data.get(k) is not None}
        try:
            server = self._find_server(spec)
        except TransientBackendError as exc:
            return {**base, "state": "unknown", "note": str(exc)}
        if server is None:
            return {**base, "state": "deleted"}
        allocation = self._allocation_of(server)
        limits = server.get("limits") or {}
        out = {**base, "state": self._state(server), "identifier": server.get("identifier"),
               "name": server.get("name"), "node_id": server.get("node"),
               "panel_link": self._link(server.get("identifier")),
               "memory_mib": limits.get("memory"), "disk_mib": limits.get("disk"), "cpu_percent": limits.get("cpu")}
        if allocation:
            out["address"] = _address(allocation)
        return out

    def usage(self, spec: ServiceSpec) -> Usage:
        """Live CPU (%), memory, disk and network (bytes) and uptime (seconds).

        Source: client API ``GET /api/client/servers/{identifier}/resources`` with the
        ``client_api_key``. Without that key, returns the plan limits (memory/disk in MiB, cpu in
        %) with a note. Raises ``PermanentBackendError`` when the client key is refused (403).
        """
        options = spec.options or {}
        memory_limit = int(options.get("memory") or 0)
        disk_limit = int(options.get("disk") or 0)
        cpu_limit = int(options.get("cpu") or 0)
        if not self.client.has_client_key:
            return Usage(metrics=(
                Metric("memory_limit", memory_limit, "MiB", "Memory limit", memory_limit or None),
                Metric("disk_limit", disk_limit, "MiB", "Disk limit", disk_limit or None),
                Metric("cpu_limit", cpu_limit, "%", "CPU limit", cpu_limit or None),
            ), note="live usage needs the client_api_key setting; showing the plan limits")
        identifier = (spec.backend_data or {}).get("identifier")
        if not identifier:
            identifier = self._require_server(spec).get("identifier")
        try:
            body = self.client.get(f"servers/{quote(str(identifier), safe='')}/resources", api="client") or {}
        except NotFound:
            raise PermanentBackendError(f"Pterodactyl has no server {identifier} for the client key") from None
        attrs = body.get("attributes") or {}
        res = attrs.get("resources") or {}
        num = lambda key: float(res.get(key) or 0)  # noqa: E731
        return Usage(metrics=(
            Metric("cpu", num("cpu_absolute"), "%", "CPU", cpu_limit or None),
            Metric("memory", num("memory_bytes"), "bytes", "Memory", memory_limit * MIB or None),
            Metric("disk", num("disk_bytes"), "bytes", "Disk", disk_limit * MIB or None),
            Metric("network_rx", num("network_rx_bytes"), "bytes", "Network in"),
            Metric("network_tx", num("network_tx_bytes"), "bytes", "Network out"),
            Metric("uptime", num("uptime") / 1000.0, "seconds", "Uptime"),
        ), note=f"state: {attrs.get('current_state') or 'unknown'}"
                + (" (suspended)" if attrs.get("is_suspended") else ""))

    # ------------------------------------------------------------------ the client area
    POWER_SIGNALS = ("start", "stop", "restart", "kill")

    def client_area(self, spec: ServiceSpec) -> list:
        """The server address (for the game client), the panel and the customer's panel user name,
        the panel password (once set with "Reset panel password"), a deep link to
        ``{panel_url}/server/{identifier}``, the plan's limits and how to start. From the stored
        data and plan options: no API call."""
        data = dict(spec.backend_data or {})
        options = dict(spec.options or {})
        connect = []
        if data.get("address"):
            connect.append(ConnectItem("Server address", str(data["address"]), "address"))
        if self.panel_url:
            connect.append(ConnectItem("Game panel", self.panel_url, "url"))
        if data.get("panel_username"):
            connect.append(ConnectItem("Panel user name", str(data["panel_username"]), "text"))
        sections: list = [Connect(tuple(connect))] if connect else []
        if (spec.secrets or {}).get("panel_password"):
            sections.append(Credentials((Credential(
                "panel_password", "Game panel password", username=str(data.get("panel_username") or spec.customer_email),
                help=f"Sign in at {self.panel_url} with your user name (or email) and this password."),)))
        link = data.get("panel_link") or self._link(data.get("identifier"))
        if link:
            sections.append(Links((Link("Open in the game panel", link),)))
        unlimited = lambda v: None if not v else float(v)  # noqa: E731  (0 means unlimited)
        sections.append(Resources((
            Limit("Memory", unlimited(options.get("memory")), "MiB"),
            Limit("Disk", unlimited(options.get("disk")), "MiB"),
            Limit("CPU", unlimited(options.get("cpu")), "%"),
            Limit("Databases", float(options.get("databases") or 0), "count"),
            Limit("Backups", float(options.get("backups") or 0), "count"),
            Limit("Ports", float(options.get("allocations") or 1), "count"),
        )))
        address = data.get("address") or "the server address"
        text = (f"Connect your game client to {address}. The game panel has the console, files, backups "
                "and schedules of your server.")
        if not (spec.secrets or {}).get("panel_password"):
            text += " To sign in there, first set a password with \"Reset panel password\"."
        sections.append(HowTo(text))
        return sections

    def actions(self, spec: ServiceSpec) -> list[Action]:
        """Start, stop, restart and kill (client API, needs ``client_api_key``), reinstall and reset
        the panel password (application API). Decided from the stored data only."""
        data = dict(spec.backend_data or {})
        out: list[Action] = []
        if self.client.has_client_key and data.get("identifier"):
            out += [Action("start", "Start", description="Starts the game server."),
                    Action("stop", "Stop", description="Stops the game server cleanly."),
                    Action("restart", "Restart", description="Stops and starts the game server."),
                    Action("kill", "Kill", confirm="Kill stops the server at once, without saving. Continue?",
                           destructive=True, description="Use it only when Stop does not work.")]
        if spec.resource_id or data.get("server_id"):
            out.append(Action("reinstall", "Reinstall", destructive=True,
                              confirm="Reinstalling runs the game's install script again and can replace "
                                      "files. Continue?",
                              description="Runs the install script again (the server is stopped meanwhile)."))
        if data.get("pterodactyl_user_id"):
            out.append(Action("reset_password", "Reset panel password", statuses=("active", "suspended"),
                              confirm="Set a new password for the game panel? The old one stops working.",
                              description="Sets a new password for your game panel account."))
        return out

    def run_action(self, spec: ServiceSpec, name: str, params: Mapping[str, Any]) -> ActionResult:
        """Run one action (routes: pterodactyl/panel v1.11):

        * start/stop/restart/kill: ``POST /api/client/servers/{identifier}/power`` ``{"signal"}``
          with the ``ptlc_`` key (204). A suspended or installing server answers 409
          (``ServerStateConflictException``): a ``PermanentBackendError`` with the panel's words;
          Wings down (502/504) is transient.
        * reinstall: ``POST /api/application/servers/{id}/reinstall`` (204; the server goes
          ``installing``).
        * reset_password: ``GET /api/application/users/{id}``, then ``PATCH /api/application/users/{id}``
          with its email, username, first and last name and a new password (the update rules require
          them); the password is kept as the ``panel_password`` secret.
        """
        data = dict(spec.backend_data or {})
        if name in self.POWER_SIGNALS:
            identifier = data.get("identifier") or self._require_server(spec).get("identifier")
            try:
                self.client.request("POST", f"servers/{quote(str(identifier), safe='')}/power",
                                    json={"signal": name}, api="client")
            except NotFound:
                raise PermanentBackendError(f"Pterodactyl has no server {identifier} for the client key") from None
            words = {"start": "Your server is starting.", "stop": "Your server is stopping.",
                     "restart": "Your server is restarting.", "kill": "Your server was stopped at once."}
            return ActionResult(words[name])
        if name == "reinstall":
            server = self._require_server(spec)
            try:
                self.client.request("POST", f"servers/{int(server['id'])}/reinstall")
            except NotFound:
                raise PermanentBackendError(f"Pterodactyl server {server['id']} is gone (reinstall)") from None
            return ActionResult("Your server is being reinstalled; it starts again when the install is done.")
        if name == "reset_password":
            uid = data.get("pterodactyl_user_id")
            if not uid:
                raise PermanentBackendError("no Pterodactyl user is recorded for this service")
            try:
                user = self.client.get_item(f"users/{int(uid)}")
            except NotFound:
                raise PermanentBackendError(f"Pterodactyl user {uid} does not exist any more") from None
            password = _random.token_urlsafe(18)
            body = {"email": user.get("email"), "username": user.get("username"),
                    "first_name": user.get("first_name") or "Customer", "last_name": user.get("last_name") or "-",
                    "password": password}
            self.client.request("PATCH", f"users/{int(uid)}", json=body)
            return ActionResult("Your game panel password was changed.",
                                data={"panel_username": user.get("username")},
                                secrets={"panel_password": Secret(password)})
        return super().run_action(spec, name, params)

    # ------------------------------------------------------------------ operator tools
    def list_resources(self) -> list[Resource]:
        """Every server whose ``external_id`` starts with ``resource_prefix`` (default ``hp-``).

        Pages through ``GET /api/application/servers?filter[external_id]=<prefix>`` (a LIKE
        match, so each id is checked for the prefix). ``state``: active, suspended, provisioning
        (installing) or failed (install_failed).
        """
        prefix = str(self.settings.get("resource_prefix") or "hp-")
        out = []
        for server in self.client.iter_list("servers", {"filter[external_id]": prefix}):
            ext = server.get("external_id")
            if not ext or not str(ext).startswith(prefix):
                continue
            out.append(self._resource(server))
        return out

    def _resource(self, server: Mapping[str, Any]) -> Resource:
        state = {"suspended": "suspended", "installing": "provisioning", "install_failed": "failed",
                 "running": "active", "restoring_backup": "active"}[self._state(server)]
        detail = f"node {server.get('node')}, {server.get('identifier')}"
        if state == "failed":
            detail = f"install failed (egg {server.get('egg')} on node {server.get('node')}, {server.get('identifier')})"
        return Resource(external_id=str(server.get("external_id") or ""), resource_id=str(server.get("id")),
                        state=state, detail=detail)

    def lookup(self, spec: ServiceSpec) -> Resource | None:
        """The server of ``spec`` (``GET /servers/{id}``, else ``GET /servers/external/{external_id}``)
        as a ``Resource``; ``None`` when Pterodactyl has none."""
        server = self._find_server(spec)
        return self._resource(server) if server is not None else None

    def test_connection(self) -> str:
        """Check the application key and its root-admin rights by listing the nodes.

        ``GET /api/application/nodes`` (all pages): 401 = key rejected, 403 = not a root admin
        (both ``PermanentBackendError``). With a client key, also ``GET /api/client``. Returns one
        line: the node count, each node with our region/enabled/free MiB, and the client key state.
        """
        nodes = self.live_nodes()
        parts = []
        for n in nodes:
            if n.configured:
                parts.append(f"#{n.id} {n.name} ({n.region}, {'enabled' if n.enabled else 'disabled'}"
                             f"{', maintenance' if n.maintenance else ''}, {n.free_memory:g} MiB memory / "
                             f"{n.free_disk:g} MiB disk free)")
            else:
                parts.append(f"#{n.id} {n.name} (not configured)")
        line = (f"Pterodactyl at {self.client.host}: application key OK (root admin); "
                f"{len(nodes)} node(s): {', '.join(parts) or 'none'}")
        if self.client.has_client_key:
            self.client.get("", api="client")
            line += "; client key OK"
        else:
            line += "; no client key (usage shows plan limits)"
        return line


def _field_check(check, value):
    """Run a ``ValidationError``-raising check inside a pydantic validator (its message, in plain
    words, becomes the field's error)."""
    try:
        return check(value)
    except ValidationError as exc:
        raise ValueError("; ".join(f"{k}: {v}" for k, v in exc.errors.items())) from None


def validate_games(value: Any) -> dict[str, dict]:
    """Validate the ``games`` setting: ``{"minecraft": {"nest": 1, "egg": 39}, ...}``.

    Raises ``ValidationError`` naming the bad entry (``games.minecraft.egg``).
    """
    import json

    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValidationError({"games": "must be a JSON object"}) from None
    if not isinstance(value, Mapping):
        raise ValidationError({"games": "must map game names to {nest, egg}"})
    errors, clean = {}, {}
    for game, entry in value.items():
        if not isinstance(entry, Mapping):
            errors[f"games.{game}"] = "must be {\"nest\": id, \"egg\": id}"
            continue
        for key in ("nest", "egg"):
            v = entry.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                errors[f"games.{game}.{key}"] = "must be an id (integer >= 1)"
        clean[str(game)] = {"nest": entry.get("nest"), "egg": entry.get("egg")}
    if errors:
        raise ValidationError(errors)
    return clean


def _address(allocation: Mapping[str, Any]) -> str:
    host = allocation.get("alias") or allocation.get("ip")
    return f"{host}:{allocation.get('port')}"
