"""Ordering a paid plan: customer, checkout session, failures, the success page, the portal."""
import pytest
from billinglib import PRICE_PAID, PUBLIC, SECRET_KEY, WHSEC
from corelib import login
from flows import order_paid, pay, subscription_row
from memory_backend import REMOTE

from panel.billing.models import BillingCustomer
from panel.config import ConfigError
from panel.extensions import db
from panel.models import Plan, Service


def test_api_order_returns_checkout_url_and_pending_service(app, client, auth, paid_plans, router, upstream_client):
    service, body = order_paid(client, auth)
    assert body["service"]["status"] == "pending_payment" and service.status == "pending_payment"
    sent = router.recorded("POST", "/v1/checkout/sessions")[-1]
    session = router.sessions[subscription_row(service).checkout_session_id]
    assert body["checkout_url"] == session["url"] and body["checkout_url"].startswith("https://checkout.stripe.test/")
    meta = {"panel_service_id": str(service.id), "panel_user_id": str(service.user_id), "panel_term": "monthly"}
    assert sent["mode"] == "subscription"
    assert sent["line_items"] == [{"price": PRICE_PAID, "quantity": "1"}]
    assert sent["client_reference_id"] == str(service.id)
    assert sent["metadata"] == meta and sent["subscription_data"] == {"metadata": meta}
    assert sent["success_url"] == f"{PUBLIC}/services/{service.id}?checkout=success"
    assert sent["cancel_url"].startswith(PUBLIC)
    # one Stripe customer per user, with our user id, reused by the next order
    customer = upstream_client.v1.customers.retrieve(sent["customer"])
    assert customer.metadata["panel_user_id"] == str(service.user_id) and customer.email == "alice@example.com"
    order_paid(client, auth, name="site2")
    assert router.recorded("POST", "/v1/checkout/sessions")[-1]["customer"] == sent["customer"]
    assert db.session.scalar(db.select(db.func.count()).select_from(BillingCustomer)) == 1
    assert REMOTE.calls == []
    assert SECRET_KEY not in str(body) and WHSEC not in str(body)


def test_success_page_fulfils_nothing(app, client, customer, paid_plans, router):
    login(client, "alice@example.com")
    r = client.post("/order/mem-paid", data={"param_name": "web1"})
    assert r.status_code == 303 and r.headers["Location"].startswith("https://checkout.stripe.test/")
    service = db.session.scalars(db.select(Service)).one()
    page = client.get(f"/services/{service.id}?checkout=success")
    assert page.status_code == 200 and b"waiting for Stripe to confirm" in page.data
    db.session.refresh(service)
    assert service.status == "pending_payment" and REMOTE.calls == []


@pytest.mark.parametrize("status", [0, 503])
def test_stripe_unreachable_at_checkout_is_502_and_cancels(app, client, auth, paid_plans, router, status):
    for _ in range(3):  # the SDK retries twice
        router.fail_next("/v1/checkout/sessions", status)
    r = client.post("/api/v1/orders", json={"plan": "mem-paid", "params": {"name": "down1"}}, headers=auth)
    assert r.status_code == 502, r.get_json()
    err = r.get_json()["error"]
    assert err["code"] == "payment_provider_unavailable" and "try again" in err["message"]
    service = db.session.scalars(db.select(Service)).one()
    assert service.status == "cancelled" and REMOTE.calls == []
    assert SECRET_KEY not in r.get_data(as_text=True)


def test_price_refused_by_stripe_is_409_and_cancels(app, client, auth, paid_plans):
    paid_plans["paid"].stripe_price = "price_does_not_exist"
    db.session.commit()
    r = client.post("/api/v1/orders", json={"plan": "mem-paid", "params": {"name": "nope1"}}, headers=auth)
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "checkout_rejected"
    service = db.session.scalars(db.select(Service)).one()
    assert service.status == "cancelled"


def test_portal_session_is_made_on_click(app, client, auth, paid_plans, router, upstream_client):
    service, _ = order_paid(client, auth)
    pay(app, client, router, upstream_client, service)
    login(client, "alice@example.com")
    before = len(router.recorded("POST", "/v1/billing_portal/sessions"))
    page = client.get(f"/services/{service.id}")
    assert b"Manage billing" in page.data
    assert len(router.recorded("POST", "/v1/billing_portal/sessions")) == before  # not on page view
    r = client.post("/billing/portal")
    assert r.status_code == 303 and r.headers["Location"].startswith("https://billing.stripe.test/p/session/bps_")
    sent = router.recorded("POST", "/v1/billing_portal/sessions")[-1]
    assert sent == {"customer": subscription_row(service).stripe_customer_id, "return_url": f"{PUBLIC}/billing"}


def test_billing_config_errors_name_the_variable_not_the_value(make_app):
    with pytest.raises(ConfigError) as info:
        make_app(STRIPE_SECRET_KEY="pk_live_abcdef123456", STRIPE_WEBHOOK_SECRET=WHSEC)
    assert "PANEL_STRIPE_SECRET_KEY" in str(info.value) and "pk_live_abcdef123456" not in str(info.value)
    with pytest.raises(ConfigError, match="PANEL_STRIPE_WEBHOOK_SECRET"):
        make_app(STRIPE_SECRET_KEY=SECRET_KEY)
    with pytest.raises(ConfigError, match="PANEL_PENDING_PAYMENT_HOURS"):
        make_app(STRIPE_SECRET_KEY=SECRET_KEY, STRIPE_WEBHOOK_SECRET=WHSEC, PENDING_PAYMENT_HOURS="soon")
    app = make_app(create_tables=False)
    # no key: Stripe billing is off (no webhook); /billing stays for our own invoices and the profile,
    # and its Stripe routes answer 404 (tests/invoicing/test_billing_profile.py)
    assert not [e for e in app.view_functions if e.startswith("stripe_webhook.")]
    assert "billing.overview" in app.view_functions


def test_stripe_check_lists_missing_inactive_and_one_time_prices(app, paid_plans, router, upstream_client):
    router.create_price("price_inactive_1", 100, "usd", interval="month", product=router.product, active=False)
    router.add_one_time_price("price_once_1")
    db.session.add_all([
        Plan(slug="gone", name="Gone", backend="memory", stripe_price="price_missing_1"),
        Plan(slug="off", name="Off", backend="memory", stripe_price="price_inactive_1"),
        Plan(slug="once", name="Once", backend="memory", stripe_price="price_once_1"),
        Plan(slug="retired", name="Retired", backend="memory", stripe_price="price_missing_2", active=False),
    ])
    db.session.commit()
    result = app.test_cli_runner().invoke(args=["stripe", "check"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(("gone", "off", "once", "mem", "retired"))]
    assert lines == ["gone: price price_missing_1 does not exist in Stripe",
                     "off: price price_inactive_1 is inactive in Stripe",
                     "once: price price_once_1 is not recurring (a subscription needs a recurring price)"]
    for plan in ("gone", "off", "once"):
        db.session.delete(Plan.by_slug(plan))
    db.session.commit()
    result = app.test_cli_runner().invoke(args=["stripe", "check"])
    assert result.exit_code == 0 and "every active plan and add-on" in result.output
