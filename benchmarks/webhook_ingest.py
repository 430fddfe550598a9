"""Benchmark: Stripe webhook ingest (verify, store, enqueue) under gunicorn on PostgreSQL + Redis.

    python benchmarks/webhook_ingest.py [--events N] [--concurrency C]

Starts a throwaway PostgreSQL and Redis on 127.0.0.1 (``panel.testing``), migrates, and runs two
gunicorn servers with 2 sync workers each:

* ``panel``: the real ``POST /stripe/webhook`` (signature check, event stored by id, RQ job
  enqueued; no RQ worker runs, so only ingest is measured);
* ``baseline``: a bare Flask route that only verifies the signature with the same stripe call.

Each gets N signed deliveries of distinct events (Stripe fixture shapes) from C concurrent
loopback clients, after a short warm-up. Prints throughput (deliveries/s) and p50/p99 latency
(ms) of both and the panel/baseline ratios, then checks that every event was stored exactly once.
Stops everything it started. Not a test.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import hmac
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

WEBHOOK_SECRET = "whsec_bench_" + "c" * 24
FIXTURES = os.path.join(ROOT, "tests", "billing", "fixtures3.json")


def make_baseline():
    """The baseline app (gunicorn ``webhook_ingest:make_baseline()``): verify the signature only."""
    import stripe
    from flask import Flask, jsonify, request

    app = Flask("webhook_baseline")

    @app.post("/stripe/webhook")
    def webhook():
        try:
            stripe.WebhookSignature.verify_header(request.get_data().decode("utf-8"),
                                                  request.headers.get("Stripe-Signature"), WEBHOOK_SECRET, 300)
        except (stripe.SignatureVerificationError, UnicodeDecodeError):
            return jsonify({"error": "bad signature"}), 400
        return jsonify({"received": True})

    return app


def sign(payload: str) -> str:
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


def gunicorn(app_spec: str, port: int, env: dict, log_path: str) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
                             "--chdir", os.path.join(ROOT, "benchmarks"), "--pythonpath", ROOT,
                             "--log-level", "warning", app_spec], env=env, stdout=log, stderr=log)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def fire(port: int, bodies: list[str], concurrency: int) -> tuple[float, list[float], dict[int, int]]:
    """POST every body once from ``concurrency`` keep-alive clients; returns (seconds, latencies
    in ms, count per HTTP status)."""
    lock = threading.Lock()
    queue = list(reversed(bodies))
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                if not queue:
                    break
                body = queue.pop()
            headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body)}
            start = time.perf_counter()
            try:
                conn.request("POST", "/stripe/webhook", body=body.encode(), headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status = 0
            elapsed = (time.perf_counter() - start) * 1000
            with lock:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - began, latencies, statuses


def p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="deliveries per server (max 20000)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (max 64)")
    args = parser.parse_args()
    n = max(10, min(args.events, 20000))
    concurrency = max(1, min(args.concurrency, 64))

    from panel.testing import PostgresServer, RedisServer, free_port

    pg = redis = panel_proc = base_proc = None
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
                   PANEL_INSTANCE_PATH=workdir)
        up = subprocess.run([sys.executable, "-m", "panel.cli", "db", "upgrade"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
        if up.returncode != 0:
            print(up.stderr, file=sys.stderr)
            return 1
        log_path = os.path.join(workdir, "gunicorn.log")
        panel_port, base_port = free_port(), free_port()
        panel_proc = gunicorn("panel:create_app()", panel_port, env, log_path)
        base_proc = gunicorn("webhook_ingest:make_baseline()", base_port, env, log_path)
        wait_http(panel_port, panel_proc)
        wait_http(base_port, base_proc)

        results = {}
        for name, port in (("baseline", base_port), ("panel", panel_port)):
            fire(port, build_events(min(200, n), f"warm{name}"), concurrency)  # warm-up: imports, pools
            seconds, lat, statuses = fire(port, build_events(n, name), concurrency)
            results[name] = (n / seconds, p(lat, 0.5), p(lat, 0.99), statuses)

        import psycopg2

        conn = psycopg2.connect(db_url)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT id) FROM stripe_events WHERE id LIKE 'evt_panel_%'")
            stored, distinct = cur.fetchone()
        conn.close()
        from redis import Redis

        queued = Redis.from_url(redis.url).llen("rq:queue:panel")

        print(f"webhook ingest: {n} signed deliveries per server, {concurrency} concurrent clients, "
              f"gunicorn 2 sync workers, PostgreSQL + Redis on loopback")
        print(f"{'server':10} {'deliveries/s':>13} {'p50 ms':>8} {'p99 ms':>8}  statuses")
        for name in ("baseline", "panel"):
            rate, p50, p99, statuses = results[name]
            print(f"{name:10} {rate:13.1f} {p50:8.2f} {p99:8.2f}  {dict(sorted(statuses.items()))}")
        b, s = results["baseline"], results["panel"]
        print(f"ratio panel/baseline: throughput {s[0] / b[0]:.2f}x, p99 {s[2] / b[2]:.2f}x")
        print(f"stored {stored} events ({distinct} distinct) of {n}; {queued} jobs waiting in the RQ queue")
        ok = stored == n == distinct and results["panel"][3].get(200) == n
        if not ok:
            print("MISMATCH: not every delivery was stored exactly once", file=sys.stderr)
        return 0 if ok else 1
    finally:
        stop(panel_proc)
        stop(base_proc)
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
