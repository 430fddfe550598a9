"""POST /stripe/webhook: verification, storage, dedupe; nothing stored for a bad delivery."""
import json
import logging
import time

import pytest
from billinglib import SECRET_KEY, WHSEC, checkout_session_obj, deliver, make_event, settle, sign
from flows import order_paid, pay
from memory_backend import REMOTE

from panel.billing.models import StripeEvent
from panel.extensions import db


def stored():
    return db.session.scalar(db.select(db.func.count()).select_from(StripeEvent))


def a_event():
    return make_event("invoice.paid", {"id": "in_123", "object": "invoice", "customer": "cus_x"})


def test_bad_signature_is_400_and_nothing_stored(client, caplog):
    caplog.set_level(logging.DEBUG)
    r = deliver(client, a_event(), secret="whsec_wrong_secret_000000")
    assert r.status_code == 400 and r.get_json()["error"] == "bad signature"
    r = deliver(client, a_event(), header="t=123,v1=deadbeef")
    assert r.status_code == 400
    r = deliver(client, a_event(), header="garbage")
    assert r.status_code == 400
    assert stored() == 0
    assert WHSEC not in caplog.text and SECRET_KEY not in caplog.text


def test_missing_signature_is_400(client):
    r = deliver(client, a_event(), header="")
    assert r.status_code == 400 and "Stripe-Signature" in r.get_json()["error"]
    assert stored() == 0


def test_stale_timestamp_is_400(client):
    r = deliver(client, a_event(), timestamp=int(time.time()) - 301)
    assert r.status_code == 400 and r.get_json()["error"] == "signature timestamp is too old"
    assert stored() == 0
    assert deliver(client, a_event(), timestamp=int(time.time()) - 250).status_code == 200


def test_replayed_old_signature_is_refused(client):
    """A captured delivery replayed after the tolerance, or its header put on another body."""
    event = a_event()
    payload = json.dumps(event)
    old_header = sign(payload, timestamp=int(time.time()) - 3600)
    assert deliver(client, payload, header=old_header).status_code == 400
    fresh = sign(payload)
    other = json.dumps(make_event("invoice.paid", {"id": "in_999", "object": "invoice"}))
    assert deliver(client, other, header=fresh).status_code == 400
    assert stored() == 0


def test_malformed_json_and_non_events_are_400(client):
    for body in ("{not json", "[1, 2]", json.dumps({"id": "evt_1", "type": "x"}), "\"evt\""):
        r = deliver(client, body)
        assert r.status_code == 400, body
    r = client.post("/stripe/webhook", data=b"\xff\xfe", headers={"Stripe-Signature": sign("x")})
    assert r.status_code == 400
    assert stored() == 0


def test_nan_and_infinity_are_not_json_400_and_nothing_stored(client):
    for constant in ("NaN", "Infinity", "-Infinity"):
        body = json.dumps(a_event())[:-1] + f', "amount": {constant}}}'
        r = deliver(client, body)
        assert r.status_code == 400 and r.get_json()["error"] == "body is not JSON", constant
    assert stored() == 0


def test_unknown_event_type_is_recorded_and_ignored(app, client):
    event = make_event("customer.created", {"id": "cus_1", "object": "customer"})
    r = deliver(client, event)
    assert r.status_code == 200 and r.get_json() == {"received": True, "ignored": True}
    row = db.session.get(StripeEvent, event["id"])
    assert row.type == "customer.created" and row.processed_at is not None
    assert row.outcome.startswith("ignored") and row.attempts == 0
    assert row.payload["data"]["object"]["id"] == "cus_1"


def test_duplicate_delivery_runs_once(app, client, auth, paid_plans, router, upstream_client):
    service, _ = order_paid(client, auth)
    sub_id, customer = pay(app, client, router, upstream_client, service)
    row = db.session.scalars(db.select(StripeEvent).where(StripeEvent.type == "checkout.session.completed")).one()
    before = stored()
    # Stripe delivers the same event again (same id, new signature), twice.
    for _ in range(2):
        r = deliver(client, row.payload)
        assert r.status_code == 200 and r.get_json()["duplicate"] is True
    settle(app)
    assert [c for c in REMOTE.calls if c[0] == "provision"] == [("provision", service.external_id)]
    db.session.refresh(row)
    assert row.attempts == 1 and row.processed_at is not None
    assert stored() == before
    assert service.status == "active"


def test_a_duplicate_job_for_a_processed_event_does_nothing(app, client, auth, paid_plans, router, upstream_client):
    """A job may run twice (a duplicate wake-up, the sweep): the claim finds the processed event not
    due and the job skips it instead of handling it again."""
    from panel.billing.handlers import process_event

    service, _ = order_paid(client, auth)
    pay(app, client, router, upstream_client, service)
    row = db.session.scalars(db.select(StripeEvent).where(StripeEvent.type == "checkout.session.completed")).one()
    seen = (row.attempts, row.outcome, row.processed_at, row.error)
    events = len(service.events)
    assert process_event(row.id) == "skipped"
    settle(app)
    db.session.refresh(row)
    assert (row.attempts, row.outcome, row.processed_at, row.error) == seen
    assert [c for c in REMOTE.calls if c[0] == "provision"] == [("provision", service.external_id)]
    db.session.refresh(service)
    assert len(service.events) == events and service.status == "active"
    assert process_event("evt_never_stored") == "skipped"


def test_checkout_event_for_another_user_is_ignored(app, client, auth, paid_plans):
    service, _ = order_paid(client, auth)
    session = checkout_session_obj(service, subscription="sub_x", customer="cus_x")
    session["metadata"]["panel_user_id"] = str(service.user_id + 100)
    event = make_event("checkout.session.completed", session)
    assert deliver(client, event).status_code == 200
    settle(app)
    assert service.status == "pending_payment" and REMOTE.calls == []
    assert "does not own" in db.session.get(StripeEvent, event["id"]).outcome


def test_webhook_is_csrf_exempt_when_csrf_is_on(make_app, billing_config):
    app = make_app(WTF_CSRF_ENABLED=True, **billing_config)
    client = app.test_client()
    event = make_event("customer.created", {"id": "cus_2", "object": "customer"})
    assert deliver(client, event).status_code == 200
    assert client.post("/billing/portal").status_code == 400  # the customer pages keep CSRF


def _event_with(**changes):
    event = a_event()
    for key, value in changes.items():
        if value is KeyError:
            event.pop(key)
        else:
            event[key] = value
    return event


BAD_BODIES = [
    ("{not json", "body is not JSON"),
    ("[1, 2]", "body is not an event"),
    ("\"evt\"", "body is not an event"),
    (_event_with(id=KeyError), "body is not a Stripe event (id, type, created, data.object)"),
    (_event_with(id=""), "body is not a Stripe event (id, type, created, data.object)"),
    (_event_with(id=7), "body is not a Stripe event (id, type, created, data.object)"),
    (_event_with(id="evt_" + "x" * 252), "body is not a Stripe event (id, type, created, data.object)"),  # 256
    (_event_with(type=KeyError), "body is not a Stripe event (id, type, created, data.object)"),
    (_event_with(type=""), "body is not a Stripe event (id, type, created, data.object)"),
    (_event_with(created="1700000000"), "body is not a Stripe event (id, type, created, data.object)"),
    (_event_with(data=[]), "body is not a Stripe event (id, type, created, data.object)"),
    (_event_with(data={"object": "in_1"}), "body is not a Stripe event (id, type, created, data.object)"),
]


def test_each_bad_body_says_what_is_wrong_and_stores_nothing(client):
    for body, message in BAD_BODIES:
        r = deliver(client, body if isinstance(body, str) else json.dumps(body))
        assert (r.status_code, r.get_json()) == (400, {"error": message}), body
    r = client.post("/stripe/webhook", data=b"\xff\xfe", headers={"Stripe-Signature": sign("x")})
    assert (r.status_code, r.get_json()) == (400, {"error": "body is not UTF-8"})
    r = deliver(client, a_event(), header="")
    assert r.get_json() == {"error": "missing Stripe-Signature header"}
    assert stored() == 0


def test_json_too_deep_for_the_parser_is_a_400_that_says_so(client):
    """Nesting deeper than Python's recursion limit makes ``json.loads`` raise RecursionError
    before our own depth check can run: still a 400 with the reason, and nothing stored."""
    from panel.security import MAX_JSON_DEPTH

    body = '{"id": "evt_deep", "type": "invoice.paid", "created": 1, "data": {"object": %s}}' % (
        "[" * 200_000 + "]" * 200_000)
    r = deliver(client, body)
    assert (r.status_code, r.get_json()) == (400, {"error": f"JSON is nested deeper than {MAX_JSON_DEPTH} levels"})
    assert stored() == 0


def test_created_is_any_unix_time_that_fits_in_64_bits(app, client):
    """``created`` from 0 to 2**63 - 1 (the database's BIGINT) is stored as sent; below or above
    is a 400 and stores nothing."""
    for created in (0, 2**63 - 1):
        event = make_event("test.created.bounds", {"id": "obj_c", "object": "thing"}, created=created)
        assert deliver(client, event).get_json() == {"received": True, "ignored": True}
        assert db.session.get(StripeEvent, event["id"]).created == created
    for created in (-1, 2**63):
        event = make_event("test.created.bounds", {"id": "obj_c", "object": "thing"}, created=created)
        r = deliver(client, event)
        assert (r.status_code, r.get_json()) == (
            400, {"error": "body is not a Stripe event (id, type, created, data.object)"}), created
    assert stored() == 2


def test_an_id_of_255_characters_is_accepted_and_stored_as_sent(app, client):
    event = _event_with(id="evt_" + "y" * 251, livemode=True)
    assert deliver(client, event).get_json() == {"received": True}  # new: stored, its job enqueued
    row = db.session.get(StripeEvent, event["id"])
    assert row.livemode is True and row.type == "invoice.paid" and row.created == event["created"]
    assert row.payload == event and row.received_at is not None


def test_an_unhandled_type_is_stored_processed_with_its_type_cut_to_100(app, client):
    long_type = "x." + "y" * 150
    event = make_event(long_type, {"id": "obj_1", "object": "thing"})
    r = deliver(client, event)
    assert r.get_json() == {"received": True, "ignored": True}
    row = db.session.get(StripeEvent, event["id"])
    assert row.type == long_type[:100] and row.livemode is False
    assert row.outcome == f"ignored: {long_type} is not handled" and row.processed_at is not None
    assert deliver(client, event).get_json() == {"received": True, "ignored": True}
    assert stored() == 1


def test_the_webhook_skips_the_pages_request_hooks_but_keeps_headers_and_metrics(make_app, billing_config):
    """Stripe's webhook is a bare endpoint (issue 14): rate limits, sessions, the operator 2FA
    check and the input guard do not run for it (its own parse refuses what the guard would), the
    security headers are set and the delivery is counted."""
    import re

    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_HEADERS_ENABLED=True, METRICS_TOKEN="metrics-token-123456",
                   **billing_config)
    client = app.test_client()

    def counted() -> float:
        text = client.get("/metrics", headers={"Authorization": "Bearer metrics-token-123456"}).get_data(as_text=True)
        found = re.search(r'^panel_http_requests_total\{endpoint="stripe_webhook.webhook",method="POST",'
                          r'status="200"\} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    from flask import request

    page_hooks = []  # a hook registered the usual way runs for pages, not for the webhook
    app.before_request(lambda: page_hooks.append(("before", request.endpoint)))
    app.after_request(lambda response: page_hooks.append(("after", request.endpoint)) or response)
    before = counted()
    client.set_cookie("session", "not-a-signed-session")  # a page would open and rewrite it
    event = make_event("customer.created", {"id": "cus_bare", "object": "customer"})
    r = deliver(client, event)
    assert r.status_code == 200 and r.get_json() == {"received": True, "ignored": True}
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Content-Type-Options"] == "nosniff"
    assert "Set-Cookie" not in r.headers and not any(h.startswith("X-RateLimit") for h in r.headers.keys())
    assert page_hooks == [("before", "ops.metrics_view"), ("after", "ops.metrics_view")]
    page = client.get("/login")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page_hooks[-2:] == [("before", "auth.login"), ("after", "auth.login")]
    assert counted() == before + 1
    # what the input guard refuses on other routes, the webhook's own parse refuses after the signature
    from panel.security import MAX_JSON_DEPTH

    for body, message in (
            ('{"id": "evt_n", "type": "invoice.paid", "created": 1, "data": {"object": {"a": "x\\u0000"}}}',
             "JSON holds a NUL character (\\u0000), which cannot be stored"),
            ('{"id": "evt_s", "type": "invoice.paid", "created": 1, "data": {"object": {"\\ud800": 1}}}',
             "JSON holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text"),
            ('{"id": "evt_d", "type": "invoice.paid", "created": 1, "data": {"object": %s}}' % ("[" * 70 + "]" * 70),
             f"JSON is nested deeper than {MAX_JSON_DEPTH} levels")):
        r = deliver(client, body)
        assert (r.status_code, r.get_json()) == (400, {"error": message}), body[:60]
    with app.app_context():
        assert db.session.scalar(db.select(StripeEvent.id).where(StripeEvent.id.in_(["evt_n", "evt_s", "evt_d"]))) \
            is None


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_an_event_is_stored_once_as_sent_on_both_databases(make_app, billing_config, postgres_server,
                                                           monkeypatch, database):
    """The webhook's ``INSERT ... ON CONFLICT DO NOTHING``, built afresh for the dialect (the cache
    of built statements emptied): the event's columns from the delivery, the payload the delivery's
    own JSON (JSONB on PostgreSQL), a second delivery answered as a duplicate without a second row."""
    from panel.billing import webhook

    monkeypatch.setattr(webhook, "_INSERTS", {})
    url = postgres_server.create_database() if database == "postgresql" else None
    app = make_app(**billing_config, **({"DATABASE_URL": url} if url else {}))
    with app.app_context():
        event = make_event("test.decisions.unhandled", {"id": "obj_1", "object": "thing", "n": [1, 2.5, None]},
                           created=1764590400)
        first, again = deliver(app.test_client(), event), deliver(app.test_client(), event)
        assert first.status_code == again.status_code == 200
        assert first.get_json() == {"received": True, "ignored": True} and again.get_json()["received"] is True
        rows = db.session.scalars(db.select(StripeEvent)).all()
        assert [(r.id, r.type, r.created, r.livemode, r.attempts, r.lease_token) for r in rows] == [
            (event["id"], "test.decisions.unhandled", 1764590400, False, 0, 0)]
        assert rows[0].payload == event and rows[0].processed_at is not None
        assert rows[0].outcome == "ignored: test.decisions.unhandled is not handled"
        assert set(webhook._INSERTS) == {database}


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
@pytest.mark.parametrize("handled", [True, False])
def test_store_writes_every_column_and_a_duplicate_reports_the_stored_state(make_app, billing_config, postgres_server,
                                                                            database, handled):
    """``_store`` on each database: a new event's columns as the worker expects them (due now when
    it is handled, processed at once as ignored when not; no attempt, lease or lost run yet), and
    a second delivery of the same id inserts nothing and reports that row's (processed_at, due_at,
    lease_owner), not another row's."""
    from panel.billing import webhook
    from panel.billing.models import aware
    from panel.models.base import utcnow

    url = postgres_server.create_database() if database == "postgresql" else None
    app = make_app(**billing_config, **({"DATABASE_URL": url} if url else {}))
    with app.app_context():
        kind = "invoice.paid" if handled else "test.store.unhandled"
        earlier = make_event(kind, {"id": "in_0", "object": "invoice"}, created=1764590000, event_id="evt_store_0")
        event = make_event(kind, {"id": "in_1", "object": "invoice"}, created=1764590400, event_id="evt_store_1")
        assert webhook._store(earlier, json.dumps(earlier)) == (True, None)
        db.session.execute(db.update(StripeEvent).where(StripeEvent.id == "evt_store_0")
                           .values(lease_owner="worker-0", due_at=None))
        db.session.commit()
        before = utcnow()
        assert webhook._store(event, json.dumps(event)) == (True, None)
        after = utcnow()
        row = db.session.get(StripeEvent, "evt_store_1")
        assert before <= aware(row.received_at) <= after
        assert (row.attempts, row.lease_token, row.lost_runs, row.lease_owner, row.error) == (0, 0, 0, None, None)
        assert row.payload == event
        if handled:
            assert before <= aware(row.due_at) <= after and row.processed_at is None and row.outcome is None
        else:
            assert row.due_at is None and before <= aware(row.processed_at) <= after
            assert row.outcome == "ignored: test.store.unhandled is not handled"
        stored = (aware(row.processed_at), aware(row.due_at), "worker-1")
        db.session.execute(db.update(StripeEvent).where(StripeEvent.id == "evt_store_1").values(lease_owner="worker-1"))
        db.session.commit()
        inserted, state = webhook._store(event, json.dumps(event))
        assert inserted is False and (aware(state[0]), aware(state[1]), state[2]) == stored
        # without the delivery's text (``raw`` omitted) the payload is the event as JSON
        replayed = make_event(kind, {"id": "in_2", "object": "invoice", "total": 1250}, event_id="evt_store_2")
        assert webhook._store(replayed) == (True, None)
        assert db.session.get(StripeEvent, "evt_store_2").payload == replayed
        assert db.session.scalar(db.select(db.func.count()).select_from(StripeEvent)) == 3
