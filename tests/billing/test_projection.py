"""The projected charge: Stripe's upcoming invoice (``POST /v1/invoices/create_preview``) for a
Stripe-billed service, cached and failing softly; our own invoice of the month so far (a dry run)
for a service paid by invoice; both on the customer's service page and in
``GET /api/v1/services/<id>/usage/current``."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from corelib import login, wait_jobs
from test_metered_prices import metered_catalog  # noqa: F401  (fixture)
from test_stop_billing import paid_service

from panel.backends import Metric
from panel.billing import metering, projection
from panel.extensions import db
from panel.models import Invoice, Plan, Profile, Service, ServiceEvent, UsageRecord
from panel.models.base import utcnow


@pytest.fixture(autouse=True)
def _no_cached_estimates(app):
    projection.forget()
    yield
    projection.forget()


def previews(router, sub_id):
    return [p for p in router.recorded("POST", "/v1/invoices/create_preview") if p.get("subscription") == sub_id]


def test_a_stripe_service_shows_stripes_upcoming_invoice(app, client, auth, router, metered_catalog):  # noqa: F811
    service, sub_id = paid_service(app, client, auth, router, name="u1")
    metering.record_usage(service, [Metric("posts", 150, "count")], utcnow())
    db.session.commit()
    wait_jobs(app)
    assert db.session.scalars(db.select(UsageRecord)).one().reported_at is not None

    r = client.get(f"/api/v1/services/{service.id}/usage/current", headers=auth)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    [posts] = body["usage"]
    assert (posts["metric"], posts["used"], posts["unit_price"], posts["amount"]) == ("posts", "150", "0.01", 150)
    projected = body["projected_charge"]
    period_end = router.subscriptions[sub_id]["_period_end"]
    # the next month's fee (1200) in advance plus this month's 150 posts at 1 cent, from the meter
    assert projected["source"] == "stripe" and projected["available"] is True
    assert (projected["amount_due"], projected["total"], projected["currency"]) == (1350, 1350, "usd")
    assert sorted(line["amount"] for line in projected["lines"]) == [150, 1200]
    assert projected["period_end"] == datetime.fromtimestamp(period_end, tz=timezone.utc).isoformat()
    assert len(previews(router, sub_id)) == 1

    login(client, "alice@example.com")
    page = client.get(f"/services/{service.id}").get_data(as_text=True)
    assert 'id="projected-charge" data-source="stripe" data-available="yes"' in page
    assert 'data-amount="1350"' in page and "$13.50" in page
    assert len(previews(router, sub_id)) == 1            # cached: the page view did not ask Stripe again

    # more usage shows once the cached estimate is older than PANEL_BILLING_ESTIMATE_CACHE_SECONDS
    metering.record_usage(service, [Metric("posts", 400, "count")], utcnow() + timedelta(seconds=1))
    db.session.commit()
    wait_jobs(app)
    app.config["BILLING_ESTIMATE_CACHE_SECONDS"] = 0
    again = client.get(f"/api/v1/services/{service.id}/usage/current", headers=auth).get_json()["projected_charge"]
    assert again["amount_due"] == 1200 + 400 and len(previews(router, sub_id)) == 2


def test_a_stripe_failure_reads_estimate_not_available(app, client, auth, router, metered_catalog):  # noqa: F811
    service, sub_id = paid_service(app, client, auth, router, name="u2")
    for _ in range(3):  # the SDK retries twice
        router.fail_next("/v1/invoices/create_preview", 503)
    login(client, "alice@example.com")
    r = client.get(f"/services/{service.id}")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert 'data-available="no"' in page and "The estimate is not available right now." in page
    assert "503" not in page.split('id="projected-charge"')[1][:400]
    api = client.get(f"/api/v1/services/{service.id}/usage/current", headers=auth)
    assert api.status_code == 200 and api.get_json()["projected_charge"] == {"source": "stripe", "available": False}
    de = client.get(f"/services/{service.id}", headers={"Accept-Language": "de"}).get_data(as_text=True)
    assert "Die Schätzung ist gerade nicht verfügbar." in de
    # the failure is remembered for at most a minute; once over, Stripe is asked again
    projection.forget(sub_id)
    assert client.get(f"/api/v1/services/{service.id}/usage/current",
                      headers=auth).get_json()["projected_charge"]["available"] is True


def test_no_upcoming_invoice_for_an_ended_subscription(app, router, metered_catalog, client, auth):  # noqa: F811
    service, sub_id = paid_service(app, client, auth, router, name="u3")
    router.subscriptions[sub_id]["status"] = "canceled"            # Stripe's view; ours still thinks it is live
    assert projection.stripe_estimate(sub_id) == {"source": "stripe", "available": False}
    import stripe
    from billinglib import SECRET_KEY

    with pytest.raises(stripe.InvalidRequestError) as gone:
        stripe.StripeClient(SECRET_KEY, base_addresses={"api": router.url}).v1.invoices.create_preview(
            params={"subscription": sub_id})
    assert gone.value.code == "invoice_upcoming_none"


def _invoice_service(user, plan, since: datetime) -> Service:
    svc = Service(user_id=user.id, plan_id=plan.id, backend="memory", status="active", billing_mode="invoice",
                  term="monthly", params={"name": "inv1"})
    db.session.add(svc)
    db.session.flush()
    db.session.add(ServiceEvent(service_id=svc.id, at=since, kind="succeeded", from_status=None, to_status="active"))
    db.session.flush()
    return svc


def test_an_invoiced_service_projects_this_months_invoice_so_far(app, client, auth, customer, router,
                                                                 metered_catalog):  # noqa: F811
    plan = Plan.by_slug("mem-pro")                                  # 12.00 a month (price cache), posts at 0.01
    db.session.add(Profile(user_id=customer.id, country="CH", full_name="Alice"))
    svc = _invoice_service(customer, plan, datetime(2026, 11, 1, 8, tzinfo=timezone.utc))
    db.session.add(UsageRecord(service_id=svc.id, metric="posts", period_start=datetime(2026, 11, 5, tzinfo=timezone.utc),
                               period_end=datetime(2026, 11, 5, 1, tzinfo=timezone.utc), quantity=Decimal(150),
                               source="sampler", identifier=f"inv-{svc.id}-1"))
    db.session.commit()
    db.session.refresh(customer)
    estimate = projection.invoice_estimate(svc, today=date(2026, 11, 20))
    # 20 of 30 days of 12.00 = 8.00, 150 posts = 1.50; VAT 8.10 % of 9.50 = 0.77 (half up, once)
    assert (estimate["subtotal"], estimate["vat"], estimate["total"], estimate["currency"]) == (950, 77, 1027, "usd")
    assert [line["amount"] for line in estimate["lines"]] == [800, 150]
    assert estimate["period_end"] == "2026-12-01T00:00:00+00:00" and estimate["source"] == "invoice"
    assert db.session.scalar(db.select(db.func.count()).select_from(Invoice)) == 0      # a dry run: nothing issued

    today = projection.invoice_estimate(svc)                        # the page and API use today's month
    body = client.get(f"/api/v1/services/{svc.id}/usage/current", headers=auth).get_json()
    assert body["projected_charge"] == today
    login(client, "alice@example.com")
    page = client.get(f"/services/{svc.id}").get_data(as_text=True)
    assert today is not None and today["lines"][0]["amount"] > 0     # active since November: this month's days
    assert 'data-source="invoice"' in page and f'data-amount="{today["amount_due"]}"' in page
    assert "Estimated invoice for this month so far, VAT included:" in page


def test_another_customers_usage_is_404(app, client, auth, router, metered_catalog):  # noqa: F811
    from corelib import add_user, token_for

    service, _ = paid_service(app, client, auth, router, name="u4")
    other = token_for(add_user("bob@example.com"))
    assert client.get(f"/api/v1/services/{service.id}/usage/current", headers=other).status_code == 404
