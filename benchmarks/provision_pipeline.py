"""Benchmark: orders to active services, end to end, against the ideal K/L and a floor measured
in the same run.

    python benchmarks/provision_pipeline.py [--orders 1000] [--workers 4] [--processes 0]
        [--latency-ms 100] [--paid 0.0] [--clients 16] [--rounds 4]

The real stack on loopback: PostgreSQL and Redis (``panel.testing``, throwaway), the PDS deploy
API stand-in in its own process holding every API request L ms, the panel under gunicorn
(``-w 2``), and ``--processes`` ``panel worker`` processes (default: one per core, 2 here) with
K/processes threads each (K =
``--workers``: jobs running at once). ``--paid`` is the share of orders for a paid plan: the
client then plays Stripe and sends the signed ``checkout.session.completed`` right after the
order (Stripe's API is localstripe behind the billing tests' router), so such an order takes two
jobs (the event, then the provision).

Rounds alternate between the floor and the panel (``--rounds``, half each, ``--orders`` orders
over the panel's rounds and as many over the floor's), so both meet the same machine load. The
floor (``floors.py``) is the least code that does the same: a Flask route under gunicorn
(``-w 2``) that inserts a row and pushes a job id, and one process with K threads that pop a job,
make one HTTP request to the same stand-in and record when it finished.

Per round, from the database's own timestamps (no polling through the panel): throughput = orders /
(first order stored -> last service active), its ratio to the ideal K/L (a provision holds a
job slot for at least one stand-in round trip) and to the floor's; the job's run time (started ->
active, which excludes the queue wait) p50/p99; CPU per provision of the panel's processes
(gunicorn, workers, PostgreSQL, Redis) and of the floor's (its app, its worker, PostgreSQL,
Redis), the stand-in's and the client's apart; the machine's load and how much CPU everything
else on the machine used meanwhile. Exit status 0 when every order ended active with one remote
service each, 1 otherwise, 2 when the stack could not start. Everything it starts is stopped at
the end, also on Ctrl-C. Not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from benchlib import CpuMeter, Window, median, percentile, spread  # noqa: E402

TOKEN = "bench-deploy-token-0123456789"
SECRET_KEY = "bench-secret-key-0123456789abcdef"
HOSTNAME_DOMAIN = "pds.bench.example.com"
HTTP_TIMEOUT = 60


class BenchError(RuntimeError):
    """The benchmark could not run (a server did not start, an order was refused...)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _terminate_sigterm(signum, frame):
    """SIGTERM handler: turn it into KeyboardInterrupt so every ``finally`` block runs."""
    raise KeyboardInterrupt(f"signal {signum}")


def stop_group(proc: subprocess.Popen | None, name: str, grace: float = 10.0) -> None:
    """Stop ``proc`` and its children: SIGTERM to its own process group, SIGKILL after ``grace``.

    Only processes this script started are signalled: each runs in a session of its own
    (``start_new_session=True``), so its process group id is its pid.
    """
    if proc is None:
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            print(f"  {name} (pid {proc.pid}) did not stop in {grace:.0f}s: SIGKILL", file=sys.stderr)
    try:  # the group may outlive its leader: make sure it is gone
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log_path: str) -> None:
    """Wait until ``GET url`` answers (any status below 500); raise ``BenchError`` (with the log's
    tail) otherwise."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{url}: the server exited with {proc.returncode}:\n{tail(log_path)}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise BenchError(f"{url} did not answer within {timeout:.0f}s:\n{tail(log_path)}")


def tail(path: str, chars: int = 3000) -> str:
    """The last ``chars`` characters of the file at ``path`` ('' when unreadable)."""
    try:
        with open(path, errors="replace") as fh:
            return fh.read()[-chars:]
    except OSError:
        return ""


def start_databases():
    """Start a throwaway PostgreSQL and Redis on loopback; returns ``(postgres, redis)``.

    ``panel.testing`` calls ``pytest.skip`` when a binary is missing: turned into ``BenchError``.
    """
    import pytest

    from panel.testing import PostgresServer, RedisServer

    postgres = redis = None
    try:
        postgres = PostgresServer()
        redis = RedisServer()
        return postgres, redis
    except (pytest.skip.Exception, Exception) as exc:
        for server in (redis, postgres):
            if server is not None:
                server.stop()
        raise BenchError(f"cannot start PostgreSQL/Redis: {exc}") from exc


def redis_pid(redis) -> int:
    """The pid of the ``RedisServer``'s process."""
    return redis.proc.pid


def postgres_pid(postgres) -> int:
    """The postmaster's pid (its backends are its children)."""
    with open(os.path.join(postgres._data, "postmaster.pid"), encoding="utf-8") as fh:
        return int(fh.readline().strip())


def panel_env(database_url: str, redis_url: str, standin_url: str, instance_path: str) -> dict:
    """The environment for the panel's processes: os.environ without PANEL_*, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANEL_")}
    env.update({
        "PANEL_SECRET_KEY": SECRET_KEY,
        "PANEL_DATABASE_URL": database_url,
        "PANEL_REDIS_URL": redis_url,
        "PANEL_PLUGINS": "pds",
        "PANEL_JOB_RETRIES": "3",
        "PANEL_JOB_BACKOFF": "1",
        "PANEL_INSTANCE_PATH": instance_path,
        "PANEL_RATELIMIT_ENABLED": "false",
        "PANEL_USAGE_INTERVAL": "0",
        "PANEL_PLUGIN_PDS_API_URL": standin_url,
        "PANEL_PLUGIN_PDS_API_TOKEN": TOKEN,
        "PANEL_PLUGIN_PDS_HOSTNAME_DOMAIN": HOSTNAME_DOMAIN,
        "PYTHONUNBUFFERED": "1",
    })
    return env


def prepare_database(env: dict, paid_price: str | None = None) -> str:
    """Migrate the database, enable the pds plugin, import a free plan (and a paid one on
    ``paid_price``), make a user and an API token. Returns the plain token."""
    for key in [k for k in os.environ if k.startswith("PANEL_")]:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.startswith("PANEL_")})
    from flask_migrate import upgrade

    from panel import create_app
    from panel.catalog import import_catalog
    from panel.extensions import db
    from panel.models import ApiToken, User
    from panel.plugins import set_enabled

    app = create_app()
    with app.app_context():
        upgrade()
        set_enabled("pds", True)
        catalog = "plans: [{slug: pds-free, name: Free, backend: pds, options: {disksize_gb: 5}}"
        if paid_price:
            catalog += f", {{slug: pds-paid, name: Paid, backend: pds, stripe_price: {paid_price}, " \
                       "options: {disksize_gb: 5}}"
        import_catalog(catalog + "]")
        user = User(email="bench@example.com")
        user.set_password("password123")
        db.session.add(user)
        _, plain = ApiToken.issue(user)
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return plain


def start_gunicorn(env: dict, port: int, log_path: str, target: str | None = None,
                   workers: int = 2) -> subprocess.Popen:
    """Serve ``target`` (default the panel) with ``gunicorn -w workers`` on 127.0.0.1:``port``."""
    target = target or ("wsgi:app" if os.path.exists(os.path.join(ROOT, "wsgi.py")) else "panel:create_app()")
    gunicorn = shutil.which("gunicorn") or os.path.join(os.path.dirname(sys.executable), "gunicorn")
    cmd = [gunicorn, "-w", str(workers), "-b", f"127.0.0.1:{port}", "--timeout", "60", "--backlog", "2048",
           "--chdir", ROOT, "--pythonpath", f"{ROOT},{HERE}", "--error-logfile", log_path, target]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def start_workers(env: dict, processes: int, threads: int, log_dir: str, sweep: bool = True) -> list:
    """Start ``processes`` ``panel worker --threads threads`` (each in its own session)."""
    procs = []
    for i in range(processes):
        log = open(os.path.join(log_dir, f"worker-{i}.log"), "wb")
        try:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "panel.cli", "worker", "--threads", str(threads),
                 *([] if sweep else ["--sweep-interval", "0"])], cwd=ROOT, env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        finally:
            log.close()
    return procs


def wait_workers(redis_url: str, procs: list, log_dir: str, timeout: float = 60) -> None:
    """Wait until every worker has registered with Redis (so start-up is not timed)."""
    from redis import Redis
    from rq import Worker

    conn = Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for i, proc in enumerate(procs):
                if proc.poll() is not None:
                    raise BenchError(f"worker {i} exited with {proc.returncode}:\n"
                                     f"{tail(os.path.join(log_dir, f'worker-{i}.log'))}")
            if Worker.count(connection=conn) >= len(procs):
                return
            time.sleep(0.1)
    finally:
        conn.close()
    raise BenchError(f"workers did not register within {timeout:.0f}s")


class Standin:
    """The PDS stand-in in a process of its own (its CPU is counted apart), control API over HTTP."""

    def __init__(self, latency_ms: int, log_path: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "panel_pds.standin", "--port", str(self.port),
                                      "--token", TOKEN, "--latency-ms", str(latency_ms)],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_http(f"{self.url}/_standin/faults", self.proc, 30, log_path)

    def _get(self, what: str) -> list:
        import requests

        return requests.get(f"{self.url}/_standin/{what}", timeout=30).json()[what]

    def services(self) -> list:
        """Every PDS service the stand-in holds."""
        return self._get("services")

    def requests(self) -> list:
        """Every API request it answered."""
        return self._get("requests")

    def stop(self) -> None:
        stop_group(self.proc, "stand-in")


# --------------------------------------------------------------------------- a round

class Sql:
    """A psycopg2 connection of the benchmark's own (autocommit) for reading timestamps."""

    def __init__(self, url: str):
        import psycopg2

        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True

    def rows(self, query: str, params=()) -> list:
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()

    def close(self) -> None:
        self.conn.close()


class Round:
    """One round's figures (see ``report``)."""

    def __init__(self, kind: str, index: int, orders: int, paid: int):
        self.kind, self.index, self.orders, self.paid = kind, index, orders, paid
        self.ids: list[int] = []
        self.failed = 0
        self.wall = float("nan")
        self.run_ms: list[float] = []
        self.wait_ms: list[float] = []
        self.cpu: dict[str, float] = {}
        self.window: Window | None = None

    @property
    def throughput(self) -> float:
        return len(self.ids) / self.wall if self.wall and self.wall == self.wall and self.wall > 0 else 0.0


def _clients(count: int, work, clients: int) -> None:
    pool = ThreadPoolExecutor(max_workers=clients, thread_name_prefix="client")
    try:
        for future in [pool.submit(work, i) for i in range(count)]:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _Http:
    """A keep-alive HTTP/1.1 client on one connection (``http.client``: the client is on the
    same two cores as what it measures, so it should cost little CPU)."""

    def __init__(self, base: str):
        from urllib.parse import urlsplit

        parts = urlsplit(base)
        self.host, self.port = parts.hostname, parts.port
        self.conn = None

    def post(self, path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
        import http.client

        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT)
            try:
                self.conn.request("POST", path, body=body, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def _client(local, base: str) -> _Http:
    client = getattr(local, "client", None)
    if client is None:
        client = local.client = _Http(base)
    return client


def panel_round(ctx, rnd: Round, offset: int) -> None:
    """Place the round's orders through the panel API and wait until they are all active."""
    import hashlib
    import hmac
    import random

    local = threading.local()
    headers = {"Authorization": f"Bearer {ctx.token}"}
    paid_every = set(random.Random(rnd.index).sample(range(rnd.orders), rnd.paid))

    def one(i: int) -> None:
        client = _client(local, ctx.base)
        paid = i in paid_every
        plan = "pds-paid" if paid else "pds-free"
        body = json.dumps({"plan": plan, "params": {"username": f"b{offset + i:06d}"}}).encode()
        status, answer = client.post("/api/v1/orders", body, {**headers, "Content-Type": "application/json"})
        if status != 201:
            raise BenchError(f"order {offset + i} answered HTTP {status}: {answer[:500]!r}")
        sid = json.loads(answer)["service"]["id"]
        rnd.ids.append(sid)
        if paid:  # Stripe's part: the checkout completed, signed like Stripe signs it
            event = json.dumps(ctx.checkout_completed(sid))
            ts = int(time.time())
            mac = hmac.new(ctx.whsec.encode(), f"{ts}.{event}".encode(), hashlib.sha256).hexdigest()
            status, answer = client.post("/stripe/webhook", event.encode(),
                                         {"Content-Type": "application/json", "Stripe-Signature": f"t={ts},v1={mac}"})
            if status != 200:
                raise BenchError(f"webhook for order {offset + i} answered HTTP {status}: {answer[:300]!r}")

    _clients(rnd.orders, one, ctx.clients)
    deadline = time.monotonic() + ctx.timeout
    while time.monotonic() < deadline:
        done = ctx.sql.rows("SELECT count(*) FILTER (WHERE status IN ('active', 'failed')), "
                            "count(*) FILTER (WHERE status = 'failed') FROM services WHERE id = ANY(%s)",
                            (rnd.ids,))[0]
        if done[0] == len(rnd.ids):
            break
        time.sleep(0.2)
    else:
        print(f"  round {rnd.index + 1}: {len(rnd.ids) - done[0]} order(s) not done after {ctx.timeout:.0f} s",
              flush=True)
    rnd.failed = done[1]
    rows = ctx.sql.rows(
        """SELECT s.id, s.created_at,
                  MIN(e.at) FILTER (WHERE e.kind = 'started' AND o.action = 'provision'),
                  MIN(e.at) FILTER (WHERE e.to_status = 'active')
           FROM services s JOIN service_events e ON e.service_id = s.id
           LEFT JOIN operations o ON o.id = e.operation_id
           WHERE s.id = ANY(%s) GROUP BY s.id, s.created_at""", (rnd.ids,))
    _timings(rnd, [(r[1], r[2], r[3]) for r in rows])


def floor_round(ctx, rnd: Round, offset: int) -> None:
    """The same orders through the floor (``floors.order_floor`` and ``floors.consume``)."""
    import random

    local = threading.local()
    paid_every = set(random.Random(rnd.index).sample(range(rnd.orders), rnd.paid))

    def one(i: int) -> None:
        client = _client(local, ctx.floor_base)
        paid = i in paid_every
        status, answer = client.post("/order", json.dumps({"paid": paid}).encode(), {"Content-Type": "application/json"})
        if status != 201:
            raise BenchError(f"floor order answered HTTP {status}: {answer[:300]!r}")
        order_id = json.loads(answer)["id"]
        rnd.ids.append(order_id)
        if paid:
            client.post(f"/paid/{order_id}", b"{}", {"Content-Type": "application/json"})

    _clients(rnd.orders, one, ctx.clients)
    deadline = time.monotonic() + ctx.timeout
    while time.monotonic() < deadline:
        left = len(rnd.ids) - ctx.sql.rows("SELECT count(done_at) FROM floor_orders WHERE id = ANY(%s)",
                                           (rnd.ids,))[0][0]
        if not left:
            break
        time.sleep(0.2)
    else:
        print(f"  round {rnd.index + 1}: {left} floor order(s) not done after {ctx.timeout:.0f} s", flush=True)
    rows = ctx.sql.rows("SELECT created_at, started_at, done_at FROM floor_orders WHERE id = ANY(%s)", (rnd.ids,))
    _timings(rnd, rows)


def _timings(rnd: Round, rows) -> None:
    created = [r[0] for r in rows if r[0] is not None]
    done = [r[2] for r in rows if r[2] is not None]
    if created and done and len(done) == len(rnd.ids):
        rnd.wall = (max(done) - min(created)).total_seconds()
    rnd.run_ms = [(r[2] - r[1]).total_seconds() * 1000 for r in rows if r[1] is not None and r[2] is not None]
    rnd.wait_ms = [(r[1] - r[0]).total_seconds() * 1000 for r in rows if r[1] is not None]


# --------------------------------------------------------------------------- the run

class Context:
    """What the rounds need (addresses, the token, the database, Stripe's part)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def checkout_completed(self, service_id: int) -> dict:
        """Stripe's ``checkout.session.completed`` for the checkout the panel opened."""
        from billinglib import checkout_session_obj, make_event

        session_id, customer, user_id = self.sql.rows(
            "SELECT s.checkout_session_id, s.stripe_customer_id, v.user_id FROM subscriptions s "
            "JOIN services v ON v.id = s.service_id WHERE s.service_id = %s", (service_id,))[0]

        class Svc:
            id, user_id = service_id, None

        svc = Svc()
        svc.user_id = user_id
        obj = checkout_session_obj(svc, subscription=f"sub_bench{service_id:07d}", customer=customer,
                                   session_id=session_id)
        return make_event("checkout.session.completed", obj)


def run(args) -> int:
    """Stand the stack up, run the rounds, print the report; returns the exit status."""
    import floors

    K, P, L = args.workers, args.processes, args.latency_ms
    if K % P:
        raise BenchError("--workers must be a multiple of --processes")
    tmp = tempfile.mkdtemp(prefix="panel-bench-")
    postgres = redis = standin = gunicorn = floor_app = floor_worker = None
    stripe_up = stripe_router = None
    worker_procs: list = []
    sql = None
    try:
        print(f"starting PostgreSQL, Redis, the PDS stand-in ({L} ms per request)...", flush=True)
        postgres, redis = start_databases()
        standin = Standin(L, os.path.join(tmp, "standin.log"))
        env = panel_env(postgres.create_database(), redis.url, standin.url, tmp)
        whsec = None
        paid_price = None
        if args.paid > 0:
            for path in (os.path.join(ROOT, "tests"), os.path.join(ROOT, "tests", "billing")):
                if path not in sys.path:
                    sys.path.insert(0, path)
            from fault_injection import _start_stripe
            from billinglib import PRICE_PAID, SECRET_KEY as STRIPE_KEY, WHSEC

            stripe_up, stripe_router = _start_stripe()
            whsec, paid_price = WHSEC, PRICE_PAID
            env.update({"PANEL_STRIPE_SECRET_KEY": STRIPE_KEY, "PANEL_STRIPE_WEBHOOK_SECRET": WHSEC,
                        "PANEL_STRIPE_API_BASE": stripe_router.url, "PANEL_PUBLIC_URL": "https://panel.bench.example.test"})
        token = prepare_database(env, paid_price)
        floors.create_tables(env["PANEL_DATABASE_URL"].replace("postgresql+psycopg2", "postgresql"))
        floor_env = dict(env, FLOOR_DATABASE_URL=env["PANEL_DATABASE_URL"], FLOOR_REDIS_URL=redis.url,
                         FLOOR_STANDIN_URL=standin.url, FLOOR_STANDIN_TOKEN=TOKEN,
                         FLOOR_WEBHOOK_SECRET=whsec or "whsec_unused")

        port, floor_port = free_port(), free_port()
        base, floor_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{floor_port}"
        print(f"starting gunicorn -w 2 (panel, floor), {P} panel worker(s) x {K // P} thread(s), the floor's "
              f"worker ({K} threads)...", flush=True)
        gunicorn = start_gunicorn(env, port, os.path.join(tmp, "gunicorn.log"))
        floor_app = start_gunicorn(floor_env, floor_port, os.path.join(tmp, "floor.log"), "floors:order_floor()")
        worker_procs = start_workers(env, P, K // P, tmp)
        log = open(os.path.join(tmp, "floor-worker.log"), "wb")
        floor_worker = subprocess.Popen([sys.executable, os.path.join(HERE, "floors.py"), "consume", str(K)],
                                        cwd=HERE, env=floor_env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
        wait_http(f"{base}/api/v1/plans", gunicorn, 60, os.path.join(tmp, "gunicorn.log"))
        wait_http(f"{floor_base}/nothing", floor_app, 60, os.path.join(tmp, "floor.log"))
        wait_workers(redis.url, worker_procs, tmp)

        sql = Sql(env["PANEL_DATABASE_URL"].replace("postgresql+psycopg2", "postgresql"))
        ideal = K / (L / 1000) if L else float("inf")
        ctx = Context(base=base, floor_base=floor_base, token=token, sql=sql, clients=args.clients,
                      whsec=whsec, timeout=max(120.0, 10 * args.orders / ideal))
        pg_pid, redis_pid_ = postgres_pid(postgres), redis_pid(redis)
        meter = CpuMeter({"gunicorn": gunicorn.pid, "workers": [p.pid for p in worker_procs],
                          "postgres": pg_pid, "redis": redis_pid_, "floor app": floor_app.pid,
                          "floor worker": floor_worker.pid, "stand-in": standin.proc.pid, "client": os.getpid()}, solo=("client",))
        per_round = max(1, args.orders // (args.rounds // 2))
        rounds: list[Round] = []
        # a warm-up of each (imports, pools, compiled statements), not counted
        for kind, fn in (("floor", floor_round), ("panel", panel_round)):
            fn(ctx, Round(kind, -1, min(40, per_round), 0), 900000 if kind == "panel" else 0)
        placed = 0
        for index in range(args.rounds):
            kind = ("floor", "panel", "panel", "floor")[index % 4]  # ABBA: both see the same drift in load
            rnd = Round(kind, index, per_round, int(round(per_round * args.paid)))
            print(f"round {index + 1}/{args.rounds}: {kind}, {per_round} orders "
                  f"({rnd.paid} paid)...", flush=True)
            before = meter.snapshot()
            with Window() as window:
                if kind == "panel":
                    panel_round(ctx, rnd, placed)
                    placed += per_round
                else:
                    floor_round(ctx, rnd, 0)
            rnd.cpu = CpuMeter.since(before, meter.snapshot())
            rnd.window = window
            rounds.append(rnd)
        remote = standin.services()
        report(args, rounds, ideal, remote, placed)
        hostnames = {svc.get("hostname") for svc in remote}
        ok = all(r.failed == 0 and r.wall == r.wall for r in rounds) and len(remote) == len(hostnames) \
            and len(remote) >= placed
        return 0 if ok else 1
    finally:
        print("stopping everything...", flush=True)
        if sql is not None:
            sql.close()
        for i, proc in enumerate(worker_procs):
            stop_group(proc, f"worker {i}")
        for proc, name in ((gunicorn, "gunicorn"), (floor_app, "floor app"), (floor_worker, "floor worker")):
            stop_group(proc, name)
        if standin is not None:
            standin.stop()
        for server in (stripe_up,):
            if server is not None:
                server.stop()
        if stripe_router is not None:
            stripe_router.stop()
        for server in (redis, postgres):
            if server is not None:
                server.stop()
        if args.keep_logs:
            print(f"logs kept in {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


PANEL_PROCS = ("gunicorn", "workers", "postgres", "redis")
FLOOR_PROCS = ("floor app", "floor worker", "postgres", "redis")


def report(args, rounds: list[Round], ideal: float, remote: list, placed: int) -> None:
    """Print the figures (see the module docstring)."""
    K, P, L = args.workers, args.processes, args.latency_ms
    print()
    print("provision_pipeline results")
    print(f"  K = {K} jobs at once ({P} panel worker process(es) x {K // P} threads), L = {L} ms per stand-in "
          f"request, {args.clients} client threads, {args.paid:.0%} paid orders (two jobs each)")
    print(f"  ideal K/L = {ideal:.1f} provisions/s")
    print(f"  {'round':6} {'kind':6} {'orders':>6} {'wall s':>7} {'prov/s':>7} {'of K/L':>7} "
          f"{'run p50':>8} {'run p99':>8} {'wait p50':>9} {'CPU ms/prov':>12} {'stand-in':>9} {'client':>7}  machine")
    for r in rounds:
        own = sum(r.cpu.get(n, 0.0) for n in (PANEL_PROCS if r.kind == "panel" else FLOOR_PROCS))
        n = max(len(r.ids), 1)
        everything = sum(r.cpu.values())
        print(f"  {r.index + 1:<6} {r.kind:6} {len(r.ids):>6} {r.wall:7.2f} {r.throughput:7.1f} "
              f"{r.throughput / ideal:7.1%} {percentile(r.run_ms, 50):8.0f} {percentile(r.run_ms, 99):8.0f} "
              f"{percentile(r.wait_ms, 50):9.0f} {own * 1000 / n:12.1f} {r.cpu.get('stand-in', 0) * 1000 / n:9.1f} "
              f"{r.cpu.get('client', 0) * 1000 / n:7.1f}  {r.window.describe(everything)}")
    panel = [r for r in rounds if r.kind == "panel"]
    floor = [r for r in rounds if r.kind == "floor"]
    print(f"  panel: of K/L median {median(r.throughput / ideal for r in panel):.1%} "
          f"(rounds {spread(r.throughput / ideal for r in panel)}); vs the floor: median "
          f"{median(p.throughput / f.throughput for p, f in zip(panel, floor) if f.throughput):.2f}x "
          f"(pairs {spread(p.throughput / f.throughput for p, f in zip(panel, floor) if f.throughput)}); "
          f"floor of K/L median {median(r.throughput / ideal for r in floor):.1%}")
    cpu = [sum(r.cpu.get(n, 0.0) for n in PANEL_PROCS) * 1000 / max(len(r.ids), 1) for r in panel]
    fcpu = [sum(r.cpu.get(n, 0.0) for n in FLOOR_PROCS) * 1000 / max(len(r.ids), 1) for r in floor]
    parts = {n: median(r.cpu.get(n, 0.0) * 1000 / max(len(r.ids), 1) for r in panel) for n in PANEL_PROCS}
    print(f"  CPU per provision, panel (gunicorn + workers + PostgreSQL + Redis): median {median(cpu):.1f} ms "
          f"(rounds {spread(cpu)}; " + ", ".join(f"{n} {v:.1f}" for n, v in parts.items()) +
          f"); floor: median {median(fcpu):.1f} ms")
    run_p99 = [percentile(r.run_ms, 99) for r in panel]
    print(f"  job run (started -> active) p99: median {median(run_p99):.0f} ms = "
          f"{median(run_p99) / L if L else float('nan'):.2f} x L (rounds {spread(x / L for x in run_p99) if L else 'n/a'})")
    hostnames = Counter(svc.get("hostname") for svc in remote)
    dupes = sum(n - 1 for n in hostnames.values() if n > 1)
    failed = sum(r.failed for r in panel)
    print(f"  stand-in services {len(remote)} for {placed} panel orders (+ warm-up), {dupes} duplicate hostname(s); "
          f"failed {failed}")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the benchmark; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1000, help="panel orders over all its rounds (1000)")
    parser.add_argument("--workers", type=int, default=4, help="K: jobs running at once (4)")
    parser.add_argument("--processes", type=int, default=0,
                        help="panel worker processes sharing K (0: one per core, as many as divide K)")
    parser.add_argument("--latency-ms", type=int, default=100, help="L: stand-in latency per request (100)")
    parser.add_argument("--paid", type=float, default=0.0, help="share of paid orders, 0 to 1 (0)")
    parser.add_argument("--clients", type=int, default=16, help="client threads placing orders (16)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds, half floor, half panel (4)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs and say where")
    args = parser.parse_args(argv)
    if args.processes == 0:  # the README's deployment: one worker unit per core, K/P threads each
        args.processes = max(p for p in range(1, min(args.workers, os.cpu_count() or 1) + 1) if args.workers % p == 0)
    if not (1 <= args.orders <= 100_000 and 1 <= args.workers <= 256 and 1 <= args.processes <= 64
            and 0 <= args.latency_ms <= 60_000 and 0 <= args.paid <= 1 and 1 <= args.clients <= 256
            and 2 <= args.rounds <= 40 and args.rounds % 2 == 0):
        parser.error("out of range (rounds must be even)")
    signal.signal(signal.SIGTERM, _terminate_sigterm)
    try:
        return run(args)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; everything it started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
