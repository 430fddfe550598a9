"""``POST /api/v1/orders`` with an ``Idempotency-Key``, and orders while Redis is unreachable."""
from corelib import BASE_CONFIG, add_user, token_for, wait_jobs
from memory_backend import REMOTE

from panel.extensions import db
from panel.models import IdempotencyKey, Service


def post(client, auth, body, key=None):
    headers = dict(auth) | ({"Idempotency-Key": key} if key is not None else {})
    return client.post("/api/v1/orders", json=body, headers=headers)


def test_a_repeated_request_gets_the_first_answer_and_orders_once(app, client, customer, plans):
    auth = token_for(customer)
    body = {"plan": "mem-free", "params": {"name": "once"}}
    first = post(client, auth, body, "order-7f3a")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    wait_jobs(app)
    again = post(client, auth, body, "order-7f3a")
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json(), "the first answer, not the service's state now"
    assert again.headers["Location"] == first.headers["Location"]
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 1
    assert REMOTE.calls == [("provision", Service.query.one().external_id)]
    other_key = post(client, auth, body, "order-other")  # a new key is a new order: the name is taken
    assert other_key.status_code == 422 and other_key.get_json()["error"]["fields"] == {"name": "once is already in use"}


def test_the_same_key_with_another_body_is_refused(client, customer, plans):
    auth = token_for(customer)
    assert post(client, auth, {"plan": "mem-free", "params": {"name": "a1"}}, "k-1").status_code == 201
    r = post(client, auth, {"plan": "mem-free", "params": {"name": "b2"}}, "k-1")
    assert r.status_code == 422
    err = r.get_json()["error"]
    assert err["code"] == "idempotency_key_reused" and "Idempotency-Key" in err["fields"]
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 1


def test_keys_belong_to_one_account(client, customer, other_customer, plans):
    body = {"plan": "mem-free", "params": {"name": "mine"}}
    assert post(client, token_for(customer), body, "shared-key").status_code == 201
    theirs = post(client, token_for(other_customer), {"plan": "mem-free", "params": {"name": "yours"}}, "shared-key")
    assert theirs.status_code == 201 and "Idempotent-Replayed" not in theirs.headers
    assert theirs.get_json()["service"]["params"] == {"name": "yours"}


def test_a_malformed_key_is_a_field_error_and_orders_nothing(client, customer, plans):
    auth = token_for(customer)
    for bad in ("", "has space", "x" * 256, "é"):
        r = post(client, auth, {"plan": "mem-free", "params": {"name": "m1"}}, bad)
        assert r.status_code == 400 and "Idempotency-Key" in r.get_json()["error"]["fields"], bad
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 0


def test_a_refused_order_keeps_no_key(client, customer, plans):
    auth = token_for(customer)
    r = post(client, auth, {"plan": "mem-free", "params": {"name": "Bad Name"}}, "retry-me")
    assert r.status_code == 422
    assert db.session.scalar(db.select(db.func.count()).select_from(IdempotencyKey)) == 0
    fixed = post(client, auth, {"plan": "mem-free", "params": {"name": "good-name"}}, "retry-me")
    assert fixed.status_code == 201


def test_a_request_that_died_after_its_commit_is_answered_from_the_service(app, client, customer, plans):
    auth = token_for(customer)
    body = {"plan": "mem-free", "params": {"name": "crash"}}
    first = post(client, auth, body, "k-crash")
    assert first.status_code == 201
    row = db.session.scalar(db.select(IdempotencyKey))
    assert row.service_id == first.get_json()["service"]["id"]
    row.response_status = row.response_body = None  # as if the process died before storing its answer
    db.session.commit()
    again = post(client, auth, body, "k-crash")
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["service"]["id"] == first.get_json()["service"]["id"]


def test_orders_while_redis_is_unreachable_answer_201_and_run_once_it_is_back(make_app):
    """The limiter fails open and the hand-over to the queue is skipped: nothing after the
    commit turns the order into a 500. The order stays due in the database."""
    from panel import jobs
    from panel.models import Operation, Plan
    from panel.testing import free_port

    REMOTE.__init__()
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", RATELIMIT_ENABLED=True)
    with app.app_context():
        user = add_user("offline@example.com")
        db.session.add(Plan(slug="f", name="F", backend="memory", options={"size_mib": 1}))
        db.session.commit()
        auth = token_for(user)
        client = app.test_client()
        r = post(client, auth, {"plan": "f", "params": {"name": "offline"}}, "k-off")
        assert r.status_code == 201, r.get_data(as_text=True)
        assert "X-RateLimit-Limit" in r.headers, "the limit still applies, from the in-memory fallback"
        assert post(client, auth, {"plan": "f", "params": {"name": "offline"}}, "k-off").status_code == 201
        op = db.session.scalar(db.select(Operation))
        assert op.state == "queued" and op.due_at is not None, "owed in the database, waiting for a worker"
        assert jobs.run_operation(op.id) == "succeeded"  # a worker that can reach the database runs it
        assert db.session.get(Service, op.service_id).status == "active"
    assert BASE_CONFIG["RATELIMIT_ENABLED"] is False  # the other tests keep limits off
