"""Issue 10's probe findings, one test each: open redirects, session revocation, security headers,
login timing, no HTTP 500 from input (SQLite and PostgreSQL), request size, API timestamps."""
from __future__ import annotations

import json
import re

import pytest
from corelib import BASE_CONFIG, add_user, login, token_for, wait_jobs

from panel.extensions import db
from panel.models import Service, User


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)


def sign(payload: str, secret: str) -> str:
    """Stripe's ``Stripe-Signature`` header for ``payload``."""
    import hashlib
    import hmac
    import time

    ts = int(time.time())
    return f"t={ts},v1={hmac.new(secret.encode(), f'{ts}.{payload}'.encode(), hashlib.sha256).hexdigest()}"


# --------------------------------------------------------------------------- open redirects

@pytest.mark.parametrize("target", ["////evil.example/", "//evil.example/", "/\\evil.example/",
                                    "https://evil.example/", "/%2F/evil.example/", " //evil.example/",
                                    "\\\\evil.example"])
def test_login_next_never_leaves_the_site(client, customer, target):
    from urllib.parse import urlsplit

    r = client.post("/login", query_string={"next": target},
                    data={"email": customer.email, "password": "password123"})
    assert r.status_code == 302
    location = r.headers["Location"]
    parts = urlsplit(location)
    assert parts.netloc in ("", "localhost"), location
    assert not location.lstrip("/\\ ").startswith("evil.example"), location
    # What the browser would do with it: a Location starting with // or /\ is off-site.
    assert not re.match(r"^[/\\]{2}", location) and "evil.example" not in parts.netloc


def test_login_next_keeps_same_site_paths(client, customer):
    r = client.post("/login?next=/services%3Fx%3D1", data={"email": customer.email, "password": "password123"})
    assert r.headers["Location"] == "/services?x=1"


def test_signup_next_never_leaves_the_site(client):
    r = client.post("/signup?next=////evil.example/", data={"email": "n@example.com", "password": "longenough1",
                                                            "confirm": "longenough1"})
    assert r.status_code == 302 and "evil.example" not in r.headers["Location"]


def test_operator_retry_next_is_checked(client, app, customer, operator, plans):
    from memory_backend import REMOTE

    from panel.orders import place_order

    REMOTE.fail_next("provision", "permanent")
    svc = place_order(customer, "mem-free", {"name": "bad"}, actor="t").service
    wait_jobs(app)
    login(client, operator.email)
    r = client.post(f"/admin/services/{svc.id}/retry", data={"next": "https://evil.example/"})
    assert r.status_code == 302 and "evil.example" not in r.headers["Location"]
    assert r.headers["Location"].endswith(f"/admin/services/{svc.id}")


# --------------------------------------------------------------------------- sessions

def test_a_copied_cookie_stops_working_after_logout(make_app):
    app = make_app()
    with app.app_context():
        add_user("s@example.com")
    first = app.test_client()
    login(first, "s@example.com")
    stolen = first.get_cookie("session").value
    assert first.get("/services").status_code == 200
    first.post("/logout")
    thief = app.test_client()
    thief.set_cookie("session", stolen)
    r = thief.get("/services")
    assert r.status_code == 302 and "/login" in r.headers["Location"]


def test_password_change_logs_out_the_other_sessions(make_app):
    app = make_app()
    with app.app_context():
        add_user("s@example.com")
    here, there = app.test_client(), app.test_client()
    login(here, "s@example.com")
    login(there, "s@example.com")
    assert there.get("/services").status_code == 200
    r = here.post("/account", data={"pw-current": "password123", "pw-password": "newpassword1",
                                    "pw-confirm": "newpassword1", "pw-submit": "Change password"})
    assert r.status_code == 302
    assert here.get("/services").status_code == 200  # the session that changed it stays
    assert there.get("/services").status_code == 302


def test_disabling_an_account_ends_its_sessions(make_app):
    app = make_app()
    with app.app_context():
        user = add_user("s@example.com")
        add_user("ops@example.com", role="operator")
        uid = user.id
    victim, ops = app.test_client(), app.test_client()
    login(victim, "s@example.com")
    login(ops, "ops@example.com")
    assert ops.post(f"/admin/customers/{uid}/disable").status_code == 302
    assert victim.get("/services").status_code == 302


def test_log_out_everywhere(make_app):
    app = make_app()
    with app.app_context():
        add_user("s@example.com")
    here, there = app.test_client(), app.test_client()
    login(here, "s@example.com")
    login(there, "s@example.com")
    r = here.post("/account/sessions/revoke-all")
    assert r.status_code == 302
    assert there.get("/services").status_code == 302
    assert here.get("/services").status_code == 302


def test_login_renews_the_session_and_the_csrf_token(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        add_user("s@example.com")
    client = app.test_client()
    before = _csrf(client.get("/login").get_data(as_text=True))
    old_cookie = client.get_cookie("session").value
    r = client.post("/login", data={"email": "s@example.com", "password": "password123", "csrf_token": before})
    assert r.status_code == 302
    assert client.get_cookie("session").value != old_cookie
    # the token the page had before login no longer works
    r = client.post("/account", data={"csrf_token": before, "tok-name": "x", "tok-submit": "Create token"})
    assert r.status_code == 400
    fresh = _csrf(client.get("/account").get_data(as_text=True))
    assert fresh != before
    r = client.post("/account", data={"csrf_token": fresh, "tok-csrf_token": fresh, "tok-name": "x",
                                      "tok-submit": "Create token"})
    assert r.status_code == 200 and "hp_" in r.get_data(as_text=True)


# --------------------------------------------------------------------------- headers

def test_security_headers_on_pages(client):
    r = client.get("/login")
    csp = r.headers["Content-Security-Policy"]
    directives = {d.strip().split(" ", 1)[0]: d.strip() for d in csp.split(";") if d.strip()}
    assert directives["script-src"] == "script-src 'self'"
    assert directives["frame-ancestors"] == "frame-ancestors 'none'"
    assert directives["object-src"] == "object-src 'none'"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert "Strict-Transport-Security" not in r.headers  # plain http public URL


def test_https_public_url_gives_hsts_and_secure_cookies(make_app):
    app = make_app(PUBLIC_URL="https://panel.example.com")
    with app.app_context():
        add_user("s@example.com")
    client = app.test_client()
    r = client.post("/login", data={"email": "s@example.com", "password": "password123"},
                    base_url="https://panel.example.com")
    cookie = r.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "max-age=" in r.headers["Strict-Transport-Security"]


def test_no_inline_script_or_event_handler_in_templates():
    """A strict CSP (script-src 'self') would block them: every script lives in panel/static."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    files = list((root / "templates").rglob("*.html")) + list((root / "plugins").rglob("templates/**/*.html"))
    assert files
    for path in files:
        text = path.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert "src=" in tag or 'type="application/json"' in tag, f"{path}: inline {tag}"
        assert not re.search(r"\son[a-z]+\s*=", text), f"{path}: inline event handler"
        assert "javascript:" not in text, path
        assert not re.search(r"\sstyle\s*=", text), f"{path}: inline style attribute (style-src 'self')"


# --------------------------------------------------------------------------- login timing

def test_unknown_email_costs_one_argon2_verification(client, customer, monkeypatch):
    """Login takes as long for an unknown email as for a known one: both verify one Argon2 hash."""
    from panel.models import users

    calls = []
    real = users._hasher

    class Watch:  # argon2's PasswordHasher, counting verify() calls
        def __getattr__(self, name):
            return getattr(real, name)

        def verify(self, hash_, password):
            calls.append(hash_)
            return real.verify(hash_, password)

    monkeypatch.setattr(users, "_hasher", Watch())
    login(client, "nobody@example.com", "whatever-password")
    assert len(calls) == 1 and calls[0].startswith("$argon2id$")
    login(client, customer.email, "wrong-password")
    assert len(calls) == 2


# --------------------------------------------------------------------------- no 500 from input

def _assert_clear_4xx(r, api=False):
    assert 400 <= r.status_code < 500, (r.status_code, r.get_data(as_text=True)[:300])
    if api:
        body = r.get_json()
        assert set(body["error"]) >= {"code", "message"} and body["error"]["message"]


DEEP = "[" * 50000 + "]" * 50000


def test_deeply_nested_json_to_the_api_is_a_400(client, customer, plans):
    r = client.post("/api/v1/orders", data='{"plan": "mem-free", "params": %s}' % DEEP,
                    headers=token_for(customer) | {"Content-Type": "application/json"})
    _assert_clear_4xx(r, api=True)
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 0


def test_deeply_nested_json_to_the_webhook_is_a_400(make_app):
    import time

    app = make_app(STRIPE_SECRET_KEY="sk_test_" + "x" * 20, STRIPE_WEBHOOK_SECRET="whsec_" + "y" * 20,
                   STRIPE_API_BASE="http://127.0.0.1:9")
    body = '{"id": "evt_1", "type": "invoice.paid", "created": %d, "data": {"object": %s}}' % (time.time(), DEEP)
    r = app.test_client().post("/stripe/webhook", data=body, headers={
        "Content-Type": "application/json", "Stripe-Signature": sign(body, "whsec_" + "y" * 20)})
    assert r.status_code == 400
    with app.app_context():
        from panel.billing.models import StripeEvent

        assert db.session.scalar(db.select(db.func.count()).select_from(StripeEvent)) == 0


@pytest.mark.parametrize("hours", ["nan", "inf", "-inf", "NaN", "1e400"])
def test_non_finite_hours_on_the_usage_endpoint_is_a_400(client, app, customer, plans, hours):
    from panel.orders import place_order

    svc = place_order(customer, "mem-free", {"name": "u1"}, actor="t").service
    wait_jobs(app)
    r = client.get(f"/api/v1/services/{svc.id}/usage?hours={hours}", headers=token_for(customer))
    _assert_clear_4xx(r, api=True)
    assert "hours" in r.get_json()["error"]["fields"]


@pytest.mark.parametrize("path", ["/services/99999999999999999999", "/api/v1/services/9223372036854775808",
                                  "/admin/services/18446744073709551616", "/services/9223372036854775808/status.json"])
def test_ids_above_2_63_are_404(client, customer, operator, path):
    login(client, operator.email)
    r = client.get(path, headers=token_for(operator) if path.startswith("/api/") else {})
    assert r.status_code == 404


def test_lone_surrogate_in_json_is_a_400(client, customer, plans):
    r = client.post("/api/v1/orders", data='{"plan": "mem-free", "params": {"name": "a\\ud800b"}}',
                    headers=token_for(customer) | {"Content-Type": "application/json"})
    _assert_clear_4xx(r, api=True)
    r = client.post("/api/v1/orders", data='{"plan": "\\udfff"}',
                    headers=token_for(customer) | {"Content-Type": "application/json"})
    _assert_clear_4xx(r, api=True)
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 0


def test_json_guard_reads_escapes_not_look_alikes():
    from panel.security import json_problem

    assert json_problem('{"a": "\\\\ud800"}') is None  # a backslash, then the letters u d 8 0 0
    assert json_problem('{"a": "\\ud83d\\ude00"}') is None  # a surrogate pair: one emoji
    assert "surrogate" in json_problem('{"a": "\\ude00"}')
    assert "surrogate" in json_problem('{"\\ud800": 1}')  # keys too
    assert "NUL" in json_problem('["\\u0000"]') and json_problem('["\\\\u0000"]') is None
    assert "nested" in json_problem("[" * 65 + "]" * 65) and json_problem("[" * 64 + "]" * 64) is None
    assert json_problem('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}') is None


def test_a_file_in_a_text_field_is_a_400(client, customer):
    import io

    r = client.post("/login", data={"email": (io.BytesIO(b"x@example.com"), "e.txt"), "password": "password123"},
                    content_type="multipart/form-data")
    _assert_clear_4xx(r)
    assert "file" in r.get_data(as_text=True).lower()


def test_request_bodies_are_size_limited(client, customer):
    r = client.post("/login", data={"email": customer.email, "password": "x" * (3 * 1024 * 1024)})
    assert r.status_code == 413
    r = client.post("/api/v1/orders", data=b"{" + b" " * (3 * 1024 * 1024) + b"}",
                    headers=token_for(customer) | {"Content-Type": "application/json"})
    assert r.status_code == 413 and r.get_json()["error"]["code"] == "too_large"


def test_500_page_survives_a_broken_database_session(make_app):
    """An unexpected error after a failed flush: the 500 handler rolls back, then renders."""
    from flask import Blueprint

    from panel import hookimpl

    bp = Blueprint("broken", __name__)

    @bp.route("/broken")
    def broken():
        db.session.add(User(email="dup@example.com", password_hash="x"))
        db.session.flush()  # IntegrityError: the session now needs a rollback
        return "unreachable"

    class Broken:
        @hookimpl
        def register_blueprints(self, register):
            register(bp)

    from memory_backend import MemoryPlugin

    app = make_app(PROPAGATE_EXCEPTIONS=False, EXTRA_PLUGINS=[MemoryPlugin(), Broken()])
    with app.app_context():
        add_user("dup@example.com")
    client = app.test_client()
    login(client, "dup@example.com")
    r = client.get("/broken")
    assert r.status_code == 500
    html = r.get_data(as_text=True)
    # the full styled page rendered (not the bare fallback), with the user's session still readable
    assert "Something went wrong on our side" in html and 'class="card narrow error-page"' in html
    assert "dup@example.com" in html


# --------------------------------------------------------------------------- PostgreSQL: NUL bytes

@pytest.fixture
def pg_app(postgres_server, tmp_path, monkeypatch):
    import os

    from memory_backend import REMOTE, MemoryPlugin

    from panel import create_app
    from panel.models import Plan
    from panel.plugins import set_enabled

    for key in list(os.environ):
        if key.startswith("PANEL_"):
            monkeypatch.delenv(key, raising=False)
    REMOTE.__init__()
    app = create_app(BASE_CONFIG | {"DATABASE_URL": postgres_server.create_database(), "PLUGINS": [],
                                    "EXTRA_PLUGINS": [MemoryPlugin()]})
    with app.app_context():
        db.create_all()
        set_enabled("memory", True)
        db.session.add(Plan(slug="mem-free", name="F", backend="memory", options={"size_mib": 8}))
        db.session.commit()
        yield app
        runner = app.extensions.get("panel_runner")
        if runner is not None:
            runner.wait_idle(30)
        db.session.remove()
        db.engine.dispose()


def test_nul_bytes_are_a_400_on_postgresql(pg_app):
    client = pg_app.test_client()
    user = add_user("nul@example.com")
    ops = add_user("nulops@example.com", role="operator")
    headers = token_for(user)
    _assert_clear_4xx(client.get("/api/v1/services?status=a%00b", headers=headers), api=True)
    _assert_clear_4xx(client.get("/api/v1/plans?x=%00"), api=True)
    login(client, ops.email)
    _assert_clear_4xx(client.get("/admin/?status=%00"))
    _assert_clear_4xx(client.get("/order/mem%00free"))
    _assert_clear_4xx(client.post("/order/mem-free", data={"param_name": "a\x00b"}))
    _assert_clear_4xx(client.post("/api/v1/orders", data='{"plan": "mem-free", "params": {"name": "a\\u0000b"}}',
                                  headers=headers | {"Content-Type": "application/json"}), api=True)
    _assert_clear_4xx(client.post("/login", data={"email": "a\x00@example.com", "password": "x"}))
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 0
    assert client.get("/admin/").status_code == 200  # and the database is still fine


# --------------------------------------------------------------------------- timestamps

def test_api_timestamps_carry_an_offset_on_sqlite(client, app, customer, plans):
    from datetime import datetime

    from panel.orders import place_order

    svc = place_order(customer, "mem-free", {"name": "ts"}, actor="t").service
    wait_jobs(app)
    from panel import jobs

    jobs.sample_usage()
    headers = token_for(customer)
    stamps = [client.get(f"/api/v1/services/{svc.id}", headers=headers).get_json()["service"]["created_at"]]
    stamps += [e["at"] for e in client.get(f"/api/v1/services/{svc.id}/events", headers=headers).get_json()["events"]]
    stamps += [s["at"] for s in client.get(f"/api/v1/services/{svc.id}/usage", headers=headers).get_json()["samples"]]
    assert len(stamps) >= 3
    for stamp in stamps:
        assert datetime.fromisoformat(stamp).utcoffset() is not None, stamp
        assert stamp.endswith("+00:00")
