"""The baselines the benchmarks measure the panel against, in the same run: minimal code doing
only what cannot be avoided.

* ``webhook_bare()``: a Flask route that only verifies the Stripe signature (the same
  ``stripe.WebhookSignature.verify_header`` call the panel makes).
* ``webhook_floor()``: verify, one ``INSERT ... ON CONFLICT DO NOTHING`` (autocommit, one round
  trip) and, for a new event, one Redis ``RPUSH``: the least a webhook that stores and hands
  over can do.
* ``order_floor()``: ``POST /order`` inserts a row and pushes a job id (one round trip each);
  ``POST /paid/<id>`` pushes a "payment" job (the paid flow's webhook, without Stripe's checks).
* ``consume(threads)``: the provisioning floor's worker: ``threads`` threads, each ``BLPOP`` a
  job, for a payment job mark it paid and push its provision job, for a provision job make one
  HTTP request to the PDS stand-in (which holds it L ms, as for the panel) and record when it
  finished.

Configured by ``FLOOR_DATABASE_URL``, ``FLOOR_REDIS_URL``, ``FLOOR_WEBHOOK_SECRET``,
``FLOOR_STANDIN_URL`` and ``FLOOR_STANDIN_TOKEN``. ``create_tables(url)`` makes the floors'
tables (``floor_events``, ``floor_orders``). Run by gunicorn (``floors:webhook_floor()``) or
``python floors.py consume THREADS``.
"""
from __future__ import annotations

import json
import os
import sys
import threading

SCHEMA = """
CREATE TABLE IF NOT EXISTS floor_events (id varchar(255) PRIMARY KEY, type varchar(100) NOT NULL,
    payload jsonb NOT NULL, received_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS floor_orders (id serial PRIMARY KEY, paid boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(), started_at timestamptz, paid_at timestamptz,
    done_at timestamptz);
"""


def create_tables(url: str) -> None:
    """Create the floors' tables in the database at ``url``."""
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(SCHEMA)
    conn.close()


_local = threading.local()
BLPOP_TIMEOUT = 1  # seconds; below redis-py's default socket timeout (5 s)


def _pg():
    conn = getattr(_local, "pg", None)
    if conn is None:
        import psycopg2

        conn = _local.pg = psycopg2.connect(os.environ["FLOOR_DATABASE_URL"])
        conn.autocommit = True
    return conn


def _redis():
    conn = getattr(_local, "redis", None)
    if conn is None:
        from redis import Redis

        conn = _local.redis = Redis.from_url(os.environ["FLOOR_REDIS_URL"])
    return conn


def _verify(request):
    import stripe

    stripe.WebhookSignature.verify_header(request.get_data().decode("utf-8"), request.headers.get("Stripe-Signature"),
                                          os.environ["FLOOR_WEBHOOK_SECRET"], 300)


def webhook_bare():
    """Verify the signature, answer."""
    import stripe
    from flask import Flask, jsonify, request

    app = Flask("webhook_bare")

    @app.post("/stripe/webhook")
    def webhook():
        try:
            _verify(request)
        except (stripe.SignatureVerificationError, UnicodeDecodeError):
            return jsonify({"error": "bad signature"}), 400
        return jsonify({"received": True})

    return app


def webhook_floor():
    """Verify, store by id (one statement), push a new one to Redis, answer."""
    import stripe
    from flask import Flask, jsonify, request

    app = Flask("webhook_floor")

    @app.post("/stripe/webhook")
    def webhook():
        try:
            _verify(request)
        except (stripe.SignatureVerificationError, UnicodeDecodeError):
            return jsonify({"error": "bad signature"}), 400
        event = json.loads(request.get_data())
        with _pg().cursor() as cur:
            cur.execute("INSERT INTO floor_events (id, type, payload) VALUES (%s, %s, %s) ON CONFLICT (id) DO NOTHING",
                        (event["id"], event["type"], json.dumps(event)))
            new = cur.rowcount == 1
        if new:
            _redis().rpush("floor:events", event["id"])
        return jsonify({"received": True, **({} if new else {"duplicate": True})})

    return app


def order_floor():
    """``POST /order`` (JSON ``{"paid": bool}``): a row and, unless paid, a provision job;
    ``POST /paid/<id>``: a payment job."""
    from flask import Flask, jsonify, request

    app = Flask("order_floor")

    @app.post("/order")
    def order():
        paid = bool((request.get_json(silent=True) or {}).get("paid"))
        with _pg().cursor() as cur:
            cur.execute("INSERT INTO floor_orders (paid) VALUES (%s) RETURNING id", (paid,))
            order_id = cur.fetchone()[0]
        if not paid:
            _redis().rpush("floor:jobs", f"provision:{order_id}")
        return jsonify({"id": order_id}), 201

    @app.post("/paid/<int:order_id>")
    def paid(order_id):
        _redis().rpush("floor:jobs", f"payment:{order_id}")
        return jsonify({"received": True})

    return app


def consume(threads: int) -> None:
    """The floor's worker: ``threads`` threads running jobs until killed."""
    import requests

    url = os.environ["FLOOR_STANDIN_URL"].rstrip("/") + "/api/v1/health"
    headers = {"Authorization": f"Bearer {os.environ['FLOOR_STANDIN_TOKEN']}"}

    def loop():
        session = requests.Session()
        while True:
            # a bounded wait: redis-py 8 gives every connection a 5 s socket timeout, which a
            # BLPOP without a timeout outlasts (the thread died of TimeoutError)
            popped = _redis().blpop(["floor:jobs"], BLPOP_TIMEOUT)
            if popped is None:
                continue
            job = popped[1]
            kind, order_id = job.decode().split(":")
            try:
                with _pg().cursor() as cur:
                    if kind == "payment":
                        cur.execute("UPDATE floor_orders SET paid_at = now() WHERE id = %s", (order_id,))
                        _redis().rpush("floor:jobs", f"provision:{order_id}")
                        continue
                    cur.execute("UPDATE floor_orders SET started_at = now() WHERE id = %s", (order_id,))
                    session.get(url, headers=headers, timeout=30).raise_for_status()
                    cur.execute("UPDATE floor_orders SET done_at = now() WHERE id = %s", (order_id,))
            except Exception as exc:  # tried again (the panel's job would retry too)
                print(f"floor job {job!r}: {exc!r}; again", file=sys.stderr, flush=True)
                _redis().rpush("floor:jobs", job)

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()


if __name__ == "__main__":
    if sys.argv[1:2] == ["consume"]:
        consume(int(sys.argv[2]))
