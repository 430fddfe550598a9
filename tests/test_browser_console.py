"""The operator console's new pages in a real browser (Debian's chromium through Playwright), at
desktop (1280 px) and phone (390 px) widths, with CSRF on: plugin settings (typed inputs, a field
error, secrets never shown again), the doctor, reconcile with adopt (a mapping file upload) and the
operator tools of a service (note, change plan, force-terminate). No page scrolls sideways."""
import os
import shutil
import threading

import pytest

playwright_sync = pytest.importorskip("playwright.sync_api")
from test_browser import CHROMIUM  # noqa: E402  (Debian's chromium)

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed (apt-get install chromium)")]

SECRET = "browser-knob-secret-5a4b3c"


@pytest.fixture
def live_console(make_app):
    from corelib import add_user, wait_jobs
    from memory_backend import REMOTE, MemoryPlugin
    from test_operator_console import KnobsPlugin
    from werkzeug.serving import make_server

    from panel.extensions import db
    from panel.models import Plan
    from panel.orders import place_order

    REMOTE.__init__()
    app = make_app(WTF_CSRF_ENABLED=True, EXTRA_PLUGINS=[MemoryPlugin(), KnobsPlugin()])
    with app.app_context():
        from flask_migrate import stamp

        stamp()
        add_user("ops@example.com", role="operator")
        customer = add_user("alice@example.com")
        db.session.add_all([Plan(slug="mem-free", name="Memory free", backend="memory", options={"size_mib": 128}),
                            Plan(slug="mem-big", name="Memory big", backend="memory", options={"size_mib": 512}),
                            Plan(slug="ghost-plan", name="Ghost", backend="ghost", options={})])
        db.session.commit()
        service_id = place_order(customer, "mem-free", {"name": "site-one"}, actor="test").service.id
        wait_jobs(app)
        REMOTE.objects["hp-stranger-with-a-rather-long-external-id"] = {"state": "active", "name": "stranger",
                                                                        "size": 512}
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", service_id, app
    server.shutdown()


def _shot(page, tmp_path, name):
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("HOSTPANEL_SCREENSHOT_DIR"):
        shutil.copy(path, os.environ["HOSTPANEL_SCREENSHOT_DIR"])


def _no_sideways_scroll(page, width):
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{page.url} scrolls sideways at {width} px ({scroll} px wide)"


@pytest.mark.parametrize("width, height", [(1280, 900), (390, 844)])
def test_console_pages(live_console, tmp_path, width, height):
    from corelib import logged_in_browser, wait_jobs

    url, service_id, app = live_console
    with logged_in_browser(url, width, height, timeout_ms=30000) as page:
        page.on("dialog", lambda dialog: dialog.accept())

        # plugin settings: a field error first, then a good save; the secret never comes back
        page.goto(f"{url}/admin/plugins")
        form = page.locator("#settings-knobs")
        assert form.is_visible(), "a backend with missing settings opens its form"
        assert page.get_attribute("#knobs-set_timeout", "type") == "number"
        assert page.get_attribute("#knobs-set_api_token", "type") == "password"
        page.fill("#knobs-set_api_url", "not a url")
        page.fill("#knobs-set_api_token", SECRET)
        page.fill("#knobs-set_timeout", "0")
        page.click("#save-knobs")
        assert page.locator('[data-field="knobs-set_timeout"]').inner_text() == "must be at least 1 seconds"
        assert page.locator('[data-field="knobs-set_api_url"]').inner_text() == "has an invalid format"
        assert page.input_value("#knobs-set_api_token") == "" and SECRET not in page.content()
        _no_sideways_scroll(page, width)
        _shot(page, tmp_path, f"plugins-error-{width}")
        page.fill("#knobs-set_api_url", "https://api.knobs.test")
        page.fill("#knobs-set_api_token", SECRET)
        page.fill("#knobs-set_timeout", "45")
        page.click("#save-knobs")
        assert "knobs: 3 setting(s) saved" in page.locator(".flash.success").inner_text()
        assert page.input_value("#knobs-set_api_token") == "" and SECRET not in page.content()
        assert page.input_value("#knobs-set_timeout") == "45"
        page.click("#test-knobs")
        assert "knobs at https://api.knobs.test: ok" in page.locator(".flash.success").inner_text()
        _no_sideways_scroll(page, width)
        _shot(page, tmp_path, f"plugins-{width}")

        # the doctor
        page.goto(f"{url}/admin/doctor")
        problem = page.locator('[data-check="plans"][data-severity="error"]').first
        assert "plan ghost-plan uses the backend ghost, which is not installed" in problem.inner_text()
        assert "Fix:" in problem.inner_text()
        assert page.locator('[data-check="database"].ok').is_visible()
        _no_sideways_scroll(page, width)
        _shot(page, tmp_path, f"doctor-{width}")

        # reconcile: the unknown object is adopted with a mapping file
        page.goto(f"{url}/admin/reconcile/memory")
        assert page.locator('#drift [data-kind="unknown"]').is_visible()
        _no_sideways_scroll(page, width)
        _shot(page, tmp_path, f"reconcile-drift-{width}")
        mapping = tmp_path / "map.csv"
        mapping.write_text("remote,email\nhp-stranger-with-a-rather-long-external-id,alice@example.com\n")
        page.set_input_files("#mapping", str(mapping))
        page.click("#adopt-button")
        report = page.locator("#adopt-report")
        assert "examined 1 / adopted 1 / events inserted 2 / skipped 0" in report.inner_text()
        _no_sideways_scroll(page, width)
        _shot(page, tmp_path, f"reconcile-{width}")
        page.goto(f"{url}/admin/reconcile/memory")
        assert "Our records and the backend agree." in page.locator("#drift").inner_text()

        # operator tools on a service
        page.goto(f"{url}/admin/services/{service_id}")
        page.fill("#note-form textarea", "called the customer about the migration")
        page.click("#add-note")
        assert "Note added." in page.locator(".flash.success").inner_text()
        assert "called the customer about the migration" in page.locator("table.events").inner_text()
        page.select_option("#change-plan-form select", "mem-big")
        page.click("#change-plan")
        assert "Plan change to mem-big requested through the lifecycle" in page.locator(".flash").first.inner_text()
        with app.app_context():
            wait_jobs(app)
        page.goto(f"{url}/admin/services/{service_id}")
        assert "plan mem-big" in page.locator("#status-card").inner_text()
        _no_sideways_scroll(page, width)
        _shot(page, tmp_path, f"service-tools-{width}")
        page.fill("#force-terminate-form input[name=reason]", "browser test")
        page.click("#force-terminate")
        assert "Force-terminate requested." in page.locator(".flash.success").inner_text()
        with app.app_context():
            wait_jobs(app)
        page.goto(f"{url}/admin/services/{service_id}")
        assert page.locator("#status-card .badge[data-status=terminated]").first.is_visible()
        assert page.locator("#force-terminate").count() == 0
