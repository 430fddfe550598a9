"""Fault injection: paid orders through Stripe Checkout and signed webhooks while everything fails.

The real stack, on loopback only: a throwaway PostgreSQL and Redis (``panel.testing``), the
panel under gunicorn (``-w 2``), K ``panel worker`` processes, the PDS deploy API stand-in, and
Stripe as the billing tests have it (localstripe behind ``tests/billing/stripe_standin.py``'s
router). Customers order a paid PDS plan through ``POST /api/v1/orders`` (with an
``Idempotency-Key``, some requests sent twice); Stripe's part is played by signed webhook
deliveries built from Stripe's fixture shapes (``checkout.session.completed``,
``customer.subscription.updated``, ``invoice.paid``, and ``customer.subscription.deleted`` for a
few cancellations mid-flight), shuffled, 10 % delivered twice, half of those at the same moment.

Meanwhile:

* the PDS stand-in fails about 20 % of the backend calls: 503 before doing anything, a hold past
  the client's timeout (the work is done later), or the answer dropped after the work was done;
* a ``panel worker`` process is SIGKILLed every ``--kill-every`` seconds, two times in three one
  that is running jobs right now (a killed worker is replaced);
* Redis is restarted once without persistence (everything queued is gone), about a third in;
* PostgreSQL is restarted once (fast shutdown: open transactions rolled back, every connection
  cut), about two thirds in. Client traffic pauses for that moment: while the database is down
  the webhook cannot store an event and answers 5xx, which is right (Stripe delivers again), and
  the point here is what the workers make of the restart.

Then the faults stop and the run waits (at most ``--settle`` seconds) until every order has
settled. Figures printed (``Figures.lines()``):

* paid orders without a live service, or a ``failed``/``needs_reconcile`` with a reason (0);
  cancelled orders must end ``cancelled``/``terminated`` (or failed/needs_reconcile with a reason);
* duplicate remote resources: PDS services made more than once for one hostname (0);
* leaked remote resources: PDS services no service of ours accounts for, per ``panel reconcile
  pds`` (0);
* events applied twice (from the workers' "applied" log lines) and events never processed (0);
* 5xx answers of the webhook and of the orders API (0);
* seconds from the last fault until every service was terminal (at most 120 in the test);
* what was injected: backend faults by kind, kills, restarts; and lost runs, stale completions
  refused, attempts per operation.

``run(Config(...))`` returns the ``Figures``; ``tests/test_fault_injection.py`` runs it with 100
orders and asserts them. ``python benchmarks/fault_injection.py --orders 1000`` is the benchmark
mode (see benchmarks/README.md). Exit status 0 when every figure is as it must be, 1 otherwise,
2 when the stack could not start. Everything it starts is stopped at the end, also on Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "tests", "billing"),
              os.path.dirname(os.path.abspath(__file__))):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from provision_pipeline import (TOKEN, BenchError, free_port, panel_env, stop_group,  # noqa: E402
                                wait_http)

HOSTNAME_DOMAIN = "pds.faults.example.com"
PLAN = "pds-paid"
HTTP_TIMEOUT = 30
TERMINAL = ("active", "suspended", "terminated", "cancelled", "failed", "needs_reconcile")


@dataclass
class Config:
    """What one run does. ``orders`` paid orders from ``customers`` accounts, ``workers`` worker
    processes; the PDS stand-in answers after ``backend_latency_ms`` and ``backend_fault_rate`` of
    its calls fail; ``duplicate_rate`` of the events are
    delivered twice; ``cancel_rate`` of the orders are cancelled mid-flight; a worker
    is killed every ``kill_every`` seconds while events flow; the run waits at most ``settle``
    seconds after the last fault."""

    orders: int = 100
    customers: int = 10
    workers: int = 3
    backend_fault_rate: float = 0.2
    duplicate_rate: float = 0.1
    cancel_rate: float = 0.05
    kill_every: float = 1.0
    backend_latency_ms: int = 150
    settle: float = 120.0
    seed: int = 1
    verbose: bool = False


@dataclass
class Figures:
    """What a run measured (see the module docstring)."""

    orders: int = 0
    paid: int = 0
    cancelled: int = 0
    statuses: Counter = field(default_factory=Counter)
    unsettled: list = field(default_factory=list)       # (service id, status, why)
    duplicates: int = 0
    leaked: list = field(default_factory=list)          # reconcile lines
    deliveries: int = 0
    events: int = 0
    applied_twice: list = field(default_factory=list)
    unprocessed: list = field(default_factory=list)
    webhook_statuses: Counter = field(default_factory=Counter)
    order_statuses: Counter = field(default_factory=Counter)
    order_replays: int = 0
    injected: Counter = field(default_factory=Counter)
    kills: Counter = field(default_factory=Counter)
    restarts: list = field(default_factory=list)
    lost_runs: int = 0
    stale_refused: int = 0
    claims: int = 0
    attempts: Counter = field(default_factory=Counter)
    settle_seconds: float | None = None
    wall_seconds: float = 0.0
    orders_detail: dict = field(default_factory=dict, repr=False)  # service id -> what was ordered

    @property
    def webhook_5xx(self) -> int:
        """Webhook deliveries answered 5xx or not at all."""
        return sum(n for status, n in self.webhook_statuses.items() if status >= 500 or status == 0)

    @property
    def orders_5xx(self) -> int:
        """Order requests answered 5xx or not at all."""
        return sum(n for status, n in self.order_statuses.items() if status >= 500 or status == 0)

    def lines(self) -> list[str]:
        """The figures as printable lines."""
        settle = "never" if self.settle_seconds is None else f"{self.settle_seconds:.1f} s"
        return [
            "fault injection results",
            f"  orders                    {self.orders} ({self.paid} paid, {self.cancelled} cancelled mid-flight)",
            f"  final statuses            {dict(sorted(self.statuses.items()))}",
            f"  orders not settled right  {len(self.unsettled)} {self.unsettled[:10] or ''}".rstrip(),
            f"  duplicate remote objects  {self.duplicates}",
            f"  leaked remote objects     {len(self.leaked)} {self.leaked[:5] or ''}".rstrip(),
            f"  events                    {self.events} stored from {self.deliveries} deliveries",
            f"  events applied twice      {len(self.applied_twice)} {self.applied_twice[:5] or ''}".rstrip(),
            f"  events not processed      {len(self.unprocessed)} {self.unprocessed[:5] or ''}".rstrip(),
            f"  webhook answers           {dict(sorted(self.webhook_statuses.items()))}  (5xx: {self.webhook_5xx})",
            f"  orders API answers        {dict(sorted(self.order_statuses.items()))}  (5xx: {self.orders_5xx}; "
            f"{self.order_replays} replayed by Idempotency-Key)",
            f"  backend faults injected   {dict(sorted(self.injected.items()))}",
            f"  kills                     {dict(sorted(self.kills.items()))}  "
            f"(one per {self.claims / max(sum(self.kills.values()), 1):.1f} job runs)",
            f"  restarts                  {', '.join(self.restarts) or 'none'}",
            f"  job runs (claims)         {self.claims}; lost runs {self.lost_runs}; "
            f"stale completions refused {self.stale_refused}",
            f"  attempts per operation    {dict(sorted(self.attempts.items()))}",
            f"  terminal after last fault {settle}",
            f"  wall time                 {self.wall_seconds:.1f} s",
        ]

    def problems(self, settle_limit: float = 120.0) -> list[str]:
        """What is not as it must be (empty when the run passed)."""
        out = []
        if self.unsettled:
            out.append(f"{len(self.unsettled)} order(s) did not settle right: {self.unsettled[:10]}")
        if self.duplicates:
            out.append(f"{self.duplicates} duplicate remote object(s)")
        if self.leaked:
            out.append(f"{len(self.leaked)} leaked remote object(s): {self.leaked[:5]}")
        if self.applied_twice:
            out.append(f"events applied twice: {self.applied_twice[:5]}")
        if self.unprocessed:
            out.append(f"events not processed: {self.unprocessed[:5]}")
        if self.webhook_5xx or self.orders_5xx:
            out.append(f"5xx answers: webhook {self.webhook_5xx}, orders {self.orders_5xx}")
        if self.settle_seconds is None or self.settle_seconds > settle_limit:
            out.append(f"not every service was terminal within {settle_limit:.0f} s of the last fault")
        return out


# --------------------------------------------------------------------------- the stack

def _env(database_url: str, redis_url: str, standin_url: str, stripe_url: str, instance: str) -> dict:
    from billinglib import SECRET_KEY as STRIPE_KEY, WHSEC

    env = panel_env(database_url, redis_url, standin_url, instance)
    env.update({
        "PANEL_RATELIMIT_ENABLED": "true",
        "PANEL_JOB_RETRIES": "6",
        "PANEL_JOB_BACKOFF": "1,1,2,2,3",
        "PANEL_LEASE_SECONDS": "6",
        "PANEL_SWEEP_INTERVAL": "1",
        "PANEL_SWEEP_AFTER": "30",
        "PANEL_ORDER_LIMIT": "100000 per hour",  # the limiter stays on (it must fail open), but
        "PANEL_ORDER_ADDRESS_LIMIT": "100000 per hour",  # every order comes from 127.0.0.1
        "PANEL_API_LIMIT": "100000 per minute",
        "PANEL_API_ADDRESS_LIMIT": "100000 per minute",
        "PANEL_USAGE_INTERVAL": "0",
        "PANEL_STRIPE_SECRET_KEY": STRIPE_KEY,
        "PANEL_STRIPE_WEBHOOK_SECRET": WHSEC,
        "PANEL_STRIPE_API_BASE": stripe_url,
        "PANEL_PUBLIC_URL": "https://panel.faults.example.test",
        "PANEL_TERMINATE_AFTER_DAYS": "0",
        "PANEL_BILLING_CRON_INTERVAL": "3",
        "PANEL_PLUGIN_PDS_HOSTNAME_DOMAIN": HOSTNAME_DOMAIN,
        "PANEL_PLUGIN_PDS_TIMEOUT_SECONDS": "1.5",
    })
    return env


def _apply_env(env: dict) -> dict:
    """Make ``env``'s PANEL_* variables this process's; returns the ones it replaced (for
    ``_restore_env``)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("PANEL_")}
    for key in saved:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.startswith("PANEL_")})
    return saved


def _restore_env(saved: dict) -> None:
    for key in [k for k in os.environ if k.startswith("PANEL_")]:
        del os.environ[key]
    os.environ.update(saved)


def _prepare(env: dict, customers: int):
    """Migrate, enable pds, import the paid plan, make the customers and their tokens. Returns
    ``(app, [token, ...])``; the app (this process's own) is used again for the final checks."""
    from billinglib import PRICE_PAID
    from flask_migrate import upgrade

    from panel import create_app
    from panel.catalog import import_catalog
    from panel.extensions import db
    from panel.models import ApiToken, User
    from panel.plugins import set_enabled

    saved = _apply_env(env)
    try:
        app = create_app()  # reads PANEL_* (the plugin settings too) once, here
    finally:
        _restore_env(saved)
    tokens = []
    with app.app_context():
        upgrade()
        set_enabled("pds", True)
        import_catalog(f"plans: [{{slug: {PLAN}, name: Paid PDS, backend: pds, stripe_price: {PRICE_PAID}, "
                       "options: {disksize_gb: 5}}]")
        for i in range(customers):
            user = User(email=f"customer{i:03d}@faults.example.test")
            user.set_password("password123")
            db.session.add(user)
            _, plain = ApiToken.issue(user)
            tokens.append(plain)
        db.session.commit()
        db.session.remove()
    return app, tokens


def _start_stripe():
    from billinglib import PRICE_PAID
    from stripe_standin import Localstripe, StripeRouter

    upstream = Localstripe()
    router = StripeRouter(upstream.url)
    product = router.create_product("fault injection")
    router.create_price(PRICE_PAID, 500, "usd", interval="month", product=product["id"])
    return upstream, router


class Workers:
    """The ``panel worker`` processes (each in its own session), their logs, and the killer."""

    def __init__(self, env: dict, count: int, log_dir: str):
        self.env, self.log_dir = env, log_dir
        self.procs: list[subprocess.Popen] = []
        self.lock = threading.Lock()
        self.kills: Counter = Counter()
        for _ in range(count):
            self.start_one()

    def start_one(self) -> None:
        """Start one more ``panel worker`` (log ``worker-<n>.log``)."""
        with self.lock:
            index = len(self.procs)
            log = open(os.path.join(self.log_dir, f"worker-{index}.log"), "wb")
            try:
                self.procs.append(subprocess.Popen([sys.executable, "-m", "panel.cli", "worker"], cwd=ROOT,
                                                   env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                   start_new_session=True))
            finally:
                log.close()

    def live(self) -> list[subprocess.Popen]:
        """The worker processes still running."""
        with self.lock:
            return [p for p in self.procs if p.poll() is None]

    def kill_one(self, rng: random.Random, leased_pids=lambda: set()) -> str | None:
        """SIGKILL a whole ``panel worker`` (then start another): two times in three one that holds
        a lease right now (``leased_pids()``: pids in live lease owners), i.e. killed mid-job with
        its jobs' leases left to run out, else any. Returns what was killed."""
        live = self.live()
        if not live:
            return None
        busy = []
        if rng.random() < 2 / 3:
            try:
                pids = leased_pids()
            except Exception:
                pids = set()
            busy = [proc for proc in live if proc.pid in pids]
        kind = "worker mid-job" if busy else "worker"
        proc = rng.choice(busy or live)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        proc.wait(10)
        self.kills[kind] += 1
        self.start_one()
        return kind

    def stop(self) -> None:
        """SIGTERM every worker's process group, SIGKILL what is left."""
        for proc in list(self.procs):
            stop_group(proc, "worker", grace=15)

    def logs(self) -> str:
        """Every worker's log, concatenated."""
        out = []
        for name in sorted(os.listdir(self.log_dir)):
            if name.startswith("worker-"):
                with open(os.path.join(self.log_dir, name), errors="replace") as fh:
                    out.append(fh.read())
        return "\n".join(out)


def _start_gunicorn(env: dict, port: int, log_path: str) -> subprocess.Popen:
    gunicorn = shutil.which("gunicorn") or os.path.join(os.path.dirname(sys.executable), "gunicorn")
    return subprocess.Popen([gunicorn, "-w", "2", "-b", f"127.0.0.1:{port}", "--timeout", "60",
                             "--error-logfile", log_path, "wsgi:app"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


# --------------------------------------------------------------------------- traffic

class Traffic:
    """Client traffic (orders and webhook deliveries), with a gate closed during the database
    restart and a count of requests in flight."""

    def __init__(self, base: str):
        self.base = base
        self.open = threading.Event()
        self.open.set()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.local = threading.local()

    def session(self):
        """This thread's ``requests.Session`` (keep-alive)."""
        import requests

        if getattr(self.local, "session", None) is None:
            self.local.session = requests.Session()
        return self.local.session

    def post(self, path: str, **kwargs) -> tuple[int, object]:
        """POST through the gate; ``(status, response or None)``, status 0 for no answer."""
        import requests

        self.open.wait()
        with self.lock:
            self.in_flight += 1
        try:
            r = self.session().post(self.base + path, timeout=HTTP_TIMEOUT, **kwargs)
            return r.status_code, r
        except requests.RequestException:
            return 0, None
        finally:
            with self.lock:
                self.in_flight -= 1

    def pause(self, timeout: float = 60) -> None:
        """Close the gate and wait until no request is in flight."""
        self.open.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.in_flight == 0:
                    return
            time.sleep(0.05)

    def resume(self) -> None:
        """Open the gate again."""
        self.open.set()


def _db_rows(app, query: str, params: dict | None = None) -> list:
    """Rows of a read-only SQL query through the app's engine (reconnecting after a restart)."""
    from sqlalchemy import text

    from panel.extensions import db

    for attempt in range(30):
        try:
            with app.app_context():
                with db.engine.connect() as conn:
                    return list(conn.execute(text(query), params or {}))
        except Exception:
            if attempt == 29:
                raise
            time.sleep(1)
    return []


def _lease_pids(app) -> set[int]:
    """Pids of the workers holding a live lease on an operation or a Stripe event now (lease
    owners are ``<host>:<pid>:<thread>``, ``panel.work.owner_name``)."""
    from sqlalchemy import text

    from panel.extensions import db

    with app.app_context():
        with db.engine.connect() as conn:
            owners = conn.execute(text("SELECT lease_owner FROM operations WHERE lease_expires_at > now() "
                                       "UNION SELECT lease_owner FROM stripe_events WHERE lease_expires_at > now()"))
            return {int(owner.split(":")[1]) for (owner,) in owners if owner and owner.count(":") >= 2}


def _events_for(order: dict, rng: random.Random, created: int) -> list[dict]:
    """Stripe's events for one paid order (fixture shapes), newest last by ``created``."""
    from billinglib import PRICE_PAID, checkout_session_obj, invoice_obj, make_event, subscription_obj

    service = SimpleNamespace(id=order["service_id"], user_id=order["user_id"])
    sub_id, customer = order["subscription"], order["customer"]
    session = checkout_session_obj(service, subscription=sub_id, customer=customer,
                                   session_id=order["session_id"])
    events = [make_event("checkout.session.completed", session, created=created),
              make_event("customer.subscription.updated",
                         subscription_obj(service, sub_id, customer=customer, price=PRICE_PAID), created=created + 1),
              make_event("invoice.paid", invoice_obj(service, sub_id, customer=customer, status="paid"),
                         created=created + 2)]
    if order["cancel"]:
        ended = subscription_obj(service, sub_id, customer=customer, price=PRICE_PAID, status="canceled")
        ended.update(ended_at=created + 3, canceled_at=created + 3)
        events.append(make_event("customer.subscription.deleted", ended, created=created + 3))
    return events


def _deliver(traffic: Traffic, event: dict, figures: Figures, lock: threading.Lock) -> int:
    """One signed delivery of ``event`` to ``/stripe/webhook`` (signed when sent); its status."""
    from billinglib import sign

    payload = json.dumps(event)
    status, _ = traffic.post("/stripe/webhook", data=payload,
                             headers={"Content-Type": "application/json", "Stripe-Signature": sign(payload)})
    with lock:
        figures.webhook_statuses[status] += 1
        figures.deliveries += 1
    return status


# --------------------------------------------------------------------------- the run

def run(cfg: Config) -> Figures:
    """Stand the stack up, run the faults and the traffic, check, tear everything down."""
    import pytest

    from panel.testing import PostgresServer, RedisServer
    from panel_pds.standin import PdsStandIn

    rng = random.Random(cfg.seed)
    figures = Figures(orders=cfg.orders)
    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="panel-faults-")
    pg = redis = upstream = router = standin = gunicorn = workers = None
    try:
        try:
            pg, redis = PostgresServer(), RedisServer()
        except (pytest.skip.Exception, Exception) as exc:
            raise BenchError(f"cannot start PostgreSQL/Redis: {exc}") from exc
        upstream, router = _start_stripe()
        standin = PdsStandIn(token=TOKEN, latency_ms=cfg.backend_latency_ms).start()
        env = _env(pg.create_database(), redis.url, standin.url, router.url, tmp)
        app, tokens = _prepare(env, cfg.customers)
        port = free_port()
        gunicorn = _start_gunicorn(env, port, os.path.join(tmp, "gunicorn.log"))
        wait_http(f"http://127.0.0.1:{port}/api/v1/plans", gunicorn, 60, os.path.join(tmp, "gunicorn.log"))
        workers = Workers(env, cfg.workers, tmp)
        standin.set_faults(random={"rate": cfg.backend_fault_rate, "kinds": ["5xx", "timeout", "lost"],
                                   "hold_ms": 2500, "seed": cfg.seed})
        last_fault = _traffic_and_faults(cfg, rng, app, tokens, f"http://127.0.0.1:{port}", pg, redis,
                                         standin, workers, figures)
        figures.settle_seconds = _settle(cfg, app, figures, last_fault)
        _measure(app, standin, workers, figures)
    finally:
        figures.wall_seconds = time.monotonic() - started
        if workers is not None:
            workers.stop()
        stop_group(gunicorn, "gunicorn")
        for thing in (standin, router, upstream, redis, pg):
            if thing is not None:
                try:
                    thing.stop()
                except Exception:
                    pass
        if cfg.verbose:
            print(f"logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return figures


def _traffic_and_faults(cfg, rng, app, tokens, base, pg, redis, standin, workers, figures) -> float:
    """Orders, deliveries and faults at once; returns when the last fault stopped (monotonic)."""
    traffic = Traffic(base)
    lock = threading.Lock()
    pool: list[dict] = []          # events waiting for delivery (picked at random: shuffled)
    users = _db_rows(app, "SELECT id FROM users ORDER BY id")
    user_ids = [row[0] for row in users]
    cancel = set(rng.sample(range(cfg.orders), max(1, round(cfg.orders * cfg.cancel_rate))))
    figures.cancelled = len(cancel)
    orders: dict[int, dict] = {}
    placed = threading.Event()
    delivered_all = threading.Event()
    delivered_at = [0.0]
    total_events = [0]
    errors: list[str] = []

    def place(i: int) -> None:
        who = i % len(tokens)
        headers = {"Authorization": f"Bearer {tokens[who]}", "Idempotency-Key": f"fault-order-{i}"}
        body = {"plan": PLAN, "params": {"username": f"fi{i:05d}"}}
        sends = 2 if i % 20 == 7 else 1  # every 20th client sends the same request twice (a fixed 5 %)
        answer = None
        for _ in range(sends + 3):
            status, r = traffic.post("/api/v1/orders", json=body, headers=headers)
            with lock:
                figures.order_statuses[status] += 1
            if status == 201:
                if r.headers.get("Idempotent-Replayed"):
                    with lock:
                        figures.order_replays += 1
                answer = answer or r.json()
                sends -= 1
                if sends <= 0:
                    break
            elif status in (0, 502, 503):
                time.sleep(1)  # no answer: the client retries with the same key
            else:
                errors.append(f"order {i}: HTTP {status} {r.text[:300] if r is not None else ''}")
                return
        if answer is None:
            errors.append(f"order {i}: no answer")
            return
        service_id = answer["service"]["id"]
        row = _db_rows(app, "SELECT s.checkout_session_id, s.stripe_customer_id, v.user_id FROM subscriptions s "
                            "JOIN services v ON v.id = s.service_id WHERE s.service_id = :id", {"id": service_id})[0]
        order = {"i": i, "service_id": service_id, "session_id": row[0], "customer": row[1], "user_id": row[2],
                 "subscription": f"sub_fi{i:05d}{secrets.token_hex(3)}", "cancel": i in cancel}
        events = _events_for(order, rng, int(time.time()) - 10)
        with lock:
            orders[service_id] = order
            for event in events:
                pool.append(event)
                total_events[0] += 1
                if rng.random() < cfg.duplicate_rate:  # delivered twice: at the same moment, or later again
                    if rng.random() < 0.5:
                        event["_together"] = True
                    else:
                        pool.append(dict(event))
                    total_events[0] += 1

    def ordering() -> None:
        threads = []
        pace = max(10.0, cfg.orders * 0.08) / cfg.orders
        for i in range(cfg.orders):
            t = threading.Thread(target=place, args=(i,), daemon=True)
            t.start()
            threads.append(t)
            time.sleep(pace)
            while sum(t.is_alive() for t in threads) >= 6:
                time.sleep(0.02)
        for t in threads:
            t.join(HTTP_TIMEOUT * 5)
        placed.set()

    def sender() -> None:
        while True:
            with lock:
                event = pool.pop(rng.randrange(len(pool))) if pool else None
            if event is None:
                if placed.is_set():
                    with lock:
                        if not pool:
                            return
                time.sleep(0.05)
                continue
            together = event.pop("_together", None)
            if together:  # the duplicate goes out at the same moment as another delivery of it
                barrier = threading.Barrier(2)

                def twin(e=dict(event)):
                    barrier.wait(5)
                    _deliver(traffic, e, figures, lock)

                t = threading.Thread(target=twin, daemon=True)
                t.start()
                barrier.wait(5)
                _deliver(traffic, event, figures, lock)
                t.join(HTTP_TIMEOUT)
            else:
                status = _deliver(traffic, event, figures, lock)
                if status != 200:  # Stripe delivers again later
                    with lock:
                        pool.append(event)
            time.sleep(rng.uniform(0.0, 0.08))

    def progress() -> float:
        with lock:
            return figures.deliveries / max(total_events[0], 1) if placed.is_set() else \
                figures.deliveries / max(cfg.orders * 3.3, 1)

    def settled_share() -> float:
        done = _db_rows(app, "SELECT count(*) FROM operations WHERE action = 'provision' "
                             "AND state IN ('succeeded', 'failed', 'cancelled')")[0][0]
        return done / max(cfg.orders - len(cancel), 1)

    def faults() -> None:
        """Until every event was delivered and most provisions finished: kills, restarts."""
        redis_done = pg_done = False
        next_kill = time.monotonic() + cfg.kill_every
        next_check = 0.0
        while True:
            now = time.monotonic()
            if delivered_all.is_set() and now >= next_check:
                if settled_share() >= 0.9 or now - delivered_at[0] > 300:
                    return
                next_check = now + 2
            if now >= next_kill:
                workers.kill_one(rng, lambda: _lease_pids(app))
                next_kill = now + cfg.kill_every * rng.uniform(0.5, 1.5)
            if not redis_done and progress() >= 0.3:
                redis.restart(down_seconds=3)
                figures.restarts.append(f"redis at {progress():.0%} of deliveries (3 s down, nothing kept)")
                redis_done = True
            if not pg_done and progress() >= 0.6:
                traffic.pause()
                pg.restart(down_seconds=2)
                traffic.resume()
                figures.restarts.append(f"postgresql at {progress():.0%} of deliveries (fast shutdown, 2 s down)")
                pg_done = True
            time.sleep(0.1)

    order_thread = threading.Thread(target=ordering, daemon=True)
    senders = [threading.Thread(target=sender, daemon=True) for _ in range(4)]
    fault_thread = threading.Thread(target=faults, daemon=True)
    order_thread.start()
    for t in senders:
        t.start()
    fault_thread.start()
    order_thread.join()
    for t in senders:
        t.join()
    delivered_at[0] = time.monotonic()
    delivered_all.set()
    fault_thread.join(400)
    standin.set_faults(random=None)
    last_fault = time.monotonic()
    figures.injected = Counter(standin.injected())
    figures.kills = Counter(workers.kills)
    figures.paid = len(orders) - figures.cancelled
    figures.orders_detail = orders
    if errors:
        raise BenchError("orders failed: " + "; ".join(errors[:5]))
    return last_fault


def _expectation(order: dict, status: str, reason: str) -> str | None:
    """Why a service has not settled right (``None`` when it has)."""
    if status in ("failed", "needs_reconcile"):
        return None if reason else f"{status} with no reason recorded"
    if order["cancel"]:
        return None if status in ("cancelled", "terminated") else f"cancelled order is {status}"
    return None if status == "active" else f"paid order is {status}"


def _unsettled(app, figures: Figures) -> list:
    rows = _db_rows(app, """
        SELECT s.id, s.status,
               (SELECT o.last_error FROM operations o WHERE o.service_id = s.id AND o.state = 'failed'
                ORDER BY o.id DESC LIMIT 1),
               (SELECT count(*) FROM operations o WHERE o.service_id = s.id
                AND o.state IN ('pending', 'queued', 'running'))
        FROM services s""")
    out = []
    for service_id, status, reason, unfinished in rows:
        order = figures.orders_detail.get(service_id)
        if order is None:
            continue
        why = "unfinished operations" if unfinished else _expectation(order, status, reason or "")
        if why:
            out.append((service_id, status, why))
    events = _db_rows(app, "SELECT count(*) FROM stripe_events WHERE processed_at IS NULL")[0][0]
    if events:
        out.append((None, "events", f"{events} event(s) not processed"))
    return out


def _settle(cfg: Config, app, figures: Figures, last_fault: float) -> float | None:
    """Wait until every order settled right and every event was processed; seconds after the last
    fault, or ``None`` when ``cfg.settle`` passed first."""
    while time.monotonic() - last_fault < cfg.settle:
        if not _unsettled(app, figures):
            return time.monotonic() - last_fault
        time.sleep(1)
    return None


def _measure(app, standin, workers: Workers, figures: Figures) -> None:
    from panel.extensions import db
    from panel.reconcile import reconcile

    figures.unsettled = [u for u in _unsettled(app, figures) if u[0] is not None]
    figures.statuses = Counter(status for status, in _db_rows(app, "SELECT status FROM services"))
    figures.duplicates = sum(n - 1 for n in standin.creations().values() if n > 1)
    figures.events = _db_rows(app, "SELECT count(*) FROM stripe_events")[0][0]
    figures.unprocessed = [row[0] for row in _db_rows(app, "SELECT id FROM stripe_events WHERE processed_at IS NULL")]
    for attempts, n in _db_rows(app, "SELECT attempts, count(*) FROM operations GROUP BY attempts"):
        figures.attempts[attempts] = n
    lost, claims = _db_rows(app, "SELECT coalesce(sum(lost_runs), 0), coalesce(sum(lease_token), 0) FROM operations")[0]
    lost_e, claims_e = _db_rows(app, "SELECT coalesce(sum(lost_runs), 0), coalesce(sum(lease_token), 0) "
                                     "FROM stripe_events")[0]
    figures.lost_runs, figures.claims = int(lost + lost_e), int(claims + claims_e)
    logs = workers.logs()
    applied = Counter(re.findall(r"stripe event (\S+) \([^)]*\) applied:", logs))
    figures.applied_twice = sorted(e for e, n in applied.items() if n > 1)
    figures.stale_refused = logs.count("stale completion refused")
    with app.app_context():
        report = reconcile("pds")
        figures.leaked = [line.strip() for line, d in zip(report.lines()[1:], report.drift)
                          if d.kind in ("unknown", "terminated-remote")]
        db.session.remove()


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/fault_injection.py [--orders 1000] [--workers 4] ...``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--customers", type=int, default=None, help="accounts placing them (orders/10)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kill-every", type=float, default=1.0, help="seconds between kills")
    parser.add_argument("--settle", type=float, default=600.0, help="seconds to wait after the last fault")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="keep the logs and say where")
    args = parser.parse_args(argv)
    cfg = Config(orders=args.orders, customers=args.customers or max(1, args.orders // 10), workers=args.workers,
                 kill_every=args.kill_every, settle=args.settle, seed=args.seed, verbose=args.verbose)

    def _sigterm(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _sigterm)
    try:
        figures = run(cfg)
    except BenchError as exc:
        print(f"fault injection could not run: {exc}", file=sys.stderr)
        return 2
    for line in figures.lines():
        print(line)
    problems = figures.problems(settle_limit=cfg.settle)
    for line in problems:
        print(f"PROBLEM: {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
