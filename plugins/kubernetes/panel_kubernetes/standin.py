"""A loopback stand-in of the Kubernetes API server's CustomObjects REST paths, with a fake operator.

No kube-apiserver can run on the test machines, so the plugin's tests point the real ``kubernetes``
client at this server (standard library ``ThreadingHTTPServer`` on 127.0.0.1). It speaks:

* ``GET /apis/{group}/{version}``: an ``APIResourceList`` naming ``{plural}`` and ``{plural}/status``.
* ``GET|POST /apis/{group}/{version}/namespaces/{ns}/{plural}``: list (``labelSelector``: ``k``,
  ``!k``, ``k=v``, ``k==v``, ``k!=v``, comma-joined; ``limit`` + ``continue``) and create.
* ``GET|PATCH|DELETE .../{plural}/{name}``: PATCH takes ``application/merge-patch+json`` (RFC 7386),
  ``application/strategic-merge-patch+json`` (treated as a merge patch) and
  ``application/json-patch+json`` (RFC 6902 add/replace/remove/test); a ``metadata.resourceVersion`` in
  a merge patch is an optimistic-concurrency precondition (409 Conflict). DELETE honours
  ``preconditions.uid`` / ``preconditions.resourceVersion`` in its body and records
  ``propagationPolicy``.
* errors as Kubernetes ``Status`` objects (``NotFound``, ``AlreadyExists``, ``Conflict``, ``Invalid``
  with ``details.causes``, ``Forbidden``, ``Unauthorized``, ``BadRequest``, ``InternalError``,
  ``TooManyRequests``), bearer-token auth (401 otherwise), a status subresource (status in a create or
  patch body is ignored), ``metadata.uid``, ``resourceVersion`` (bumped on every write),
  ``generation`` (bumped when ``spec`` changes) and ``creationTimestamp``.

The fake operator reconciles lazily: on any read, an object whose ``metadata.generation`` is newer than
``status.observedGeneration`` and that changed at least ``ready_delay`` seconds ago gets
``status.observedGeneration``, ``status.conditions[type=Ready]`` (``True``, or ``False`` with the reason
set by ``fail_ready``), ``status.phase`` and ``status.suspendedAt`` (set when ``spec.suspend`` becomes
true, removed when it becomes false), and ``status.usage`` when ``usage`` is set.

Fault injection: ``fail_next(verb, status, times)`` (verbs: discovery, list, get, create, patch, delete or
``*``), ``delay_next(verb, seconds)``, ``forbid_namespace(ns)``, ``invalid_packages`` (422 on create or
patch), ``mutate`` (an admission hook that rewrites ``spec`` on create and patch).

Client area: with ``tenant_domain`` set the operator reports ``status.url`` (``https://<name>.<domain>``);
with ``kubeconfigs`` it writes a core/v1 Secret ``<name>-kubeconfig`` (key ``kubeconfig``) and reports
``status.kubeconfigSecretRef {name, key}``; ``GET /api/v1/namespaces/{ns}/secrets/{name}`` serves it
(404 NotFound, 403 Forbidden in a forbidden namespace).

Run ``python -m panel_kubernetes.standin --port 8443 --token t`` for a manual demo.
"""
from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["KubeStandIn", "json_patch", "merge_patch", "match_labels"]

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: mappings merge recursively, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Any, ops: list) -> Any:
    """RFC 6902 with ``add``, ``replace``, ``remove`` and ``test``. Raises ``ValueError``."""
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ValueError("each JSON patch operation needs op and path")
        parts = _pointer(op["path"])
        if not parts:
            raise ValueError("cannot patch the whole document")
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op.get("value"):
                raise ValueError(f"test failed at {op['path']}")
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                if kind == "replace" and last not in parent:
                    raise ValueError(f"replace: no value at {op['path']}")
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                if last not in parent:
                    raise ValueError(f"remove: no value at {op['path']}")
                del parent[last]
        else:
            raise ValueError(f"unsupported JSON patch op {kind!r}")
    return doc


def match_labels(labels: dict, selector: str) -> bool:
    """Does a label set match a Kubernetes equality-based label selector?"""
    for term in [t.strip() for t in (selector or "").split(",") if t.strip()]:
        if "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "==" in term or "=" in term:
            key, value = (s.strip() for s in re.split(r"==?", term, maxsplit=1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


class _ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict:
        """This error as a Kubernetes ``Status`` object."""
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = self.details
        return out


_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
            409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
            429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


class KubeStandIn:
    """The stand-in API server. ``start()`` returns self; ``url`` is ``http://127.0.0.1:<port>``.

    ``objects(namespace)`` / ``get(namespace, name)`` show stored custom resources (after the fake
    operator's lazy reconcile); ``requests`` records ``{method, path, query, content_type, verb, body}``
    of every authenticated request (never the Authorization header).
    """

    def __init__(self, token: str = "standin-token", *, group: str = "hostpanel.dev", version: str = "v1",
                 plural: str = "tenants", kind: str = "Tenant", ready_delay: float = 0.0):
        self.token = token
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset()
        self.ready_delay = ready_delay

    # ------------------------------------------------------------------ control

    def reset(self) -> None:
        """Forget every object, fault, request and operator setting."""
        with getattr(self, "_lock", threading.RLock()):
            self._objects: dict[tuple[str, str], dict] = {}
            self._changed: dict[tuple[str, str], float] = {}
            self._faults: list[dict] = []
            self._delays: list[dict] = []
            self._rv = itertools.count(1000)
            self.requests: list[dict] = []
            self.ready_delay = 0.0
            self.ready_failure: tuple[str, str] | None = None
            self.usage: dict | None = None
            self.mutate: Callable[[dict], None] | None = None
            self.invalid_packages: set[str] = set()
            self.forbidden_namespaces: set[str] = set()
            self.extra_tokens: set[str] = set()
            self.operator_enabled = True
            self.secrets: dict[tuple[str, str], dict] = {}
            self.tenant_domain: str | None = None  # the operator reports status.url = https://<name>.<domain>
            self.kubeconfigs = False  # the operator writes a kubeconfig Secret per tenant

    def start(self, port: int = 0) -> "KubeStandIn":
        """Listen on 127.0.0.1:``port`` (0: any free port) in a background thread."""
        handler = type("Handler", (_Handler,), {"standin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="kube-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        assert self._server is not None, "not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the ``api_url`` setting to use."""
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, verb: str, status: int, times: int = 1, *, message: str | None = None,
                  reason: str | None = None, retry_after: float | None = None) -> None:
        """Answer the next ``times`` requests of ``verb`` (``discovery``, ``list``, ``get``,
        ``create``, ``patch``, ``delete`` or ``*``) with a ``Status`` of code ``status``."""
        with self._lock:
            self._faults.append({"verb": verb, "status": status, "left": times, "message": message,
                                 "reason": reason, "retry_after": retry_after})

    def delay_next(self, verb: str, seconds: float, times: int = 1) -> None:
        """Sleep ``seconds`` before answering the next ``times`` requests of ``verb``."""
        with self._lock:
            self._delays.append({"verb": verb, "seconds": seconds, "left": times})

    def fail_ready(self, reason: str, message: str = "") -> None:
        """Make the fake operator report ``Ready=False`` with ``reason`` from now on."""
        with self._lock:
            self.ready_failure = (reason, message)

    def forbid_namespace(self, namespace: str) -> None:
        """Answer 403 Forbidden to every request in ``namespace``."""
        with self._lock:
            self.forbidden_namespaces.add(namespace)

    def objects(self, namespace: str | None = None) -> list[dict]:
        """Deep copies of the stored objects (in one namespace, or all), reconciled first."""
        with self._lock:
            keys = [k for k in self._objects if namespace is None or k[0] == namespace]
            return [copy.deepcopy(self._reconciled(k)) for k in sorted(keys)]

    def get(self, namespace: str, name: str) -> dict | None:
        """A deep copy of one stored object (reconciled first), or ``None``."""
        with self._lock:
            if (namespace, name) not in self._objects:
                return None
            return copy.deepcopy(self._reconciled((namespace, name)))

    def put(self, obj: dict) -> dict:
        """Store an object directly (e.g. one some other tool made); fills in metadata."""
        with self._lock:
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            meta.setdefault("namespace", "default")
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("generation", 1)
            meta.setdefault("creationTimestamp", _now())
            meta["resourceVersion"] = str(next(self._rv))
            obj.setdefault("apiVersion", f"{self.group}/{self.version}")
            obj.setdefault("kind", self.kind)
            key = (meta["namespace"], meta["name"])
            self._objects[key] = obj
            self._changed[key] = time.monotonic()
            return copy.deepcopy(obj)

    def edit_spec(self, namespace: str, name: str, patch: dict) -> dict:
        """Change an object's spec out of band (like ``kubectl patch --type merge``)."""
        with self._lock:
            key = (namespace, name)
            obj = self._objects[key]
            new_spec = merge_patch(obj.get("spec") or {}, patch)
            if new_spec != obj.get("spec"):
                obj["spec"] = new_spec
                obj["metadata"]["generation"] += 1
                obj["metadata"]["resourceVersion"] = str(next(self._rv))
                self._changed[key] = time.monotonic()
            return copy.deepcopy(obj)

    # ------------------------------------------------------------------ the operator

    def _reconciled(self, key: tuple[str, str]) -> dict:
        obj = self._objects[key]
        if not self.operator_enabled:
            return obj
        meta, status = obj["metadata"], obj.setdefault("status", {})
        generation = meta.get("generation", 1)
        if status.get("observedGeneration", 0) >= generation:
            return obj
        if time.monotonic() - self._changed.get(key, 0) < self.ready_delay:
            return obj
        spec = obj.get("spec") or {}
        suspended = bool(spec.get("suspend"))
        if self.ready_failure:
            reason, message = self.ready_failure
            cond = {"type": "Ready", "status": "False", "reason": reason, "message": message}
            status["phase"] = "Failed"
        else:
            cond = {"type": "Ready", "status": "True", "reason": "Suspended" if suspended else "Reconciled",
                    "message": "tenant is suspended" if suspended else "tenant is ready"}
            status["phase"] = "Suspended" if suspended else "Ready"
        cond["lastTransitionTime"] = _now()
        cond["observedGeneration"] = generation
        others = [c for c in status.get("conditions") or [] if c.get("type") != "Ready"]
        status["conditions"] = others + [cond]
        status["observedGeneration"] = generation
        if suspended:
            status.setdefault("suspendedAt", _now())
        else:
            status.pop("suspendedAt", None)
        if self.usage is not None:
            status["usage"] = copy.deepcopy(self.usage)
        if self.tenant_domain and not self.ready_failure:
            status["url"] = f"https://{meta['name']}.{self.tenant_domain}"
        if self.kubeconfigs and not self.ready_failure:
            secret_name = f"{meta['name']}-kubeconfig"
            self.put_secret(key[0], secret_name, {"kubeconfig": self.tenant_kubeconfig(key[0], meta["name"])})
            status["kubeconfigSecretRef"] = {"name": secret_name, "key": "kubeconfig"}
        meta["resourceVersion"] = str(next(self._rv))
        return obj

    def tenant_kubeconfig(self, namespace: str, name: str) -> str:
        """The kubeconfig YAML the fake operator gives tenant ``name`` (a token unique to it)."""
        token = f"tenant-token-{uuid.uuid5(uuid.NAMESPACE_DNS, namespace + '/' + name).hex[:16]}"
        return (f"apiVersion: v1\nkind: Config\ncurrent-context: {name}\n"
                f"clusters:\n- name: tenants\n  cluster: {{server: 'https://k8s.tenants.test:6443'}}\n"
                f"contexts:\n- name: {name}\n  context: {{cluster: tenants, user: {name}, namespace: {name}}}\n"
                f"users:\n- name: {name}\n  user: {{token: {token}}}\n")

    def put_secret(self, namespace: str, name: str, string_data: dict) -> dict:
        """Store a core/v1 Secret (``data`` base64 encoded, as the API server keeps it)."""
        import base64

        with self._lock:
            secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                                   "resourceVersion": str(next(self._rv)), "creationTimestamp": _now()},
                      "data": {k: base64.b64encode(v.encode()).decode() for k, v in string_data.items()}}
            self.secrets[(namespace, name)] = secret
            return copy.deepcopy(secret)

    # ------------------------------------------------------------------ request handling

    def _take(self, table: list[dict], verb: str) -> dict | None:
        with self._lock:
            for entry in table:
                if entry["left"] > 0 and entry["verb"] in (verb, "*"):
                    entry["left"] -= 1
                    return entry
        return None

    def handle(self, method: str, raw_path: str, headers: dict, body: bytes) -> tuple[int, dict, dict]:
        """Answer one request: ``(status, json body, extra headers)``."""
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        segments = [unquote(s) for s in parts.path.strip("/").split("/") if s]
        auth = headers.get("authorization") or ""
        if auth not in {f"Bearer {t}" for t in (self.token, *self.extra_tokens)}:
            raise _ApiError(401, "Unauthorized", "Unauthorized")
        verb = self._verb(method, segments)
        content_type = (headers.get("content-type") or "").split(";")[0].strip()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            raise _ApiError(400, "BadRequest", "the request body is not JSON") from None
        with self._lock:
            self.requests.append({"method": method, "path": parts.path, "query": query,
                                  "content_type": content_type, "verb": verb, "body": parsed})
        delay = self._take(self._delays, verb)
        if delay:
            time.sleep(delay["seconds"])
        fault = self._take(self._faults, verb)
        if fault:
            code = fault["status"]
            extra = {"Retry-After": str(int(fault["retry_after"]))} if fault["retry_after"] is not None else {}
            raise _ApiError(code, fault["reason"] or _REASONS.get(code, "Unknown"),
                            fault["message"] or f"injected fault: {code}", headers=extra)
        with self._lock:
            return self._route(method, segments, query, content_type, parsed)

    def _verb(self, method: str, segments: list[str]) -> str:
        if len(segments) == 3 and segments[0] == "apis":
            return "discovery"
        if len(segments) == 6:
            return {"GET": "list", "POST": "create"}.get(method, method.lower())
        if len(segments) >= 7:
            return {"GET": "get", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}.get(method, method.lower())
        return method.lower()

    def _route(self, method, segments, query, content_type, body) -> tuple[int, dict, dict]:
        not_found = _ApiError(404, "NotFound", "the server could not find the requested resource")
        if len(segments) == 6 and segments[:2] == ["api", "v1"] and segments[2] == "namespaces" \
                and segments[4] == "secrets":  # core/v1 GET /api/v1/namespaces/{ns}/secrets/{name}
            if method != "GET":
                raise _ApiError(405, "MethodNotAllowed", "method not allowed")
            if segments[3] in self.forbidden_namespaces:
                raise _ApiError(403, "Forbidden", f'secrets "{segments[5]}" is forbidden: User '
                                f'"system:serviceaccount:hostpanel:panel" cannot get resource "secrets" in API '
                                f'group "" in the namespace "{segments[3]}"')
            secret = self.secrets.get((segments[3], segments[5]))
            if secret is None:
                raise _ApiError(404, "NotFound", f'secrets "{segments[5]}" not found',
                                {"name": segments[5], "kind": "secrets"})
            return 200, copy.deepcopy(secret), {}
        if len(segments) < 3 or segments[0] != "apis" or segments[1] != self.group or segments[2] != self.version:
            raise not_found
        if len(segments) == 3:
            if method != "GET":
                raise _ApiError(405, "MethodNotAllowed", "method not allowed")
            return 200, self._discovery(), {}
        if len(segments) not in (6, 7) or segments[3] != "namespaces" or segments[5] != self.plural:
            raise not_found
        namespace = segments[4]
        if namespace in self.forbidden_namespaces:
            verb = self._verb(method, segments)
            raise _ApiError(403, "Forbidden",
                            f'{self.plural}.{self.group} is forbidden: User "system:serviceaccount:hostpanel:panel" '
                            f'cannot {verb} resource "{self.plural}" in API group "{self.group}" in the namespace '
                            f'"{namespace}"')
        if len(segments) == 6:
            if method == "GET":
                return 200, self._list(namespace, query), {}
            if method == "POST":
                return 201, self._create(namespace, body), {}
            raise _ApiError(405, "MethodNotAllowed", "method not allowed")
        name = segments[6]
        key = (namespace, name)
        if method == "GET":
            return 200, copy.deepcopy(self._reconciled(self._existing(key))), {}
        if method == "PATCH":
            return 200, self._patch(key, content_type, body), {}
        if method == "DELETE":
            return 200, self._delete(key, query, body), {}
        raise _ApiError(405, "MethodNotAllowed", "method not allowed")

    def _missing(self, name: str):
        raise _ApiError(404, "NotFound", f'{self.plural}.{self.group} "{name}" not found',
                        {"name": name, "group": self.group, "kind": self.plural})

    def _existing(self, key):
        if key not in self._objects:
            self._missing(key[1])
        return key

    def _discovery(self) -> dict:
        verbs = ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{self.group}/{self.version}",
                "resources": [
                    {"name": self.plural, "singularName": self.kind.lower(), "namespaced": True,
                     "kind": self.kind, "verbs": verbs, "storageVersionHash": "standin"},
                    {"name": f"{self.plural}/status", "singularName": "", "namespaced": True,
                     "kind": self.kind, "verbs": ["get", "patch", "update"]},
                ]}

    def _list(self, namespace: str, query: dict) -> dict:
        selector = query.get("labelSelector", "")
        keys = sorted(k for k in self._objects if k[0] == namespace)
        items = [copy.deepcopy(self._reconciled(k)) for k in keys]
        items = [o for o in items if match_labels((o.get("metadata") or {}).get("labels") or {}, selector)]
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0)
        page = items[start:start + limit] if limit else items[start:]
        meta = {"resourceVersion": str(next(self._rv))}
        if limit and start + limit < len(items):
            meta["continue"] = str(start + limit)
        return {"apiVersion": f"{self.group}/{self.version}", "kind": f"{self.kind}List", "metadata": meta,
                "items": page}

    def _validate(self, obj: dict) -> None:
        causes = []
        name = (obj.get("metadata") or {}).get("name") or ""
        if not _NAME.fullmatch(name):
            causes.append({"reason": "FieldValueInvalid", "field": "metadata.name",
                           "message": f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of '
                                      "lower case alphanumeric characters or '-'"})
        spec = obj.get("spec")
        if spec is not None and not isinstance(spec, dict):
            causes.append({"reason": "FieldValueTypeInvalid", "field": "spec", "message": "must be an object"})
        packages = (spec or {}).get("packages") if isinstance(spec, dict) else None
        if packages is not None and not (isinstance(packages, list) and all(isinstance(p, str) for p in packages)):
            causes.append({"reason": "FieldValueTypeInvalid", "field": "spec.packages",
                           "message": "must be a list of strings"})
        for pkg in packages or []:
            if pkg in self.invalid_packages:
                causes.append({"reason": "FieldValueNotSupported", "field": "spec.packages",
                               "message": f'Unsupported value: "{pkg}"'})
        suspend = (spec or {}).get("suspend") if isinstance(spec, dict) else None
        if suspend is not None and not isinstance(suspend, bool):
            causes.append({"reason": "FieldValueTypeInvalid", "field": "spec.suspend", "message": "must be a boolean"})
        if causes:
            raise _ApiError(422, "Invalid", f'{self.kind}.{self.group} "{name}" is invalid: '
                            + ", ".join(f"{c['field']}: {c['message']}" for c in causes),
                            {"name": name, "group": self.group, "kind": self.kind, "causes": causes})

    def _create(self, namespace: str, body: Any) -> dict:
        if not isinstance(body, dict):
            raise _ApiError(400, "BadRequest", "the body must be an object")
        if body.get("apiVersion") != f"{self.group}/{self.version}" or body.get("kind") != self.kind:
            raise _ApiError(400, "BadRequest", f"the API version in the data ({body.get('apiVersion')}) or kind "
                            f"({body.get('kind')}) does not match the expected {self.group}/{self.version} {self.kind}")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace") not in (None, namespace):
            raise _ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                            "sent on the request")
        obj.pop("status", None)
        if self.mutate and isinstance(obj.get("spec"), dict):
            self.mutate(obj["spec"])
        self._validate(obj)
        key = (namespace, meta["name"])
        if key in self._objects:
            raise _ApiError(409, "AlreadyExists", f'{self.plural}.{self.group} "{meta["name"]}" already exists',
                            {"name": meta["name"], "group": self.group, "kind": self.plural})
        meta.update({"namespace": namespace, "uid": str(uuid.uuid4()), "generation": 1,
                     "creationTimestamp": _now(), "resourceVersion": str(next(self._rv))})
        for drop in ("deletionTimestamp", "managedFields"):
            meta.pop(drop, None)
        self._objects[key] = obj
        self._changed[key] = time.monotonic()
        return copy.deepcopy(obj)

    def _patch(self, key, content_type: str, body: Any) -> dict:
        self._existing(key)
        current = self._reconciled(key)
        if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(body, dict):
                raise _ApiError(400, "BadRequest", "a merge patch must be a JSON object")
            wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
            if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
                raise _ApiError(409, "Conflict", f'Operation cannot be fulfilled on {self.plural}.{self.group} '
                                f'"{key[1]}": the object has been modified; please apply your changes to the '
                                "latest version and try again")
            patched = merge_patch(current, body)
        elif content_type == "application/json-patch+json":
            if not isinstance(body, list):
                raise _ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
            try:
                patched = json_patch(current, body)
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise _ApiError(422, "Invalid", f"the JSON patch cannot be applied: {exc}") from None
        else:
            raise _ApiError(415, "UnsupportedMediaType",
                            "the body of the request was in an unknown format - accepted media types include: "
                            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")
        # immutable metadata and the status subresource
        for field in ("name", "namespace", "uid", "creationTimestamp", "generation", "resourceVersion"):
            patched["metadata"][field] = current["metadata"].get(field)
        patched["status"] = copy.deepcopy(current.get("status") or {})
        patched["apiVersion"], patched["kind"] = current["apiVersion"], current["kind"]
        if self.mutate and isinstance(patched.get("spec"), dict):
            self.mutate(patched["spec"])
        self._validate(patched)
        if patched == current:
            return copy.deepcopy(current)
        if patched.get("spec") != current.get("spec"):
            patched["metadata"]["generation"] = current["metadata"]["generation"] + 1
            self._changed[key] = time.monotonic()
        patched["metadata"]["resourceVersion"] = str(next(self._rv))
        self._objects[key] = patched
        return copy.deepcopy(patched)

    def _delete(self, key, query: dict, body: Any) -> dict:
        self._existing(key)
        current = self._objects[key]
        pre = (body or {}).get("preconditions") if isinstance(body, dict) else None
        if pre:
            if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
                raise _ApiError(409, "Conflict", f'Precondition failed: UID in precondition: {pre["uid"]}, '
                                f'UID in object meta: {current["metadata"]["uid"]}')
            if pre.get("resourceVersion") and pre["resourceVersion"] != current["metadata"]["resourceVersion"]:
                raise _ApiError(409, "Conflict", "Precondition failed: resourceVersion")
        policy = query.get("propagationPolicy")
        if not policy and isinstance(body, dict):
            policy = body.get("propagationPolicy")
        with self._lock:
            self.requests[-1]["propagation_policy"] = policy
        del self._objects[key]
        self._changed.pop(key, None)
        return copy.deepcopy(current)


class _Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # headers and body are separate sends: no delayed-ACK wait
    standin: KubeStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002
        """Keep test output quiet (the stand-in records requests in ``requests`` instead)."""
        pass

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        extra: dict = {}
        try:
            code, payload, extra = self.standin.handle(method, self.path, headers, body)
        except _ApiError as exc:
            code, payload, extra = exc.code, exc.status(), exc.headers
        except Exception as exc:  # noqa: BLE001 - a stand-in bug answers 500, visibly
            error = _ApiError(500, "InternalError", f"stand-in error: {type(exc).__name__}: {exc}")
            code, payload = 500, error.status()
        data = json.dumps(payload).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PATCH(self):
        self._serve("PATCH")

    def do_DELETE(self):
        self._serve("DELETE")

    def do_PUT(self):
        self._serve("PUT")


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - a manual demo
    """``python -m panel_kubernetes.standin``: run the stand-in in the foreground."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token", default="standin-token")
    parser.add_argument("--ready-delay", type=float, default=2.0, help="seconds before Ready=True")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    standin = KubeStandIn(args.token)
    standin.ready_delay = args.ready_delay
    standin.start(args.port)
    print(f"Kubernetes stand-in on {standin.url} (group {standin.group}/{standin.version}, "
          f"plural {standin.plural}); Ctrl-C stops it")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        standin.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
