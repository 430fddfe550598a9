"""In a real browser (Debian's chromium, Playwright), at 1280 and 390 px: the plans page with prices
and a term switch; ordering a yearly plan with an add-on and paying in (the stand-in of) Stripe
Checkout; adding and removing an add-on on the service page; upgrading a free service. Stripe's
signed webhooks reach the live panel over loopback HTTP; screenshots go to HOSTPANEL_SCREENSHOTS
when it is set."""
import os
import re
import threading

import pytest

playwright_sync = pytest.importorskip("playwright.sync_api")

from corelib import screenshot as shot  # noqa: E402
from test_browser import ARGS, CHROMIUM  # noqa: E402  (Debian's chromium and its flags)
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")]
CHECKOUT_PAGE = "<!doctype html><html><body><h1>Stripe Checkout (stand-in)</h1><p>Paying…</p></body></html>"


@pytest.fixture
def live(make_app, router, tmp_path):
    from billinglib import SECRET_KEY, WHSEC, load_term_catalog
    from memory_backend import REMOTE
    from werkzeug.serving import make_server

    REMOTE.__init__()
    server = make_server("127.0.0.1", 0, None, threaded=True)  # the port first: PUBLIC_URL needs it
    url = f"http://127.0.0.1:{server.server_port}"
    app = make_app(WTF_CSRF_ENABLED=True, STRIPE_SECRET_KEY=SECRET_KEY, STRIPE_WEBHOOK_SECRET=WHSEC,
                   STRIPE_API_BASE=router.url, PUBLIC_URL=url, STRIPE_TAX=True)
    server.app = app
    with app.app_context():
        load_term_catalog(router)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    router.auto_deliver(f"{url}/stripe/webhook")
    yield url, app
    router.stop_auto_deliver()
    server.shutdown()


def pay(page, router):
    """The customer is on Stripe Checkout: pay, then Stripe sends them back to the success URL."""
    page.wait_for_url(re.compile(r"https://checkout\.stripe\.test/c/pay/cs_test_\w+"))
    session_id = page.url.rsplit("/", 1)[1]
    session = router.complete_session(session_id, emit=True)
    page.goto(session["success_url"])


def no_overflow(page):
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


@pytest.mark.parametrize("width", [1280, 390])
def test_plans_order_addons_and_upgrade_in_a_browser(live, router, tmp_path, width):
    url, app = live
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.set_default_timeout(25000)
            page.route("https://checkout.stripe.test/**",
                       lambda route: route.fulfill(status=200, content_type="text/html", body=CHECKOUT_PAGE))
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            # the plans page: prices per term, the switch, free plans, add-on prices, tax
            page.goto(f"{url}/plans")
            pro = page.locator("[data-plan=mem-pro]")
            assert pro.locator(".price .term-price[data-term=monthly]").is_visible()
            assert not pro.locator(".price .term-price[data-term=yearly]").is_visible()
            assert "$12.00" in pro.inner_text() and "excl. tax" in pro.inner_text()
            assert "Free" in page.locator("[data-plan=mem-free]").inner_text()
            shot(page, tmp_path, f"plans-monthly-{width}")
            page.click("#term-switch button[data-term=yearly]")
            assert pro.locator(".price .term-price[data-term=yearly]").is_visible()
            assert not pro.locator(".price .term-price[data-term=monthly]").is_visible()
            assert "$120.00" in pro.inner_text() and "+$40.00 / year" in pro.inner_text()
            assert not pro.locator("li[data-addon=priority]").is_visible()  # no yearly price: not offered
            assert page.get_attribute("[data-plan=mem-pro] a[data-order-link]", "href").endswith("term=yearly")
            assert no_overflow(page), "the plans page scrolls sideways"
            shot(page, tmp_path, f"plans-yearly-{width}")
            # sign up, order the yearly plan with extra RAM, pay
            page.click("[data-plan=mem-pro] a[data-order-link]")
            page.wait_for_url(f"{url}/login*")
            page.goto(f"{url}/signup")
            page.fill("input[name=email]", f"buyer{width}@example.com")
            page.fill("input[name=password]", "browser-pass-1")
            page.fill("input[name=confirm]", "browser-pass-1")
            page.click("#signup")
            page.goto(f"{url}/order/mem-pro?term=yearly")
            assert page.is_checked("input[name=term][value=yearly]")
            assert page.is_disabled("label[data-addon=priority] input")  # monthly-only add-on
            page.check("label[data-addon=extra-ram] input")
            assert page.inner_text("#order-total") == "$160.00 / year"
            page.fill("input[name=param_name]", f"web{width}")
            shot(page, tmp_path, f"order-{width}")
            page.click("#place-order")
            pay(page, router)
            page.wait_for_selector("#status .badge[data-status=active]", timeout=30000)
            page.reload()
            page.wait_for_selector("#billing-info [data-addon=extra-ram][data-state=active]")
            assert "yearly" in page.inner_text("#billing-info") and "Memory pro" in page.inner_text("#billing-plan")
            shot(page, tmp_path, f"service-paid-{width}")
            # remove the add-on, then add it back, on the service page
            page.click("#remove-extra-ram")
            page.wait_for_selector("#billing-info [data-addon=extra-ram]", state="detached", timeout=30000)
            page.select_option("#add-addon-choice", "extra-ram")
            page.click("#add-addon-button")
            page.wait_for_selector("#billing-info [data-addon=extra-ram][data-state=active]", timeout=30000)
            page.wait_for_selector("text=3,072 MiB", timeout=30000)  # the page follows: 1024 + 2048 MiB
            assert no_overflow(page), "the service page scrolls sideways"
            shot(page, tmp_path, f"service-addons-{width}")
            # a free service, upgraded through Checkout: the same service moves to the paid plan
            page.goto(f"{url}/order/mem-free")
            page.fill("input[name=param_name]", f"free{width}")
            page.click("#place-order")
            page.wait_for_url(f"{url}/services/*")
            page.wait_for_selector("#status .badge[data-status=active]", timeout=30000)
            page.reload()
            free_url = page.url
            shot(page, tmp_path, f"service-free-{width}")
            page.select_option("#change-plan-choice", "mem-pro:monthly")
            page.click("#change-plan-button")
            pay(page, router)
            assert page.url.split("?")[0] == free_url.split("?")[0]
            page.wait_for_selector("#billing-plan:has-text('Memory pro')", timeout=30000)
            page.wait_for_selector("#billing-info[data-billing-mode=stripe]", timeout=30000)
            shot(page, tmp_path, f"service-upgraded-{width}")
            assert errors == [], errors
        finally:
            browser.close()
    with app.app_context():
        from memory_backend import REMOTE

        from panel.extensions import db
        from panel.models import Service

        services = db.session.scalars(db.select(Service).order_by(Service.id)).all()
        assert [(s.plan.slug, s.billing_mode, s.term) for s in services] == [("mem-pro", "stripe", "yearly"),
                                                                               ("mem-pro", "stripe", "monthly")]
        assert REMOTE.calls.count(("provision", services[1].external_id)) == 1  # upgraded, not reprovisioned
