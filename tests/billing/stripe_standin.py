"""Loopback Stripe for the billing tests: localstripe plus a stateful stand-in in front of it.

``Localstripe`` runs the real localstripe (a stateful fake Stripe) in a subprocess on 127.0.0.1.
``StripeRouter`` is the address the SDK talks to (``PANEL_STRIPE_API_BASE``). Customers and
payment methods go to localstripe; the billing objects localstripe lacks or gets wrong are kept
here, in Stripe's REST shapes (objects start from Stripe's own examples in ``fixtures3.json``),
following the API reference:

* Products and Prices: ``POST/GET /v1/products``, ``POST /v1/prices`` (``unit_amount``,
  ``currency``, ``recurring[interval|interval_count]``, ``tax_behavior``), ``GET /v1/prices/{id}``,
  ``POST /v1/prices/{id}`` (``active``, ``nickname``, ``tax_behavior``), ``GET /v1/prices`` with
  ``limit``/``starting_after`` pagination and ``expand[]=data.product``.
* Subscriptions with several items: create, retrieve, ``POST /v1/subscriptions/{id}``
  (``items[i][id|price|deleted]``, ``proration_behavior`` ``create_prorations``/``always_invoice``/
  ``none``, ``cancel_at_period_end``), ``DELETE /v1/subscriptions/{id}`` (``prorate``,
  ``invoice_now``: a final invoice whose negative total becomes customer credit), and
  ``POST /v1/subscription_items`` / ``DELETE /v1/subscription_items/{id}`` with proration. Every
  item of a subscription must share one billing interval and currency (Stripe's rule). Prorations
  are computed to the second on the item's period.
* Invoices (paid at once; ``GET /v1/invoices/{id}``, ``GET /v1/invoices?subscription=``), credit
  notes (``POST /v1/credit_notes``: ``amount``, ``credit_amount``, ``refund_amount``) and refunds
  (``POST /v1/refunds``), each bounded by what was paid.
* Checkout sessions (``mode=subscription``, one line item per price, ``automatic_tax``,
  ``billing_address_collection``, ``tax_id_collection``, ``customer_update``,
  ``allow_promotion_codes`` vs ``discounts``) and billing portal sessions.
* Billing Meters: ``POST/GET /v1/billing/meters`` (``display_name``, ``event_name`` unique,
  ``default_aggregation[formula]``), ``GET /v1/billing/meters/{id}``; ``POST
  /v1/billing/meter_events`` (``event_name`` of an active meter, ``payload`` with the meter's
  customer and value keys, ``identifier`` unique: a repeated identifier is refused and never
  counted twice, ``timestamp`` within 35 days); ``POST /v1/billing/meter_event_adjustments``
  (``event_name``, ``type=cancel``, ``cancel[identifier]`` of an event of that meter received within
  24 hours; answered ``pending``, applied at once). ``meter_total(event_name, customer)`` sums what
  counts.
* Metered prices: ``recurring[usage_type]=metered`` with ``recurring[meter]`` (a meter id) and a
  ``unit_amount_decimal``; a metered line item or subscription item takes no ``quantity`` (400
  ``invalid_request_error``, as Stripe answers), a Checkout line item on a licensed price needs one;
  metered items are billed in arrears (nothing at checkout, no prorations).
* ``POST /v1/invoices/create_preview`` (``subscription``): the upcoming invoice (licensed items for
  the next period, metered usage of this period from the meter events, pending prorations, tax and
  balance); the removed ``GET /v1/invoices/upcoming`` answers 404.
* ``Idempotency-Key``: a POST repeated with the same key answers what the first did; the same key
  with other parameters is refused (Stripe's ``idempotency_error``).
* Webhooks: every state change queues an event (fixture ``event`` shape, ``created`` strictly
  increasing); ``deliver(sink)`` sends the queue, signed like Stripe (``t=...,v1=HMAC-SHA256``), to
  a callable or an ``http://127.0.0.1`` URL. ``auto_deliver(url)`` does it from a thread.

``fail_next(prefix, status)`` makes the next request under ``prefix`` fail (``status`` 0: the
connection is dropped).
* ``GET /v1/webhook_endpoints``: answered from ``webhook_endpoints`` (``add_webhook_endpoint``), as
  Stripe's list (``limit``, ``starting_after``, ``has_more``), each in the fixture's
  ``webhook_endpoint`` shape.
"""
from __future__ import annotations

import copy
import hashlib
import hmac
import http.client
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

from dateutil.relativedelta import relativedelta

from panel.testing import _wait_port, free_port, stop_process

# Stripe's example objects (stripe/openapi fixtures3.json, commit f6c2a48), copied next to this file.
with open(os.path.join(os.path.dirname(__file__), "fixtures3.json"), encoding="utf-8") as _fh:
    FIXTURES = json.load(_fh)["resources"]

TAX_RATE = Decimal("0.081")  # the stand-in's Stripe Tax: 8.1 % (Swiss VAT) on every line


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
                if part == "" and isinstance(node, dict):  # expand[]=x
                    node.setdefault("__list__", []).append(value)
                else:
                    node[part] = value
            else:
                node = node.setdefault(part, {})
    return _lists(root)


def _lists(node):
    if isinstance(node, dict):
        if "__list__" in node and len(node) == 1:
            return list(node["__list__"])
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


def _bool(value) -> bool:
    return str(value).lower() in ("true", "1")


def _int(value, default=None):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


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


class StripeError(Exception):
    """Answered as Stripe's error shape."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.code, self.param, self.type = status, code, param, type_

    def body(self) -> dict:
        return {"error": {"type": self.type, "message": str(self), "code": self.code, "param": self.param}}


def _error(status: int, message: str, code: str | None = None, param: str | None = None) -> tuple[int, dict]:
    return status, StripeError(status, message, code, param).body()


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(10)


class StripeRouter:
    """The loopback Stripe the SDK talks to (see the module docstring)."""

    def __init__(self, localstripe_url: str, webhook_secret: str | None = None):
        self.upstream = urlsplit(localstripe_url)
        self.webhook_secret = webhook_secret
        self.sessions: dict[str, dict] = {}
        self.products: dict[str, dict] = {}
        self.prices: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}
        self.pending_items: dict[str, list[dict]] = {}  # subscription id -> proration invoice items
        self.credit_notes: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.balances: dict[str, int] = {}  # customer id -> balance (negative: credit)
        self.meters: dict[str, dict] = {}
        self.meter_events: dict[str, dict] = {}  # identifier -> meter event
        self.meter_adjustments: list[dict] = []
        self.idempotent: dict[tuple[str, str], tuple[str, int, dict]] = {}
        self.webhook_endpoints: list[dict] = []
        self.requests: list[tuple[str, str, dict]] = []
        self.headers_seen: list[tuple[str, str, dict]] = []
        self.failures: list[tuple[str, int]] = []
        self.outbox: list[dict] = []
        self.delivered: list[dict] = []
        self._clock = 0
        self.lock = threading.RLock()
        self._auto: threading.Thread | None = None
        self._auto_stop = threading.Event()
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
        self.stop_auto_deliver()
        self.server.shutdown()
        self.server.server_close()

    # ----------------------------------------------------------------- test controls

    def reset(self) -> None:
        """Forget queued events, scripted failures and idempotency keys (between tests: each test's
        database numbers its rows from 1 again); objects stay."""
        with self.lock:
            self.failures.clear()
            self.outbox.clear()
            self.idempotent.clear()
            self.meters.clear()
            self.meter_events.clear()
            self.meter_adjustments.clear()
            self.webhook_endpoints.clear()

    def age_meter_event(self, identifier: str, seconds: int) -> None:
        """Make Stripe's receipt of meter event ``identifier`` ``seconds`` older (Stripe only
        cancels events within 24 hours of receiving them)."""
        with self.lock:
            self.meter_events[identifier]["created"] -= seconds

    def fail_next(self, prefix: str, status: int = 500) -> None:
        """The next request whose path starts with ``prefix`` answers ``status`` (0: dropped)."""
        with self.lock:
            self.failures.append((prefix, status))

    def add_one_time_price(self, price_id: str, amount: int = 1000, currency: str = "usd") -> dict:
        """A one-time (not recurring) price, as ``POST /v1/prices`` without ``recurring`` makes."""
        return self.create_price(price_id, amount, currency, interval=None)

    def create_product(self, name: str, product_id: str | None = None, emit: bool = False) -> dict:
        """A product (``prod_...``) as ``POST /v1/products`` makes it."""
        with self.lock:
            product = fixture("product")
            product.update(id=product_id or _new_id("prod_"), name=name, active=True, default_price=None,
                           description=None, created=int(time.time()), updated=int(time.time()),
                           package_dimensions=None, type="service")
            self.products[product["id"]] = product
            if emit:
                self.emit("product.created", product)
            return copy.deepcopy(product)

    def create_price(self, price_id: str | None, amount: int | None, currency: str = "usd", *,
                     interval: str | None = "month", interval_count: int = 1, product: str | None = None,
                     tax_behavior: str = "unspecified", active: bool = True, emit: bool = False,
                     meter: str | None = None, unit_amount_decimal: str | None = None) -> dict:
        """A price as ``POST /v1/prices`` makes it (``interval`` ``None``: one-time). ``meter`` (a
        meter id) makes a metered price (``recurring.usage_type=metered``, billed in arrears from the
        meter's events); ``unit_amount_decimal`` a per-unit price in fractions of a minor unit
        (``"1"`` is one cent per unit in USD; ``unit_amount`` is then ``None`` unless whole)."""
        with self.lock:
            if product is None:
                product = next(iter(self.products), None) or self.create_product("hostpanel")["id"]
            price = fixture("price")
            if unit_amount_decimal is not None:
                exact = Decimal(unit_amount_decimal)
                amount = int(exact) if exact == exact.to_integral_value() else None
            else:
                exact = Decimal(amount)
            price.update(id=price_id or _new_id("price_"), active=active, currency=currency, unit_amount=amount,
                         unit_amount_decimal=format(exact.normalize(), "f"), product=product,
                         tax_behavior=tax_behavior, created=int(time.time()), custom_unit_amount=None,
                         transform_quantity=None, type="recurring" if interval else "one_time",
                         recurring={"interval": interval, "interval_count": interval_count, "meter": meter,
                                    "usage_type": "metered" if meter else "licensed",
                                    "trial_period_days": None} if interval else None)
            self.prices[price["id"]] = price
            if emit:
                self.emit("price.created", price)
            return copy.deepcopy(price)

    def update_price(self, price_id: str, **changes) -> dict:
        """Change a price as ``POST /v1/prices/{id}`` would, and queue ``price.updated``."""
        with self.lock:
            price = self.prices[price_id]
            price.update(changes)
            self.emit("price.updated", price)
            return copy.deepcopy(price)

    def complete_session(self, session_id: str, subscription_id: str | None = None, *,
                         emit: bool = False) -> dict:
        """What Stripe does when the customer pays: the session is ``complete`` and ``paid``. Without
        ``subscription_id`` the subscription is made here from the session's line items (with the
        session's ``subscription_data.metadata``, its first invoice paid); ``emit`` queues
        ``customer.subscription.created``, ``invoice.paid`` and ``checkout.session.completed``."""
        with self.lock:
            session = self.sessions[session_id]
            if subscription_id is None:
                items = [{"price": li["price"], **({"quantity": li["quantity"]} if li["quantity"] is not None else {})}
                         for li in session["_line_items"]]
                sub = self._create_subscription({"customer": session["customer"], "items": items,
                                                 "metadata": session["_subscription_metadata"],
                                                 "automatic_tax": session["automatic_tax"]}, emit=emit)
                subscription_id = sub["id"]
            session.update(status="complete", payment_status="paid", subscription=subscription_id)
            if emit:
                self.emit("checkout.session.completed", self._public(session))
            return self._public(session)

    def add_webhook_endpoint(self, url: str, events: list[str], status: str = "enabled") -> dict:
        """A webhook endpoint of the account (Stripe's ``webhook_endpoint`` object), listed by
        ``GET /v1/webhook_endpoints`` in the order added."""
        endpoint = fixture("webhook_endpoint")
        endpoint.update(id=f"we_{secrets.token_hex(8)}", url=url, enabled_events=list(events), status=status,
                        description=None)
        with self.lock:
            self.webhook_endpoints.append(endpoint)
        return endpoint

    def recorded(self, method: str, prefix: str) -> list[dict]:
        """The decoded bodies of recorded requests (``method`` and path prefix)."""
        return [body for m, path, body in self.requests if m == method and path.startswith(prefix)]

    def idempotency_keys(self, method: str, prefix: str) -> list[str]:
        """The ``Idempotency-Key`` headers of recorded requests (``method`` and path prefix)."""
        return [h.get("idempotency-key", "") for m, path, h in self.headers_seen
                if m == method and path.startswith(prefix)]

    def live_subscriptions(self) -> list[dict]:
        """Subscriptions that would still charge someone (not ``canceled``/``incomplete_expired``
        and not set to cancel at period end)."""
        with self.lock:
            return [copy.deepcopy(s) for s in self.subscriptions.values()
                    if s["status"] not in ("canceled", "incomplete_expired") and not s["cancel_at_period_end"]]

    def set_subscription_status(self, sub_id: str, status: str) -> dict:
        """Move a subscription to ``status`` (``past_due``, ``paused``, ``active``...) as Stripe's
        dunning or the portal would, queueing the matching event."""
        with self.lock:
            sub = self.subscriptions[sub_id]
            old = sub["status"]
            sub["status"] = status
            kind = {"paused": "customer.subscription.paused"}.get(status, "customer.subscription.updated")
            if old == "paused" and status == "active":
                kind = "customer.subscription.resumed"
            self.emit(kind, self._sub_public(sub))
            return self._sub_public(sub)

    def end_period(self, sub_id: str) -> dict:
        """The period of a subscription set to cancel at period end is over: Stripe cancels it."""
        with self.lock:
            sub = self.subscriptions[sub_id]
            sub.update(status="canceled", ended_at=self.now(), canceled_at=self.now())
            self.emit("customer.subscription.deleted", self._sub_public(sub))
            return self._sub_public(sub)

    # ----------------------------------------------------------------- webhooks

    def now(self) -> int:
        return int(time.time())

    def emit(self, type_: str, obj: dict) -> dict:
        """Queue an event carrying a copy of ``obj`` (``created`` strictly increasing)."""
        with self.lock:
            self._clock = max(self._clock + 1, int(time.time()))
            event = fixture("event")
            event.update(id=_new_id("evt_"), type=type_, created=self._clock, livemode=False,
                         pending_webhooks=1, api_version="2026-10-28.endive", request={"id": None,
                                                                                       "idempotency_key": None})
            event["data"] = {"object": copy.deepcopy(obj)}
            self.outbox.append(event)
            return event

    def sign(self, payload: str, timestamp: int | None = None) -> str:
        ts = int(timestamp if timestamp is not None else time.time())
        mac = hmac.new(self.webhook_secret.encode(), f"{ts}.{payload}".encode(), hashlib.sha256).hexdigest()
        return f"t={ts},v1={mac}"

    def take_events(self, *types: str) -> list[dict]:
        """Remove and return the queued events (only those of ``types`` when given)."""
        with self.lock:
            taken = [e for e in self.outbox if not types or e["type"] in types]
            self.outbox = [e for e in self.outbox if e not in taken]
            return taken

    def deliver(self, sink, events: list[dict] | None = None) -> list:
        """Send queued events (or ``events``) signed to ``sink``: a callable ``(payload, header)``
        returning a response, or an http URL. Returns the responses / HTTP statuses."""
        events = self.take_events() if events is None else events
        out = []
        for event in events:
            payload = json.dumps(event)
            header = self.sign(payload)
            if callable(sink):
                out.append(sink(payload, header))
            else:
                parts = urlsplit(sink)
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                try:
                    conn.request("POST", parts.path, body=payload.encode(),
                                 headers={"Content-Type": "application/json", "Stripe-Signature": header})
                    out.append(conn.getresponse().status)
                finally:
                    conn.close()
            self.delivered.append(event)
        return out

    def auto_deliver(self, url: str, every: float = 0.3) -> None:
        """Deliver queued events to ``url`` from a background thread (the browser tests)."""
        self._auto_stop.clear()

        def loop():
            while not self._auto_stop.wait(every):
                try:
                    self.deliver(url)
                except OSError:
                    pass

        self._auto = threading.Thread(target=loop, name="stripe-webhooks", daemon=True)
        self._auto.start()

    def stop_auto_deliver(self) -> None:
        self._auto_stop.set()
        if self._auto is not None:
            self._auto.join(timeout=5)
            self._auto = None

    # ----------------------------------------------------------------- routing

    def handle(self, method: str, raw_path: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        parts = urlsplit(raw_path)
        path = parts.path
        params = unflatten(parse_qsl(body.decode(), keep_blank_values=True)) if body else {}
        if method in ("GET", "DELETE") and parts.query:
            params.update(unflatten(parse_qsl(parts.query, keep_blank_values=True)))
        lower = {k.lower(): v for k, v in headers.items()}
        with self.lock:
            self.requests.append((method, path, copy.deepcopy(params)))
            self.headers_seen.append((method, path, {"idempotency-key": lower.get("idempotency-key", "")}))
            for i, (prefix, status) in enumerate(self.failures):
                if path.startswith(prefix):
                    del self.failures[i]
                    if status == 0:
                        return 0, {}, b""
                    return status, {}, json.dumps({"error": {"type": "api_error", "message": "stand-in failure"}}).encode()
        if not lower.get("authorization", "").startswith("Bearer sk_"):
            return self._json(*_error(401, "Invalid API Key provided"))
        key = lower.get("idempotency-key")
        if method == "POST" and key:
            fingerprint = json.dumps(params, sort_keys=True)
            with self.lock:
                seen = self.idempotent.get((path, key))
            if seen is not None:
                if seen[0] != fingerprint:
                    return self._json(400, {"error": {
                        "type": "idempotency_error", "code": "idempotency_key_in_use",
                        "message": "Keys for idempotent requests can only be used with the same parameters "
                                   "they were first used with."}})
                return self._json(seen[1], copy.deepcopy(seen[2]))
        try:
            answer = self.route(method, path, params, headers, body, raw_path)
        except StripeError as exc:
            answer = (exc.status, exc.body())
        if method == "POST" and key and answer[0] < 500:
            with self.lock:
                self.idempotent[(path, key)] = (json.dumps(params, sort_keys=True), answer[0], copy.deepcopy(answer[1]))
        return self._json(*answer)

    def route(self, method, path, params, headers, body, raw_path) -> tuple[int, dict]:
        seg = path.strip("/").split("/")  # ["v1", resource, id?, action?]
        resource = seg[1] if len(seg) > 1 else ""
        ident = seg[2] if len(seg) > 2 else None
        if path == "/v1/webhook_endpoints" and method == "GET":
            return self.list_webhook_endpoints(dict(parse_qsl(urlsplit(raw_path).query)))
        with self.lock:
            if resource == "checkout":
                return self.checkout(method, seg, params)
            if path == "/v1/billing_portal/sessions" and method == "POST":
                return self.portal(params)
            if resource == "products" and (method == "POST" and ident is None or ident in self.products):
                return self.product_api(method, ident, params)
            if resource == "prices":
                return self.price_api(method, ident, params)
            if resource == "subscriptions":
                return self.subscription_api(method, ident, params)
            if resource == "subscription_items":
                return self.item_api(method, ident, params)
            if resource == "invoices":
                return self.invoice_api(method, ident, params)
            if resource == "credit_notes" and method == "POST" and ident is None:
                return 200, self.create_credit_note(params)
            if resource == "refunds" and method == "POST" and ident is None:
                return 200, self.create_refund(params)
            if resource == "billing" and ident in ("meters", "meter_events", "meter_event_adjustments"):
                return self.meter_api(method, ident, seg[3] if len(seg) > 3 else None, params)
        return self.forward(method, raw_path, headers, body)

    # ----------------------------------------------------------------- billing meters

    def create_meter(self, event_name: str, formula: str = "sum", display_name: str | None = None) -> dict:
        """A meter (fixture ``billing.meter``) made as the operator would in the dashboard."""
        with self.lock:
            meter = fixture("billing.meter")
            meter.update(id=_new_id("mtr"), event_name=event_name, display_name=display_name or event_name,
                         default_aggregation={"formula": formula}, created=self.now(), updated=self.now(),
                         livemode=False, customer_mapping={"event_payload_key": "stripe_customer_id", "type": "by_id"})
            self.meters[meter["id"]] = meter
            return copy.deepcopy(meter)

    def meter_total(self, event_name: str, customer: str) -> Decimal:
        """The sum of the values counted (not cancelled) of ``event_name`` for ``customer``."""
        with self.lock:
            return sum((Decimal(e["payload"]["value"]) for e in self.meter_events.values()
                        if e["event_name"] == event_name and not e.get("_cancelled")
                        and e["payload"].get("stripe_customer_id") == customer), Decimal(0))

    def meter_api(self, method, what, ident, params) -> tuple[int, dict]:
        if what == "meters":
            if method == "GET" and ident is None:
                data = sorted(self.meters.values(), key=lambda m: m["id"])
                return 200, {"object": "list", "url": "/v1/billing/meters", "has_more": False, "data": copy.deepcopy(data)}
            if method == "GET":
                if ident not in self.meters:
                    return _error(404, f"No such billing meter: '{ident}'", "resource_missing", "id")
                return 200, copy.deepcopy(self.meters[ident])
            if method == "POST" and ident is None:
                name = params.get("event_name") or ""
                if not name or not params.get("display_name"):
                    return _error(400, "Missing required param: event_name and display_name.", "parameter_missing")
                if any(m["event_name"] == name for m in self.meters.values()):
                    return _error(400, f"A meter with event_name {name} already exists.", "resource_already_exists",
                                  "event_name")
                formula = (params.get("default_aggregation") or {}).get("formula") or "sum"
                return 200, self.create_meter(name, formula, params.get("display_name"))
        if what == "meter_events" and method == "POST" and ident is None:
            name, payload, identifier = params.get("event_name"), params.get("payload") or {}, params.get("identifier")
            meter = next((m for m in self.meters.values() if m["event_name"] == name and m["status"] == "active"), None)
            if meter is None:
                return _error(400, f"No active meter was found for event_name {name}.", "resource_missing", "event_name")
            for key in (meter["customer_mapping"]["event_payload_key"], meter["value_settings"]["event_payload_key"]):
                if not payload.get(key):
                    return _error(400, f"Missing required payload key: {key}.", "parameter_missing", f"payload[{key}]")
            try:
                Decimal(payload["value"])
            except Exception:
                return _error(400, "payload[value] must be a number.", "parameter_invalid_string", "payload[value]")
            timestamp = _int(params.get("timestamp"), self.now())
            if timestamp < time.time() - 35 * 86400 or timestamp > time.time() + 300:
                return _error(400, "timestamp must be within the past 35 calendar days or up to 5 minutes in the "
                                   "future.", "parameter_invalid_integer", "timestamp")
            identifier = identifier or _new_id("idmp")
            if identifier in self.meter_events:
                return _error(400, f"An event with identifier {identifier} already exists.",
                              "resource_already_exists", "identifier")
            event = fixture("billing.meter_event")
            event.update(event_name=name, identifier=identifier, payload=dict(payload), timestamp=timestamp,
                         created=self.now(), livemode=False)
            self.meter_events[identifier] = event
            return 200, copy.deepcopy(event)
        if what == "meter_event_adjustments" and method == "POST" and ident is None:
            target = (params.get("cancel") or {}).get("identifier")
            if not params.get("event_name"):
                return _error(400, "Missing required param: event_name.", "parameter_missing", "event_name")
            if params.get("type") != "cancel":
                return _error(400, "Invalid type: must be cancel.", "parameter_invalid_string", "type")
            event = self.meter_events.get(target or "")
            if event is None or event["event_name"] != params["event_name"]:
                return _error(400, f"No meter event with identifier {target} for event_name "
                                   f"{params['event_name']}.", "resource_missing", "cancel[identifier]")
            if event["created"] < self.now() - 86400:
                return _error(400, "You can only cancel events within 24 hours of Stripe receiving them.",
                              param="cancel[identifier]")
            event["_cancelled"] = True
            adjustment = fixture("billing.meter_event_adjustment")
            # Stripe answers ``pending`` and cancels asynchronously; the stand-in cancels at once
            adjustment.update(event_name=params["event_name"], cancel={"identifier": target}, type="cancel",
                              status="pending", livemode=False)
            self.meter_adjustments.append(adjustment)
            return 200, copy.deepcopy(adjustment)
        return _error(404, f"Unrecognized request URL ({method} /v1/billing/{what}).")

    def list_webhook_endpoints(self, query: dict) -> tuple[int, dict]:
        """Stripe's list envelope over ``webhook_endpoints``: ``limit`` 1..100 (default 10),
        ``starting_after`` an id of the list (else 400 resource_missing)."""
        try:
            limit = int(query.get("limit", 10))
        except ValueError:
            return _error(400, "Invalid integer: limit", "parameter_invalid_integer", "limit")
        if not 1 <= limit <= 100:
            return _error(400, "This value must be between 1 and 100 (limit)", "parameter_invalid_integer", "limit")
        with self.lock:
            items = [copy.deepcopy(e) for e in self.webhook_endpoints]
        start = 0
        after = query.get("starting_after")
        if after:
            ids = [e["id"] for e in items]
            if after not in ids:
                return _error(400, f"No such webhook_endpoint: '{after}'", "resource_missing", "starting_after")
            start = ids.index(after) + 1
        page = items[start:start + limit]
        return 200, {"object": "list", "url": "/v1/webhook_endpoints", "data": page,
                     "has_more": start + limit < len(items)}

    def _json(self, status: int, data) -> tuple[int, dict, bytes]:
        return status, {}, json.dumps(data).encode()

    def forward(self, method, raw_path, headers, body) -> tuple[int, dict]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            fwd = {"Authorization": headers.get("Authorization", headers.get("authorization", "")),
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

    # ----------------------------------------------------------------- products and prices

    def product_api(self, method, ident, params) -> tuple[int, dict]:
        if ident is None:
            product = self.create_product(params.get("name") or "product", params.get("id"))
            self.emit("product.created", product)
            return 200, product
        product = self.products[ident]
        if method == "POST":
            for key in ("name", "description"):
                if key in params:
                    product[key] = params[key]
            if "active" in params:
                product["active"] = _bool(params["active"])
            product["updated"] = self.now()
            self.emit("product.updated", product)
        return 200, copy.deepcopy(product)

    def _price_public(self, price: dict, expand: list | None = None) -> dict:
        out = copy.deepcopy(price)
        if expand and any(e in ("product", "data.product") for e in expand) and out["product"] in self.products:
            out["product"] = copy.deepcopy(self.products[out["product"]])
        return out

    def price_api(self, method, ident, params) -> tuple[int, dict]:
        expand = params.get("expand") or []
        if ident is None and method == "POST":
            recurring = params.get("recurring") or {}
            product = params.get("product")
            if product not in self.products:
                raise StripeError(400, f"No such product: '{product}'", "resource_missing", "product")
            usage_type = recurring.get("usage_type", "licensed")
            meter = recurring.get("meter")
            if usage_type == "metered" and not meter:
                raise StripeError(400, "Metered prices must be backed by a meter: set `recurring[meter]`.",
                                  "parameter_missing", "recurring[meter]")
            if meter and (usage_type != "metered" or meter not in self.meters):
                raise StripeError(400, f"No such billing meter: '{meter}'" if meter not in self.meters
                                  else "`recurring[meter]` requires `recurring[usage_type]=metered`.",
                                  "resource_missing" if meter not in self.meters else None, "recurring[meter]")
            price = self.create_price(params.get("id"), _int(params.get("unit_amount"), 0), params.get("currency", "usd"),
                                      interval=recurring.get("interval"),
                                      interval_count=_int(recurring.get("interval_count"), 1), product=product,
                                      tax_behavior=params.get("tax_behavior", "unspecified"),
                                      active=_bool(params.get("active", "true")), meter=meter,
                                      unit_amount_decimal=params.get("unit_amount_decimal"))
            self.emit("price.created", price)
            return 200, price
        if ident is None:  # list, paginated by id order
            rows = sorted(self.prices.values(), key=lambda p: p["id"])
            if "active" in params:
                rows = [p for p in rows if p["active"] == _bool(params["active"])]
            if params.get("product"):
                rows = [p for p in rows if p["product"] == params["product"]]
            after = params.get("starting_after")
            if after:
                rows = [p for p in rows if p["id"] > after]
            limit = max(1, min(_int(params.get("limit"), 10), 100))
            page = rows[:limit]
            return 200, {"object": "list", "url": "/v1/prices", "has_more": len(rows) > limit,
                         "data": [self._price_public(p, expand) for p in page]}
        price = self.prices.get(ident)
        if price is None:
            raise StripeError(404, f"No such price: '{ident}'", "resource_missing", "price")
        if method == "POST":
            for key in ("nickname", "tax_behavior"):
                if key in params:
                    price[key] = params[key]
            if "active" in params:
                price["active"] = _bool(params["active"])
            self.emit("price.updated", price)
        return 200, self._price_public(price, expand)

    def _price(self, price_id: str, param: str) -> dict:
        price = self.prices.get(price_id or "")
        if price is None:
            raise StripeError(400, f"No such price: '{price_id}'", "resource_missing", param)
        if not price["active"]:
            raise StripeError(400, f"The price specified is inactive. This field only accepts active prices.",
                              param=param)
        if price["type"] != "recurring":
            raise StripeError(400, "The price specified is set to `type=one_time` but this field only "
                                   "accepts prices with `type=recurring`.", param=param)
        return price

    # ----------------------------------------------------------------- subscriptions

    @staticmethod
    def _period_end(start: int, price: dict) -> int:
        rec = price["recurring"]
        step = {"day": relativedelta(days=1), "week": relativedelta(weeks=1), "month": relativedelta(months=1),
                "year": relativedelta(years=1)}[rec["interval"]] * int(rec["interval_count"])
        return int((datetime.fromtimestamp(start, tz=timezone.utc) + step).timestamp())

    def _check_shared_interval(self, prices: list[dict]) -> None:
        shapes = {(p["recurring"]["interval"], int(p["recurring"]["interval_count"])) for p in prices}
        currencies = {p["currency"] for p in prices}
        if len(shapes) > 1:
            raise StripeError(400, "The price specified has a different billing interval than the other items "
                                   "on this subscription; all items must share the same `recurring[interval]` "
                                   "and `recurring[interval_count]`.", param="items")
        if len(currencies) > 1:
            raise StripeError(400, "All prices on a subscription must have the same `currency`.", param="items")

    @staticmethod
    def _is_metered(price: dict) -> bool:
        return ((price.get("recurring") or {}).get("usage_type")) == "metered"

    def _quantity(self, price: dict, item: dict, where: str | None, *, required: bool = False) -> int | None:
        """Stripe's rule for ``quantity``: a metered price takes none (400 ``invalid_request_error``:
        the usage comes from its meter); a licensed price takes one (Checkout requires it, a
        subscription defaults it to 1). ``None`` for a metered price."""
        given = item.get("quantity") if isinstance(item, dict) else None
        if self._is_metered(price):
            if given not in (None, "") and where is None:  # POST /v1/subscription_items
                raise StripeError(400, "You cannot set the quantity for metered plans.", param="quantity")
            if given not in (None, ""):
                raise StripeError(400, f"Quantity should not be specified where usage_type is `metered`. Remove "
                                       f"quantity from `{where}`.", param=f"{where}[quantity]")
            return None
        if given in (None, "") and required:
            raise StripeError(400, f"Quantity is required. Add `quantity` to `{where}`.", "parameter_missing",
                              f"{where}[quantity]")
        return _int(given, 1)

    def _item(self, sub: dict, price: dict, quantity: int | None, start: int) -> dict:
        item = fixture("subscription_item")
        item.update(id=_new_id("si_"), created=start, price=copy.deepcopy(price), quantity=quantity,
                    subscription=sub["id"], metadata={}, discounts=[], tax_rates=[], billing_thresholds=None,
                    current_period_start=sub["_period_start"], current_period_end=sub["_period_end"])
        item["plan"] = {"id": price["id"], "object": "plan", "active": price["active"], "amount": price["unit_amount"],
                        "currency": price["currency"], "interval": price["recurring"]["interval"],
                        "interval_count": price["recurring"]["interval_count"], "product": price["product"],
                        "usage_type": price["recurring"]["usage_type"], "billing_scheme": "per_unit",
                        "meter": price["recurring"].get("meter")}
        if quantity is None:  # a metered item has no quantity (Stripe leaves the field out)
            item.pop("quantity", None)
        return item

    def _sub_public(self, sub: dict) -> dict:
        return {k: copy.deepcopy(v) for k, v in sub.items() if not k.startswith("_")}

    def _unused_fraction(self, sub: dict, at: int | None = None) -> Decimal:
        at = self.now() if at is None else at
        start, end = sub["_period_start"], sub["_period_end"]
        if end <= start:
            return Decimal(0)
        return max(Decimal(0), min(Decimal(1), Decimal(end - at) / Decimal(end - start)))

    def _proration(self, sub: dict, price: dict, quantity: int | None, sign: int, description: str) -> dict | None:
        if self._is_metered(price) or quantity is None:  # billed in arrears from the meter: no proration
            return None
        amount = (Decimal(price["unit_amount"] * quantity) * self._unused_fraction(sub)).quantize(
            Decimal(1), rounding=ROUND_HALF_UP)
        ii = fixture("invoiceitem")
        ii.update(id=_new_id("ii_"), amount=int(sign * amount), currency=price["currency"], customer=sub["customer"],
                  date=self.now(), description=description, invoice=None, proration=True, quantity=quantity,
                  period={"start": self.now(), "end": sub["_period_end"]}, net_amount=int(sign * amount),
                  quantity_decimal=str(quantity), parent={"subscription_details": {"subscription": sub["id"]},
                                                         "type": "subscription_details"})
        ii["_price"] = price["id"]
        self.pending_items.setdefault(sub["id"], []).append(ii)
        return ii

    def _invoice(self, sub: dict, lines: list[dict], reason: str, emit: bool = True) -> dict:
        """An invoice for ``lines`` (``{"amount", "description", "price", "proration"}``), paid at once;
        a negative total becomes customer credit."""
        inv = fixture("invoice")
        iid = _new_id("in_")
        subtotal = sum(int(line["amount"]) for line in lines)
        tax = added = 0
        if (sub.get("automatic_tax") or {}).get("enabled"):
            for line in lines:
                inclusive = (self.prices.get(line.get("price") or "") or {}).get("tax_behavior") == "inclusive"
                line_tax = self._tax(int(line["amount"]), inclusive)
                tax += line_tax
                added += 0 if inclusive else line_tax
        total = subtotal + added
        starting = self.balances.get(sub["customer"], 0)
        due = total + starting
        ending = 0
        if due < 0:
            ending, due = due, 0
        self.balances[sub["customer"]] = ending
        inv.update(id=iid, customer=sub["customer"], subscription=None, status="paid", currency=sub["currency"],
                   subtotal=subtotal, total=total, amount_due=due, amount_paid=due, amount_remaining=0, starting_balance=starting,
                   ending_balance=ending, billing_reason=reason, attempt_count=1, attempted=True,
                   created=self.now(), number=f"HP-{iid[-6:].upper()}", hosted_invoice_url=f"https://invoice.stripe.test/i/{iid}",
                   period_start=sub["_period_start"], period_end=sub["_period_end"], paid=True,
                   automatic_tax={"enabled": bool((sub.get("automatic_tax") or {}).get("enabled")),
                                  "status": "complete" if (sub.get("automatic_tax") or {}).get("enabled") else None,
                                  "liability": {"type": "self"}, "provider": "stripe", "disabled_reason": None},
                   total_taxes=[{"amount": tax, "tax_behavior": "exclusive", "type": "tax_rate_details"}] if tax else [],
                   post_payment_credit_notes_amount=0, pre_payment_credit_notes_amount=0)
        line_data = []
        for line in lines:
            item = fixture("invoice")["lines"]["data"][0]
            item.update(id=_new_id("il_"), amount=int(line["amount"]), currency=sub["currency"],
                        description=line["description"], invoice=iid, subscription=sub["id"],
                        period={"start": sub["_period_start"], "end": sub["_period_end"]}, subtotal=int(line["amount"]))
            item["pricing"] = {"type": "price_details", "price_details": {"price": line.get("price")},
                               "unit_amount_decimal": None}
            line_data.append(item)
        inv["lines"] = {"object": "list", "data": line_data, "has_more": False, "url": f"/v1/invoices/{iid}/lines"}
        inv["parent"] = {"quote_details": None, "type": "subscription_details",
                         "subscription_details": {"subscription": sub["id"], "metadata": copy.deepcopy(sub["metadata"])}}
        inv["_credited"] = 0
        self.invoices[iid] = inv
        sub["latest_invoice"] = iid
        if emit:
            self.emit("invoice.paid", self._public(inv))
        return inv

    @staticmethod
    def _tax(amount: int, inclusive: bool) -> int:
        """Stripe Tax at ``TAX_RATE`` on ``amount`` minor units (included in it, or on top)."""
        amount = Decimal(amount)
        tax = amount - amount / (1 + TAX_RATE) if inclusive else amount * TAX_RATE
        return int(tax.quantize(Decimal(1), rounding=ROUND_HALF_UP))

    @staticmethod
    def _public(obj: dict) -> dict:
        return {k: copy.deepcopy(v) for k, v in obj.items() if not k.startswith("_")}

    def _create_subscription(self, params: dict, emit: bool = True) -> dict:
        items = params.get("items") or []
        if not items:
            raise StripeError(400, "Missing required param: items.", param="items")
        prices = [self._price(i.get("price"), f"items[{n}][price]") for n, i in enumerate(items)]
        self._check_shared_interval(prices)
        quantities = [self._quantity(p, i, f"items[{n}]") for n, (p, i) in enumerate(zip(prices, items))]
        start = self.now()
        sub = fixture("subscription")
        sid = _new_id("sub_")
        sub.update(id=sid, customer=params.get("customer"), status="active", created=start, start_date=start,
                   billing_cycle_anchor=start, cancel_at=None, cancel_at_period_end=False, canceled_at=None,
                   ended_at=None, trial_end=None, trial_start=None, pause_collection=None, schedule=None,
                   currency=prices[0]["currency"], metadata=dict(params.get("metadata") or {}), discounts=[],
                   latest_invoice=None, pending_update=None, test_clock=None, description=None,
                   automatic_tax={"enabled": _bool((params.get("automatic_tax") or {}).get("enabled", False)),
                                  "liability": {"type": "self"} if (params.get("automatic_tax") or {}).get("enabled") else None,
                                  "disabled_reason": None},
                   cancellation_details={"comment": None, "feedback": None, "reason": None})
        sub["_period_start"] = start
        sub["_period_end"] = self._period_end(start, prices[0])
        sub["items"] = {"object": "list", "has_more": False, "url": f"/v1/subscription_items?subscription={sid}",
                        "data": [self._item(sub, p, q, start) for p, q in zip(prices, quantities)]}
        self.subscriptions[sid] = sub
        if emit:
            self.emit("customer.subscription.created", self._sub_public(sub))
        self._invoice(sub, [{"amount": p["unit_amount"] * q, "price": p["id"], "description": f"{q} × {p['id']}"}
                            for p, q in zip(prices, quantities) if q is not None],  # metered: in arrears
                      "subscription_create", emit=emit)
        return sub

    def _sub(self, ident: str) -> dict:
        sub = self.subscriptions.get(ident or "")
        if sub is None:
            raise StripeError(404, f"No such subscription: '{ident}'", "resource_missing", "id")
        return sub

    def _settle_prorations(self, sub: dict, behavior: str) -> None:
        if behavior == "always_invoice" and self.pending_items.get(sub["id"]):
            items = self.pending_items.pop(sub["id"])
            self._invoice(sub, [{"amount": ii["amount"], "description": ii["description"], "price": ii.get("_price"),
                                 "proration": True} for ii in items], "subscription_update")

    def subscription_api(self, method, ident, params) -> tuple[int, dict]:
        if ident is None and method == "POST":
            return 200, self._sub_public(self._create_subscription(params))
        if ident is None:
            subs = [s for s in self.subscriptions.values()
                    if not params.get("customer") or s["customer"] == params["customer"]]
            return 200, {"object": "list", "url": "/v1/subscriptions", "has_more": False,
                         "data": [self._sub_public(s) for s in subs]}
        sub = self._sub(ident)
        if method == "GET":
            return 200, self._sub_public(sub)
        if sub["status"] == "canceled":
            raise StripeError(400, "A canceled subscription can only update its cancellation_details and metadata.",
                              param=None)
        if method == "DELETE":
            prorate, invoice_now = _bool(params.get("prorate", "false")), _bool(params.get("invoice_now", "false"))
            if prorate:
                for item in sub["items"]["data"]:
                    self._proration(sub, item["price"], item.get("quantity"), -1, f"Unused time on {item['price']['id']}")
            if invoice_now and self.pending_items.get(sub["id"]):
                items = self.pending_items.pop(sub["id"])
                self._invoice(sub, [{"amount": ii["amount"], "description": ii["description"], "price": ii.get("_price"),
                                     "proration": True} for ii in items], "subscription_cycle")
            sub.update(status="canceled", canceled_at=self.now(), ended_at=self.now(), cancel_at_period_end=False)
            self.emit("customer.subscription.deleted", self._sub_public(sub))
            return 200, self._sub_public(sub)
        behavior = params.get("proration_behavior", "create_prorations")
        if behavior not in ("create_prorations", "always_invoice", "none"):
            raise StripeError(400, f"Invalid proration_behavior: {behavior}", param="proration_behavior")
        if "items" in params:
            items = params["items"]
            current = {i["id"]: i for i in sub["items"]["data"]}
            new_data = list(sub["items"]["data"])
            for n, change in enumerate(items):
                if change.get("id") and change["id"] not in current:
                    raise StripeError(400, f"No such subscription item: '{change['id']}'", "resource_missing",
                                      f"items[{n}][id]")
                if change.get("id") and _bool(change.get("deleted", "false")):
                    old = current[change["id"]]
                    if behavior != "none":
                        self._proration(sub, old["price"], old.get("quantity"), -1, f"Unused time on {old['price']['id']}")
                    new_data = [i for i in new_data if i["id"] != change["id"]]
                elif change.get("id") and change.get("price"):
                    old = current[change["id"]]
                    price = self._price(change["price"], f"items[{n}][price]")
                    if price["id"] != old["price"]["id"]:
                        if behavior != "none":
                            self._proration(sub, old["price"], old.get("quantity"), -1, f"Unused time on {old['price']['id']}")
                        fresh = self._item(sub, price, None if self._is_metered(price) else old.get("quantity", 1),
                                           self.now())
                        fresh["id"] = old["id"]
                        new_data = [fresh if i["id"] == old["id"] else i for i in new_data]
                elif change.get("price"):
                    price = self._price(change["price"], f"items[{n}][price]")
                    new_data.append(self._item(sub, price, self._quantity(price, change, f"items[{n}]"), self.now()))
            self._check_shared_interval([i["price"] for i in new_data])
            old_shape = (sub["items"]["data"][0]["price"]["recurring"]["interval"],
                         sub["items"]["data"][0]["price"]["recurring"]["interval_count"])
            new_shape = (new_data[0]["price"]["recurring"]["interval"], new_data[0]["price"]["recurring"]["interval_count"])
            if old_shape != new_shape:  # a new interval resets the billing cycle: the new period is invoiced now
                sub["_period_start"] = self.now()
                sub["_period_end"] = self._period_end(self.now(), new_data[0]["price"])
                for item in new_data:
                    item.update(current_period_start=sub["_period_start"], current_period_end=sub["_period_end"])
                behavior = "always_invoice"
            if behavior != "none":
                for item in new_data:
                    if item["id"] not in current or item["price"]["id"] != current[item["id"]]["price"]["id"]:
                        if old_shape == new_shape:
                            self._proration(sub, item["price"], item.get("quantity"), 1, f"Remaining time on {item['price']['id']}")
                        elif "quantity" in item:  # a metered item is billed in arrears
                            self.pending_items.setdefault(sub["id"], []).append(
                                {"amount": item["price"]["unit_amount"] * item["quantity"], "_price": item["price"]["id"],
                                 "description": f"1 × {item['price']['id']}"})
            sub["items"]["data"] = new_data
        if "cancel_at_period_end" in params:
            sub["cancel_at_period_end"] = _bool(params["cancel_at_period_end"])
            sub["cancel_at"] = sub["_period_end"] if sub["cancel_at_period_end"] else None
        if "metadata" in params:
            sub["metadata"].update(params["metadata"])
        self._settle_prorations(sub, behavior)
        self.emit("customer.subscription.updated", self._sub_public(sub))
        return 200, self._sub_public(sub)

    def item_api(self, method, ident, params) -> tuple[int, dict]:
        behavior = params.get("proration_behavior", "create_prorations")
        if behavior not in ("create_prorations", "always_invoice", "none"):
            raise StripeError(400, f"Invalid proration_behavior: {behavior}", param="proration_behavior")
        if ident is None and method == "POST":
            sub = self._sub(params.get("subscription"))
            if sub["status"] == "canceled":
                raise StripeError(400, "This subscription is canceled.", param="subscription")
            price = self._price(params.get("price"), "price")
            if any(i["price"]["id"] == price["id"] for i in sub["items"]["data"]):
                raise StripeError(400, "Cannot add multiple subscription items with the same price to the same "
                                       "subscription.", param="price")
            self._check_shared_interval([i["price"] for i in sub["items"]["data"]] + [price])
            item = self._item(sub, price, self._quantity(price, params, None), self.now())
            sub["items"]["data"].append(item)
            if behavior != "none":
                self._proration(sub, price, item.get("quantity"), 1, f"Remaining time on {price['id']}")
            self._settle_prorations(sub, behavior)
            self.emit("customer.subscription.updated", self._sub_public(sub))
            return 200, copy.deepcopy(item)
        if ident is None:  # list
            sub = self._sub(params.get("subscription"))
            return 200, {"object": "list", "url": "/v1/subscription_items", "has_more": False,
                         "data": copy.deepcopy(sub["items"]["data"])}
        for sub in self.subscriptions.values():
            for item in sub["items"]["data"]:
                if item["id"] != ident:
                    continue
                if method == "GET":
                    return 200, copy.deepcopy(item)
                if method == "DELETE":
                    if len(sub["items"]["data"]) == 1:
                        raise StripeError(400, "A subscription must have at least one active plan. To cancel a "
                                               "subscription, please use the cancel API endpoint on /v1/subscriptions.")
                    if behavior != "none":
                        self._proration(sub, item["price"], item.get("quantity"), -1, f"Unused time on {item['price']['id']}")
                    sub["items"]["data"] = [i for i in sub["items"]["data"] if i["id"] != ident]
                    self._settle_prorations(sub, behavior)
                    self.emit("customer.subscription.updated", self._sub_public(sub))
                    return 200, {"id": ident, "object": "subscription_item", "deleted": True}
        raise StripeError(404, f"No such subscription_item: '{ident}'", "resource_missing", "id")

    # ----------------------------------------------------------------- invoices, credit notes, refunds

    def invoice_api(self, method, ident, params) -> tuple[int, dict]:
        if ident == "create_preview" and method == "POST":
            return 200, self.create_preview(params)
        if ident == "upcoming":  # removed from Stripe's API (2025-03-31.basil): create_preview replaces it
            raise StripeError(404, "Unrecognized request URL (GET: /v1/invoices/upcoming). The upcoming invoice "
                                   "endpoints were removed: use POST /v1/invoices/create_preview.")
        if ident is None and method == "GET":
            rows = [i for i in self.invoices.values()
                    if (not params.get("subscription")
                        or i["parent"]["subscription_details"]["subscription"] == params["subscription"])
                    and (not params.get("customer") or i["customer"] == params["customer"])]
            rows.sort(key=lambda i: (i["created"], i["id"]), reverse=True)
            limit = max(1, min(_int(params.get("limit"), 10), 100))
            return 200, {"object": "list", "url": "/v1/invoices", "has_more": len(rows) > limit,
                         "data": [self._public(i) for i in rows[:limit]]}
        inv = self.invoices.get(ident or "")
        if inv is None:
            raise StripeError(404, f"No such invoice: '{ident}'", "resource_missing", "id")
        return 200, self._public(inv)

    def meter_usage(self, meter_id: str | None, customer: str, start: int, end: int) -> Decimal:
        """The sum of the counted (not cancelled) events of meter ``meter_id`` for ``customer`` whose
        ``timestamp`` is in ``[start, end)`` (the meter's ``sum`` aggregation)."""
        meter = self.meters.get(meter_id or "")
        if meter is None:
            return Decimal(0)
        return sum((Decimal(e["payload"]["value"]) for e in self.meter_events.values()
                    if e["event_name"] == meter["event_name"] and not e.get("_cancelled")
                    and e["payload"].get("stripe_customer_id") == customer and start <= e["timestamp"] < end),
                   Decimal(0))

    def create_preview(self, params) -> dict:
        """``POST /v1/invoices/create_preview`` with ``subscription``: the invoice Stripe would
        create at the end of the current period (fixture ``invoice`` shape, ``id`` ``upcoming_in_...``,
        ``status`` ``draft``): each licensed item's ``unit_amount x quantity`` for the next period,
        each metered item's usage this period (its meter's events) x ``unit_amount_decimal``
        rounded half up to a minor unit, the pending prorations, Stripe Tax when on, the customer's
        balance applied to ``amount_due``. A canceled subscription has no upcoming invoice (404
        ``invoice_upcoming_none``)."""
        if not params.get("subscription") and not params.get("customer"):
            raise StripeError(400, "Missing required param: customer or subscription.", "parameter_missing",
                              "subscription")
        sub = self._sub(params.get("subscription")) if params.get("subscription") else next(
            (s for s in self.subscriptions.values() if s["customer"] == params["customer"]
             and s["status"] != "canceled"), None)
        if sub is None or sub["status"] in ("canceled", "incomplete_expired"):
            raise StripeError(404, f"No upcoming invoices for customer: {params.get('customer') or sub['customer']}",
                              "invoice_upcoming_none")
        start, end = sub["_period_start"], sub["_period_end"]
        lines = []
        for item in sub["items"]["data"]:
            price = item["price"]
            if self._is_metered(price):
                used = self.meter_usage(price["recurring"].get("meter"), sub["customer"], start, end)
                amount = int((used * Decimal(price["unit_amount_decimal"])).quantize(Decimal(1), rounding=ROUND_HALF_UP))
                lines.append({"amount": amount, "price": price["id"], "quantity": used,
                              "description": f"{format(used.normalize(), 'f')} × {price['id']}",
                              "period": (start, end)})
            elif not sub["cancel_at_period_end"]:  # the next period, billed in advance
                quantity = item.get("quantity", 1)
                lines.append({"amount": price["unit_amount"] * quantity, "price": price["id"], "quantity": quantity,
                              "description": f"{quantity} × {price['id']}",
                              "period": (end, self._period_end(end, price))})
        for ii in self.pending_items.get(sub["id"], []):
            lines.append({"amount": ii["amount"], "price": ii.get("_price"), "quantity": ii.get("quantity", 1),
                          "description": ii["description"], "proration": True, "period": (self.now(), end)})
        inv = fixture("invoice")
        iid = "upcoming_" + _new_id("in_")
        subtotal = sum(line["amount"] for line in lines)
        tax = added = 0
        if (sub.get("automatic_tax") or {}).get("enabled"):
            for line in lines:
                inclusive = (self.prices.get(line.get("price") or "") or {}).get("tax_behavior") == "inclusive"
                line_tax = self._tax(line["amount"], inclusive)
                tax += line_tax
                added += 0 if inclusive else line_tax
        total = subtotal + added
        starting = self.balances.get(sub["customer"], 0)
        due = max(0, total + starting)
        inv.update(id=iid, customer=sub["customer"], subscription=None, status="draft", currency=sub["currency"],
                   subtotal=subtotal, subtotal_excluding_tax=subtotal, total=total, total_excluding_tax=subtotal,
                   amount_due=due, amount_paid=0, amount_remaining=due, starting_balance=starting, ending_balance=None,
                   billing_reason="upcoming", attempt_count=0, attempted=False, created=self.now(), number=None,
                   hosted_invoice_url=None, invoice_pdf=None, period_start=start, period_end=end,
                   next_payment_attempt=end, automatically_finalizes_at=end, effective_at=None,
                   total_taxes=[{"amount": tax, "tax_behavior": "exclusive", "type": "tax_rate_details"}] if tax else [],
                   post_payment_credit_notes_amount=0, pre_payment_credit_notes_amount=0)
        data = []
        for line in lines:
            item = fixture("invoice")["lines"]["data"][0]
            item.update(id=_new_id("il_tmp_"), amount=line["amount"], subtotal=line["amount"], currency=sub["currency"],
                        description=line["description"], invoice=iid, subscription=sub["id"],
                        period={"start": line["period"][0], "end": line["period"][1]},
                        quantity=int(line["quantity"]) if line["quantity"] == int(line["quantity"]) else None,
                        quantity_decimal=format(Decimal(line["quantity"]).normalize(), "f"))
            item["pricing"] = {"type": "price_details", "price_details": {"price": line.get("price")},
                               "unit_amount_decimal": (self.prices.get(line.get("price") or "") or {}).get("unit_amount_decimal")}
            item["parent"] = {"type": "subscription_item_details", "invoice_item_details": None,
                              "subscription_item_details": {"proration": bool(line.get("proration")),
                                                            "subscription": sub["id"], "invoice_item": None,
                                                            "proration_details": None, "subscription_item": None}}
            data.append(item)
        inv["lines"] = {"object": "list", "data": data, "has_more": False, "url": f"/v1/invoices/{iid}/lines"}
        inv["parent"] = {"quote_details": None, "type": "subscription_details",
                         "subscription_details": {"subscription": sub["id"], "metadata": copy.deepcopy(sub["metadata"])}}
        return inv

    def create_credit_note(self, params) -> dict:
        inv = self.invoices.get(params.get("invoice") or "")
        if inv is None:
            raise StripeError(400, f"No such invoice: '{params.get('invoice')}'", "resource_missing", "invoice")
        refund = _int(params.get("refund_amount"), 0)
        credit = _int(params.get("credit_amount"), 0)
        outside = _int(params.get("out_of_band_amount"), 0)
        amount = _int(params.get("amount"), refund + credit + outside)
        if amount <= 0:
            raise StripeError(400, "The credit note amount must be positive.", param="amount")
        if refund + credit + outside != amount:
            raise StripeError(400, "The sum of credit amount, refund amount and out of band amount must equal "
                                   "the credit note amount.", param="amount")
        if amount > inv["amount_paid"] - inv["_credited"]:
            raise StripeError(400, f"The credit note amount ({amount}) exceeds the amount remaining on the invoice "
                                   f"({inv['amount_paid'] - inv['_credited']}).", param="amount")
        inv["_credited"] += amount
        inv["post_payment_credit_notes_amount"] = inv["_credited"]
        note = fixture("credit_note")
        nid = _new_id("cn_")
        note.update(id=nid, invoice=inv["id"], customer=inv["customer"], amount=amount, currency=inv["currency"],
                    created=self.now(), effective_at=self.now(), memo=params.get("memo"),
                    reason=params.get("reason"), metadata=dict(params.get("metadata") or {}), status="issued",
                    type="post_payment", refunds=[], credit_amount=credit, refund_amount=refund,
                    out_of_band_amount=outside or None, number=f"CN-{nid[-6:].upper()}")
        note["lines"] = {"object": "list", "data": [], "has_more": False, "url": f"/v1/credit_notes/{nid}/lines"}
        if refund:
            note["refunds"] = [{"amount_refunded": refund, "refund": self._refund(refund, inv["currency"],
                                                                                   {"credit_note": nid})["id"]}]
        if credit:
            self.balances[inv["customer"]] = self.balances.get(inv["customer"], 0) - credit
        self.credit_notes[nid] = note
        self.emit("credit_note.created", note)
        return copy.deepcopy(note)

    def _refund(self, amount: int, currency: str, metadata: dict) -> dict:
        refund = fixture("refund")
        refund.update(id=_new_id("re_"), amount=amount, currency=currency, created=self.now(), status="succeeded",
                      metadata=metadata, charge=_new_id("ch_"))
        self.refunds[refund["id"]] = refund
        return refund

    def create_refund(self, params) -> dict:
        if not params.get("payment_intent") and not params.get("charge"):
            raise StripeError(400, "One of the following params should be provided for this request: "
                                   "payment_intent or charge.", param="payment_intent")
        refund = self._refund(_int(params.get("amount"), 0), "usd", dict(params.get("metadata") or {}))
        refund.update(payment_intent=params.get("payment_intent"), charge=params.get("charge") or refund["charge"])
        self.emit("refund.created", refund)
        return copy.deepcopy(refund)

    # ----------------------------------------------------------------- checkout and portal

    def checkout(self, method, seg, params) -> tuple[int, dict]:
        if method == "POST" and len(seg) == 3:
            if params.get("mode") != "subscription":
                return _error(400, "this stand-in only does mode=subscription", param="mode")
            if _bool(params.get("allow_promotion_codes", "false")) and params.get("discounts"):
                return _error(400, "You may only specify one of these parameters: allow_promotion_codes, discounts.",
                              param="allow_promotion_codes")
            line_items = params.get("line_items") or []
            prices = []
            for n, item in enumerate(line_items):
                try:
                    prices.append(self._price(item.get("price", ""), f"line_items[{n}][price]"))
                except StripeError as exc:
                    return exc.status, exc.body()
            if not prices:
                return _error(400, "Missing required param: line_items.", param="line_items")
            try:
                self._check_shared_interval(prices)
                quantities = [self._quantity(p, i, f"line_items[{n}]", required=True)
                              for n, (p, i) in enumerate(zip(prices, line_items))]
            except StripeError as exc:
                return exc.status, exc.body()
            tax = params.get("automatic_tax") or {}
            tax_on = _bool(tax.get("enabled", "false"))
            if _bool((params.get("tax_id_collection") or {}).get("enabled", "false")) and params.get("customer") \
                    and (params.get("customer_update") or {}).get("name") != "auto":
                return _error(400, "tax_id_collection requires customer_update[name] to be set to 'auto' when an "
                                   "existing customer is provided.", param="customer_update[name]")
            # metered prices are billed in arrears: nothing of them is due at checkout
            subtotal = sum(p["unit_amount"] * q for p, q in zip(prices, quantities) if q is not None)
            amount_tax = exclusive_tax = 0
            if tax_on:
                for p, q in zip(prices, quantities):
                    if q is None:
                        continue
                    line_tax = self._tax(p["unit_amount"] * q, p["tax_behavior"] == "inclusive")
                    amount_tax += line_tax
                    exclusive_tax += 0 if p["tax_behavior"] == "inclusive" else line_tax
            session = fixture("checkout.session")
            sid = "cs_test_" + secrets.token_hex(12)
            session.update(id=sid, mode="subscription", customer=params.get("customer"),
                           client_reference_id=params.get("client_reference_id"),
                           metadata=params.get("metadata") or {}, success_url=params.get("success_url"),
                           cancel_url=params.get("cancel_url"), status="open", payment_status="unpaid",
                           payment_intent=None, subscription=None, created=int(time.time()),
                           expires_at=int(params.get("expires_at") or time.time() + 86400),
                           currency=prices[0]["currency"], amount_subtotal=subtotal,
                           amount_total=subtotal + exclusive_tax,
                           total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": amount_tax},
                           automatic_tax={"enabled": tax_on, "liability": {"type": "self"} if tax_on else None,
                                          "status": "requires_location_inputs" if tax_on else None,
                                          "provider": "stripe" if tax_on else None},
                           allow_promotion_codes=_bool(params.get("allow_promotion_codes", "false")),
                           billing_address_collection=params.get("billing_address_collection"),
                           tax_id_collection={"enabled": _bool((params.get("tax_id_collection") or {}).get("enabled", "false")),
                                              "required": "never"},
                           url=f"https://checkout.stripe.test/c/pay/{sid}")
            session["_line_items"] = [{"price": p["id"], "quantity": q} for p, q in zip(prices, quantities)]
            session["_subscription_metadata"] = (params.get("subscription_data") or {}).get("metadata") or {}
            self.sessions[sid] = session
            return 200, self._public(session)
        if len(seg) >= 4:
            session = self.sessions.get(seg[3])
            if session is None:
                return _error(404, f"No such checkout.session: '{seg[3]}'", "resource_missing")
            if method == "POST" and len(seg) == 5 and seg[4] == "expire":
                if session["status"] != "open":
                    return _error(400, f"Only Checkout Sessions with a status in [\"open\"] can be expired. "
                                       f"This Checkout Session has a status of \"{session['status']}\".")
                session["status"] = "expired"
                return 200, self._public(session)
            if method == "GET" and len(seg) == 4:
                return 200, self._public(session)
        return _error(404, "Unrecognized request URL")

    def portal(self, params) -> tuple[int, dict]:
        if not params.get("customer"):
            return _error(400, "Missing required param: customer.", param="customer")
        session = fixture("billing_portal.session")
        bid = "bps_" + secrets.token_hex(10)
        session.update(id=bid, customer=params["customer"], return_url=params.get("return_url"), livemode=False,
                       flow=None, url=f"https://billing.stripe.test/p/session/{bid}", created=int(time.time()))
        return 200, session
