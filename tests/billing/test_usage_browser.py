"""In a real browser (Debian's chromium, Playwright), at 1280 and 390 px: the customer's service page
shows the usage so far and the projected charge from Stripe's upcoming invoice (the stand-in's
``create_preview``); the operator voids a usage record with the button on the operator's service
page and Stripe's meter event is cancelled. Screenshots go to HOSTPANEL_SCREENSHOTS when set."""
import os
import secrets
import threading

import pytest

playwright_sync = pytest.importorskip("playwright.sync_api")

from corelib import logged_in_browser, screenshot, wait_jobs  # noqa: E402
from test_browser import CHROMIUM  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")]


@pytest.fixture
def live(make_app, router):
    from billinglib import SECRET_KEY, WHSEC, load_term_catalog
    from corelib import add_user
    from memory_backend import REMOTE
    from werkzeug.serving import make_server

    from panel.backends import Metric
    from panel.billing import metering, projection
    from panel.billing.models import Subscription
    from panel.extensions import db
    from panel.models import Plan, Service
    from panel.models.base import utcnow

    REMOTE.__init__()
    server = make_server("127.0.0.1", 0, None, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    app = make_app(WTF_CSRF_ENABLED=True, STRIPE_SECRET_KEY=SECRET_KEY, STRIPE_WEBHOOK_SECRET=WHSEC,
                   STRIPE_API_BASE=router.url, PUBLIC_URL=url, JOB_BACKOFF="0")
    server.app = app
    with app.app_context():
        load_term_catalog(router)
        projection.forget()
        tag = secrets.token_hex(3)
        meter = router.create_meter(f"posts_{tag}")
        posts_price = router.create_price(f"price_posts_{tag}", None, "usd", meter=meter["id"],
                                          unit_amount_decimal="1", product=router.product)["id"]
        plan = Plan.by_slug("mem-pro")
        plan.metered = {"posts": {"unit_price": "0.01", "currency": "usd", "meter": meter["event_name"],
                                  "price": posts_price}}
        user = add_user("alice@example.com")
        add_user("ops@example.com", role="operator")
        customer = f"cus_{tag}"  # the subscription lives in the stand-in; no card is needed for the preview
        sub = router._create_subscription({"customer": customer, "items": [{"price": "price_pro_m", "quantity": "1"},
                                                                            {"price": posts_price}],
                                           "metadata": {}}, emit=False)
        svc = Service(user_id=user.id, plan_id=plan.id, backend="memory", status="active", billing_mode="stripe",
                      term="monthly", params={"name": "community"})
        db.session.add(svc)
        db.session.flush()
        db.session.add(Subscription(service_id=svc.id, user_id=user.id, stripe_customer_id=customer,
                                    stripe_subscription_id=sub["id"], stripe_price="price_pro_m", status="active",
                                    term="monthly"))
        db.session.commit()
        metering.record_usage(svc, [Metric("posts", 1234, "count")], utcnow())
        db.session.commit()
        wait_jobs(app)
        service_id, event = svc.id, meter["event_name"]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url, app, service_id, event, customer
    server.shutdown()


def no_overflow(page):
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


@pytest.mark.parametrize("width", [1280, 390])
def test_projected_charge_and_a_voided_record_in_a_browser(live, router, tmp_path, width):
    from decimal import Decimal

    url, app, service_id, event, customer = live
    with logged_in_browser(url, width, 900, email="alice@example.com") as page:
        page.goto(f"{url}/services/{service_id}")
        block = page.locator("#projected-charge")
        assert block.get_attribute("data-available") == "yes"
        # the next month's $12.00 plus 1,234 posts at 1 cent: $24.34
        assert page.locator("#projected-amount").inner_text() == "$24.34"
        assert page.locator("#metered-usage tr[data-metric=posts]").is_visible()
        page.locator("#projected-lines summary").click()
        assert page.locator("#projected-lines td.num").count() == 2
        assert no_overflow(page)
        screenshot(page, tmp_path, f"usage-projected-{width}")
    with logged_in_browser(url, width, 900) as page:
        page.goto(f"{url}/admin/services/{service_id}")
        row = page.locator("#usage-records tr[data-record]").first
        record_id = row.get_attribute("data-record")
        row.locator("input[name=reason]").fill("test import, not real posts")
        page.click(f"#void-usage-{record_id}")
        page.wait_for_selector(f"#usage-records tr[data-record='{record_id}'][data-voided-by]")
        with app.app_context():
            wait_jobs(app)
        page.goto(f"{url}/admin/services/{service_id}")
        assert page.locator("#billing-tasks tr[data-state=succeeded]", has_text="cancel_usage").count() == 1
        assert no_overflow(page)  # the operator's wide tables scroll inside their own box
        screenshot(page, tmp_path, f"usage-voided-{width}")
    assert router.meter_total(event, customer) == Decimal(0)
