"""A loopback STAND-IN of the PDS deploy API (seed 000), for tests and demos. Not a real PDS host.

Standard library only (``http.server.ThreadingHTTPServer``); binds 127.0.0.1 only; every answer
carries ``X-Stand-In: pds-deploy-api``. Run it in the foreground with::

    python -m panel_pds.standin --port 5100 --token demo-token

or from Python::

    with PdsStandIn(token="t0ken") as standin:
        standin.url            # "http://127.0.0.1:<port>"
        standin.set_faults(deploy=[500])
        standin.deploys()      # every deploy body received, in order

Deploy API (Bearer token required, 401 JSON otherwise):

* ``POST /api/v1/deploy`` ``{"username","password","email","hostname","disksize"}`` -> 201
  ``{"status": "deploying", "serviceId": N}``; 422 ``{"error": "validation_failed", "errors": {...}}``
  for a missing field, a hostname with a scheme/path/port, a non-numeric disksize...; 409
  ``{"error": "exists", "serviceId": N}`` when that hostname exists with the same username and email
  (a repeated deploy), 409 ``{"error": "hostname_taken"}`` (no id) when someone else holds it.
* ``GET /api/v1/service/{id}`` -> the seed's details shape (optionally JSON encoded twice).
* ``POST /api/v1/service/{id}/suspend`` / ``.../resume`` -> 200 (repeats too), 404 if unknown.
* ``DELETE /api/v1/service/{id}`` -> 200, then 404 once gone.
* ``POST /api/v1/service/{id}/admin-password`` ``{"password"}`` -> 200 ``{"id", "restarted": true}``
  (the record's password changes); 422 for a missing or short password; 404 if unknown.
* ``GET /api/v1/services[?hostname=h]`` -> ``{"services": [{"id", "service", "namespace", "hostname",
  "username", "state", "created_at"}, ...]}`` (only the one with that hostname when given);
  ``GET /api/v1/health`` -> ``{"status": "ok"}``.

Control API (no auth; loopback only), see ``PdsStandIn`` for the Python equivalents:

* ``GET /_standin/deploys`` -> ``{"deploys": [body, ...]}`` (passwords included: tests check bodies)
* ``GET /_standin/services`` -> ``{"services": [record, ...]}`` (full records, passwords included)
* ``GET /_standin/requests`` -> ``{"requests": [{"method", "path", "status"}, ...]}`` (API calls only)
* ``GET /_standin/received`` -> ``{"received": [{"method", "path"}, ...]}``: API calls as they arrive,
  before the latency and the answer (a test sees a request that is still in flight)
* ``GET /_standin/faults`` -> the current fault settings
* ``POST /_standin/faults`` with any of (merged into the current settings):
  ``{"deploy": [500, 500]}`` (next answers of that operation; operations: deploy, service, suspend,
  resume, delete, services, health; entries: a status, ``"nojson"`` = 200 text/html,
  ``"nojson:502"`` = that status as text/html, ``422`` = a field error, or
  ``{"status": 418, "body": {...}}``), ``{"latency_ms": 100}``, ``{"no_id": 1}`` (next N deploys
  succeed without an id), ``{"id_shape": "data.serviceId"}`` (where deploys put the id),
  ``{"double_encoded": true}``, ``{"unsupported": ["suspend"]}`` or ``{"unsupported":
  {"delete": 404}}`` (answer 405 / the given status until reset), ``{"hold": true}`` (API calls
  wait on arrival until ``{"hold": false}``, at most 60 s: a request held in flight for as long as a
  test needs, e.g. to kill the worker that sent it),
  ``{"random": {"rate": 0.2, "kinds": ["5xx", "timeout", "lost"], "hold_ms": 2000, "seed": 1,
  "operations": ["deploy", ...]}}`` (each API call, with probability ``rate``, gets one of the
  kinds: ``5xx`` answers 503 without doing anything; ``timeout`` holds the request ``hold_ms``
  and then does the work, answering a client that gave up; ``lost`` does the work and drops the
  connection without answering; ``{"random": null}`` turns it off).
* ``GET /_standin/creations`` -> ``{"creations": {hostname: count}}``: services made per hostname
  (a count above 1 is a duplicate, even if an earlier one was deleted);
  ``GET /_standin/injected`` -> ``{"injected": {kind: count}}`` (random faults so far).
* ``POST /_standin/reset`` -> forget services, deploys, requests and faults (ids keep counting).
"""
from __future__ import annotations

import argparse
import copy
import hmac
import json
import random
import re
import secrets
import socket
import signal
import sys
import threading
import time
from collections import Counter, deque
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

__all__ = ["PdsStandIn", "main", "STAND_IN_HEADER", "FAULT_OPERATIONS", "ID_SHAPES"]

STAND_IN_HEADER = ("X-Stand-In", "pds-deploy-api")
FAULT_OPERATIONS = ("deploy", "service", "suspend", "resume", "delete", "services", "health", "admin_password")
RANDOM_KINDS = ("5xx", "timeout", "lost")
ID_SHAPES = ("service_id", "serviceId", "id", "service.id", "data.id", "data.serviceId")
FIRST_SERVICE_ID = 800  # the seed's example answer carries serviceId 800
HOLD_LIMIT_SECONDS = 60  # a held request goes on by itself after this (a test that forgot to release)

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_USERNAME_RE = re.compile(_LABEL)
_FQDN_RE = re.compile(rf"(?:{_LABEL}\.)+[a-z](?:[a-z0-9-]{{0,61}}[a-z0-9])?")
_SERVICE_RE = re.compile(r"^/api/v1/service/([^/]+)(?:/(suspend|resume|admin-password))?/?$")

INDEX_HTML = """<!doctype html><html><head><title>PDS deploy API stand-in</title></head><body>
<h1>PDS deploy API &mdash; STAND-IN</h1>
<p>This is a loopback stand-in of the PDS deploy API (hostpanel plugin <code>pds</code>, seed 000)
for tests and demos. It is <strong>not a real PDS host</strong>: nothing is deployed.</p>
<ul><li>POST /api/v1/deploy</li><li>GET|DELETE /api/v1/service/{id}</li>
<li>POST /api/v1/service/{id}/suspend, /resume</li><li>GET /api/v1/services[?hostname=], /api/v1/health</li>
<li>Control: GET /_standin/deploys, /_standin/services, /_standin/requests, /_standin/faults,
/_standin/creations, /_standin/injected; POST /_standin/faults, /_standin/reset</li></ul></body></html>
"""


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


class _State:
    """Everything the stand-in remembers; every access holds ``lock``."""

    def __init__(self, latency_ms: int = 0, double_encoded: bool = False):
        self.lock = threading.RLock()
        self.next_id = FIRST_SERVICE_ID
        self.initial = {"latency_ms": int(latency_ms), "double_encoded": bool(double_encoded)}
        self.reset()

    def reset(self) -> None:
        with self.lock:
            if getattr(self, "gate", None) is not None:
                self.gate.set()  # let a held request go before forgetting the hold
            self.gate = threading.Event()
            self.gate.set()
            self.services: dict[int, dict] = {}
            self.deploys: list[Any] = []
            self.requests: list[dict] = []
            self.received: list[dict] = []
            self.queues: dict[str, deque] = {op: deque() for op in FAULT_OPERATIONS}
            self.latency_ms = self.initial["latency_ms"]
            self.double_encoded = self.initial["double_encoded"]
            self.no_id = 0
            self.id_shape = "serviceId"
            self.unsupported: dict[str, int] = {}
            self.random: dict | None = None
            self.rng = random.Random(0)
            self.injected: Counter = Counter()
            self.creations: Counter = Counter()

    def faults(self) -> dict:
        with self.lock:
            return {"queues": {op: list(q) for op, q in self.queues.items() if q},
                    "latency_ms": self.latency_ms, "double_encoded": self.double_encoded,
                    "no_id": self.no_id, "id_shape": self.id_shape, "unsupported": dict(self.unsupported),
                    "random": dict(self.random) if self.random else None, "hold": not self.gate.is_set()}

    def _set_random(self, value: Any) -> None:
        if value is None:
            self.random = None
            return
        if not isinstance(value, dict):
            raise ValueError("random must be an object or null")
        rate = float(value.get("rate", 0.2))
        kinds = list(value.get("kinds") or RANDOM_KINDS)
        operations = list(value.get("operations") or FAULT_OPERATIONS)
        if not 0 <= rate <= 1 or not set(kinds) <= set(RANDOM_KINDS) or not set(operations) <= set(FAULT_OPERATIONS):
            raise ValueError(f"random takes rate 0..1, kinds of {', '.join(RANDOM_KINDS)} and operations "
                             f"of {', '.join(FAULT_OPERATIONS)}")
        self.random = {"rate": rate, "kinds": kinds, "operations": operations,
                       "hold_ms": max(0, int(value.get("hold_ms", 2000)))}
        self.rng = random.Random(value.get("seed"))

    def take_random(self, op: str) -> str | None:
        """The random fault for one call of ``op`` (``None``: none), counted in ``injected``."""
        with self.lock:
            spec = self.random
            if not spec or op not in spec["operations"] or self.rng.random() >= spec["rate"]:
                return None
            kind = self.rng.choice(spec["kinds"])
            self.injected[kind] += 1
            return kind

    def apply_faults(self, spec: dict) -> dict:
        """Merge a fault spec (see the module docstring); raises ``ValueError`` on a bad one."""
        if not isinstance(spec, dict):
            raise ValueError("faults must be a JSON object")
        with self.lock:
            for key, value in spec.items():
                if key in FAULT_OPERATIONS:
                    entries = value if isinstance(value, list) else [value]
                    for entry in entries:
                        _check_fault_entry(entry)
                    self.queues[key].extend(entries)
                elif key == "latency_ms":
                    self.latency_ms = max(0, int(value))
                elif key == "double_encoded":
                    self.double_encoded = bool(value)
                elif key == "no_id":
                    self.no_id = max(0, int(value))
                elif key == "id_shape":
                    if value not in ID_SHAPES:
                        raise ValueError(f"id_shape must be one of {', '.join(ID_SHAPES)}")
                    self.id_shape = value
                elif key == "random":
                    self._set_random(value)
                elif key == "hold":
                    if value:
                        self.gate.clear()
                    else:
                        self.gate.set()
                elif key == "unsupported":
                    items = value.items() if isinstance(value, dict) else ((op, 405) for op in value)
                    for op, status in items:
                        if op not in ("suspend", "resume", "delete", "admin_password"):
                            raise ValueError("unsupported takes suspend, resume, delete and admin_password")
                        self.unsupported[op] = int(status)
                else:
                    raise ValueError(f"unknown fault {key!r}")
        return self.faults()

    def take_fault(self, op: str):
        with self.lock:
            queue = self.queues.get(op)
            return queue.popleft() if queue else None


def _check_fault_entry(entry: Any) -> None:
    if isinstance(entry, bool):
        raise ValueError("a fault entry is a status, 'nojson', 'nojson:<status>' or {status, body}")
    if isinstance(entry, int) and 100 <= entry <= 599:
        return
    if isinstance(entry, str) and re.fullmatch(r"nojson(:[1-5]\d\d)?", entry):
        return
    if isinstance(entry, dict) and isinstance(entry.get("status"), int):
        return
    raise ValueError("a fault entry is a status, 'nojson', 'nojson:<status>' or {status, body}")


def _id_body(service_id: int, shape: str) -> dict:
    body: dict[str, Any] = {"status": "deploying", "message": "deploy started (stand-in)"}
    if "." in shape:
        outer, inner = shape.split(".", 1)
        body[outer] = {inner: service_id}
    else:
        body[shape] = service_id
    return body


class _Handler(BaseHTTPRequestHandler):
    server_version = "pds-deploy-api-standin/1.0"
    protocol_version = "HTTP/1.1"
    # Keep-alive clients (the plugin's requests.Session) must not wait for a delayed ACK: with
    # Nagle's algorithm on, a second small send waits ~40 ms for the ACK of the first. Answers go
    # out in one send (``_send``) and TCP_NODELAY is set as well.
    disable_nagle_algorithm = True
    standin: "PdsStandIn"  # set on the per-instance subclass

    # -- plumbing
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.standin.verbose:
            sys.stderr.write("pds stand-in: %s - %s\n" % (self.address_string(), format % args))

    def do_GET(self):  # noqa: N802 - stdlib names
        self._dispatch("GET")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self):  # noqa: N802
        self._dispatch("DELETE")

    def do_PUT(self):  # noqa: N802
        self._dispatch("PUT")

    def do_PATCH(self):  # noqa: N802
        self._dispatch("PATCH")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: Any = None, *, raw: bytes | None = None,
              content_type: str = "application/json", headers: dict | None = None) -> None:
        if raw is None:
            raw = b"" if body is None else json.dumps(body).encode()
        self._status = status
        if self._api_call:  # logged before answering, so a client sees its own call in the log
            with self.standin.state.lock:
                entry = {"method": self.command, "path": self._path, "status": status}
                if self._random_fault:
                    entry["fault"] = self._random_fault
                self.standin.state.requests.append(entry)
        if self._random_fault == "lost":  # the work is done; the answer never leaves
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_response(status)
        self.send_header(*STAND_IN_HEADER)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        # end_headers() would send the headers on their own; send them with the body instead
        self._headers_buffer.append(b"\r\n")
        head, self._headers_buffer = b"".join(self._headers_buffer), []
        self.wfile.write(head + (raw if self.command != "HEAD" else b""))

    def _dispatch(self, method: str) -> None:
        path = self._path = self.path.split("?", 1)[0]
        self._query = parse_qs(self.path.split("?", 1)[1]) if "?" in self.path else {}
        body = self._read_body()
        self._status, self._api_call, self._random_fault = 0, False, None
        try:
            if path == "/" and method == "GET":
                return self._send(200, raw=INDEX_HTML.encode(), content_type="text/html; charset=utf-8")
            if path.startswith("/_standin/"):
                return self._control(method, path, body)
            state = self.standin.state
            with state.lock:
                state.received.append({"method": method, "path": path})
                gate = state.gate
            gate.wait(HOLD_LIMIT_SECONDS)
            if state.latency_ms:
                time.sleep(state.latency_ms / 1000)
            self._api_call = True
            fault = state.take_random(_operation_of(method, path))
            if fault == "5xx":
                self._random_fault = fault
                return self._send(503, {"error": "unavailable", "message": "stand-in random fault"})
            if fault == "timeout":
                time.sleep(state.random["hold_ms"] / 1000 if state.random else 2.0)
            self._random_fault = fault
            self._api(method, path, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its timeout): nothing to answer
        except Exception as exc:  # pragma: no cover - a stand-in bug should still answer
            if not self._status:
                try:
                    self._send(500, {"error": "standin_error", "message": type(exc).__name__})
                except OSError:
                    self.close_connection = True

    # -- control API
    def _control(self, method: str, path: str, body: bytes) -> None:
        state = self.standin.state
        if method == "GET" and path == "/_standin/deploys":
            return self._send(200, {"deploys": self.standin.deploys()})
        if method == "GET" and path == "/_standin/services":
            return self._send(200, {"services": self.standin.services()})
        if method == "GET" and path == "/_standin/requests":
            return self._send(200, {"requests": self.standin.requests()})
        if method == "GET" and path == "/_standin/received":
            return self._send(200, {"received": self.standin.received()})
        if method == "GET" and path == "/_standin/faults":
            return self._send(200, state.faults())
        if method == "GET" and path == "/_standin/creations":
            return self._send(200, {"creations": self.standin.creations()})
        if method == "GET" and path == "/_standin/injected":
            return self._send(200, {"injected": self.standin.injected()})
        if method == "POST" and path == "/_standin/faults":
            try:
                return self._send(200, state.apply_faults(json.loads(body or b"{}")))
            except (ValueError, TypeError) as exc:
                return self._send(400, {"error": "bad_faults", "message": str(exc)})
        if method == "POST" and path == "/_standin/reset":
            state.reset()
            return self._send(200, {"reset": True})
        return self._send(404, {"error": "not_found", "message": f"no control endpoint {method} {path}"})

    # -- deploy API
    def _api(self, method: str, path: str, body: bytes) -> None:
        auth = self.headers.get("Authorization", "")
        expected = "Bearer " + self.standin.token
        if not hmac.compare_digest(auth.encode(), expected.encode()):
            return self._send(401, {"error": "unauthorized", "message": "missing or invalid bearer token"},
                              headers={"WWW-Authenticate": 'Bearer realm="pds-deploy-api"'})
        if path in ("/api/v1/deploy", "/api/v1/deploy/"):
            return self._deploy(body) if method == "POST" else self._method_not_allowed()
        if path in ("/api/v1/services", "/api/v1/services/"):
            if method != "GET":
                return self._method_not_allowed()
            if self._fault("services"):
                return None
            wanted = (self._query.get("hostname") or [None])[0]
            with self.standin.state.lock:
                listed = [{"id": s["id"], "service": s["service"], "namespace": s["namespace"],
                           "hostname": s["hostname"], "username": s["username"], "state": s["state"],
                           "created_at": s["created_at"]}
                          for s in self.standin.state.services.values()
                          if wanted is None or s["hostname"] == wanted]
            return self._send(200, {"services": listed})
        if path in ("/api/v1/health", "/api/v1/health/"):
            if method != "GET":
                return self._method_not_allowed()
            if self._fault("health"):
                return None
            return self._send(200, {"status": "ok", "stand_in": True})
        match = _SERVICE_RE.match(path)
        if not match:
            return self._send(404, {"error": "not_found", "message": f"no route {path}"})
        service_key, action = match.group(1), match.group(2)
        if action == "admin-password":
            if method != "POST":
                return self._method_not_allowed()
            return self._admin_password(service_key, body)
        if action:
            if method != "POST":
                return self._method_not_allowed()
            return self._lifecycle(service_key, action)
        if method == "GET":
            return self._details(service_key)
        if method == "DELETE":
            return self._delete(service_key)
        return self._method_not_allowed()

    def _method_not_allowed(self) -> None:
        self._send(405, {"error": "method_not_allowed"})

    def _fault(self, op: str) -> bool:
        """Answer with the next queued fault of ``op``, if any. True when it answered."""
        entry = self.standin.state.take_fault(op)
        if entry is None:
            return False
        if isinstance(entry, str):  # nojson / nojson:NNN
            status = int(entry.split(":", 1)[1]) if ":" in entry else 200
            page = (f"<html><head><title>{status}</title></head><body><h1>Upstream says {status}</h1>"
                    "<p>stand-in fault: this is not JSON</p></body></html>")
            self._send(status, raw=page.encode(), content_type="text/html; charset=utf-8")
        elif isinstance(entry, dict):
            self._send(entry["status"], entry.get("body", {"error": "fault", "message": "stand-in fault"}))
        elif entry == 422:
            self._send(422, {"error": "validation_failed",
                             "errors": {"hostname": "rejected by a stand-in fault"}})
        elif entry == 429:
            self._send(429, {"error": "rate_limited", "message": "stand-in fault"}, headers={"Retry-After": "2"})
        else:
            self._send(entry, {"error": "fault", "message": f"stand-in fault {entry}"})
        return True

    def _service(self, key: str) -> dict | None:
        try:
            return self.standin.state.services.get(int(key))
        except ValueError:
            return None

    def _deploy(self, raw: bytes) -> None:
        state = self.standin.state
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with state.lock:
            state.deploys.append(copy.deepcopy(body))
        if self._fault("deploy"):
            return None
        if not isinstance(body, dict):
            return self._send(400, {"error": "invalid_json", "message": "the body must be a JSON object"})
        errors = _validate_deploy(body)
        if errors:
            return self._send(422, {"error": "validation_failed", "errors": errors})
        hostname = body["hostname"]
        with state.lock:
            existing = next((s for s in state.services.values() if s["hostname"] == hostname), None)
            if existing is not None:
                if existing["username"] == body["username"] and existing["email"] == body["email"]:
                    return self._send(409, {"error": "exists", "serviceId": existing["id"],
                                            "message": f"{hostname} is already deployed"})
                return self._send(409, {"error": "hostname_taken",
                                        "message": f"{hostname} is already in use"})
            service_id = state.next_id
            state.next_id += 1
            now = _now()
            state.services[service_id] = {
                "id": service_id, "service": f"pds-{body['username']}", "namespace": f"pds-{service_id}",
                "state": "running", "kubeconfig_id": 1, "hostname": hostname,
                "username": body["username"], "email": body["email"], "password": body["password"],
                "disksize": body["disksize"], "smtp_secret": secrets.token_urlsafe(12),
                "created_at": now, "updated_at": now,
            }
            state.creations[hostname] += 1
            if state.no_id > 0:
                state.no_id -= 1
                return self._send(201, {"status": "deploying", "message": "deploy started (stand-in)"})
            return self._send(201, _id_body(service_id, state.id_shape))

    def _details(self, key: str) -> None:
        if self._fault("service"):
            return None
        state = self.standin.state
        with state.lock:
            record = self._service(key)
            if record is None:
                return self._send(404, {"error": "not_found", "message": f"service {key} not found"})
            details = {
                "id": record["id"], "service": record["service"], "namespace": record["namespace"],
                "state": record["state"], "kubeconfig_id": record["kubeconfig_id"],
                "encrypted_config": {
                    "hostname": record["hostname"],
                    "adminEmail": record["email"],
                    "emailFromAddress": f"noreply@{record['hostname']}",
                    "emailSmtpUrl": f"smtps://pds:{record['smtp_secret']}@smtp.standin.test:465",
                    "storageSize": f"{record['disksize']}Gi",
                    "adminPassword": record["password"],
                },
                "install_cmd": (f"helm upgrade --install {record['service']} pds/pds --namespace "
                                f"{record['namespace']} --set hostname={record['hostname']}"),
                "created_at": record["created_at"], "updated_at": record["updated_at"],
            }
            double = state.double_encoded
        payload = json.dumps(details)
        if double:
            payload = json.dumps(payload)
        return self._send(200, raw=payload.encode())

    def _lifecycle(self, key: str, action: str) -> None:
        state = self.standin.state
        if action in state.unsupported:
            return self._send(state.unsupported[action], {"error": "not_supported",
                                                          "message": f"{action} is not offered (stand-in)"})
        if self._fault(action):
            return None
        with state.lock:
            record = self._service(key)
            if record is None:
                return self._send(404, {"error": "not_found", "message": f"service {key} not found"})
            record["state"] = "suspended" if action == "suspend" else "running"
            record["updated_at"] = _now()
            return self._send(200, {"id": record["id"], "state": record["state"]})

    def _admin_password(self, key: str, raw: bytes) -> None:
        state = self.standin.state
        if "admin_password" in state.unsupported:
            return self._send(state.unsupported["admin_password"],
                              {"error": "not_supported", "message": "admin-password is not offered (stand-in)"})
        if self._fault("admin_password"):
            return None
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        password = body.get("password") if isinstance(body, dict) else None
        if not (isinstance(password, str) and len(password) >= 8):
            return self._send(422, {"error": "validation_failed",
                                    "errors": {"password": "must be a string of at least 8 characters"}})
        with state.lock:
            record = self._service(key)
            if record is None:
                return self._send(404, {"error": "not_found", "message": f"service {key} not found"})
            record["password"] = password
            record["updated_at"] = _now()
            return self._send(200, {"id": record["id"], "restarted": True})

    def _delete(self, key: str) -> None:
        state = self.standin.state
        if "delete" in state.unsupported:
            return self._send(state.unsupported["delete"], {"error": "not_supported",
                                                            "message": "delete is not offered (stand-in)"})
        if self._fault("delete"):
            return None
        with state.lock:
            record = self._service(key)
            if record is None:
                return self._send(404, {"error": "not_found", "message": f"service {key} not found"})
            del state.services[record["id"]]
            return self._send(200, {"id": record["id"], "deleted": True})


def _operation_of(method: str, path: str) -> str:
    """The fault operation name of an API call (``deploy``, ``service``, ``suspend``...)."""
    if path.rstrip("/") == "/api/v1/deploy":
        return "deploy"
    if path.rstrip("/") == "/api/v1/services":
        return "services"
    if path.rstrip("/") == "/api/v1/health":
        return "health"
    match = _SERVICE_RE.match(path)
    if match and match.group(2):
        return match.group(2)
    return "delete" if method == "DELETE" else "service"


def _validate_deploy(body: dict) -> dict:
    errors: dict[str, str] = {}
    for name in ("username", "password", "email", "hostname", "disksize"):
        if body.get(name) in (None, ""):
            errors[name] = "is required"
    username, hostname = body.get("username"), body.get("hostname")
    if "username" not in errors and not (isinstance(username, str) and _USERNAME_RE.fullmatch(username)):
        errors["username"] = "must be a DNS label (a-z, 0-9, '-'; at most 63 characters)"
    if "hostname" not in errors:
        if not isinstance(hostname, str):
            errors["hostname"] = "must be a string"
        elif "://" in hostname or "/" in hostname or ":" in hostname:
            errors["hostname"] = "must be a bare FQDN (no scheme, path or port)"
        elif len(hostname) > 253 or not _FQDN_RE.fullmatch(hostname):
            errors["hostname"] = "must be a lower-case fully qualified domain name"
    if "email" not in errors and not (isinstance(body["email"], str) and "@" in body["email"]):
        errors["email"] = "must be an email address"
    if "password" not in errors and not (isinstance(body["password"], str) and len(body["password"]) >= 8):
        errors["password"] = "must be a string of at least 8 characters"
    if "disksize" not in errors:
        size = body["disksize"]
        numeric = isinstance(size, (int, float)) and not isinstance(size, bool)
        if isinstance(size, str) and re.fullmatch(r"\d+(\.\d+)?", size.strip()):
            numeric, size = True, float(size)
        if not numeric:
            errors["disksize"] = "must be a number (GiB)"
        elif not 1 <= float(size) <= 16384:
            errors["disksize"] = "must be between 1 and 16384 GiB"
    return errors


class _Server(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` that says nothing when a client hangs up (a client timeout, an
    answer dropped on purpose): only real errors are printed."""

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class PdsStandIn:
    """A loopback stand-in of the PDS deploy API. NOT a real PDS host (see the module docstring).

    ``PdsStandIn(host="127.0.0.1", port=0, token="standin-token", latency_ms=0,
    double_encoded=False)``; ``port=0`` picks a free port. ``start()`` returns ``self``; ``stop()``
    stops it; ``url`` is ``http://127.0.0.1:<port>``; also a context manager. The Python control
    methods mirror the ``/_standin/`` endpoints.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str = "standin-token",
                 latency_ms: int = 0, double_encoded: bool = False, verbose: bool = False):
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError("the PDS stand-in only binds 127.0.0.1")
        if not token:
            raise ValueError("the PDS stand-in needs a token")
        self.host, self.port, self.token, self.verbose = "127.0.0.1", int(port), str(token), verbose
        self.state = _State(latency_ms=latency_ms, double_encoded=double_encoded)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"PdsStandIn(url={self.url if self._server else None!r}, token='••••••••')"

    # -- lifecycle
    def _bind(self) -> ThreadingHTTPServer:
        handler = type("PdsStandInHandler", (_Handler,), {"standin": self})
        server = _Server((self.host, self.port), handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        return server

    def start(self) -> "PdsStandIn":
        """Bind 127.0.0.1:``port`` and serve in a daemon thread; returns ``self``."""
        if self._server is not None:
            return self
        server = self._bind()
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"pds-standin-{self.port}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``stop()`` (from another thread) or Ctrl-C."""
        server = self._server or self._bind()
        try:
            server.serve_forever(poll_interval=0.2)
        finally:
            server.server_close()

    def stop(self) -> None:
        """Stop serving and close the socket (safe to call twice)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "PdsStandIn":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the ``api_url`` setting for the pds backend)."""
        return f"http://{self.host}:{self.port}"

    # -- control (same as the /_standin/ endpoints)
    def deploys(self) -> list:
        """Every deploy request body received, in order (passwords included)."""
        with self.state.lock:
            return copy.deepcopy(self.state.deploys)

    def services(self) -> list[dict]:
        """Every existing service record: id, service, namespace, state ("running"/"suspended"),
        kubeconfig_id, hostname, username, email, password, disksize, created_at, updated_at."""
        with self.state.lock:
            return [{k: v for k, v in s.items() if k != "smtp_secret"} for s in self.state.services.values()]

    def service(self, service_id: int | str) -> dict | None:
        """One service record by id, or ``None``."""
        return next((s for s in self.services() if str(s["id"]) == str(service_id)), None)

    def requests(self) -> list[dict]:
        """Every deploy-API request answered: ``{"method", "path", "status"}``, in order."""
        with self.state.lock:
            return [dict(r) for r in self.state.requests]

    def received(self) -> list[dict]:
        """Every deploy-API request as it arrived (before latency and answer): ``{"method", "path"}``."""
        with self.state.lock:
            return [dict(r) for r in self.state.received]

    def set_faults(self, spec: dict | None = None, **faults: Any) -> dict:
        """Merge faults, e.g. ``set_faults(deploy=[500, 500], latency_ms=100)``; returns the settings."""
        return self.state.apply_faults({**(spec or {}), **faults})

    def faults(self) -> dict:
        """The current fault settings (queues, latency_ms, double_encoded, no_id, id_shape, unsupported,
        random, hold)."""
        return self.state.faults()

    def creations(self) -> dict[str, int]:
        """How many services were made per hostname since the last reset (above 1: a duplicate)."""
        with self.state.lock:
            return dict(self.state.creations)

    def injected(self) -> dict[str, int]:
        """How many random faults of each kind were injected since the last reset."""
        with self.state.lock:
            return dict(self.state.injected)

    def reset(self) -> None:
        """Forget services, deploys, requests and faults. Service ids keep counting up."""
        self.state.reset()


def main(argv: list[str] | None = None) -> int:
    """``python -m panel_pds.standin [--port 5100] [--token demo-token] [--latency-ms 0]``."""
    parser = argparse.ArgumentParser(prog="python -m panel_pds.standin",
                                     description="Loopback stand-in of the PDS deploy API (not a real PDS host).")
    parser.add_argument("--port", type=int, default=5100, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--token", default="demo-token", help="the Bearer token to require")
    parser.add_argument("--latency-ms", type=int, default=0, help="added latency per API request")
    parser.add_argument("--double-encoded", action="store_true", help="answer details JSON encoded twice")
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)
    standin = PdsStandIn(port=args.port, token=args.token, latency_ms=args.latency_ms,
                         double_encoded=args.double_encoded, verbose=args.verbose)
    standin._bind()

    def _stop(signum, frame):  # SIGTERM: leave serve_forever through KeyboardInterrupt
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    print(f"PDS deploy API STAND-IN (not a real PDS host) on {standin.url} (Ctrl-C to stop)", flush=True)
    try:
        standin.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
