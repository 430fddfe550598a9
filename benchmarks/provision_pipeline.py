"""Benchmark: the provisioning pipeline, end to end, with real components.

What it measures: how fast free PDS orders placed through the HTTP API become ``active``
services, and how close that comes to the limit the remote API's latency sets.

The stack is the real one, on loopback only:

* PostgreSQL and Redis (``panel.testing.PostgresServer`` / ``RedisServer``, throwaway);
* the PDS deploy API stand-in (``panel_pds.standin.PdsStandIn``) holding every API request
  ``--latency-ms`` milliseconds before it answers (the remote host's latency);
* the panel API served by gunicorn (``gunicorn -w 2``; ``wsgi:app``, or ``panel:create_app()``
  when there is no ``wsgi.py``);
* ``--workers`` K ``panel worker --sweep-interval 0`` processes (RQ, one forked job per operation).

It POSTs ``--orders`` N free orders (distinct usernames, hence distinct hostnames) from a few client
threads while polling ``GET /api/v1/services`` (the list endpoint, no live backend calls) every
50 ms (or, once a poll takes longer than 25 ms, leaving the endpoint idle as long as the poll took),
until every service is active or failed, or a timeout of max(120 s, 5 x the ideal time) passes.

Numbers printed:

* wall time: first order sent -> last service seen active; throughput = N / wall time;
* ideal throughput: each provision holds a worker for at least one stand-in round trip of L ms,
  so K workers cannot beat K / L services/s; the PDS backend may make more than one request per
  provision, so K / (L x requests per provision) is printed too (requests counted on the stand-in);
* ratio measured / ideal;
* order -> active latency (p50/p99, ms) as the client saw it (POST sent -> first poll that saw it
  active; poll resolution is printed), and the same from the panel's own timestamps (service
  created -> "active" event), split into queue wait (created -> job started) and run time;
* checks: the stand-in holds exactly N services with N distinct hostnames, none failed.

The order endpoint's rate limit (30/min per client address) is turned off for the benchmark's
gunicorn (``PANEL_RATELIMIT_ENABLED=false``): every order comes from 127.0.0.1.

Run: ``python benchmarks/provision_pipeline.py [--orders 500] [--workers 4] [--latency-ms 100]``.
It is not a test (pytest does not collect ``benchmarks/``). Everything it starts is stopped in
``finally`` blocks, also on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import math
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
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TOKEN = "bench-deploy-token-0123456789"
SECRET_KEY = "bench-secret-key-0123456789abcdef"
HOSTNAME_DOMAIN = "pds.bench.example.com"
CLIENT_THREADS = 4
POLL_INTERVAL = 0.05
HTTP_TIMEOUT = 30


class BenchError(RuntimeError):
    """The benchmark could not run (a server did not start, an order was refused...)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank ``pct`` percentile of ``values`` (NaN when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


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
    # the group may outlive its leader (an RQ work horse): make sure it is gone
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log_path: str) -> None:
    """Wait until ``GET url`` answers 200; raise ``BenchError`` (with the log's tail) otherwise."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"gunicorn exited with {proc.returncode}:\n{tail(log_path)}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise BenchError(f"{url} did not answer 200 within {timeout:.0f}s:\n{tail(log_path)}")


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
    The caller stops whichever was started (both are returned or the exception carries none).
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
        "PANEL_PLUGIN_PDS_API_URL": standin_url,
        "PANEL_PLUGIN_PDS_API_TOKEN": TOKEN,
        "PANEL_PLUGIN_PDS_HOSTNAME_DOMAIN": HOSTNAME_DOMAIN,
        "PYTHONUNBUFFERED": "1",
    })
    return env


def prepare_database(env: dict) -> str:
    """Migrate the database, enable the pds plugin, import a free plan, make a user and an API
    token. Returns the plain token. Runs in this process with ``env`` applied to ``os.environ``."""
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
        import_catalog("plans: [{slug: pds-free, name: Free, backend: pds, options: {disksize_gb: 5}}]")
        user = User(email="bench@example.com")
        user.set_password("password123")
        db.session.add(user)
        _, plain = ApiToken.issue(user)
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return plain


def server_side_timings(env: dict, service_ids: list[int]) -> dict:
    """From the panel's own timestamps: per service, created -> job started and created -> active
    (seconds), read from ``services.created_at`` and the ``service_events`` log."""
    import psycopg2

    url = env["PANEL_DATABASE_URL"]
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                """SELECT s.id,
                          EXTRACT(EPOCH FROM (MIN(e.at) FILTER (WHERE e.kind = 'started') - s.created_at)),
                          EXTRACT(EPOCH FROM (MIN(e.at) FILTER (WHERE e.to_status = 'active') - s.created_at))
                   FROM services s JOIN service_events e ON e.service_id = s.id
                   WHERE s.id = ANY(%s) GROUP BY s.id, s.created_at""", (service_ids,))
            rows = cur.fetchall()
    finally:
        conn.close()
    wait = [float(r[1]) for r in rows if r[1] is not None]
    total = [float(r[2]) for r in rows if r[2] is not None]
    run = [float(r[2]) - float(r[1]) for r in rows if r[1] is not None and r[2] is not None]
    return {"wait": wait, "total": total, "run": run}


def start_gunicorn(env: dict, port: int, log_path: str) -> subprocess.Popen:
    """Serve the panel with ``gunicorn -w 2`` on 127.0.0.1:``port`` (its own session)."""
    target = "wsgi:app" if os.path.exists(os.path.join(ROOT, "wsgi.py")) else "panel:create_app()"
    gunicorn = shutil.which("gunicorn")
    cmd = ([gunicorn] if gunicorn else [sys.executable, "-m", "gunicorn"]) + [
        "-w", "2", "-b", f"127.0.0.1:{port}", "--timeout", "60", "--error-logfile", log_path, target]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def start_workers(env: dict, count: int, log_dir: str) -> list[subprocess.Popen]:
    """Start ``count`` ``panel worker --sweep-interval 0`` processes (each in its own session)."""
    procs = []
    for i in range(count):
        log = open(os.path.join(log_dir, f"worker-{i}.log"), "wb")
        try:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "panel.cli", "worker", "--sweep-interval", "0"], cwd=ROOT, env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        finally:
            log.close()
    return procs


def wait_workers(redis_url: str, procs: list[subprocess.Popen], log_dir: str, timeout: float = 60) -> None:
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
    raise BenchError(f"only {Worker.count(connection=Redis.from_url(redis_url))} of {len(procs)} "
                     f"workers registered within {timeout:.0f}s")


def place_orders(base: str, token: str, count: int, threads: int, ordered: dict) -> float:
    """POST ``count`` free orders from ``threads`` client threads.

    Fills ``ordered`` with ``{service_id: time the POST was sent}`` as answers arrive (the poller
    reads it meanwhile) and returns when the last answer arrived (monotonic seconds). Raises
    ``BenchError`` on the first refused order.
    """
    import requests

    local = threading.local()
    headers = {"Authorization": f"Bearer {token}"}

    def one(i: int) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        sent = time.monotonic()
        r = session.post(f"{base}/api/v1/orders", headers=headers, timeout=HTTP_TIMEOUT,
                         json={"plan": "pds-free", "params": {"username": f"bench-{i:05d}"}})
        if r.status_code != 201:
            raise BenchError(f"order {i} answered HTTP {r.status_code}: {r.text[:500]}")
        ordered[r.json()["service"]["id"]] = sent

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="order")
    try:
        for future in [pool.submit(one, i) for i in range(count)]:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error or Ctrl-C: drop what is queued
    return time.monotonic()


def poll_until_done(base: str, token: str, ordered: dict, all_placed: threading.Event,
                    timeout_at: float, stop: threading.Event) -> tuple[dict, dict, list]:
    """Poll ``GET /api/v1/services`` every ``POLL_INTERVAL`` s, from the first order on, until every
    order is placed (``all_placed``) and every service in ``ordered`` is active or failed, or
    ``timeout_at`` (monotonic) passes, or ``stop`` is set.

    Returns ``(active_at, final_status, poll_durations)``: when each service was first seen active
    (the poll's answer time), each service's last seen status, and how long each poll took.
    """
    import requests

    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}"}
    active_at: dict[int, float] = {}
    status: dict[int, str] = {}
    durations: list[float] = []
    while not stop.is_set():
        placed = all_placed.is_set()  # read before the poll: every id is in ``ordered`` by then
        started = time.monotonic()
        r = session.get(f"{base}/api/v1/services", headers=headers, timeout=HTTP_TIMEOUT)
        now = time.monotonic()
        durations.append(now - started)
        if r.status_code != 200:
            raise BenchError(f"GET /api/v1/services answered HTTP {r.status_code}: {r.text[:300]}")
        for svc in r.json()["services"]:
            sid = svc["id"]
            status[sid] = svc["status"]
            if svc["status"] == "active" and sid not in active_at:
                active_at[sid] = now
        ids = list(ordered)
        done = sum(1 for sid in ids if status.get(sid) in ("active", "failed"))
        if (placed and done == len(ids)) or now >= timeout_at:
            break
        # Every POLL_INTERVAL s, but idle at least as long as the last poll took: the list endpoint
        # gets slow with many services, and back-to-back polls would take a gunicorn worker away
        # from the orders for the whole run.
        elapsed = time.monotonic() - started
        time.sleep(max(POLL_INTERVAL - elapsed, elapsed))
    return active_at, status, durations


def run(orders: int, workers: int, latency_ms: int) -> int:
    """Stand the stack up, run the benchmark, print the report; returns the exit status
    (0 when every order ended active with exactly one remote service each, 1 otherwise)."""
    from panel_pds.standin import PdsStandIn

    latency = latency_ms / 1000
    ideal_basic = workers / latency if latency else float("inf")
    ideal_seconds = orders / ideal_basic if latency else 0.0
    timeout = max(120.0, 5 * ideal_seconds)

    tmp = tempfile.mkdtemp(prefix="panel-bench-")
    postgres = redis = standin = gunicorn = None
    worker_procs: list[subprocess.Popen] = []
    try:
        print(f"starting PostgreSQL, Redis, PDS stand-in ({latency_ms} ms per request)...", flush=True)
        postgres, redis = start_databases()
        import redis as redis_lib

        redis_lib.Redis.from_url(redis.url).flushall()
        standin = PdsStandIn(token=TOKEN, latency_ms=latency_ms).start()
        env = panel_env(postgres.create_database(), redis.url, standin.url, tmp)
        token = prepare_database(env)

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        gunicorn_log = os.path.join(tmp, "gunicorn.log")
        print(f"starting gunicorn -w 2 on {base} and {workers} worker(s)...", flush=True)
        gunicorn = start_gunicorn(env, port, gunicorn_log)
        worker_procs = start_workers(env, workers, tmp)
        wait_http(f"{base}/api/v1/plans", gunicorn, 60, gunicorn_log)
        wait_workers(redis.url, worker_procs, tmp)

        print(f"placing {orders} orders from {CLIENT_THREADS} client threads...", flush=True)
        t0 = time.monotonic()
        ordered: dict[int, float] = {}
        all_placed, stop_polling = threading.Event(), threading.Event()
        poll_result: dict = {}

        def poller():
            try:
                poll_result["value"] = poll_until_done(base, token, ordered, all_placed, t0 + timeout,
                                                       stop_polling)
            except BaseException as exc:  # handed to the main thread
                poll_result["error"] = exc

        poll_thread = threading.Thread(target=poller, name="poller", daemon=True)
        poll_thread.start()
        try:
            orders_done = place_orders(base, token, orders, CLIENT_THREADS, ordered)
            all_placed.set()
            while poll_thread.is_alive():
                poll_thread.join(0.5)
        finally:
            stop_polling.set()
            poll_thread.join(HTTP_TIMEOUT + 5)
        if "error" in poll_result:
            raise BenchError(f"polling failed: {poll_result['error']!r}")
        active_at, status, poll_durations = poll_result["value"]
        active_at = {sid: t for sid, t in active_at.items() if sid in ordered}
        status = {sid: s for sid, s in status.items() if sid in ordered}

        requests_seen = standin.requests()
        remote = standin.services()
        timings = server_side_timings(env, list(ordered))
        report(orders=orders, workers=workers, latency_ms=latency_ms, t0=t0, orders_done=orders_done,
               ordered=ordered, active_at=active_at, status=status, poll_durations=poll_durations,
               requests_seen=requests_seen, remote=remote, timings=timings, timeout=timeout)
        failed = sum(1 for s in status.values() if s == "failed")
        hostnames = {svc.get("hostname") for svc in remote}
        ok = len(active_at) == orders and failed == 0 and len(remote) == orders and len(hostnames) == orders
        return 0 if ok else 1
    finally:
        print("stopping everything...", flush=True)
        for i, proc in enumerate(worker_procs):
            stop_group(proc, f"worker {i}")
        stop_group(gunicorn, "gunicorn")
        if standin is not None:
            standin.stop()
        for server in (redis, postgres):
            if server is not None:
                server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def report(*, orders, workers, latency_ms, t0, orders_done, ordered, active_at, status, poll_durations,
           requests_seen, remote, timings, timeout) -> None:
    """Print the benchmark's numbers (see the module docstring for what each means)."""
    latency = latency_ms / 1000
    finished = list(active_at.values())
    wall = (max(finished) - t0) if finished else float("nan")
    throughput = len(finished) / wall if finished and wall > 0 else 0.0
    per_provision = len(requests_seen) / orders if orders else 0.0
    by_call = Counter(f"{r['method']} {_path_shape(r['path'])} {r['status']}" for r in requests_seen)
    ideal_basic = workers / latency if latency else float("inf")
    ideal_counted = workers / (latency * per_provision) if latency and per_provision else float("inf")
    client_ms = [(active_at[sid] - ordered[sid]) * 1000 for sid in active_at]
    failed = sum(1 for s in status.values() if s == "failed")
    not_done = orders - len(active_at) - failed
    hostnames = Counter(svc.get("hostname") for svc in remote)
    dupes = sum(n - 1 for n in hostnames.values() if n > 1)

    def ms(values):
        return f"p50 {percentile(values, 50) * 1000:8.0f} ms   p99 {percentile(values, 99) * 1000:8.0f} ms"

    print()
    print("provision_pipeline results")
    print(f"  orders                  {orders}")
    print(f"  workers (K)             {workers}   (cpu cores here: {os.cpu_count()})")
    print(f"  stand-in latency (L)    {latency_ms} ms per request")
    print(f"  orders placed in        {orders_done - t0:8.2f} s   ({orders / (orders_done - t0):.1f} orders/s "
          f"from {CLIENT_THREADS} client threads)")
    print(f"  wall time               {wall:8.2f} s   (first order sent -> last service seen active)")
    print(f"  active by last order    {sum(1 for t in finished if t <= orders_done)} of {orders}   "
          f"(seen active when the last order was answered)")
    print(f"  throughput              {throughput:8.2f} services/s")
    print(f"  stand-in requests       {len(requests_seen)} = {per_provision:.2f} per provision  "
          f"({', '.join(f'{k}: {v}' for k, v in sorted(by_call.items()))})")
    print(f"  ideal K/L               {ideal_basic:8.2f} services/s   -> measured/ideal {throughput / ideal_basic:6.1%}")
    print(f"  ideal K/(L x req/prov)  {ideal_counted:8.2f} services/s   -> measured/ideal "
          f"{throughput / ideal_counted:6.1%}")
    print(f"  order->active (client)  p50 {percentile(client_ms, 50):8.0f} ms   p99 {percentile(client_ms, 99):8.0f} ms"
          f"   (POST sent -> first poll seeing it active)")
    print(f"  order->active (server)  {ms(timings['total'])}   (services.created_at -> 'active' event)")
    print(f"    queue wait            {ms(timings['wait'])}   (created -> job started)")
    print(f"    job run               {ms(timings['run'])}   (job started -> active)")
    print(f"  polls                   {len(poll_durations)}, each p50 {percentile(poll_durations, 50) * 1000:.0f} ms"
          f" / max {max(poll_durations, default=0) * 1000:.0f} ms (GET /api/v1/services, every "
          f"max({POLL_INTERVAL * 1000:.0f} ms, 2 x poll time))")
    print(f"  stand-in services       {len(remote)} (expected {orders}; {len(hostnames)} distinct hostnames, "
          f"{dupes} duplicate(s))  {'OK' if len(remote) == orders and dupes == 0 else 'MISMATCH'}")
    print(f"  failed                  {failed}")
    if not_done:
        print(f"  NOT FINISHED            {not_done} still not active after the {timeout:.0f} s timeout "
              f"(statuses: {dict(Counter(s for sid, s in status.items() if sid not in active_at))})")


def _path_shape(path: str) -> str:
    """``/api/v1/service/812/suspend`` -> ``/api/v1/service/{id}/suspend`` (for the request tally)."""
    return "/".join("{id}" if part.isdigit() else part for part in path.split("/"))


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the benchmark; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=500, help="orders to place (default 500)")
    parser.add_argument("--workers", type=int, default=4, help="panel worker processes K (default 4)")
    parser.add_argument("--latency-ms", type=int, default=100,
                        help="stand-in latency per request, ms (default 100)")
    args = parser.parse_args(argv)
    if not (1 <= args.orders <= 100_000):
        parser.error("--orders must be between 1 and 100000")
    if not (1 <= args.workers <= 64):
        parser.error("--workers must be between 1 and 64")
    if not (0 <= args.latency_ms <= 60_000):
        parser.error("--latency-ms must be between 0 and 60000")
    signal.signal(signal.SIGTERM, _terminate_sigterm)
    try:
        return run(args.orders, args.workers, args.latency_ms)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; everything it started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
