"""Rate limits: real client addresses behind PANEL_TRUSTED_PROXIES, per account and per address,
seed 004's defaults (API 10/min, provisioning 2/hour), operators exempt, 429s that say when."""
import re

import pytest
from corelib import add_user, login, token_for

from panel.extensions import db
from panel.models import Plan


def _xff(address):
    return {"X-Forwarded-For": address, "X-Forwarded-Proto": "https"}


def test_seed_004_defaults(make_app):
    app = make_app()
    assert app.config["API_LIMIT"] == "10 per minute" and app.config["ORDER_LIMIT"] == "2 per hour"


def test_a_bad_rule_stops_the_start(make_app):
    from panel.config import ConfigError

    with pytest.raises(ConfigError, match="PANEL_API_LIMIT"):
        make_app(API_LIMIT="lots")


@pytest.mark.parametrize("proxies,shared", [(1, False), (0, True)])
def test_login_limit_uses_the_address_the_proxy_saw(make_app, proxies, shared):
    app = make_app(RATELIMIT_ENABLED=True, LOGIN_LIMIT="2 per minute", TRUSTED_PROXIES=proxies)
    client = app.test_client()

    def attempt(address, n):
        return client.post("/login", data={"email": f"u{n}@example.com", "password": "wrongwrong"},
                           headers=_xff(address)).status_code

    assert [attempt("198.51.100.1", n) for n in range(3)] == [200, 200, 429]
    # another customer behind the same proxy: its own limit, unless the proxy is not trusted
    assert attempt("198.51.100.2", 9) == (429 if shared else 200)


def test_login_limit_per_account_across_addresses(make_app):
    app = make_app(RATELIMIT_ENABLED=True, LOGIN_LIMIT="2 per minute", TRUSTED_PROXIES=1)
    client = app.test_client()
    codes = [client.post("/login", data={"email": "victim@example.com", "password": "guess"},
                         headers=_xff(f"198.51.100.{n}")).status_code for n in range(1, 4)]
    assert codes == [200, 200, 429]


def test_api_limit_per_account_with_retry_after_in_seconds(make_app):
    app = make_app(RATELIMIT_ENABLED=True)  # the default: 10 per minute
    with app.app_context():
        alice, bob = token_for(add_user("a@example.com")), token_for(add_user("b@example.com"))
        ops = token_for(add_user("o@example.com", role="operator"))
    client = app.test_client()
    codes = [client.get("/api/v1/services", headers=alice).status_code for _ in range(11)]
    assert codes == [200] * 10 + [429]
    r = client.get("/api/v1/services", headers=alice)
    assert r.status_code == 429
    wait = int(r.headers["Retry-After"])
    assert 0 < wait <= 60
    error = r.get_json()["error"]
    assert error["code"] == "rate_limited" and re.search(r"try again in \d+ seconds", error["message"])
    assert client.get("/api/v1/services", headers=bob).status_code == 200  # per account
    assert all(client.get("/api/v1/services", headers=ops).status_code == 200 for _ in range(15))


def test_api_limit_per_address(make_app):
    app = make_app(RATELIMIT_ENABLED=True, API_ADDRESS_LIMIT="5 per minute", TRUSTED_PROXIES=1)
    with app.app_context():
        tokens = [token_for(add_user(f"u{n}@example.com")) for n in range(3)]
    client = app.test_client()
    codes = [client.get("/api/v1/services", headers=tokens[n % 3] | _xff("203.0.113.9")).status_code
             for n in range(6)]
    assert codes == [200] * 5 + [429]
    assert client.get("/api/v1/services", headers=tokens[0] | _xff("203.0.113.10")).status_code == 200


def test_the_panels_own_pages_do_not_spend_the_api_limit(make_app):
    app = make_app(RATELIMIT_ENABLED=True, API_LIMIT="2 per minute")
    with app.app_context():
        add_user("a@example.com")
    client = app.test_client()
    login(client, "a@example.com")
    assert all(client.get("/api/v1/services").status_code == 200 for _ in range(5))


def test_provisioning_limit_on_the_web_form_says_when_in_minutes(make_app):
    app = make_app(RATELIMIT_ENABLED=True)  # the default: 2 per hour
    with app.app_context():
        db.session.add(Plan(slug="f", name="F", backend="memory", options={"size_mib": 1}))
        db.session.commit()
        add_user("a@example.com")
        add_user("o@example.com", role="operator")
    client = app.test_client()
    login(client, "a@example.com")
    codes = [client.post("/order/f", data={"param_name": f"n{i}"}).status_code for i in range(3)]
    assert codes == [302, 302, 429]
    r = client.post("/order/f", data={"param_name": "n9"})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 60
    assert re.search(r"Try again in \d+ minutes\.", r.get_data(as_text=True))
    ops = app.test_client()
    login(ops, "o@example.com")
    assert [ops.post("/order/f", data={"param_name": f"o{i}"}).status_code for i in range(3)] == [302] * 3
    app.extensions["panel_runner"].wait_idle(30)


def test_human_duration_units():
    from panel.security import human_duration

    assert [human_duration(s) for s in (1, 42, 89, 90, 600, 3599, 5400, 7201)] == [
        "1 second", "42 seconds", "89 seconds", "2 minutes", "10 minutes", "60 minutes", "2 hours", "3 hours"]


def order_as(client, headers, name):
    return client.post("/api/v1/orders", json={"plan": "f", "params": {"name": name}}, headers=headers).status_code


def test_an_order_with_field_errors_does_not_spend_the_order_limit(make_app):
    """Only placed orders count against ``PANEL_ORDER_LIMIT``: answers with field errors (web 4xx
    re-render, API 422) do not, so a customer's typos never lock them out for an hour."""
    from corelib import wait_jobs

    app = make_app(RATELIMIT_ENABLED=True, ORDER_LIMIT="2 per hour", ORDER_ADDRESS_LIMIT="100 per hour")
    with app.app_context():
        db.session.add(Plan(slug="f", name="F", backend="memory", options={"size_mib": 1}))
        db.session.commit()
        alice = token_for(add_user("a@example.com"))
        client = app.test_client()

        def order(name):
            return client.post("/api/v1/orders", json={"plan": "f", "params": {"name": name}},
                               headers=alice).status_code

        bad = [order("x" * 300) for _ in range(3)]  # the memory backend's name is at most 30 characters
        assert bad[0] == 422 and set(bad) == {422}
        web = app.test_client()  # the order form: the same rule
        login(web, "a@example.com")
        assert [web.post("/order/f", data={"param_name": "y" * 300}).status_code for _ in range(3)] == [422] * 3
        # one budget per account, whichever way it orders: one on the web, one through the API, then 429 on both
        assert web.post("/order/f", data={"param_name": "w1"}).status_code == 302
        assert [order("ok1"), order("ok2")] == [201, 429]
        assert web.post("/order/f", data={"param_name": "w2"}).status_code == 429
        bob = token_for(add_user("b@example.com"))
        assert order_as(client, bob, "b1") == 201  # another account has its own budget
        wait_jobs(app)


def test_an_api_order_reads_its_token_once_though_three_checks_ask(make_app):
    """The order limit's key, its operator bypass and the API's authentication all need the bearer
    token's owner: one ``api_tokens`` query per request (``bearer_user``), two on the first order
    (its last use is recorded)."""
    from querycount import recording

    app = make_app(RATELIMIT_ENABLED=True, ORDER_LIMIT="50 per hour")
    with app.app_context():
        user = add_user("tokenonce@example.com")
        db.session.add(Plan(slug="tf", name="T", backend="memory", options={"size_mib": 1}))
        db.session.commit()
        auth = token_for(user)
        client = app.test_client()
        counts = []
        for name in ("once1", "once2"):
            db.session.remove()
            with recording(db.engine) as seen:
                r = client.post("/api/v1/orders", json={"plan": "tf", "params": {"name": name}}, headers=auth)
            assert r.status_code == 201, r.get_json()
            counts.append(sum(1 for s in seen.statements if "api_tokens" in s.lower().split(" where ")[0]))
        assert counts == [2, 1]
        bad = client.post("/api/v1/orders", json={"plan": "tf", "params": {"name": "once3"}},
                          headers={"Authorization": "Bearer hp_nope_unknown"})
        assert bad.status_code == 401
