"""A loopback stand-in of the Pterodactyl application and client APIs, for tests only.

``PterodactylStandin()`` starts a ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) that follows
the documented shapes of pterodactyl/panel v1.11:

* item ``{"object", "attributes"}`` and list envelopes with ``meta.pagination`` (50 a page,
  ``?per_page=1..100``, ``?page=``, ``links.next`` without the query string, as Laravel does);
* errors ``{"errors": [{"code", "status", "detail", "meta": {"source_field", "rule"}}]}``;
* ``filter[...]`` as partial, case-insensitive (SQL ``LIKE %v%``) matches;
* 401 for an unknown key, 403 for a non-root-admin application key, 403 for an application key
  on a client route (and a client key on an application route);
* fault injection: :meth:`fail_next_creates`, :meth:`reject_next_create`,
  :meth:`lose_next_create_response`, :meth:`fail_next_deletes`, :meth:`fail_next_power`;
* the client API's ``POST /servers/{identifier}/power`` (204; 409 while suspended or installing;
  422 for a bad ``signal``; :attr:`power_log`), the application API's ``POST /servers/{id}/reinstall``
  (204, the server goes ``installing``) and ``PATCH /users/{id}`` (the user rules; a new password is
  kept in :attr:`user_passwords`).

It is not Pterodactyl: no Wings, no install scripts. A new (or reinstalled) server is
``installing``; Wings' install is simulated by reads: after :attr:`install_reads` reads of it
(``GET`` of the server or a list holding it) the next read shows :attr:`install_outcome` (``None``:
installed, or ``"install_failed"``). :meth:`install` sets both; ``install_reads=None`` keeps new
servers installing until a test calls :meth:`set_status`. Nothing here is used by the backend itself.
"""
from __future__ import annotations

import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ADMIN_KEY = "ptla_standinADMINkey0000000000000000000000000"
NON_ADMIN_KEY = "ptla_standinUSERkey00000000000000000000000000"
CLIENT_KEY = "ptlc_standinCLIENTkey000000000000000000000000"

_USERNAME = re.compile(r"^[a-z0-9]([\w.-]+)[a-z0-9]$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_NOW = "2024-01-01T00:00:00+00:00"


class _Reply(Exception):
    def __init__(self, status: int, body: Any = None):
        self.status, self.body = status, body


def _error(status: int, code: str, detail: str, field: str | None = None, rule: str | None = None) -> dict:
    e = {"code": code, "status": str(status), "detail": detail}
    if field:
        e["meta"] = {"source_field": field, "rule": rule or ""}
    return e


def _fail(status: int, code: str, detail: str) -> _Reply:
    return _Reply(status, {"errors": [_error(status, code, detail)]})


def _invalid(errors: list[dict]) -> _Reply:
    return _Reply(422, {"errors": errors})


def _field(field: str, detail: str, rule: str) -> dict:
    return _error(422, "ValidationException", detail, field, rule)


class PterodactylStandin:
    """The stand-in server and its state. Use as a context manager or call :meth:`stop`."""

    def __init__(self):
        self.lock = threading.RLock()
        self.app_keys = {ADMIN_KEY: True, NON_ADMIN_KEY: False}
        self.client_keys = {CLIENT_KEY}
        self.users: dict[int, dict] = {}
        self.nodes: dict[int, dict] = {}
        self.locations: dict[int, dict] = {1: {"id": 1, "short": "test", "long": "Stand-in location",
                                               "created_at": _NOW, "updated_at": _NOW}}
        self.allocations: dict[int, dict] = {}
        self.eggs: dict[tuple[int, int], dict] = {}
        self.servers: dict[int, dict] = {}
        self.stats: dict[str, dict] = {}
        self.requests: list[dict] = []
        self._ids = {"user": 0, "node": 0, "allocation": 0, "server": 0, "variable": 0}
        self._fail_creates: list[int] = []
        self._reject_creates: list[list[dict]] = []
        self._lose_creates = 0
        self._fail_deletes = 0
        self._fail_power: list[int] = []
        self.power_log: list[tuple[str, str]] = []
        self.user_passwords: dict[int, str] = {}
        self.install_reads: int | None = 0
        self.install_outcome: str | None = None
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------ seeding
    def _next(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def add_node(self, name: str, *, memory: int = 16384, disk: int = 102400, memory_overallocate: int = 0,
                 disk_overallocate: int = 0, maintenance: bool = False, allocations: int = 10,
                 assigned: int = 0, ip: str = "10.0.0.1", first_port: int = 25565, location_id: int = 1) -> dict:
        """Add a node with ``allocations`` ports; the first ``assigned`` of them are taken already.

        ``location_id`` names a location of :attr:`locations` (1, short code ``test``, exists by default;
        add others with :meth:`add_location`).
        """
        with self.lock:
            nid = self._next("node")
            node = {"id": nid, "uuid": str(uuid.uuid4()), "public": True, "name": name, "description": "",
                    "location_id": location_id, "fqdn": f"{name}.example.test", "scheme": "https", "behind_proxy": False,
                    "maintenance_mode": maintenance, "memory": memory, "memory_overallocate": memory_overallocate,
                    "disk": disk, "disk_overallocate": disk_overallocate, "upload_size": 100,
                    "daemon_listen": 8080, "daemon_sftp": 2022, "daemon_base": "/var/lib/pterodactyl/volumes",
                    "created_at": _NOW, "updated_at": _NOW}
            self.nodes[nid] = node
            for i in range(allocations):
                aid = self._next("allocation")
                self.allocations[aid] = {"id": aid, "node": nid, "ip": ip, "alias": None, "port": first_port + i,
                                         "notes": None, "server": -1 if i < assigned else None}
            return node

    def add_location(self, short: str, long: str = "") -> dict:
        """Add a location (``short`` code, ``long`` description) and return it; ids count up from 2."""
        with self.lock:
            lid = max(self.locations) + 1
            self.locations[lid] = {"id": lid, "short": short, "long": long, "created_at": _NOW, "updated_at": _NOW}
            return self.locations[lid]

    def add_egg(self, nest: int, egg: int, *, variables: list[dict], startup: str = "java -jar {{SERVER_JARFILE}}",
                docker_images: dict | None = None) -> None:
        """Add an egg; ``variables`` are ``{env_variable, default_value, rules}`` mappings."""
        with self.lock:
            vars_ = []
            for v in variables:
                vid = self._next("variable")
                vars_.append({"id": vid, "egg_id": egg, "name": v["env_variable"].title(), "description": "",
                              "env_variable": v["env_variable"], "default_value": v.get("default_value", ""),
                              "user_viewable": True, "user_editable": True, "rules": v.get("rules", ""),
                              "created_at": _NOW, "updated_at": _NOW})
            images = docker_images or {"Java 17": "ghcr.io/pterodactyl/yolks:java_17"}
            self.eggs[(nest, egg)] = {"id": egg, "uuid": str(uuid.uuid4()), "name": f"egg {egg}", "nest": nest,
                                      "author": "standin@example.test", "description": "",
                                      "docker_image": next(iter(images.values())), "docker_images": images,
                                      "config": {}, "startup": startup, "script": {},
                                      "created_at": _NOW, "updated_at": _NOW, "_variables": vars_}

    def add_user(self, email: str, username: str, external_id: str | None = None) -> dict:
        """Add a Pterodactyl user directly (as if made in the panel)."""
        with self.lock:
            uid = self._next("user")
            user = {"id": uid, "external_id": external_id, "uuid": str(uuid.uuid4()), "username": username,
                    "email": email, "first_name": username, "last_name": "x", "language": "en",
                    "root_admin": False, "2fa": False, "created_at": _NOW, "updated_at": _NOW}
            self.users[uid] = user
            return user

    def add_server(self, external_id: str | None, node_id: int, *, memory: int = 1024, disk: int = 1024,
                   owner: int | None = None) -> dict:
        """Add a server directly (not through the API), e.g. one that is not ours."""
        with self.lock:
            alloc = next(a for a in self.allocations.values() if a["node"] == node_id and a["server"] is None)
            return self._create(external_id, owner or 0, 1, 1, alloc, {"memory": memory, "swap": 0, "disk": disk,
                                                                      "io": 500, "cpu": 100}, {}, name="other")

    # ------------------------------------------------------------------ faults and views
    def fail_next_creates(self, count: int = 1, status: int = 500) -> None:
        """The next ``count`` POST /servers answer ``status`` and create nothing."""
        with self.lock:
            self._fail_creates += [status] * count

    def reject_next_create(self, errors: list[tuple[str, str, str]]) -> None:
        """The next POST /servers answers 422 with these ``(source_field, detail, rule)`` errors."""
        with self.lock:
            self._reject_creates.append([_field(*e) for e in errors])

    def lose_next_create_response(self) -> None:
        """The next POST /servers creates the server, then answers 502 (the answer is lost)."""
        with self.lock:
            self._lose_creates += 1

    def fail_next_deletes(self, count: int = 1) -> None:
        """The next ``count`` DELETE /servers/{id} (not /force) answer 500 (Wings unreachable)."""
        with self.lock:
            self._fail_deletes += count

    def fail_next_power(self, count: int = 1, status: int = 504) -> None:
        """The next ``count`` POST /api/client/servers/{id}/power answer ``status`` (Wings unreachable:
        DaemonConnectionException, 504 by default) and change nothing."""
        with self.lock:
            self._fail_power += [status] * count

    def install(self, reads: int | None = 0, outcome: str | None = None) -> None:
        """How installs end from now on: a new or reinstalled server is ``installing`` for ``reads``
        reads of it, then shows ``outcome`` (``None`` = installed, ``"install_failed"``); ``reads``
        ``None``: it stays installing until :meth:`set_status`."""
        with self.lock:
            self.install_reads, self.install_outcome = reads, outcome

    def _begin_install(self, server: dict) -> None:
        server["status"] = "installing"
        server["_install_reads_left"] = self.install_reads
        server["_install_outcome"] = self.install_outcome

    def _advance_install(self, server: dict) -> None:
        """One read of ``server``: an install whose reads ran out finishes (Wings reports back)."""
        left = server.get("_install_reads_left")
        if server.get("status") != "installing" or left is None:
            return
        if left > 0:
            server["_install_reads_left"] = left - 1
            return
        server["status"] = server.get("_install_outcome")
        server["_install_reads_left"] = None

    def set_status(self, server_id: int, status: str | None) -> None:
        """Set a server's ``status`` (None = installed and fine, installing, install_failed...)."""
        with self.lock:
            self.servers[server_id]["status"] = status

    def set_stats(self, identifier: str, **resources) -> None:
        """Set what the client API reports for a server (memory_bytes, cpu_absolute, ...)."""
        with self.lock:
            self.stats[identifier] = resources

    def delete_server(self, server_id: int) -> None:
        """Remove a server behind the panel's back (as an admin would)."""
        with self.lock:
            self._delete(server_id)

    def servers_with(self, external_id: str) -> list[dict]:
        """Servers whose external_id equals ``external_id``."""
        with self.lock:
            return [s for s in self.servers.values() if s["external_id"] == external_id]

    def calls(self, method: str | None = None, path: str | None = None) -> list[dict]:
        """Logged requests, optionally filtered by method and a path regular expression (full match)."""
        with self.lock:
            return [r for r in self.requests if (method is None or r["method"] == method)
                    and (path is None or re.fullmatch(path, r["path"]))]

    # ------------------------------------------------------------------ transformers
    def _server_attrs(self, s: dict, include: set[str], *, read: bool = True) -> dict:
        if read:
            self._advance_install(s)
        attrs = {k: v for k, v in s.items() if not k.startswith("_")}
        # Server::isInstalled(): neither installing nor install_failed (v1.11 ServerTransformer).
        attrs["container"] = {**s["container"],
                              "installed": 0 if s["status"] in ("installing", "install_failed") else 1}
        attrs["relationships"] = {}
        if "allocations" in include:
            attrs["relationships"]["allocations"] = {
                "object": "list", "data": [{"object": "allocation", "attributes": self._alloc_attrs(a)}
                                           for a in self.allocations.values() if a["server"] == s["id"]]}
        return attrs

    @staticmethod
    def _alloc_attrs(a: dict) -> dict:
        return {"id": a["id"], "ip": a["ip"], "alias": a["alias"], "port": a["port"], "notes": a["notes"],
                "assigned": a["server"] is not None}

    def _node_attrs(self, n: dict, include: set[str] = frozenset()) -> dict:
        on = [s for s in self.servers.values() if s["node"] == n["id"]]
        attrs = {**n, "allocated_resources": {"memory": sum(s["limits"]["memory"] for s in on),
                                              "disk": sum(s["limits"]["disk"] for s in on)},
                 "relationships": {}}
        if "location" in include:
            location = self.locations.get(n["location_id"])
            attrs["relationships"]["location"] = (
                {"object": "location", "attributes": dict(location)} if location
                else {"object": "null_resource", "attributes": None})
        return attrs

    def _egg_attrs(self, e: dict, include: set[str]) -> dict:
        attrs = {k: v for k, v in e.items() if not k.startswith("_")}
        attrs["relationships"] = {}
        if "variables" in include:
            attrs["relationships"]["variables"] = {
                "object": "list", "data": [{"object": "egg_variable", "attributes": dict(v)} for v in e["_variables"]]}
        return attrs

    # ------------------------------------------------------------------ operations
    def _create(self, external_id, owner, nest, egg, alloc, limits, feature_limits, name="server", env=None):
        sid = self._next("server")
        u = str(uuid.uuid4())
        server = {"id": sid, "external_id": external_id, "uuid": u, "identifier": u[:8], "name": name,
                  "description": "", "status": "installing", "suspended": False,
                  "limits": {**limits, "threads": None, "oom_disabled": True},
                  "feature_limits": {"databases": feature_limits.get("databases", 0),
                                     "allocations": feature_limits.get("allocations", 0),
                                     "backups": feature_limits.get("backups", 0)},
                  "user": owner, "node": alloc["node"], "allocation": alloc["id"], "nest": nest, "egg": egg,
                  "container": {"startup_command": "", "image": "", "installed": 0, "environment": env or {}},
                  "created_at": _NOW, "updated_at": _NOW}
        alloc["server"] = sid
        self._begin_install(server)
        self.servers[sid] = server
        return server

    def _delete(self, sid: int) -> None:
        self.servers.pop(sid, None)
        for a in self.allocations.values():
            if a["server"] == sid:
                a["server"] = None

    def _page(self, items: list[dict], obj: str, query: dict, path: str) -> dict:
        try:
            per_page = int(query.get("per_page", ["50"])[0])
            page = int(query.get("page", ["1"])[0])
        except ValueError:
            raise _fail(400, "BadRequestHttpException", "per_page and page must be integers") from None
        if not 1 <= per_page <= 100:
            raise _fail(400, "QueryValueOutOfRangeHttpException", "per_page must be between 1 and 100")
        total = len(items)
        pages = max(1, -(-total // per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        links = {}
        if page < pages:
            links["next"] = f"{self.url}{path}?page={page + 1}"
        if page > 1:
            links["previous"] = f"{self.url}{path}?page={page - 1}"
        return {"object": "list", "data": [{"object": obj, "attributes": a} for a in chunk],
                "meta": {"pagination": {"total": total, "count": len(chunk), "per_page": per_page,
                                        "current_page": page, "total_pages": pages, "links": links}}}

    @staticmethod
    def _filtered(items: list[dict], query: dict, allowed: tuple[str, ...]) -> list[dict]:
        for key, values in query.items():
            m = re.fullmatch(r"filter\[(\w+)\]", key)
            if not m:
                continue
            if m.group(1) not in allowed:
                raise _fail(400, "InvalidFilterQuery", f"Requested filter(s) `{m.group(1)}` are not allowed.")
            needle = values[0].lower()
            items = [i for i in items if needle in str(i.get(m.group(1)) or "").lower()]
        return items

    def _check_env(self, egg: dict, env: dict) -> list[dict]:
        errors = []
        for v in egg["_variables"]:
            name = v["env_variable"]
            value = env.get(name)
            value = str(v["default_value"] or "") if value is None else str(value)
            for rule in v["rules"].split("|") if not v["rules"].startswith("regex") else [v["rules"]]:
                if rule == "required" and value == "":
                    errors.append(_field(f"environment.{name}", f"The {name} variable field is required.", "required"))
                elif rule.startswith("max:") and len(value) > int(rule[4:]):
                    errors.append(_field(f"environment.{name}", f"The {name} variable may not be greater than {rule[4:]} characters.", "max"))
                elif rule.startswith("regex:") and value and not re.search(rule[6:].strip("/"), value):
                    errors.append(_field(f"environment.{name}", f"The {name} variable format is invalid.", "regex"))
        return errors

    def _validate_server(self, body: dict) -> list[dict]:
        errors = []
        for key in ("name", "docker_image", "startup"):
            if not isinstance(body.get(key), str) or not body.get(key):
                errors.append(_field(key, f"The {key} field is required.", "required"))
        if not isinstance(body.get("user"), int) or body["user"] not in self.users:
            errors.append(_field("user", "The selected user is invalid.", "exists"))
        egg = next((e for (n, i), e in self.eggs.items() if i == body.get("egg")), None)
        if egg is None:
            errors.append(_field("egg", "The selected egg is invalid.", "exists"))
        if not isinstance(body.get("environment"), dict):
            errors.append(_field("environment", "The environment field must be present.", "present"))
        elif egg is not None:
            errors += self._check_env(egg, body["environment"])
        limits = body.get("limits") if isinstance(body.get("limits"), dict) else None
        if limits is None:
            errors.append(_field("limits", "The limits field is required.", "required"))
        else:
            for key in ("memory", "swap", "disk", "io", "cpu"):
                if not isinstance(limits.get(key), int):
                    errors.append(_field(f"limits.{key}", f"The limits.{key} field is required.", "required"))
            if isinstance(limits.get("io"), int) and not 10 <= limits["io"] <= 1000:
                errors.append(_field("limits.io", "The limits.io must be between 10 and 1000.", "between"))
        fl = body.get("feature_limits")
        if not isinstance(fl, dict):
            errors.append(_field("feature_limits", "The feature limits field is required.", "required"))
        else:
            for key in ("databases", "backups"):
                if key not in fl:
                    errors.append(_field(f"feature_limits.{key}", f"The feature_limits.{key} field must be present.", "present"))
        alloc_id = (body.get("allocation") or {}).get("default") if isinstance(body.get("allocation"), dict) else None
        alloc = self.allocations.get(alloc_id) if isinstance(alloc_id, int) else None
        if alloc is None:
            errors.append(_field("allocation.default", "The allocation.default field is required.", "required"))
        elif alloc["server"] is not None:
            errors.append(_field("allocation.default", "The selected allocation.default is invalid.", "unassigned"))
        ext = body.get("external_id")
        if ext is not None and (not isinstance(ext, str) or len(ext) > 191):
            errors.append(_field("external_id", "The external id may not be greater than 191 characters.", "max"))
        elif ext and any(s["external_id"] == ext for s in self.servers.values()):
            errors.append(_field("external_id", "The external id has already been taken.", "unique"))
        return errors

    # ------------------------------------------------------------------ routing
    def handle(self, method: str, path: str, query: dict, headers, body: Any) -> tuple[int, Any]:
        auth = headers.get("Authorization") or ""
        key = auth[7:] if auth.startswith("Bearer ") else ""
        self.requests.append({"method": method, "path": path, "query": {k: v[0] for k, v in query.items()},
                              "key": "admin" if key == ADMIN_KEY else "client" if key in self.client_keys
                              else "app" if key in self.app_keys else "none", "body": body})
        if "application/json" not in (headers.get("Accept") or ""):
            raise _fail(406, "NotAcceptableHttpException", "Accept: application/json is required.")
        if path.startswith("/api/client"):
            if key in self.client_keys:
                return self._client(method, path[len("/api/client"):] or "/", query, body)
            if key in self.app_keys:
                raise _fail(403, "AccessDeniedHttpException", "This action is unauthorized.")
            raise _fail(401, "AuthenticationException", "Unauthenticated.")
        if not path.startswith("/api/application/"):
            raise _fail(404, "NotFoundHttpException", "The requested resource could not be found on the server.")
        if key not in self.app_keys:
            if key in self.client_keys:
                raise _fail(403, "AccessDeniedHttpException", "This action is unauthorized.")
            raise _fail(401, "AuthenticationException", "Unauthenticated.")
        if not self.app_keys[key]:
            raise _fail(403, "AccessDeniedHttpException", "This action is unauthorized.")
        return self._application(method, path[len("/api/application"):], query, body)

    def _power(self, server: dict, body: Any) -> tuple[int, Any]:
        """POST /api/client/servers/{server}/power (PowerController, SendPowerRequest): 204;
        409 ServerStateConflictException while suspended or not installed (AuthenticateServerAccess);
        422 for a missing or unknown signal."""
        if server["suspended"]:
            raise _fail(409, "ConflictHttpException",
                        "This server is currently suspended and the functionality requested is unavailable.")
        if server["status"] in ("installing", "install_failed", "reinstall_failed"):
            raise _fail(409, "ConflictHttpException",
                        "This server has not yet completed its installation process, please try again later.")
        if server["status"] == "restoring_backup":
            raise _fail(409, "ConflictHttpException",
                        "This server is currently restoring from a backup, please try again later.")
        signal = (body or {}).get("signal") if isinstance(body, dict) else None
        if not signal:
            raise _invalid([_field("signal", "The signal field is required.", "required")])
        if signal not in ("start", "stop", "restart", "kill"):
            raise _invalid([_field("signal", "The selected signal is invalid.", "in")])
        if self._fail_power:
            status = self._fail_power.pop(0)
            raise _fail(status, "DaemonConnectionException",
                        "Could not establish a connection to the machine running this server. Please try again.")
        self.power_log.append((server["identifier"], signal))
        server["_power"] = "offline" if signal in ("stop", "kill") else "running"
        return 204, None

    def _client(self, method: str, path: str, query: dict, body: Any = None) -> tuple[int, Any]:
        if method == "GET" and path in ("", "/"):
            return 200, self._page([{"identifier": s["identifier"], "name": s["name"]}
                                    for s in self.servers.values()], "server", query, "/api/client")
        m = re.fullmatch(r"/servers/([^/]+)/resources", path)
        if method == "GET" and m:
            server = next((s for s in self.servers.values() if s["identifier"] == m.group(1)), None)
            if server is None:
                raise _fail(404, "NotFoundHttpException", "The requested resource could not be found on the server.")
            res = {"memory_bytes": 0, "cpu_absolute": 0, "disk_bytes": 0, "network_rx_bytes": 0,
                   "network_tx_bytes": 0, "uptime": 0, **self.stats.get(server["identifier"], {})}
            state = "offline" if server["status"] else server.get("_power", "running")
            return 200, {"object": "stats", "attributes": {"current_state": state,
                                                           "is_suspended": server["suspended"], "resources": res}}
        m = re.fullmatch(r"/servers/([^/]+)/power", path)
        if method == "POST" and m:
            server = next((s for s in self.servers.values() if s["identifier"] == m.group(1)), None)
            if server is None:
                raise _fail(404, "NotFoundHttpException", "The requested resource could not be found on the server.")
            return self._power(server, body)
        raise _fail(404, "NotFoundHttpException", "The requested resource could not be found on the server.")

    def _application(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        include = set(",".join(query.get("include", [""])).split(","))
        full = "/api/application" + path
        not_found = _fail(404, "NotFoundHttpException", "The requested resource could not be found on the server.")
        # users
        if path == "/users" and method == "GET":
            items = self._filtered(sorted(self.users.values(), key=lambda u: u["id"]), query,
                                   ("email", "uuid", "username", "external_id"))
            return 200, self._page(items, "user", query, full)
        if path == "/users" and method == "POST":
            return self._create_user(body or {})
        m = re.fullmatch(r"/users/external/(.+)", path)
        if m and method == "GET":
            user = next((u for u in self.users.values() if u["external_id"] == unquote(m.group(1))), None)
            if user is None:
                raise not_found
            return 200, {"object": "user", "attributes": user}
        m = re.fullmatch(r"/users/(\d+)", path)
        if m and method == "GET":
            if int(m.group(1)) not in self.users:
                raise not_found
            return 200, {"object": "user", "attributes": self.users[int(m.group(1))]}
        if m and method == "PATCH":
            if int(m.group(1)) not in self.users:
                raise not_found
            return self._update_user(self.users[int(m.group(1))], body or {})
        # nodes and allocations
        if path == "/nodes" and method == "GET":
            return 200, self._page([self._node_attrs(n, include) for n in self.nodes.values()], "node", query, full)
        m = re.fullmatch(r"/nodes/(\d+)", path)
        if m and method == "GET":
            node = self.nodes.get(int(m.group(1)))
            if node is None:
                raise not_found
            return 200, {"object": "node", "attributes": self._node_attrs(node, include)}
        m = re.fullmatch(r"/nodes/(\d+)/allocations", path)
        if m and method == "GET":
            if int(m.group(1)) not in self.nodes:
                raise not_found
            items = [self._alloc_attrs(a) for a in self.allocations.values() if a["node"] == int(m.group(1))]
            return 200, self._page(items, "allocation", query, full)
        # eggs
        m = re.fullmatch(r"/nests/(\d+)/eggs/(\d+)", path)
        if m and method == "GET":
            egg = self.eggs.get((int(m.group(1)), int(m.group(2))))
            if egg is None:
                raise not_found
            return 200, {"object": "egg", "attributes": self._egg_attrs(egg, include)}
        # servers
        if path == "/servers" and method == "GET":
            items = self._filtered(sorted(self.servers.values(), key=lambda s: s["id"]), query,
                                   ("uuid", "uuidShort", "name", "image", "external_id"))
            return 200, self._page([self._server_attrs(s, include) for s in items], "server", query, full)
        if path == "/servers" and method == "POST":
            return self._create_server(body or {}, include)
        m = re.fullmatch(r"/servers/external/(.+)", path)
        if m and method == "GET":
            server = next((s for s in self.servers.values() if s["external_id"] == unquote(m.group(1))), None)
            if server is None:
                raise not_found
            return 200, {"object": "server", "attributes": self._server_attrs(server, include)}
        m = re.fullmatch(r"/servers/(\d+)(?:/(suspend|unsuspend|build|force|reinstall))?", path)
        if m:
            server = self.servers.get(int(m.group(1)))
            if server is None:
                raise not_found
            action = m.group(2)
            if method == "GET" and action is None:
                return 200, {"object": "server", "attributes": self._server_attrs(server, include)}
            if method == "POST" and action in ("suspend", "unsuspend"):
                server["suspended"] = action == "suspend"
                server["status"] = "suspended" if action == "suspend" else None
                return 204, None
            if method == "POST" and action == "reinstall":  # ReinstallServerService: status installing
                self._begin_install(server)
                server["_reinstalls"] = server.get("_reinstalls", 0) + 1
                return 204, None
            if method == "PATCH" and action == "build":
                return self._build(server, body or {}, include)
            if method == "DELETE" and action in (None, "force"):
                if action is None and self._fail_deletes:
                    self._fail_deletes -= 1
                    raise _fail(500, "DaemonConnectionException",
                                "An error was encountered while attempting to contact the daemon.")
                self._delete(server["id"])
                return 204, None
        raise not_found

    def _create_user(self, body: dict) -> tuple[int, Any]:
        errors = []
        email, username = body.get("email"), body.get("username")
        if not isinstance(email, str) or not _EMAIL.match(email):
            errors.append(_field("email", "The email must be a valid email address.", "email"))
        elif any(u["email"].lower() == email.lower() for u in self.users.values()):
            errors.append(_field("email", "The email has already been taken.", "unique"))
        if not isinstance(username, str) or not _USERNAME.match(username):
            errors.append(_field("username", "The username format is invalid.", "regex"))
        elif any(u["username"] == username for u in self.users.values()):
            errors.append(_field("username", "The username has already been taken.", "unique"))
        for key in ("first_name", "last_name"):
            if not isinstance(body.get(key), str) or not body.get(key):
                errors.append(_field(key, f"The {key.replace('_', ' ')} field is required.", "required"))
        ext = body.get("external_id")
        if ext and any(u["external_id"] == ext for u in self.users.values()):
            errors.append(_field("external_id", "The external id has already been taken.", "unique"))
        if errors:
            raise _invalid(errors)
        user = self.add_user(email, username, ext)
        user.update(first_name=body["first_name"], last_name=body["last_name"])
        return 201, {"object": "user", "attributes": user}

    def _update_user(self, user: dict, body: dict) -> tuple[int, Any]:
        """PATCH /api/application/users/{id} (UpdateUserRequest: the StoreUserRequest rules, unique
        ones ignoring this user): email, username, first_name and last_name are required."""
        errors = []
        email, username = body.get("email"), body.get("username")
        if not isinstance(email, str) or not _EMAIL.match(email):
            errors.append(_field("email", "The email must be a valid email address.", "email"))
        elif any(u["email"].lower() == email.lower() and u["id"] != user["id"] for u in self.users.values()):
            errors.append(_field("email", "The email has already been taken.", "unique"))
        if not isinstance(username, str) or not _USERNAME.match(username):
            errors.append(_field("username", "The username format is invalid.", "regex"))
        elif any(u["username"] == username and u["id"] != user["id"] for u in self.users.values()):
            errors.append(_field("username", "The username has already been taken.", "unique"))
        for key in ("first_name", "last_name"):
            if not isinstance(body.get(key), str) or not body.get(key):
                errors.append(_field(key, f"The {key.replace('_', ' ')} field is required.", "required"))
        if "password" in body and body["password"] is not None and not isinstance(body["password"], str):
            errors.append(_field("password", "The password must be a string.", "string"))
        if errors:
            raise _invalid(errors)
        user.update(email=email, username=username.lower(), first_name=body["first_name"],
                    last_name=body["last_name"], updated_at=_NOW)
        if body.get("password"):
            self.user_passwords[user["id"]] = body["password"]
        return 200, {"object": "user", "attributes": user}

    def _create_server(self, body: dict, include: set[str]) -> tuple[int, Any]:
        if self._fail_creates:
            status = self._fail_creates.pop(0)
            raise _fail(status, "HttpException", "Server Error")
        if self._reject_creates:
            raise _invalid(self._reject_creates.pop(0))
        errors = self._validate_server(body)
        if errors:
            raise _invalid(errors)
        egg = next(e for (n, i), e in self.eggs.items() if i == body["egg"])
        server = self._create(body.get("external_id"), body["user"], egg["nest"], body["egg"],
                              self.allocations[body["allocation"]["default"]], dict(body["limits"]),
                              body["feature_limits"], name=body["name"], env=body["environment"])
        server["container"].update(startup_command=body["startup"], image=body["docker_image"])
        if self._lose_creates:
            self._lose_creates -= 1
            raise _fail(502, "HttpException", "Bad Gateway")
        return 201, {"object": "server", "attributes": self._server_attrs(server, include, read=False)}

    def _build(self, server: dict, body: dict, include: set[str]) -> tuple[int, Any]:
        errors = []
        if not isinstance(body.get("allocation"), int):
            errors.append(_field("allocation", "The allocation field is required.", "required"))
        elif self.allocations.get(body["allocation"], {}).get("server") != server["id"]:
            errors.append(_field("allocation", "The selected allocation is invalid.", "exists"))
        fl = body.get("feature_limits")
        if not isinstance(fl, dict):
            errors.append(_field("feature_limits", "The feature limits field is required.", "required"))
        if errors:
            raise _invalid(errors)
        limits = body.get("limits") or {k: body[k] for k in ("memory", "swap", "disk", "io", "cpu") if k in body}
        server["limits"].update({k: v for k, v in limits.items() if k in ("memory", "swap", "disk", "io", "cpu")})
        server["feature_limits"].update({k: v for k, v in fl.items() if k in ("databases", "allocations", "backups")})
        return 200, {"object": "server", "attributes": self._server_attrs(server, include, read=False)}

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes

            def log_message(self, *args):  # keep test output quiet
                pass

            def _serve(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                try:
                    with standin.lock:
                        status, payload = standin.handle(self.command, parts.path, parse_qs(parts.query),
                                                         self.headers, body)
                except _Reply as reply:
                    status, payload = reply.status, reply.body
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

        return Handler


class StandinRemote:
    """The contract suite's ``RemoteView`` over a :class:`PterodactylStandin`."""

    def __init__(self, standin: PterodactylStandin):
        self.standin = standin

    def count(self, spec) -> int:
        return len(self.standin.servers_with(spec.external_id))

    def state(self, spec) -> str:
        servers = self.standin.servers_with(spec.external_id)
        if not servers:
            return "absent"
        return "suspended" if servers[0]["suspended"] else "active"
