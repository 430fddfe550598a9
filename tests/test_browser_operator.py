"""The operator console in a real browser (Debian's chromium through Playwright), at desktop and
phone widths: a service that needs reconciling shows its reason and a Retry that adopts it."""
import os
import shutil
import threading

import pytest

playwright_sync = pytest.importorskip("playwright.sync_api")
from test_browser import CHROMIUM  # noqa: E402  (Debian's chromium)

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed (apt-get install chromium)")]


@pytest.fixture
def console(make_app):
    from corelib import add_user, wait_jobs
    from memory_backend import REMOTE
    from werkzeug.serving import make_server

    from panel.backends import TransientBackendError
    from panel.extensions import db
    from panel.models import Plan
    from panel.orders import place_order

    REMOTE.__init__()
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        add_user("ops@example.com", role="operator")
        customer = add_user("alice@example.com")
        db.session.add(Plan(slug="mem-free", name="Memory free", backend="memory", options={"size_mib": 128}))
        db.session.commit()
        REMOTE.fail_next("provision", "lost", "permanent")
        REMOTE.list_error = TransientBackendError("memory: listing timed out (HTTP 504)")
        service_id = place_order(customer, "mem-free", {"name": "unsure"}, actor="test").service.id
        wait_jobs(app)
        REMOTE.list_error = None
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", service_id, app
    server.shutdown()


@pytest.mark.parametrize("width, height", [(1280, 900), (390, 844)])
def test_needs_reconcile_card_shows_the_reason_and_retry_adopts(console, tmp_path, width, height):
    from corelib import wait_jobs
    from memory_backend import REMOTE

    from corelib import logged_in_browser

    url, service_id, app = console
    with logged_in_browser(url, width, height) as page:
        page.goto(f"{url}/admin/")
        card = page.locator("#needs-reconcile")
        assert card.is_visible()
        assert "listing timed out (HTTP 504)" in card.inner_text() and f"service {service_id}" in card.inner_text()
        box = card.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 1, "the card overflows the screen"
        shot = tmp_path / f"console-{width}.png"
        page.screenshot(path=str(shot), full_page=False)
        if os.environ.get("HOSTPANEL_SCREENSHOT_DIR"):
            shutil.copy(shot, os.environ["HOSTPANEL_SCREENSHOT_DIR"])
        page.goto(f"{url}/admin/services/{service_id}")
        assert page.locator("#reconcile-reason").is_visible()
        page.click("#retry")
        page.wait_for_url(f"{url}/admin/services/{service_id}")
        with app.app_context():
            wait_jobs(app)
        page.goto(f"{url}/admin/services/{service_id}")
        assert page.locator(".badge[data-status=active]").first.is_visible()
    assert len(REMOTE.objects) == 1
