"""In a real browser (Debian's chromium, driven by Playwright): sign up, order the free plan,
watch "provisioning" turn "active" without reloading, and see the details with the password masked."""
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
    from panel.plugins import set_enabled, set_setting
    from panel_pds.standin import PdsStandIn

    standin = PdsStandIn(token="browser-token", latency_ms=1200).start()
    app = make_app(plugins=["pds"], WTF_CSRF_ENABLED=True)
    with app.app_context():
        set_setting("pds", "api_url", standin.url)
        set_setting("pds", "api_token", "browser-token")
        set_setting("pds", "hostname_domain", "pds.example.com")
        set_enabled("pds", True)
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
            # The order form rejected "Browser User"? It is normalised, so we land on the service.
            page.wait_for_url(f"{url}/services/*")
            page.evaluate("window.__noReload = true")
            badge = page.locator("#status .badge")
            assert badge.get_attribute("data-status") in ("provisioning", "active")
            page.wait_for_selector("#status .badge[data-status=active]", timeout=20000)
            page.wait_for_selector("#details [data-key=hostname]", timeout=10000)
            assert page.evaluate("window.__noReload") is True, "the page reloaded"
            details = page.inner_text("#details")
            assert "browser-user.pds.example.com" in details
            password = standin.deploys()[0]["password"]
            assert password not in page.content()
            assert "••••••••" in details
            page.screenshot(path=str(tmp_path / "service.png"))
            if os.environ.get("HOSTPANEL_SCREENSHOT"):
                shutil.copy(tmp_path / "service.png", os.environ["HOSTPANEL_SCREENSHOT"])
        finally:
            browser.close()
    assert len(standin.services()) == 1
