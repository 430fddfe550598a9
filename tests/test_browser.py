"""In a real browser (Debian's chromium, driven by Playwright): sign up, order the free plan,
watch "provisioning" turn "active" without reloading, and see how to connect (the password only on
request)."""
import os
import shutil
import threading

import playwright.sync_api as playwright_sync
import pytest

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed (apt-get install chromium)")]

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture
def live_panel(make_app, tmp_path):
    from werkzeug.serving import make_server

    from panel.catalog import import_catalog
    from corelib import configure_pds
    from panel_pds.standin import PdsStandIn

    standin = PdsStandIn(token="browser-token", latency_ms=1200).start()
    app = make_app(plugins=["pds"], WTF_CSRF_ENABLED=True)
    with app.app_context():
        configure_pds(standin.url, "browser-token")
        import_catalog("plans: [{slug: pds-free, name: PDS Free, description: Free PDS, backend: pds, options: {disksize_gb: 5}}]")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", standin
    server.shutdown()
    standin.stop()


def test_signup_order_free_plan_and_watch_it_become_active(live_panel, tmp_path):
    url, standin = live_panel
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(20000)
            page.goto(f"{url}/signup")
            page.fill("input[name=email]", "browser@example.com")
            page.fill("input[name=password]", "browser-pass-1")
            page.fill("input[name=confirm]", "browser-pass-1")
            page.click("#signup")
            page.wait_for_url(f"{url}/plans")
            page.click("[data-plan=pds-free] a.button")
            page.fill("input[name=param_username]", "Browser User")
            page.click("#place-order")
            # "Browser User" cannot be a DNS label: the form says what it will be and asks again.
            page.wait_for_selector("[data-preview-for=username]:not([hidden])")
            assert "browser-user" in page.inner_text("[data-preview-for=username]")
            assert page.input_value("input[name=param_username]") == "browser-user"
            page.click("#place-order")
            page.wait_for_url(f"{url}/services/*")
            page.evaluate("window.__noReload = true")
            badge = page.locator("#status .badge")
            assert badge.get_attribute("data-status") in ("provisioning", "active")
            page.wait_for_selector("#status .badge[data-status=active]", timeout=20000)
            page.wait_for_selector("[data-section=connect]", timeout=10000)
            assert page.evaluate("window.__noReload") is True, "the page reloaded"
            details = page.inner_text("[data-section=connect]")
            assert "browser-user.pds.example.com" in details
            password = standin.deploys()[0]["password"]
            assert password not in page.content()  # shown only after re-entering the password
            assert page.is_visible(".credential[data-credential=admin_password] form.reveal")
            page.screenshot(path=str(tmp_path / "service.png"))
            if os.environ.get("HOSTPANEL_SCREENSHOT"):
                shutil.copy(tmp_path / "service.png", os.environ["HOSTPANEL_SCREENSHOT"])
        finally:
            browser.close()
    assert len(standin.services()) == 1
