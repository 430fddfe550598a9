"""``panel doctor``'s billing checks against the loopback Stripe (localstripe behind the stand-in
router): prices missing or in another currency, the webhook endpoint through Stripe's webhook
endpoint API (``GET /v1/webhook_endpoints``, paged), and the last event received."""
from __future__ import annotations

import json

import pytest
import stripe

from billinglib import PRICE_PAID, PUBLIC, SECRET_KEY, deliver, make_event
from panel import doctor
from panel.billing.handlers import handled_types
from panel.extensions import db
from panel.models import Plan

URL = f"{PUBLIC}/stripe/webhook"


@pytest.fixture
def ready(app, paid_plans):
    from flask_migrate import stamp

    stamp()
    return app


def billing_problems(check="billing"):
    report = doctor.run()
    return [p for name, p in report.problems if name == check], next(r for r in report.results if r.name == check)


def test_no_endpoint_at_our_url_says_how_to_add_one(ready, router):
    router.add_webhook_endpoint("https://elsewhere.example.com/hook", ["*"])
    problems, _ = billing_problems()
    missing = next(p for p in problems if "no Stripe webhook endpoint points at" in p.message)
    assert missing.message.startswith(f"no Stripe webhook endpoint points at {URL} (there are: "
                                      "https://elsewhere.example.com/hook)")
    assert f"Add endpoint: URL {URL}" in missing.fix
    assert all(t in missing.fix for t in handled_types())
    assert SECRET_KEY not in missing.message + missing.fix


def test_an_endpoint_missing_event_types_names_them(ready, router):
    wanted = handled_types()
    endpoint = router.add_webhook_endpoint(URL, [t for t in wanted if t != "invoice.payment_failed"])
    problems, _ = billing_problems()
    [gap] = [p for p in problems if "does not send" in p.message]
    assert gap.message == f"the Stripe webhook endpoint {endpoint['id']} at {URL} does not send invoice.payment_failed"
    assert endpoint["id"] in gap.fix


def test_a_disabled_endpoint_is_a_problem(ready, router):
    router.add_webhook_endpoint(URL, ["*"], status="disabled")
    problems, _ = billing_problems()
    assert any("is disabled" in p.message and "enable it" in p.fix for p in problems)


def test_a_good_endpoint_found_on_a_later_page_and_the_last_event(ready, router, client, customer):
    for i in range(101):  # our endpoint comes on the second page of 100
        router.add_webhook_endpoint(f"https://other-{i}.example.com/hook", ["charge.succeeded"])
    ours = router.add_webhook_endpoint(URL + "/", ["*"])
    problems, result = billing_problems()
    assert [p.message for p in problems] == ["no Stripe event has arrived yet"]
    assert problems[0].severity == "warning" and "stripe trigger" in problems[0].fix
    assert f"endpoint {ours['id']} at {URL} sends every event we handle" in result.note
    pages = [q for m, path, q in router.requests if m == "GET" and path == "/v1/webhook_endpoints"]
    assert len(pages) >= 2, "the endpoint list is paged"
    event = make_event("customer.created", {"id": "cus_x", "object": "customer"})
    assert deliver(client, event).status_code == 200
    problems, result = billing_problems()
    assert problems == [] and "last event customer.created at" in result.note


def test_stripe_failing_to_list_the_endpoints_is_reported(ready, router):
    router.fail_next("/v1/webhook_endpoints", 500)
    router.fail_next("/v1/webhook_endpoints", 500)
    router.fail_next("/v1/webhook_endpoints", 500)
    problems, _ = billing_problems()
    assert any(p.message.startswith("Stripe's webhook endpoints cannot be read") for p in problems)


def test_prices_missing_or_in_another_currency(ready, router, upstream_client):
    router.create_price("price_1Euro", 400, "eur", product=router.create_product("euro things")["id"])
    db.session.add_all([Plan(slug="mem-euro", name="Euro", backend="memory", options={"size_mib": 64},
                             stripe_price="price_1Euro"),
                        Plan(slug="mem-gone", name="Gone", backend="memory", options={"size_mib": 64},
                             stripe_price="price_1DoesNotExist")])
    db.session.commit()
    problems, _ = billing_problems("plans")
    texts = {p.message: p.fix for p in problems}
    assert "plan mem-gone: Stripe price price_1DoesNotExist does not exist in Stripe" in texts
    assert "panel plans import" in texts["plan mem-gone: Stripe price price_1DoesNotExist does not exist in Stripe"]
    euro = next(m for m in texts if m.startswith("plan mem-euro: its Stripe price is in EUR, the other plans' in USD"))
    assert "give plan mem-euro a price in USD" in texts[euro]
    assert not any(m.startswith("plan mem-paid:") for m in texts), f"{PRICE_PAID} is fine"


def test_the_billing_check_through_the_command(ready, router):
    from panel.cli import cli

    router.add_webhook_endpoint(URL, ["*"])
    result = ready.test_cli_runner().invoke(cli, ["doctor"])
    assert "! billing: no Stripe event has arrived yet" in result.output
    assert result.exit_code == 0, result.output  # a warning only
    assert json.dumps(SECRET_KEY)[1:-1] not in result.output
