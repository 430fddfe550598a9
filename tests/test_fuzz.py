"""Fuzzing for 5xx: schemathesis against /api/v1/openapi.json (valid and invalid inputs), hypothesis
on the web forms (text and raw bytes) and on the Stripe webhook (validly signed fuzzed bodies), on
SQLite and on PostgreSQL. Example counts are bounded so the whole file takes about a minute."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import time

import pytest
from corelib import BASE_CONFIG, add_user, token_for

from panel.extensions import db

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

WHSEC = "whsec_fuzz_" + "z" * 20
FUZZ = settings(max_examples=int(os.environ.get("HOSTPANEL_FUZZ_EXAMPLES", "40")), deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_app(request, tmp_path_factory):
    """One app per database for the module: a customer with a live service, an operator, a plan,
    Stripe's webhook configured (no Stripe call is ever made by what we send)."""
    from memory_backend import REMOTE, MemoryPlugin

    from panel import create_app
    from panel.models import Plan
    from panel.orders import place_order
    from panel.plugins import set_enabled

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PANEL_")}
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_server").create_database()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/fuzz.db"
    REMOTE.__init__()
    app = create_app(BASE_CONFIG | {
        "DATABASE_URL": url, "PLUGINS": [], "EXTRA_PLUGINS": [MemoryPlugin()], "PROPAGATE_EXCEPTIONS": False,
        "STRIPE_SECRET_KEY": "sk_test_fuzz_" + "x" * 16, "STRIPE_WEBHOOK_SECRET": WHSEC,
        "STRIPE_API_BASE": "http://127.0.0.1:9"})
    with app.app_context():
        db.create_all()
        set_enabled("memory", True)
        db.session.add(Plan(slug="f", name="F", backend="memory", options={"size_mib": 1}))
        db.session.commit()
        user = add_user("fuzz@example.com")
        add_user("fuzzops@example.com", role="operator")
        service = place_order(user, "f", {"name": "fuzz"}, actor="t").service
        app.state = {"headers": token_for(user), "service_id": service.id}
        app.extensions["panel_runner"].wait_idle(30)
        yield app
        app.extensions["panel_runner"].wait_idle(30)
        db.session.remove()
        db.engine.dispose()
    os.environ.update(saved)


def _no_5xx(response, what):
    assert response.status_code < 500, f"{what}: HTTP {response.status_code}"


def test_api_schemathesis_finds_no_5xx(fuzz_app):
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fuzz_app)
    headers = fuzz_app.state["headers"]
    seen = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                nonlocal seen
                seen += 1
                response = case.call(headers=headers)
                _no_5xx(response, f"{case.method} {case.path} {mode.name}")
                if response.headers.get("Content-Type", "").startswith("application/json") and response.status_code >= 400:
                    error = response.json()["error"]
                    assert error["code"] and error["message"]

            try:
                run()
            except Unsatisfiable:  # nothing invalid to send (e.g. GET /plans takes no input)
                assert mode == GenerationMode.NEGATIVE
    assert seen > 100


# Text that has broken things before: NUL, lone surrogates are impossible in a form post, so raw
# bytes cover bad encodings; huge numbers; nesting; unicode.
weird_text = st.one_of(st.text(max_size=60), st.sampled_from(["\x00", "a\x00b", "9" * 30, "nan", "-1", "🙂" * 10,
                                                              "<script>", "' OR 1=1 --", "../../etc/passwd"]))


FORMS = [
    ("/login", ["email", "password"], False),
    ("/signup", ["email", "password", "confirm"], False),
    ("/forgot", ["email"], False),
    ("/order/f", ["param_name"], True),
    ("/account", ["pw-current", "pw-password", "pw-confirm", "pw-submit", "tok-name", "tok-submit"], True),
    ("/account/profile", ["full_name", "country", "tax_id", "postal_code"], True),
    ("/account/email", ["email", "current"], True),
    ("/account/2fa", ["code"], True),
    ("/admin/?status=x", [], True),
]


def test_web_forms_find_no_5xx(fuzz_app):
    from memory_backend import REMOTE

    customer = fuzz_app.test_client()
    customer.post("/login", data={"email": "fuzz@example.com", "password": "password123"})
    anonymous = fuzz_app.test_client()

    @FUZZ
    @given(form=st.sampled_from(FORMS), values=st.lists(weird_text, min_size=6, max_size=6),
           raw=st.one_of(st.none(), st.binary(max_size=80)))
    def run(form, values, raw):
        path, fields, needs_login = form
        client = customer if needs_login else anonymous
        if raw is not None:
            response = client.post(path, data=raw, content_type="application/x-www-form-urlencoded")
        else:
            response = client.post(path, data=dict(zip(fields, values)))
        _no_5xx(response, f"POST {path}")

    try:
        run()
    finally:
        fuzz_app.extensions["panel_runner"].wait_idle(30)
        REMOTE.__init__()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
event_types = st.sampled_from(["checkout.session.completed", "customer.subscription.updated",
                               "customer.subscription.deleted", "invoice.paid", "invoice.payment_failed",
                               "customer.created"])


def test_webhook_with_valid_signatures_finds_no_5xx(fuzz_app):
    client = fuzz_app.test_client()
    counter = iter(range(10**6))

    @FUZZ
    @given(body=st.one_of(
        json_values.map(json.dumps),
        st.builds(lambda t, obj, created: json.dumps({"id": f"evt_fuzz_{next(counter)}_{time.time_ns()}", "type": t,
                                                      "created": created, "data": {"object": obj}}),
                  event_types, st.dictionaries(st.sampled_from(["id", "object", "subscription", "customer", "metadata",
                                                                "status", "client_reference_id", "items"]),
                                               json_values, max_size=6),
                  st.integers(min_value=-2**63, max_value=2**63)),
        st.text(max_size=100)))
    def run(body):
        ts = int(time.time())
        sig = hmac.new(WHSEC.encode(), f"{ts}.{body}".encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        response = client.post("/stripe/webhook", data=body.encode("utf-8", "surrogatepass"),
                               headers={"Content-Type": "application/json", "Stripe-Signature": f"t={ts},v1={sig}"})
        _no_5xx(response, "POST /stripe/webhook")
        assert response.status_code in (200, 400)

    try:
        run()
    finally:
        fuzz_app.extensions["panel_runner"].wait_idle(30)
