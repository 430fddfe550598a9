"""In a real browser (Debian's chromium, Playwright) at 1280 and 390 px: a customer paying by
invoice downloads their invoice's PDF from /billing (read back with pypdf); an operator sees the
invoice on /admin/billing and marks it paid. Screenshots go to HOSTPANEL_SCREENSHOTS when set."""
import io
import os
import threading

import pytest

playwright_sync = pytest.importorskip("playwright.sync_api")

from corelib import screenshot as shot  # noqa: E402
from test_browser import ARGS, CHROMIUM  # noqa: E402  (Debian's chromium and its flags)
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")]


@pytest.fixture
def live(make_app, tmp_path):
    from corelib import add_user
    from invoicelib import SELLER, addon_event, plan, profile, service
    from werkzeug.serving import make_server

    from panel.billing import invoicing
    from panel.extensions import db

    server = make_server("127.0.0.1", 0, None, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    app = make_app(WTF_CSRF_ENABLED=True, PUBLIC_URL=url, STRIPE_SECRET_KEY="sk_test_browser",
                   STRIPE_WEBHOOK_SECRET="whsec_browser", STRIPE_API_BASE="http://127.0.0.1:9", **SELLER)
    server.app = app
    with app.app_context():
        tenant = plan("tenant", 4900, "chf")
        alice = add_user("alice@example.com")
        add_user("ops@example.com", role="operator")
        profile(alice, company="Alice AG", address_line1="Hauptgasse 3", postal_code="3000", city="Bern", country="CH")
        svc = service(alice, tenant, [("2026-10-20 08:00", "active")], "alice-tenant")
        addon_event(svc, "searxng", "enabled", "2026-11-16 10:00", 300, "chf")
        db.session.commit()
        [invoice] = invoicing.generate("2026-11").issued
        number, invoice_id = invoice.number, invoice.id
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url, app, number, invoice_id
    server.shutdown()


def login(page, url, email):
    page.goto(f"{url}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", "password123")
    page.click("#login")
    page.wait_for_load_state()


@pytest.mark.parametrize("width", [1280, 390])
def test_download_an_invoice_pdf_from_billing_and_mark_it_paid(live, tmp_path, width):
    from pypdf import PdfReader

    url, app, number, invoice_id = live
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900}, accept_downloads=True)
            login(page, url, "alice@example.com")
            page.goto(f"{url}/billing")
            row = page.locator(f"#own-invoices tr[data-invoice='{invoice_id}']")
            assert number in row.inner_text() and "CHF54.59" in row.inner_text()
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            shot(page, tmp_path, f"invoices-billing-{width}")
            with page.expect_download() as info:
                page.click(f"#pdf-{invoice_id}")
            download = info.value
            assert download.suggested_filename == f"invoice-{number}.pdf"
            text = "\n".join(pg.extract_text() for pg in PdfReader(io.BytesIO(open(download.path(), "rb").read())).pages)
            assert f"Invoice {number}" in text and "CHF54.59" in text and "CHF4.09" in text

            ops = browser.new_page(viewport={"width": width, "height": 900})
            login(ops, url, "ops@example.com")
            ops.goto(f"{url}/admin/billing")
            assert number in ops.locator("#invoice-list").inner_text()
            shot(ops, tmp_path, f"invoices-admin-{width}")
            ops.fill(f"tr[data-invoice='{invoice_id}'] input[name=reference]", "ZKB 4711")
            ops.click(f"#paid-{invoice_id}")
            ops.wait_for_load_state()
            assert "marked paid" in ops.content()
            assert "ZKB 4711" in ops.locator(f"tr[data-invoice='{invoice_id}']").inner_text()
            page.goto(f"{url}/billing")
            assert "Paid" in page.locator(f"#own-invoices tr[data-invoice='{invoice_id}']").inner_text()
        finally:
            browser.close()


@pytest.fixture
def live_without_stripe(make_app):
    """A panel without Stripe keys; Alice pays by invoice and has her November invoice."""
    from corelib import add_user
    from invoicelib import SELLER, plan, profile, service
    from werkzeug.serving import make_server

    from panel.billing import invoicing
    from panel.extensions import db

    server = make_server("127.0.0.1", 0, None, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    app = make_app(WTF_CSRF_ENABLED=True, PUBLIC_URL=url, **SELLER)
    server.app = app
    with app.app_context():
        tenant = plan("tenant", 4900, "chf")
        alice = add_user("alice@example.com")
        profile(alice, company="Alice AG", country="CH")
        service(alice, tenant, [("2026-10-20 08:00", "active")], "alice-tenant")
        db.session.commit()
        [invoice] = invoicing.generate("2026-11").issued
        number, invoice_id, user_id = invoice.number, invoice.id, alice.id
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url, app, number, invoice_id, user_id
    server.shutdown()


@pytest.mark.parametrize("width", [1280, 390])
def test_billing_profile_form_without_stripe(live_without_stripe, tmp_path, width):
    from panel.extensions import db
    from panel.models import Profile

    url, app, number, invoice_id, user_id = live_without_stripe
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            login(page, url, "alice@example.com")
            if width < 800:
                page.click("#menu-toggle")
            page.click("#site-nav a[href='/billing']")        # the menu links to billing without Stripe
            page.wait_for_load_state()
            assert number in page.locator(f"#own-invoices tr[data-invoice='{invoice_id}']").inner_text()
            page.fill("#company", "Alice Muster AG")
            page.fill("#address_line1", "Hauptgasse 3")
            page.fill("#postal_code", "3000")
            page.fill("#city", "Bern")
            page.fill("#tax_id", "CHE-116.281.711 MWST")     # a wrong check digit
            page.click("#save-billing-profile")
            page.wait_for_load_state()
            error = page.locator(".error[data-field=tax_id]")
            assert "not a valid tax ID for CH" in error.inner_text()
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            shot(page, tmp_path, f"billing-profile-error-{width}")
            page.fill("#tax_id", "CHE-116.281.710 MWST")
            page.uncheck("#reminder_emails")
            page.click("#save-billing-profile")
            page.wait_for_load_state()
            assert "Billing profile saved." in page.content()
            assert page.input_value("#company") == "Alice Muster AG"
            assert not page.is_checked("#reminder_emails")
            shot(page, tmp_path, f"billing-profile-{width}")
        finally:
            browser.close()
    with app.app_context():
        row = db.session.get(Profile, user_id)
        assert (row.company, row.tax_id, row.reminder_emails) == ("Alice Muster AG", "CHE-116.281.710 MWST", False)
