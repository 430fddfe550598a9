"""Benchmark: Stripe webhook ingest (verify, store, hand over) against a floor and a bare route,
measured in the same run, interleaved.

    python benchmarks/webhook_ingest.py [--events 6000] [--concurrency 32] [--rounds 6]
                                        [--duplicates 0.1]

A throwaway PostgreSQL and Redis on 127.0.0.1 (``panel.testing``), migrated; three servers under
gunicorn with 2 sync workers each:

* ``panel``: the real ``POST /stripe/webhook`` (signature check, event stored by id, handed to
  the job queue; no worker runs, so only ingest is measured);
* ``floor`` (``floors.webhook_floor``): verify + one ``INSERT ... ON CONFLICT DO NOTHING`` +
  one Redis ``RPUSH``, minimal code: the least a webhook that stores and hands over can do;
* ``bare`` (``floors.webhook_bare``): verify only.

``--rounds`` rounds; in each, every server gets ``--events``/rounds deliveries from
``--concurrency`` keep-alive clients, in a rotating order (so load that changes meanwhile hits
all three alike). ``--duplicates`` of the deliveries are deliveries of an event sent before (as
Stripe does). Per round: deliveries/s, p50/p99 latency, and the CPU per delivery of each server
(its gunicorn processes, PostgreSQL and Redis, which serve one server at a time). Then an
open-loop phase: panel and floor at the same offered rate (70% of the panel's median
throughput), their p99 compared. Printed: the panel/floor and panel/bare ratios (median and
spread over the rounds), CPU per delivery, the machine's load. Exit status 0 when every panel
delivery answered 200 and each distinct event was stored exactly once, 1 otherwise, 2 when
PostgreSQL/Redis cannot start. Everything it starts is stopped at the end. Not a test.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import hmac
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from benchlib import CpuMeter, Window, median, percentile, spread  # noqa: E402

WEBHOOK_SECRET = "whsec_bench_" + "c" * 24
FIXTURES = os.path.join(ROOT, "tests", "billing", "fixtures3.json")
SERVERS = ("panel", "floor", "bare")


def sign(payload: str) -> str:
    """Stripe's ``Stripe-Signature``: ``t=<ts>,v1=<hmac_sha256(secret, "<ts>.<payload>")>``."""
    ts = int(time.time())
    mac = hmac.new(WEBHOOK_SECRET.encode(), f"{ts}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def build_events(n: int, tag: str) -> list[str]:
    """``n`` distinct events in Stripe's shapes (checkout.session.completed, invoice.paid,
    customer.subscription.updated), as JSON strings."""
    with open(FIXTURES, encoding="utf-8") as fh:
        res = json.load(fh)["resources"]
    kinds = [("checkout.session.completed", res["checkout.session"]), ("invoice.paid", res["invoice"]),
             ("customer.subscription.updated", res["subscription"])]
    out = []
    for i in range(n):
        type_, obj = kinds[i % len(kinds)]
        event = copy.deepcopy(res["event"])
        event.update(id=f"evt_{tag}_{i:06d}_{uuid.uuid4().hex[:8]}", type=type_, created=int(time.time()),
                     livemode=False)
        event["data"] = {"object": copy.deepcopy(obj)}
        out.append(json.dumps(event))
    return out


def with_duplicates(events: list[str], share: float, rng: random.Random) -> list[str]:
    """The deliveries of a round: ``events`` in order, with ``share`` of the total being second
    deliveries of an event sent earlier in the round (some close behind it, some later)."""
    out = list(events)
    extra = int(len(events) * share / max(1e-9, 1 - share))
    for _ in range(extra):
        at = rng.randrange(1, len(out) + 1)
        out.insert(at, out[rng.randrange(0, at)])
    return out


def gunicorn(app_spec: str, port: int, env: dict, log_path: str) -> subprocess.Popen:
    log = open(log_path, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
                                 "--backlog", "2048", "--chdir", HERE, "--pythonpath", f"{ROOT},{HERE}",
                                 "--log-level", "warning", app_spec], env=env, stdout=log, stderr=log,
                                start_new_session=True)
    finally:
        log.close()


def wait_http(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/__nothing__")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not answer on {port}")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _post(conn, body: str):
    conn.request("POST", "/stripe/webhook", body=body.encode(),
                 headers={"Content-Type": "application/json", "Stripe-Signature": sign(body)})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def fire(port: int, bodies: list[str], concurrency: int, rate: float | None = None):
    """POST the bodies in order from ``concurrency`` keep-alive clients, as fast as they answer
    (``rate`` None) or each at its slot of ``rate`` per second (open loop: latency counts from the
    slot). Returns (seconds, latencies in ms, count per HTTP status)."""
    lock = threading.Lock()
    todo = list(enumerate(bodies))
    todo.reverse()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    began = time.perf_counter()

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if not todo:
                    break
                index, body = todo.pop()
            start = time.perf_counter()
            if rate:
                slot = began + index / rate
                if slot > start:
                    time.sleep(slot - start)
                start = slot
            try:
                status = _post(conn, body)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                status = 0
            elapsed = (time.perf_counter() - start) * 1000
            with lock:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - began, latencies, statuses


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=6000, help="deliveries per server over all rounds (max 60000)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients (max 128)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds (each server once a round)")
    parser.add_argument("--duplicates", type=float, default=0.1, help="share of deliveries that are repeats (0.1)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _sigterm)  # stop everything on SIGTERM too (the finally below)
    n = max(30, min(args.events, 60000))
    concurrency = max(1, min(args.concurrency, 128))
    rounds = max(1, min(args.rounds, 50))
    per_round = n // rounds
    share = min(max(args.duplicates, 0.0), 0.5)

    import floors

    from panel.testing import PostgresServer, RedisServer, free_port

    pg = redis = None
    procs: dict[str, subprocess.Popen] = {}
    workdir = tempfile.mkdtemp(prefix="panel-bench-")
    try:
        try:
            pg, redis = PostgresServer(), RedisServer()
        except BaseException as exc:  # panel.testing skips (pytest) when binaries are missing
            print(f"cannot start PostgreSQL/Redis: {exc}", file=sys.stderr)
            return 2
        db_url = pg.create_database()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PANEL_")}
        env.update(PANEL_DATABASE_URL=db_url, PANEL_REDIS_URL=redis.url, PANEL_SECRET_KEY="bench-secret-key-0123456789",
                   PANEL_PLUGINS="", PANEL_STRIPE_SECRET_KEY="sk_test_bench_not_used",
                   PANEL_STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET, PANEL_PUBLIC_URL="http://127.0.0.1",
                   PANEL_INSTANCE_PATH=workdir, FLOOR_DATABASE_URL=db_url, FLOOR_REDIS_URL=redis.url,
                   FLOOR_WEBHOOK_SECRET=WEBHOOK_SECRET)
        up = subprocess.run([sys.executable, "-m", "panel.cli", "db", "upgrade"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
        if up.returncode != 0:
            print(up.stderr, file=sys.stderr)
            return 1
        floors.create_tables(db_url)
        log_path = os.path.join(workdir, "gunicorn.log")
        ports = {name: free_port() for name in SERVERS}
        specs = {"panel": "panel:create_app()", "floor": "floors:webhook_floor()", "bare": "floors:webhook_bare()"}
        for name in SERVERS:
            procs[name] = gunicorn(specs[name], ports[name], env, log_path)
        for name in SERVERS:
            wait_http(ports[name], procs[name])
        with open(os.path.join(pg._data, "postmaster.pid"), encoding="utf-8") as fh:
            pg_pid = int(fh.readline().strip())
        meter = CpuMeter({**{name: procs[name].pid for name in SERVERS}, "postgres": pg_pid,
                          "redis": redis.proc.pid, "client": os.getpid()}, solo=("client",))
        rng = random.Random(14)
        for name in SERVERS:  # warm-up: imports, pools, compiled statements
            fire(ports[name], with_duplicates(build_events(200, f"warm{name}"), share, rng), concurrency)

        results: dict[str, list[dict]] = {name: [] for name in SERVERS}
        sent_panel: set[str] = set()
        panel_statuses: dict[int, int] = {}
        print(f"webhook ingest: {rounds} rounds x {per_round} deliveries per server ({share:.0%} repeats), "
              f"{concurrency} concurrent keep-alive clients, gunicorn 2 sync workers each, PostgreSQL + Redis "
              f"on loopback; {os.cpu_count()} cores", flush=True)
        print(f"{'round':6} {'server':7} {'deliv/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms/deliv':>13} "
              f"{'server':>7} {'pg':>5} {'redis':>6}  machine")
        for index in range(rounds):
            order = SERVERS[index % 3:] + SERVERS[:index % 3]
            for name in order:
                events = build_events(int(per_round * (1 - share)), f"{name}{index}")
                bodies = with_duplicates(events, share, rng)
                if name == "panel":
                    sent_panel.update(json.loads(e)["id"] for e in events)
                before = meter.snapshot()
                with Window() as window:
                    seconds, lat, statuses = fire(ports[name], bodies, concurrency)
                cpu = CpuMeter.since(before, meter.snapshot())
                if name == "panel":
                    for k, v in statuses.items():
                        panel_statuses[k] = panel_statuses.get(k, 0) + v
                server_cpu = cpu[name] + cpu["postgres"] + cpu["redis"]
                row = {"rate": len(bodies) / seconds, "p50": percentile(lat, 50), "p99": percentile(lat, 99),
                       "cpu_ms": server_cpu * 1000 / len(bodies), "statuses": statuses}
                results[name].append(row)
                print(f"{index + 1:<6} {name:7} {row['rate']:8.1f} {row['p50']:7.2f} {row['p99']:7.2f} "
                      f"{row['cpu_ms']:13.2f} {cpu[name] * 1000 / len(bodies):7.2f} "
                      f"{cpu['postgres'] * 1000 / len(bodies):5.2f} {cpu['redis'] * 1000 / len(bodies):6.2f}  "
                      f"{window.describe(sum(v for k, v in cpu.items()))}", flush=True)

        def ratio(a: str, b: str, key: str = "rate") -> list[float]:
            return [x[key] / y[key] for x, y in zip(results[a], results[b]) if y[key]]

        print()
        for name in SERVERS:
            rows = results[name]
            print(f"{name:6} deliveries/s median {median(r['rate'] for r in rows):8.1f} (rounds "
                  f"{spread(r['rate'] for r in rows)}), p99 median {median(r['p99'] for r in rows):7.2f} ms, "
                  f"CPU per delivery median {median(r['cpu_ms'] for r in rows):5.2f} ms")
        print(f"panel / floor: throughput median {median(ratio('panel', 'floor')):.2f}x "
              f"(rounds {spread(ratio('panel', 'floor'))}); panel / bare: median {median(ratio('panel', 'bare')):.2f}x "
              f"(rounds {spread(ratio('panel', 'bare'))}); floor / bare: median {median(ratio('floor', 'bare')):.2f}x")

        rate = 0.7 * median(r["rate"] for r in results["panel"])
        count = max(300, int(rate * 10))
        open_loop = {}
        for name in ("floor", "panel", "floor", "panel"):
            bodies = with_duplicates(build_events(int(count * (1 - share)), f"open{name}{len(open_loop)}"), share, rng)
            if name == "panel":
                sent_panel.update(json.loads(b)["id"] for b in bodies)
            seconds, lat, statuses = fire(ports[name], bodies, concurrency, rate=rate)
            if name == "panel":
                for k, v in statuses.items():
                    panel_statuses[k] = panel_statuses.get(k, 0) + v
            open_loop.setdefault(name, []).append(percentile(lat, 99))
        print(f"open loop at {rate:.0f} deliveries/s (70% of the panel's median), {count} each, twice: p99 panel "
              f"{median(open_loop['panel']):.2f} ms vs floor {median(open_loop['floor']):.2f} ms = "
              f"{median(open_loop['panel']) / median(open_loop['floor']):.2f}x")

        import psycopg2

        conn = psycopg2.connect(db_url)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT id) FROM stripe_events WHERE id = ANY(%s)", (list(sent_panel),))
            stored, distinct = cur.fetchone()
        conn.close()
        print(f"panel: {stored} events stored ({distinct} distinct) for {len(sent_panel)} distinct events sent; "
              f"statuses {dict(sorted(panel_statuses.items()))}")
        ok = stored == distinct == len(sent_panel) and set(panel_statuses) == {200}
        if not ok:
            print("MISMATCH: not every delivery was answered 200 and stored exactly once", file=sys.stderr)
        return 0 if ok else 1
    finally:
        for proc in procs.values():
            stop(proc)
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
