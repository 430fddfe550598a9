"""Benchmark: operator pages, customer pages and API lists with 100k services against 1k, in
the same run, interleaved; and the RSS of a gunicorn worker after 1,000 requests.

    python benchmarks/page_scaling.py [--small 1000] [--large 100000] [--requests 40] [--failed-percent 5]
        [--no-billing]

Two throwaway databases on one PostgreSQL, filled in bulk (SQL ``generate_series``): the same
catalog (4 plans), 1 operator, customers with 10 services each (``--small`` and ``--large``
services), ``--failed-percent`` of them failed (5: then the failed-only lists show a full page of
50 on both sizes, so their ratio compares like with like; the name search ``q=svc2`` too: a full page
of old services on both sizes, ``svc299``-``svc250`` of 1k and ``svc29999``-``svc29950`` of 100k, so
70k newer services lie between the newest match and the top of the list), one provision operation each and a
succeeded event each. One gunicorn
(``-w 1``, so the RSS is one worker's) serves each database; requests alternate between them page
by page (``--requests`` of each page on each, the order of the two swapped every time), so both meet
the same machine load. Billing is configured (a Stripe key and webhook secret, the API base a closed
port on 127.0.0.1: no page may call Stripe) unless ``--no-billing``. Printed per page: median latency
with few and with many services, their ratio (the goal: at most 1.5x for operator pages, flat for
customer pages), the size of the answer (a filtered page shows more rows when more services match)
and the SQL statements the page sent (counted in this process with the same app, on each database,
second request: caches warm). Then the server CPU per request, the RSS of each gunicorn worker once
it has answered at least 1,000 requests (untimed requests of the same pages make up the rest; the
goal: under 100 MB) and of a bare Flask + Flask-SQLAlchemy worker after as many, the machine's load,
and a verdict per goal. Not a test; everything it starts is stopped at the end, also on Ctrl-C or
SIGTERM. Exit status 0 when every page answered 200, 2 when the stack could not start.
"""
from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from benchlib import CpuMeter, Window, median  # noqa: E402
from provision_pipeline import (BenchError, _terminate_sigterm, free_port, start_gunicorn, stop_group,  # noqa: E402
                                wait_http)

SECRET_KEY = "bench-secret-key-0123456789abcdef"
RSS_AFTER = 1000  # requests a worker has answered when its RSS is read
OPERATOR_PAGES = ["/admin/", "/admin/?status=failed", "/admin/?status=active&backend=pds", "/admin/?q=svc2", "/admin/?q=customer1",
                  "/admin/?before={mid}", "/admin/customers", "/admin/plans", "/admin/operations",
                  "/admin/operations?state=failed", "/admin/audit", "/admin/plugins", "/admin/services/{last}"]
CUSTOMER_PAGES = ["/services", "/services/{mine}", "/plans", "/api/v1/services", "/api/v1/plans",
                  "/api/v1/services/{mine}", "/api/v1/services/{mine}/events"]

FILL = """
INSERT INTO plans (id, slug, name, description, backend, options, active, sort_order, stripe_price, created_at, updated_at)
SELECT i, 'pds-' || i, 'PDS ' || i, '', 'pds', '{"disksize_gb": 5}', true, i, NULL, now(), now() FROM generate_series(1, 4) i;
INSERT INTO users (email, password_hash, role, is_active, created_at, email_verified_at)
SELECT 'customer' || i || '@bench.example.com', %(hash)s, 'customer', true, now() - (i || ' seconds')::interval, now()
FROM generate_series(1, %(customers)s) i;
INSERT INTO services (external_id, user_id, plan_id, backend, status, status_detail, params, backend_data,
                      display_name, hostname, claim_key, created_at, updated_at)
SELECT 'hp-' || lpad(to_hex(i), 16, '0'), 1 + (i - 1) %% %(customers)s, 1 + i %% 4, 'pds',
       CASE WHEN i %% %(failed_every)s = 0 THEN 'failed' ELSE 'active' END,
       CASE WHEN i %% %(failed_every)s = 0 THEN 'HTTP 422 from the deploy API' ELSE '' END,
       json_build_object('username', 'svc' || i), json_build_object('hostname', 'svc' || i || '.pds.bench.example.com'),
       'svc' || i, 'svc' || i || '.pds.bench.example.com', 'svc' || i || '.pds.bench.example.com',
       now() - ((%(services)s - i) || ' seconds')::interval, now()
FROM generate_series(1, %(services)s) i;
INSERT INTO operations (service_id, action, state, payload, actor, attempts, last_error, created_at, updated_at,
                        started_at, finished_at, lease_token, lost_runs)
SELECT s.id, 'provision', CASE WHEN s.status = 'failed' THEN 'failed' ELSE 'succeeded' END, '{}', 'system', 1,
       CASE WHEN s.status = 'failed' THEN 'HTTP 422' ELSE NULL END, s.created_at, s.created_at, s.created_at,
       s.created_at, 1, 0 FROM services s;
INSERT INTO service_events (service_id, operation_id, at, actor, kind, from_status, to_status, detail)
SELECT o.service_id, o.id, o.created_at, 'worker', 'succeeded', 'provisioning', 'active', 'provision succeeded'
FROM operations o;
"""


def fill(url: str, services: int, customers: int, password_hash: str, failed_every: int = 20) -> None:
    """Bulk-fill the migrated database at ``url`` (a libpq URL): 4 plans, ``customers`` customers,
    ``services`` services (every ``failed_every``-th failed), one provision operation and one
    event each, one operator; then ``ANALYZE``."""
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(FILL, {"services": services, "customers": customers, "hash": password_hash,
                           "failed_every": failed_every})
        cur.execute("INSERT INTO users (email, password_hash, role, is_active, created_at, email_verified_at) "
                    "VALUES ('ops@bench.example.com', %s, 'operator', true, now(), now())", (password_hash,))
        cur.execute("SELECT setval(pg_get_serial_sequence('plans', 'id'), 4)")
        cur.execute("ANALYZE")
    conn.close()


class Client:
    """One keep-alive connection with a session cookie (or a bearer token)."""

    def __init__(self, port: int):
        self.port, self.cookie, self.auth = port, "", ""
        self.sent = 0  # requests answered on this client
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        headers = dict(headers or {})
        if self.cookie:
            headers["Cookie"] = self.cookie
        if self.auth and path.startswith("/api/"):
            headers["Authorization"] = self.auth
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                self.sent += 1
                break
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt == 2:
                    raise
        for key, value in resp.getheaders():
            if key.lower() == "set-cookie" and value.startswith("session="):
                self.cookie = value.split(";", 1)[0]
        return resp.status, data

    def login(self, email: str, password: str) -> None:
        from urllib.parse import urlencode

        status, _ = self.request("POST", "/login", urlencode({"email": email, "password": password}).encode(),
                                 {"Content-Type": "application/x-www-form-urlencoded"})
        if status not in (302, 303):
            raise BenchError(f"login as {email} answered {status}")


def rss_mb(master_pid: int) -> list[float]:
    """RSS (MB) of each child of the gunicorn master ``master_pid`` (its workers)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", encoding="ascii", errors="replace") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            continue
        if int(fields.get("PPid", "0").strip()) == master_pid:
            out.append(int(fields["VmRSS"].split()[0]) / 1024)
    return out


def count_statements(env: dict, pages: list[str], who: str, token: str | None) -> dict[str, int]:
    """SQL statements each page sends, counted in this process on the same database."""
    from sqlalchemy import event

    for key in [k for k in os.environ if k.startswith("PANEL_")]:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.startswith("PANEL_")})
    from flask import g

    from panel import create_app
    from panel.extensions import db

    app = create_app()
    out = {}
    with app.app_context():
        client = app.test_client()
        client.post("/login", data={"email": who, "password": "password123"})
        seen = []

        def on_execute(*args):
            seen.append(1)

        for path in pages:
            for _ in range(2):  # the second: caches warm
                db.session.remove()
                g.pop("_login_user", None)
                seen.clear()
                event.listen(db.engine, "before_cursor_execute", on_execute)
                try:
                    client.get(path, headers={"Authorization": f"Bearer {token}"} if token and path.startswith("/api/")
                               else {})
                finally:
                    event.remove(db.engine, "before_cursor_execute", on_execute)
            out[path] = len(seen)
        db.session.remove()
        db.engine.dispose()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=100000)
    parser.add_argument("--requests", type=int, default=40, help="requests of each page on each server (40)")
    parser.add_argument("--failed-percent", type=float, default=5.0,
                        help="share of failed services in percent (5)")
    parser.add_argument("--no-billing", action="store_true", help="run without Stripe billing configured")
    args = parser.parse_args()
    if not (10 <= args.small < args.large <= 1_000_000 and 1 <= args.requests <= 1000
            and 0.01 <= args.failed_percent <= 100):
        parser.error("out of range (10 <= --small < --large <= 1000000, 1 <= --requests <= 1000, "
                     "0.01 <= --failed-percent <= 100)")
    failed_every = max(1, round(100 / args.failed_percent))
    signal.signal(signal.SIGTERM, _terminate_sigterm)

    from panel.testing import PostgresServer

    tmp = tempfile.mkdtemp(prefix="panel-bench-")
    pg = None
    servers: dict[str, subprocess.Popen] = {}
    try:
        try:
            pg = PostgresServer()
        except BaseException as exc:  # panel.testing skips (pytest.skip) when a binary is missing
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise BenchError(f"cannot start PostgreSQL: {exc}") from exc
        from argon2 import PasswordHasher

        password_hash = PasswordHasher().hash("password123")
        envs, ports = {}, {}
        for name, services in (("small", args.small), ("large", args.large)):
            url = pg.create_database()
            env = {k: v for k, v in os.environ.items() if not k.startswith("PANEL_")}
            env.update(PANEL_SECRET_KEY=SECRET_KEY, PANEL_DATABASE_URL=url, PANEL_PLUGINS="pds",
                       PANEL_INSTANCE_PATH=tmp, PANEL_RATELIMIT_ENABLED="false", PANEL_WTF_CSRF_ENABLED="false",
                       PANEL_USAGE_INTERVAL="0", PANEL_PLUGIN_PDS_API_URL="http://127.0.0.1:9",
                       PANEL_PLUGIN_PDS_API_TOKEN="bench-token", PANEL_PLUGIN_PDS_HOSTNAME_DOMAIN="pds.bench.example.com")
            if not args.no_billing:
                env.update(PANEL_STRIPE_SECRET_KEY="sk_test_bench0123456789", PANEL_STRIPE_WEBHOOK_SECRET="whsec_bench",
                           PANEL_STRIPE_API_BASE="http://127.0.0.1:9", PANEL_PUBLIC_URL="https://panel.bench.example.test")
            up = subprocess.run([sys.executable, "-m", "panel.cli", "db", "upgrade"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=300)
            if up.returncode != 0:
                raise BenchError(up.stderr[-2000:])
            print(f"filling {name}: {services} services...", flush=True)
            started = time.monotonic()
            fill(url.replace("postgresql+psycopg2", "postgresql"), services, max(1, services // 10), password_hash,
                 failed_every)
            subprocess.run([sys.executable, "-m", "panel.cli", "recount"], cwd=ROOT, env=env, capture_output=True,
                           timeout=300, check=True)
            subprocess.run([sys.executable, "-m", "panel.cli", "plugins", "enable", "pds"], cwd=ROOT, env=env,
                           capture_output=True, timeout=120, check=True)
            token = subprocess.run([sys.executable, "-m", "panel.cli", "tokens", "create", "customer1@bench.example.com"],
                                   cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True).stdout
            env["_TOKEN"] = token.strip().split()[-1]
            print(f"  filled, counted and migrated in {time.monotonic() - started:.1f} s", flush=True)
            envs[name], ports[name] = env, free_port()
            servers[name] = start_gunicorn(env, ports[name], os.path.join(tmp, f"{name}.log"), workers=1)
        bare_port = free_port()
        bare = servers["bare"] = start_gunicorn(envs["small"], bare_port, os.path.join(tmp, "bare.log"),
                                                target="page_scaling:bare_app()", workers=1)
        for name in ("small", "large"):
            wait_http(f"http://127.0.0.1:{ports[name]}/healthz", servers[name], 60, os.path.join(tmp, f"{name}.log"))
        wait_http(f"http://127.0.0.1:{bare_port}/", bare, 60, os.path.join(tmp, "bare.log"))

        ids = {}
        import psycopg2

        for name in ("small", "large"):
            conn = psycopg2.connect(envs[name]["PANEL_DATABASE_URL"].replace("postgresql+psycopg2", "postgresql"))
            with conn.cursor() as cur:
                cur.execute("SELECT max(id), (max(id) + min(id)) / 2 FROM services")
                last, mid = cur.fetchone()
                cur.execute("SELECT max(s.id) FROM services s JOIN users u ON u.id = s.user_id "
                            "WHERE u.email = 'customer1@bench.example.com'")
                mine = cur.fetchone()[0]
            conn.close()
            ids[name] = {"last": last, "mid": mid, "mine": mine}

        clients = {}
        for name in ("small", "large"):
            ops, cust = Client(ports[name]), Client(ports[name])
            ops.login("ops@bench.example.com", "password123")
            cust.login("customer1@bench.example.com", "password123")
            cust.auth = f"Bearer {envs[name]['_TOKEN']}"
            clients[name] = {"operator": ops, "customer": cust}

        pages = [("operator", p) for p in OPERATOR_PAGES] + [("customer", p) for p in CUSTOMER_PAGES]
        meter = CpuMeter({"small": servers["small"].pid, "large": servers["large"].pid})
        timings: dict[tuple, dict[str, list[float]]] = {}
        sizes: dict[tuple, dict[str, int]] = {}
        total = 0
        print(f"timing {len(pages)} pages x {args.requests} on each server, interleaved...", flush=True)
        with Window() as window:
            before = meter.snapshot()
            for who, page in pages:  # warm-up
                for name in ("small", "large"):
                    clients[name][who].request("GET", page.format(**ids[name]))
            for i in range(args.requests):
                for who, page in pages:
                    for name in (("small", "large") if i % 2 == 0 else ("large", "small")):
                        path = page.format(**ids[name])
                        started = time.perf_counter()
                        status, body = clients[name][who].request("GET", path)
                        elapsed = (time.perf_counter() - started) * 1000
                        total += 1
                        if status != 200:
                            raise BenchError(f"{name} {path} answered {status}")
                        timings.setdefault((who, page), {}).setdefault(name, []).append(elapsed)
                        sizes.setdefault((who, page), {})[name] = len(body)
            cpu = CpuMeter.since(before, meter.snapshot())
        served = {}
        for name in ("small", "large"):  # untimed: the same pages until the worker has answered RSS_AFTER
            i = 0
            while sum(c.sent for c in clients[name].values()) < RSS_AFTER:
                who, page = pages[i % len(pages)]
                status, _ = clients[name][who].request("GET", page.format(**ids[name]))
                if status != 200:
                    raise BenchError(f"{name} {page} answered {status}")
                i += 1
            served[name] = sum(c.sent for c in clients[name].values())
        bare_client = Client(bare_port)
        for _ in range(max(served.values())):
            bare_client.request("GET", "/")
        statements = {}
        for name in ("small", "large"):
            statements[name] = {}
            for who, email in (("operator", "ops@bench.example.com"), ("customer", "customer1@bench.example.com")):
                got = count_statements(envs[name], [p.format(**ids[name]) for w, p in pages if w == who], email,
                                       envs[name]["_TOKEN"])
                statements[name].update({(who, p): got[p.format(**ids[name])] for w, p in pages if w == who})

        print()
        print(f"page_scaling: {args.small} vs {args.large} services (10 per customer, 1 in {failed_every} failed), "
              f"gunicorn -w 1 "
              f"per database, {args.requests} requests of each page on each, interleaved")
        print(f"  billing {'not configured' if args.no_billing else 'configured'}; "
              f"ms = median latency, KB = size of the answer")
        print(f"  {'page':42} {'few ms':>8} {'many ms':>8} {'ratio':>6} {'KB few':>7} {'KB many':>8} "
              f"{'SQL few':>8} {'SQL many':>9}")
        ratios: dict[str, list[float]] = {"operator": [], "customer": []}
        most_sql: dict[str, int] = {"operator": 0, "customer": 0}
        for who, page in pages:
            t, size = timings[(who, page)], sizes[(who, page)]
            few, many = median(t["small"]), median(t["large"])
            sql_few, sql_many = statements["small"][(who, page)], statements["large"][(who, page)]
            ratios[who].append(many / few)
            most_sql[who] = max(most_sql[who], sql_few, sql_many)
            print(f"  {who[:4] + ' ' + page:42} {few:8.2f} {many:8.2f} {many / few:6.2f} {size['small'] / 1024:7.1f} "
                  f"{size['large'] / 1024:8.1f} {sql_few:>8} {sql_many:>9}")
        print(f"  server CPU per timed request: few {cpu['small'] * 1000 / (total / 2):.2f} ms, many "
              f"{cpu['large'] * 1000 / (total / 2):.2f} ms")
        rss = {name: rss_mb(servers[name].pid) for name in ("small", "large")}
        for name in ("small", "large"):
            print(f"  gunicorn worker RSS after {served[name]} requests ({name}): "
                  f"{', '.join(f'{x:.1f} MB' for x in rss[name])}")
        print(f"  a bare Flask + Flask-SQLAlchemy worker after {max(served.values())} requests: "
              f"{', '.join(f'{x:.1f} MB' for x in rss_mb(bare.pid))}")
        print(f"  {window.describe(sum(cpu.values()))}")
        worst = max(ratios["operator"])
        print(f"  goal operator pages <= 1.5x and <= 10 SQL statements: ratio {min(ratios['operator']):.2f}-{worst:.2f}, "
              f"at most {most_sql['operator']} statements -> "
              f"{'met' if worst <= 1.5 and most_sql['operator'] <= 10 else 'NOT met'}")
        print(f"  customer pages and API lists stay flat: ratio {min(ratios['customer']):.2f}-"
              f"{max(ratios['customer']):.2f}, at most {most_sql['customer']} statements")
        biggest = max(x for values in rss.values() for x in values)
        print(f"  goal worker RSS < 100 MB after {RSS_AFTER} requests: {biggest:.1f} MB -> "
              f"{'met' if biggest < 100 else 'NOT met'}")
        return 0
    finally:
        for proc in servers.values():
            stop_group(proc, "gunicorn")
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def bare_app():
    """The RSS baseline: Flask and Flask-SQLAlchemy answering one query."""
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    app = Flask("bare")
    url = os.environ["PANEL_DATABASE_URL"]
    if url.startswith("postgresql://"):  # the driver the panel uses (SQLAlchemy's default may differ)
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    db = SQLAlchemy(app)

    @app.get("/")
    def index():
        return {"services": db.session.execute(db.text("SELECT count(*) FROM plans")).scalar()}

    return app


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; everything it started was stopped", file=sys.stderr)
        sys.exit(130)
