"""Loopback Stripe for the billing tests: localstripe plus a small stand-in in front of it.

``Localstripe`` runs the real localstripe (a stateful fake Stripe) in a subprocess on 127.0.0.1.
``StripeRouter`` is the address the SDK talks to (``PANEL_STRIPE_API_BASE``). It answers what
localstripe lacks with Stripe's REST shapes (from ``fixtures3.json``) and forwards the rest:

* ``/v1/checkout/sessions`` (create, retrieve, expire) and ``/v1/billing_portal/sessions``
  (create): answered here, every request recorded in ``requests``.
* ``GET /v1/prices/{id}``: localstripe has no Price API (a plan stands in for a recurring
  price): read ``/v1/plans/{id}`` and answer in the price shape; one-time prices registered
  with ``add_one_time_price`` are answered here.
* ``POST /v1/subscriptions/{id}``: ``items[i][price]`` becomes ``items[i][plan]`` and
  ``proration_behavior`` is recorded then dropped (localstripe rejects both).
* Everything else goes to localstripe unchanged. ``fail_next(prefix, status)`` makes the next
  request under ``prefix`` fail (``status`` 0: the connection is dropped).
"""
from __future__ import annotations

import copy
import http.client
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

from panel.testing import _wait_port, free_port, stop_process

# Stripe's example objects (stripe/openapi fixtures3.json, commit f6c2a48), copied next to this file.
with open(os.path.join(os.path.dirname(__file__), "fixtures3.json"), encoding="utf-8") as _fh:
    FIXTURES = json.load(_fh)["resources"]


def fixture(name: str) -> dict:
    """A deep copy of Stripe's example object ``name`` (``checkout.session``, ``subscription``...)."""
    return copy.deepcopy(FIXTURES[name])


def unflatten(pairs: list[tuple[str, str]]) -> dict:
    """Stripe's form encoding (``a[b][0][c]=v``) back to nested dicts and lists."""
    root: dict = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _lists(root)


def _lists(node):
    if isinstance(node, dict):
        if node and all(k.isdigit() for k in node):
            return [_lists(node[k]) for k in sorted(node, key=int)]
        return {k: _lists(v) for k, v in node.items()}
    return node


def flatten(data, prefix="") -> list[tuple[str, str]]:
    out = []
    if isinstance(data, dict):
        for k, v in data.items():
            out += flatten(v, f"{prefix}[{k}]" if prefix else k)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += flatten(v, f"{prefix}[{i}]")
    else:
        out.append((prefix, "" if data is None else str(data)))
    return out


class Localstripe:
    """localstripe in a subprocess on a free loopback port; ``url``, ``stop()``."""

    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-c",
             "from aiohttp import web; from localstripe.server import app; "
             f"web.run_app(app, host='127.0.0.1', port={self.port}, print=None)"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, proc=self.proc)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        stop_process(self.proc)


def _error(status: int, message: str, code: str | None = None, param: str | None = None) -> tuple[int, dict]:
    return status, {"error": {"type": "invalid_request_error", "message": message, "code": code, "param": param}}


class StripeRouter:
    """The loopback Stripe the SDK talks to (see the module docstring)."""

    def __init__(self, localstripe_url: str):
        self.upstream = urlsplit(localstripe_url)
        self.sessions: dict[str, dict] = {}
        self.one_time_prices: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self.failures: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        router = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate sends: no delayed-ACK wait

            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = router.handle(self.command, self.path, dict(self.headers), body)
                if status == 0:
                    self.close_connection = True
                    self.connection.close()
                    return
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    # ----------------------------------------------------------------- test controls

    def fail_next(self, prefix: str, status: int = 500) -> None:
        """The next request whose path starts with ``prefix`` answers ``status`` (0: dropped)."""
        with self.lock:
            self.failures.append((prefix, status))

    def add_one_time_price(self, price_id: str) -> None:
        """A one-time (not recurring) price, answered by ``GET /v1/prices/{id}``."""
        price = fixture("price")
        price.update(id=price_id, type="one_time", recurring=None, active=True)
        self.one_time_prices[price_id] = price

    def complete_session(self, session_id: str, subscription_id: str) -> dict:
        """What Stripe does when the customer pays: the session is ``complete`` and ``paid``."""
        session = self.sessions[session_id]
        session.update(status="complete", payment_status="paid", subscription=subscription_id)
        return copy.deepcopy(session)

    def recorded(self, method: str, prefix: str) -> list[dict]:
        """The decoded bodies of recorded requests (``method`` and path prefix)."""
        return [body for m, path, body in self.requests if m == method and path.startswith(prefix)]

    # ----------------------------------------------------------------- routing

    def handle(self, method: str, raw_path: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        path = urlsplit(raw_path).path
        params = unflatten(parse_qsl(body.decode(), keep_blank_values=True)) if body else {}
        with self.lock:
            self.requests.append((method, path, copy.deepcopy(params)))
            for i, (prefix, status) in enumerate(self.failures):
                if path.startswith(prefix):
                    del self.failures[i]
                    if status == 0:
                        return 0, {}, b""
                    return status, {}, json.dumps({"error": {"type": "api_error", "message": "stand-in failure"}}).encode()
        if not headers.get("Authorization", headers.get("authorization", "")).startswith("Bearer sk_"):
            return self._json(*_error(401, "Invalid API Key provided"))
        if path.startswith("/v1/checkout/sessions"):
            return self._json(*self.checkout(method, path, params, headers))
        if path == "/v1/billing_portal/sessions" and method == "POST":
            return self._json(*self.portal(params))
        if path.startswith("/v1/prices/") and method == "GET":
            return self._json(*self.price(path.rsplit("/", 1)[1], headers))
        if path.startswith("/v1/subscriptions/") and method == "POST" and path.count("/") == 3:
            params.pop("proration_behavior", None)
            for item in params.get("items") or []:
                if "price" in item:
                    item["plan"] = item.pop("price")
            body = urlencode(flatten(params)).encode()
        status, data = self.forward(method, raw_path, headers, body)
        if isinstance(data, dict) and data.get("object") == "subscription":
            for item in (data.get("items") or {}).get("data") or []:
                plan = item.get("plan") or {}
                item.setdefault("price", {"id": plan.get("id"), "object": "price", "active": plan.get("active"),
                                          "unit_amount": plan.get("amount"), "currency": plan.get("currency"),
                                          "type": "recurring", "recurring": {"interval": plan.get("interval")}})
        return self._json(status, data)

    def _json(self, status: int, data) -> tuple[int, dict, bytes]:
        return status, {}, json.dumps(data).encode()

    def forward(self, method, raw_path, headers, body) -> tuple[int, dict]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            fwd = {"Authorization": headers.get("Authorization", ""),
                   "Content-Type": headers.get("Content-Type", "application/x-www-form-urlencoded")}
            conn.request(method, raw_path, body=body or None, headers=fwd)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw or b"{}")
        except ValueError:
            return resp.status, {"error": {"type": "api_error", "message": raw.decode(errors="replace")[:200]}}

    def _plan(self, plan_id: str, headers) -> tuple[int, dict]:
        return self.forward("GET", f"/v1/plans/{plan_id}", headers, b"")

    def price(self, price_id: str, headers) -> tuple[int, dict]:
        if price_id in self.one_time_prices:
            return 200, self.one_time_prices[price_id]
        status, plan = self._plan(price_id, headers)
        if status != 200:
            return _error(404, f"No such price: '{price_id}'", "resource_missing", "price")
        price = fixture("price")
        price.update(id=plan["id"], active=plan.get("active", True), currency=plan.get("currency"),
                     unit_amount=plan.get("amount"), unit_amount_decimal=str(plan.get("amount")),
                     product=plan.get("product"), type="recurring",
                     recurring={"interval": plan.get("interval"), "interval_count": plan.get("interval_count", 1),
                                "meter": None, "usage_type": "licensed", "trial_period_days": None})
        return 200, price

    def checkout(self, method, path, params, headers) -> tuple[int, dict]:
        parts = path.strip("/").split("/")  # v1 checkout sessions [id] [expire]
        if method == "POST" and len(parts) == 3:
            if params.get("mode") != "subscription":
                return _error(400, "this stand-in only does mode=subscription", param="mode")
            for item in params.get("line_items") or []:
                status, _ = self.price(item.get("price", ""), headers)
                if status != 200:
                    return _error(400, f"No such price: '{item.get('price')}'", "resource_missing", "line_items[0][price]")
            session = fixture("checkout.session")
            sid = "cs_test_" + secrets.token_hex(12)
            session.update(id=sid, mode="subscription", customer=params.get("customer"),
                           client_reference_id=params.get("client_reference_id"),
                           metadata=params.get("metadata") or {}, success_url=params.get("success_url"),
                           cancel_url=params.get("cancel_url"), status="open", payment_status="unpaid",
                           payment_intent=None, subscription=None, created=int(time.time()),
                           expires_at=int(params.get("expires_at") or time.time() + 86400),
                           url=f"https://checkout.stripe.test/c/pay/{sid}")
            self.sessions[sid] = session
            return 200, session
        if len(parts) >= 4:
            session = self.sessions.get(parts[3])
            if session is None:
                return _error(404, f"No such checkout.session: '{parts[3]}'", "resource_missing")
            if method == "POST" and len(parts) == 5 and parts[4] == "expire":
                if session["status"] != "open":
                    return _error(400, f"Only Checkout Sessions with a status in [\"open\"] can be expired. "
                                       f"This Checkout Session has a status of \"{session['status']}\".")
                session["status"] = "expired"
                return 200, session
            if method == "GET" and len(parts) == 4:
                return 200, session
        return _error(404, "Unrecognized request URL")

    def portal(self, params) -> tuple[int, dict]:
        if not params.get("customer"):
            return _error(400, "Missing required param: customer.", param="customer")
        session = fixture("billing_portal.session")
        bid = "bps_" + secrets.token_hex(10)
        session.update(id=bid, customer=params["customer"], return_url=params.get("return_url"), livemode=False,
                       flow=None, url=f"https://billing.stripe.test/p/session/{bid}", created=int(time.time()))
        return 200, session
