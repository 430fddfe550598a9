"""In a real browser (Debian's chromium through Playwright), at 1280 and 390 px: a password reset
through a real SMTP server on loopback (aiosmtpd), 2FA set-up and sign-in, the account, profile
and audit pages, under the strict CSP (no console errors, no page wider than the viewport)."""
from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

playwright_sync = pytest.importorskip("playwright.sync_api")
pytest.importorskip("aiosmtpd.controller")

from test_browser import ARGS, CHROMIUM  # noqa: E402  (Debian's chromium and its flags)
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")]
WIDTHS = {"desktop": 1280, "phone": 390}


@pytest.fixture
def live(make_app, tmp_path):
    """The panel on a loopback port (CSRF on) mailing to an aiosmtpd sink; a customer, an operator
    and one audit row."""
    from corelib import add_user
    from mailsink import smtp_sink
    from werkzeug.serving import make_server

    from panel import audit
    from panel.extensions import db
    from panel.testing import free_port

    with smtp_sink() as (inbox, smtp_port):
        port = free_port()
        app = make_app(WTF_CSRF_ENABLED=True, MAIL_SERVER="127.0.0.1", MAIL_PORT=smtp_port, MAIL_SUPPRESS_SEND=False,
                       MAIL_DEFAULT_SENDER="panel@example.com", PUBLIC_URL=f"http://127.0.0.1:{port}")
        with app.app_context():
            add_user("walker@example.com", "walker-pass-1")
            add_user("ops@example.com", "operator-pass-1", role="operator")
            audit.record("cli", "user.create", ("user", "2"), after={"email": "ops@example.com", "role": "operator"})
            db.session.commit()
        server = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{port}", inbox
        finally:
            server.shutdown()


def _shoot(page, tmp_path, name):
    """Screenshot at both widths; the page body must not be wider than the viewport."""
    for label, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(50)
        # the page body (the header's menu is the layout's; wide tables scroll inside their card)
        overflow = page.evaluate("document.querySelector('main').scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} at {width}px is {overflow}px wider than the viewport"
        path = tmp_path / f"{name}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        target = os.environ.get("HOSTPANEL_SCREENSHOT_DIR")
        if target:
            os.makedirs(target, exist_ok=True)
            shutil.copy(path, os.path.join(target, path.name))
    page.set_viewport_size({"width": 1280, "height": 900})


def _log_in(page, url, email_address, password):
    page.goto(f"{url}/login")
    page.fill("input[name=email]", email_address)
    page.fill("input[name=password]", password)
    page.click("#login")


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)


def _watch(page):
    """Collect script errors and CSP refusals ("Refused to ..."); HTTP statuses are checked apart
    (the dead-link page answers 400 on purpose; there is no favicon yet)."""
    problems = []
    page.on("console", lambda m: problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


def test_password_reset_through_a_real_smtp_server(live, tmp_path):
    url, inbox = live
    with playwright_sync.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page()
            page.set_default_timeout(15000)
            problems = _watch(page)
            page.goto(f"{url}/login")
            assert page.get_attribute("input[name=password]", "autocomplete") == "current-password"
            page.click("#forgot-link")
            page.wait_for_url(f"{url}/forgot")
            _shoot(page, tmp_path, "forgot")
            page.fill("input[name=email]", "walker@example.com")
            page.click("#send-reset")
            page.wait_for_url(f"{url}/login")
            assert "If an account exists for walker@example.com" in page.inner_text("main")
            inbox.wait_for(1, timeout=15)
            link = inbox.link(0)
            assert inbox.messages[0]["to"] == ["walker@example.com"]
            page.goto(link)
            _shoot(page, tmp_path, "reset")
            page.fill("input[name=password]", "brand-new-pass-1")
            page.fill("input[name=confirm]", "brand-new-pass-1")
            page.click("#set-password")
            page.wait_for_url(f"{url}/login")
            assert "Your password was changed" in page.inner_text("main")
            page.fill("input[name=email]", "walker@example.com")
            page.fill("input[name=password]", "brand-new-pass-1")
            page.click("#login")
            page.wait_for_url(f"{url}/services")
            page.goto(link)  # used once: dead now
            assert "already used" in page.inner_text("#link-error")
            _shoot(page, tmp_path, "link-error")
            assert not problems, problems
        finally:
            browser.close()


def test_two_factor_set_up_and_sign_in(live, tmp_path):
    import pyotp

    url, _ = live
    with playwright_sync.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page()
            page.set_default_timeout(15000)
            problems = _watch(page)
            page.goto(f"{url}/login")
            _shoot(page, tmp_path, "login")
            page.fill("input[name=email]", "walker@example.com")
            page.fill("input[name=password]", "walker-pass-1")
            page.click("#login")
            page.wait_for_url(f"{url}/services")
            page.goto(f"{url}/account")
            _shoot(page, tmp_path, "account")
            page.click("#twofactor-setup")
            page.wait_for_selector("#qr svg")
            _shoot(page, tmp_path, "twofactor-setup")
            secret = page.inner_text("#totp-secret").strip()
            page.fill("input[name=code]", pyotp.TOTP(secret).now())
            page.click("#twofactor-confirm")
            page.wait_for_selector("#recovery-codes")
            assert page.locator("#recovery-codes li").count() == 10
            _shoot(page, tmp_path, "recovery-codes")
            page.goto(f"{url}/account/profile")
            page.fill("input[name=full_name]", "Walker Test")
            page.select_option("select[name=country]", "CH")
            page.fill("input[name=tax_id]", "CHE-116.281.710 MWST")
            page.click("#save-profile")
            page.wait_for_selector(".flash.success")
            _shoot(page, tmp_path, "profile")
            page.click("header button.link")  # log out
            page.wait_for_url(f"{url}/login")
            page.fill("input[name=email]", "walker@example.com")
            page.fill("input[name=password]", "walker-pass-1")
            page.click("#login")
            page.wait_for_url(f"{url}/login/2fa")
            _shoot(page, tmp_path, "login-2fa")
            page.fill("input[name=code]", "000000")
            page.click("#verify-2fa")
            assert "That code is not right" in page.inner_text("main")
            # the set-up code's step is used up; the next one is accepted (a step either side is allowed)
            page.fill("input[name=code]", pyotp.TOTP(secret).at(time.time() + 30))
            page.click("#verify-2fa")
            page.wait_for_url(f"{url}/services")
            assert not problems, problems
        finally:
            browser.close()


def test_operator_audit_page(live, tmp_path):
    url, _ = live
    with playwright_sync.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page()
            page.set_default_timeout(15000)
            problems = _watch(page)
            _log_in(page, url, "ops@example.com", "operator-pass-1")
            page.wait_for_url(f"{url}/admin/")
            page.goto(f"{url}/admin/audit")
            assert page.locator("#audit [data-audit]").count() == 1
            assert "user.create" in page.inner_text("#audit")
            _shoot(page, tmp_path, "audit")
            page.fill("#audit-filter input[name=actor]", "nobody")
            page.click("#audit-filter button")
            page.wait_for_selector("#audit td.muted")
            assert not problems, problems
        finally:
            browser.close()
