"""JSON API v1: tokens, plans, orders, services, events, errors, OpenAPI."""
import pytest
from corelib import add_user, token_for, wait_jobs
from memory_backend import REMOTE

from panel.extensions import db
from panel.models import ApiToken, Service


@pytest.fixture
def auth(customer):
    return token_for(customer)


def test_plans_are_public_and_list_order_params(client, plans):
    body = client.get("/api/v1/plans").get_json()
    slugs = [p["slug"] for p in body["plans"]]
    assert slugs == ["mem-free", "mem-big", "mem-paid"]
    free = body["plans"][0]
    assert free["free"] is True and free["backend"] == "memory"
    schema = free["order_params"]  # the JSON Schema of MemoryBackend.OrderParams
    assert schema["type"] == "object" and schema["required"] == ["name"]
    assert schema["properties"]["name"] == {"type": "string", "maxLength": 30, "pattern": "^[a-z0-9-]+$",
                                            "title": "Name"}
    assert schema["additionalProperties"] is False


def test_order_a_free_plan_then_read_it_back(app, client, auth, plans):
    r = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "site1"}}, headers=auth)
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert body["checkout_url"] is None
    service_id = body["service"]["id"]
    assert body["service"]["status"] in ("provisioning", "active")
    assert r.headers["Location"].endswith(f"/api/v1/services/{service_id}")
    wait_jobs(app)
    svc = client.get(f"/api/v1/services/{service_id}", headers=auth).get_json()["service"]
    assert set(svc) >= {"id", "plan", "backend", "status", "status_detail", "params", "client_area", "usage", "created_at"}
    assert svc["status"] == "active" and svc["plan"] == "mem-free" and svc["params"] == {"name": "site1"}
    assert "details" not in svc  # raw details are for operators only
    connect = next(s for s in svc["client_area"] if s["kind"] == "connect")
    assert connect["items"][0]["value"] == "site1.test" and "s3cret-root-pw" not in str(svc)
    # operators' tokens see the raw details, with every secret masked, nested ones included
    ops = token_for(add_user("ops-api@example.com", role="operator"))
    seen = client.get(f"/api/v1/services/{service_id}", headers=ops).get_json()["service"]
    assert seen["details"] == {"host": "site1.test", "password": "••••••••",
                               "config": {"region": "test-1", "adminPassword": "••••••••"},
                               "accounts": [{"user": "root", "password": "••••••••"}]}
    assert svc["usage"]["metrics"][0] == {"name": "memory", "value": 64.0, "unit": "MiB", "label": "memory", "limit": 128}
    listed = client.get("/api/v1/services", headers=auth).get_json()["services"]
    assert [s["id"] for s in listed] == [service_id]
    events = client.get(f"/api/v1/services/{service_id}/events", headers=auth).get_json()["events"]
    assert [e["to"] for e in events][-1] == "active"
    assert {"at", "actor", "kind", "from", "to", "detail"} <= set(events[0])


def test_invalid_params_answer_422_with_field_messages(client, auth, plans):
    r = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "Not Valid!", "x": 1}}, headers=auth)
    assert r.status_code == 422
    err = r.get_json()["error"]
    assert err["code"] == "invalid_params"
    assert "invalid format" in err["fields"]["name"] and err["fields"]["x"] == "is not a known field"
    r = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "taken"}}, headers=auth)
    assert (r.status_code, r.get_json()) == (422, {"error": {"code": "invalid_params",
                                                             "message": "some order fields are invalid",
                                                             "fields": {"name": "is already taken"}}})
    r = client.post("/api/v1/orders", json={"params": {}}, headers=auth)
    assert r.status_code == 422 and r.get_json()["error"]["fields"] == {"plan": "is required"}
    assert REMOTE.calls == []


def test_bad_requests(client, auth, plans):
    r = client.post("/api/v1/orders", data="not json", headers=auth | {"Content-Type": "application/json"})
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "bad_request"
    r = client.post("/api/v1/orders", json={"plan": "nope"}, headers=auth)
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "plan_not_found"


def test_paid_plan_without_billing_answers_409(client, auth, plans):
    r = client.post("/api/v1/orders", json={"plan": "mem-paid", "params": {"name": "p"}}, headers=auth)
    assert r.status_code == 409
    assert r.get_json()["error"] == {"code": "billing_not_configured",
                                     "message": "billing not configured: paid plans cannot be ordered yet"}


def test_no_capacity_answers_409_before_anything_is_recorded(client, auth, plans):
    from panel.models import Service

    REMOTE.capacity = False
    r = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "p"}}, headers=auth)
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "no_capacity"
    assert "no capacity in region test-1" in r.get_json()["error"]["message"]
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 0


def test_auth_is_required_and_checked(client, plans):
    assert client.get("/api/v1/services").status_code == 401
    r = client.get("/api/v1/services", headers={"Authorization": "Bearer hp_nope_nope"})
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_another_customers_service_answers_404(app, client, customer, other_customer, plans):
    mine = token_for(customer)
    theirs = token_for(other_customer)
    sid = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "a"}}, headers=mine).get_json()["service"]["id"]
    wait_jobs(app)
    assert client.get(f"/api/v1/services/{sid}", headers=theirs).status_code == 404
    assert client.get(f"/api/v1/services/{sid}/events", headers=theirs).status_code == 404
    assert client.get("/api/v1/services", headers=theirs).get_json()["services"] == []
    assert client.get("/api/v1/services/99999", headers=mine).get_json()["error"]["code"] == "not_found"


def test_a_disabled_account_gets_403(client, customer, plans):
    headers = token_for(customer)
    customer.is_active_flag = False
    db.session.commit()
    r = client.get("/api/v1/services", headers=headers)
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "forbidden"


def test_tokens_are_stored_hashed(client, customer):
    row, plain = ApiToken.issue(customer, "x")
    db.session.commit()
    assert plain.startswith(f"hp_{row.prefix}_") and plain not in row.token_hash
    assert ApiToken.authenticate(plain).id == customer.id


def test_openapi_document_describes_every_route(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    import re

    routes = {re.sub(r"<int:\w+_id>", "{id}", r.rule[len("/api/v1"):]).replace("<name>", "{name}")
              for r in client.application.url_map.iter_rules() if r.rule.startswith("/api/v1/")}
    assert set(doc["paths"]) == routes - {"/openapi.json"}
    assert {"/services/{id}/subscription", "/services/{id}/cancel", "/services/{id}/plan",
            "/services/{id}/addons"} <= set(doc["paths"])
    assert "fields" in doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
    from panel.models.services import STATUSES

    assert doc["components"]["schemas"]["Service"]["properties"]["status"]["enum"] == list(STATUSES)
    # each installed backend's order params, generated from its pydantic OrderParams
    memory = doc["components"]["schemas"]["MemoryOrderParams"]
    assert memory["required"] == ["name"] and memory["properties"]["name"]["maxLength"] == 30
    params = doc["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/MemoryOrderParams"} in params["properties"]["params"]["anyOf"]


def test_the_backend_checks_an_orders_name_on_a_draft_of_the_service(client, auth, customer, plans):
    """Before anything is stored, ``Backend.claim_key`` gets a draft ``ServiceSpec``: no service
    id or external id yet, the plan's slug and options, the order's params and the customer."""
    r = client.post("/api/v1/orders", json={"plan": "mem-big", "params": {"name": "drafted"}}, headers=auth)
    assert r.status_code == 201, r.get_json()
    draft = REMOTE.claims[0]
    assert (draft.service_id, draft.external_id, draft.plan, draft.options, draft.params) == (
        0, "", "mem-big", {"size_mib": 512}, {"name": "drafted"})
    assert (draft.customer_id, draft.customer_email) == (customer.id, customer.email)


@pytest.mark.parametrize("case,status,error", [
    ("fields", 422, {"code": "invalid_params", "message": "memory: the name refused-here is reserved",
                     "fields": {"name": "is reserved here"}}),
    ("permanent", 422, {"code": "invalid_params", "message": "memory: claim_key rejected: hostname is already taken",
                        "fields": {"params": "memory: claim_key rejected: hostname is already taken"}}),
    ("transient", 409, {"code": "backend_unavailable",
                        "message": "this plan cannot be ordered right now: memory: claim_key timed out (HTTP 503)"}),
])
def test_a_backend_refusing_the_orders_name_answers_before_anything_is_stored(client, auth, plans, case, status,
                                                                             error):
    """``claim_key`` refusing the name: its field messages (or the message as ``params``) in a 422;
    a backend that cannot answer now: a 409 the customer can retry. No service is stored."""
    from panel.models import Service

    if case != "fields":
        REMOTE.fail_next("claim_key", case)
    name = "refused-here" if case == "fields" else "claimed"
    r = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": name}}, headers=auth)
    assert (r.status_code, r.get_json()["error"]) == (status, error)
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 0


def test_a_name_held_by_a_live_service_is_refused_until_it_ends(app, client, auth, plans):
    from panel import lifecycle
    from panel.models import Service

    first = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "dup"}}, headers=auth)
    assert first.status_code == 201
    second = client.post("/api/v1/orders", json={"plan": "mem-big", "params": {"name": "dup"}}, headers=auth)
    assert second.status_code == 422
    assert second.get_json()["error"] == {"code": "invalid_params", "message": "some order fields are invalid",
                                          "fields": {"name": "dup is already in use"}}
    wait_jobs(app)
    svc = db.session.get(Service, first.get_json()["service"]["id"])
    lifecycle.request(svc, "terminate", actor="test")
    wait_jobs(app)
    assert svc.status == "terminated" and svc.claim_key is None
    third = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "dup"}}, headers=auth)
    assert third.status_code == 201


def test_a_name_is_unique_per_backend_not_across_backends(app, client, auth, customer, plans):
    """``claim_for`` looks for a holder of the name on the order's backend only: a live service of
    another backend with the same remote name does not block it (names are per backend,
    ``uq_services_backend_claim_key``)."""
    elsewhere = Service(user_id=customer.id, plan_id=plans["free"].id, backend="other-backend", status="active",
                        params={"name": "shared"}, claim_key="shared")
    db.session.add(elsewhere)
    db.session.commit()
    r = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "shared"}}, headers=auth)
    assert r.status_code == 201, r.get_json()
    wait_jobs(app)
    mine = db.session.get(Service, r.get_json()["service"]["id"])
    assert (mine.backend, mine.claim_key, mine.status) == ("memory", "shared", "active")


def test_usage_samples_are_recorded_and_served(app, client, auth, plans):
    from datetime import timedelta

    from panel import jobs
    from panel.models import UsageSample
    from panel.models.base import utcnow

    sid = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "u1"}}, headers=auth).get_json()["service"]["id"]
    wait_jobs(app)
    old = utcnow() - timedelta(days=40)
    assert jobs.sample_usage(now=old) == 1
    assert jobs.sample_usage() == 1  # also prunes samples past the 30-day retention
    assert db.session.scalar(db.select(db.func.count()).select_from(UsageSample)) == 1
    samples = client.get(f"/api/v1/services/{sid}/usage", headers=auth).get_json()["samples"]
    assert len(samples) == 1
    assert samples[0]["metrics"][0]["name"] == "memory" and samples[0]["metrics"][0]["unit"] == "MiB"
    assert client.get(f"/api/v1/services/{sid}/usage?hours=x", headers=auth).status_code == 400


@pytest.mark.parametrize("body", [
    None, [], "text", 123, {"plan": 5}, {"plan": ""}, {"plan": "mem-free", "params": []},
    {"plan": "mem-free", "params": "x"}, {"plan": "mem-free", "params": {"name": None}},
    {"plan": "mem-free", "params": {"name": {"nested": 1}}}, {"plan": "mem-free", "params": {"name": "a" * 500}},
    {"plan": ["mem-free"]}, {"plan": "mem-free", "params": {"name": True}},
])
def test_malformed_orders_get_a_clear_4xx_and_store_nothing(client, auth, plans, body):
    from panel.models import Service

    r = client.post("/api/v1/orders", json=body, headers=auth) if body is not None else \
        client.post("/api/v1/orders", data=b"\xff\xfe", headers=auth | {"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, (body, r.status_code, r.get_data(as_text=True)[:200])
    err = r.get_json()["error"]
    assert err["code"] and err["message"]
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 0


def test_orders_are_rate_limited_per_account_and_operators_are_exempt(make_app):
    from corelib import add_user

    from panel.models import Plan

    app = make_app(RATELIMIT_ENABLED=True, ORDER_LIMIT="2 per hour")
    with app.app_context():
        db.session.add(Plan(slug="f", name="F", backend="memory", options={"size_mib": 1}))
        db.session.commit()
        alice, bob = token_for(add_user("a@example.com")), token_for(add_user("b@example.com"))
        ops = token_for(add_user("o@example.com", role="operator"))
        client = app.test_client()

        def order(headers, n):
            return client.post("/api/v1/orders", json={"plan": "f", "params": {"name": n}}, headers=headers).status_code

        assert [order(alice, f"a{i}") for i in range(3)] == [201, 201, 429]
        assert order(bob, "b0") == 201  # per account, not per address
        assert [order(ops, f"o{i}") for i in range(3)] == [201, 201, 201]
        wait_jobs(app)


def test_another_accounts_default_name_is_refused_with_the_field_and_nothing_is_stored(client, app, customer,
                                                                                     other_customer, plans):
    """``claim_for``: a name that is another account's default (``panel.names``) is a 422 with the
    error's code, message and the field's words; the account whose default it is may order it."""
    REMOTE.default_names = True
    r = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "alice"}},
                    headers=token_for(other_customer))
    assert r.status_code == 422
    assert r.get_json() == {"error": {"code": "invalid_params", "message": "some order fields are invalid",
                                      "fields": {"name": "alice belongs to another account; choose another name."}}}
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 0
    assert client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "bob"}},
                       headers=token_for(other_customer)).status_code == 201
    assert client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "alice"}},
                       headers=token_for(customer)).status_code == 201
    wait_jobs(app)


@pytest.mark.parametrize("params", [["name", "x"], "name=x", 7])
def test_order_params_that_are_not_an_object_get_a_field_level_422(client, auth, plans, params):
    """``validate_params``: params that are not a JSON object are refused before the backend sees
    them, with the whole error (code, message, field); nothing is stored."""
    r = client.post("/api/v1/orders", json={"plan": "mem-free", "params": params}, headers=auth)
    assert r.status_code == 422
    assert r.get_json() == {"error": {"code": "invalid_params", "message": "params must be an object",
                                      "fields": {"params": "must be an object"}}}
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 0


def test_the_backend_validates_order_params_against_the_plans_options(client, auth, plans):
    """``validate_params`` hands the backend the order's params and the plan's options (a copy: a
    backend cannot change the plan), as ``Backend.validate_order_params(params, options)`` says."""
    REMOTE.validated.clear()
    r = client.post("/api/v1/orders", json={"plan": "mem-big", "params": {"name": "opts"}}, headers=auth)
    assert r.status_code == 201, r.get_json()
    assert REMOTE.validated[0] == ({"name": "opts"}, {"size_mib": 512})
    REMOTE.validated[0][1]["size_mib"] = 1
    assert db.session.get(Service, r.get_json()["service"]["id"]).plan.options == {"size_mib": 512}


def test_a_backend_that_cannot_validate_now_answers_409_and_nothing_is_stored(client, auth, plans):
    """``validate_params``: a backend error while validating (not a field problem) is a 409 the
    customer can retry, with the backend's words after ours."""
    REMOTE.fail_next("validate_order_params", "transient")
    r = client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "later"}}, headers=auth)
    assert (r.status_code, r.get_json()) == (409, {"error": {
        "code": "backend_unavailable",
        "message": "this plan cannot be ordered right now: memory: validate_order_params timed out (HTTP 503)"}})
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 0
    assert client.post("/api/v1/orders", json={"plan": "mem-free", "params": {"name": "later"}},
                       headers=auth).status_code == 201


def test_a_plan_that_cannot_be_ordered_says_why_and_stores_nothing(client, auth, plans):
    """``get_plan``: an unknown or retired plan is a 404 naming it; a plan whose backend is not
    installed, or is disabled by the operator, is a 409 (try again later). Each answer whole."""
    from panel.models import Plan
    from panel.plugins import set_enabled

    def order(slug):
        r = client.post("/api/v1/orders", json={"plan": slug, "params": {"name": "gp"}}, headers=auth)
        return r.status_code, r.get_json()

    assert order("nope") == (404, {"error": {"code": "plan_not_found", "message": "there is no plan 'nope'",
                                             "fields": {"plan": "unknown plan"}}})
    plans["big"].active = False
    db.session.add(Plan(slug="mem-elsewhere", name="Elsewhere", backend="not-installed", options={}))
    db.session.commit()
    assert order("mem-big") == (404, {"error": {"code": "plan_not_found", "message": "there is no plan 'mem-big'",
                                                "fields": {"plan": "unknown plan"}}})
    assert order("mem-elsewhere") == (409, {"error": {"code": "backend_unavailable",
                                                      "message": "plan 'mem-elsewhere' cannot be ordered right now"}})
    set_enabled("memory", False)
    db.session.commit()
    assert order("mem-free") == (409, {"error": {"code": "backend_unavailable",
                                                 "message": "plan 'mem-free' cannot be ordered right now"}})
    assert db.session.scalar(db.select(db.func.count()).select_from(Service)) == 0
    set_enabled("memory", True)
    db.session.commit()
    assert order("mem-free")[0] == 201
