"""The client area in a real browser (Debian's chromium through Playwright), at 1280 and 390 px.

One live panel with three real backend plugins, each against its real remote side: the PDS deploy
API stand-in, the Pterodactyl stand-in (application and client APIs) and a real Docker Engine
(skipped without one), plus a DNS stand-in for hostname verification. Every page visited at
390 px is measured: ``document.documentElement.scrollWidth <= innerWidth`` (no sideways scroll).
Screenshots land in ``$HOSTPANEL_SCREENSHOT_DIR`` when set (else the test's tmp dir).
"""
from __future__ import annotations

import os
import re
import sys
import threading

import pytest

playwright_sync = pytest.importorskip("playwright.sync_api")
import panel_pds  # noqa: F401,E402  (our plugins: an import error must fail, not skip)
import panel_pterodactyl  # noqa: F401,E402

from corelib import BASE_CONFIG, configure_pds  # noqa: E402
from dns_standin import DnsStandIn  # noqa: E402

from test_browser import ARGS, CHROMIUM  # noqa: E402  (Debian's chromium and its flags)
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "browser-pass-1"
WIDTHS = {"desktop": 1280, "phone": 390}


class Live:
    """The running panel and the remote sides it talks to."""

    def __init__(self, url, app, pds, ptero, dns, docker_image):
        self.url, self.app, self.pds, self.ptero, self.dns, self.docker_image = url, app, pds, ptero, dns, docker_image
        self.measured: dict[str, bool] = {}


def _docker_image(postgres_server):
    """The Docker stand-in image (busybox httpd) or ``None`` without a Docker Engine."""
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
    except Exception:
        return None, None
    sys.path.insert(0, os.path.join(ROOT, "plugins", "docker", "tests"))
    from docker_backend_testkit import PREFIX, build_standin_image, static_busybox

    busybox = static_busybox()
    if busybox is None:
        return None, None
    return client, (build_standin_image(client, busybox, f"{PREFIX}/browser"), PREFIX)


@pytest.fixture(scope="module")
def live(tmp_path_factory, postgres_server, redis_server):
    from werkzeug.serving import make_server

    from panel import create_app
    from panel.catalog import import_catalog
    from panel.extensions import db
    from panel.models import User
    from panel.plugins import set_enabled, set_setting
    from panel_pds.standin import PdsStandIn
    from panel_pterodactyl.standin import ADMIN_KEY, CLIENT_KEY, PterodactylStandin

    tmp = tmp_path_factory.mktemp("browser-ca")
    os.environ["PANEL_INSTANCE_PATH"] = str(tmp)
    pds = PdsStandIn(token="browser-token").start()
    ptero = PterodactylStandin()
    ptero.add_node("node-a", memory=8192, disk=51200, allocations=10, ip="203.0.113.5")
    ptero.add_egg(1, 39, variables=[{"env_variable": "SERVER_JARFILE", "default_value": "server.jar",
                                     "rules": "required|string|max:40"}])
    dns = DnsStandIn().start()
    docker_client, image = _docker_image(postgres_server)
    plugins = ["pds", "pterodactyl"] + (["docker"] if image else [])
    config = dict(BASE_CONFIG, DATABASE_URL=f"sqlite:///{tmp}/panel.db", PLUGINS=plugins, EXTRA_PLUGINS=[],
                  WTF_CSRF_ENABLED=True, DNS_RESOLVERS=f"127.0.0.1:{dns.port}", SUPPORT_EMAIL="help@hostpanel.example",
                  SUPPORT_URL="https://help.hostpanel.example/", PLUGIN_ENV={})
    app = create_app(config)
    with app.app_context():
        db.create_all()
        configure_pds(pds.url, "browser-token")
        set_setting("pterodactyl", "panel_url", ptero.url)
        set_setting("pterodactyl", "application_api_key", ADMIN_KEY)
        set_setting("pterodactyl", "client_api_key", CLIENT_KEY)
        set_setting("pterodactyl", "nodes", '[{"id": 1, "region": "eu", "enabled": true}]')
        set_setting("pterodactyl", "games", '{"minecraft": {"nest": 1, "egg": 39}}')
        set_enabled("pterodactyl", True)
        catalog = ("plans:\n"
                   "- {slug: pds-free, name: PDS Free, description: A PDS of your own, backend: pds, options: {disksize_gb: 5}}\n"
                   "- {slug: mc-1g, name: Minecraft 1 GB, backend: pterodactyl,"
                   " options: {game: minecraft, memory: 1024, disk: 4096, cpu: 100, region: eu}}\n")
        if image:
            tag, prefix = image
            for key, value in {"image": tag, "base_domain": "communities.test", "publish_host": "127.0.0.1",
                               "postgres_url": postgres_server.admin_url, "database_host": "db.internal:5432",
                               "redis_url": redis_server.url, "name_prefix": prefix, "health_timeout_seconds": "20",
                               "env_template": '{"PORT": "{container_port}"}',
                               "admin_signup_path": "/cgi-bin/register"}.items():
                set_setting("docker", key, value)
            set_enabled("docker", True)
            catalog += "- {slug: postiz, name: Postiz community, backend: docker, options: {memory_mib: 256, cpus: 0.5}}\n"
        import_catalog(catalog)
        operator = User(email="ops@hostpanel.example", role="operator")
        operator.set_password(PASSWORD)
        db.session.add(operator)
        db.session.commit()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Live(f"http://127.0.0.1:{server.server_port}", app, pds, ptero, dns, image)
    server.shutdown()
    runner = app.extensions.get("panel_runner")
    if runner is not None:
        runner.wait_idle(60)
    if docker_client is not None:
        from docker_backend_testkit import cleanup_docker, cleanup_postgres

        cleanup_docker(docker_client, image[1])
        docker_client.images.remove(image[0], force=True)
        cleanup_postgres(postgres_server.admin_url, image[1])
    dns.stop()
    ptero.stop()
    pds.stop()


@pytest.fixture
def browser():
    with playwright_sync.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _shots(tmp_path):
    target = os.environ.get("HOSTPANEL_SCREENSHOT_DIR") or str(tmp_path)
    os.makedirs(target, exist_ok=True)
    return target


def _page(browser, width, locale="en-US"):
    context = browser.new_context(viewport={"width": width, "height": 900}, locale=locale)
    page = context.new_page()
    page.set_default_timeout(20000)
    return page


def _fits(live, page, label):
    """No sideways scroll at this width (measured in the browser); remembered per page label."""
    fits = page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    wide = page.evaluate("document.documentElement.scrollWidth")
    live.measured[label] = fits
    assert fits, f"{label}: the page is {wide}px wide at {page.viewport_size['width']}px"


def _signup(live, page, email):
    page.goto(f"{live.url}/signup")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=confirm]", PASSWORD)
    page.click("#signup")
    page.wait_for_url(f"{live.url}/plans")


def _login(live, page, email):
    page.goto(f"{live.url}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("main form button[type=submit]")
    page.wait_for_load_state()


def _order(live, page, slug, fields):
    page.goto(f"{live.url}/order/{slug}")
    for name, value in fields.items():
        page.fill(f"input[name=param_{name}]", value)
    page.click("#place-order")
    page.wait_for_url(re.compile(r".*/services/\d+$"))
    page.wait_for_selector("#status .badge[data-status=active]", timeout=60000)
    page.wait_for_selector("[data-section=connect]", timeout=20000)
    return int(page.url.rsplit("/", 1)[1])


def _reveal(page, name, password=PASSWORD):
    box = page.locator(f".credential[data-credential={name}]")
    box.locator("input[name=password]").fill(password)
    box.locator("button[type=submit]").click()
    box.locator(".revealed:not([hidden]) .secret-value").wait_for()
    return box.locator(".secret-value").inner_text()


def _run_action(page, name):
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"#action-{name}")
    page.wait_for_load_state()
    page.wait_for_selector(f"#history li:has-text('done')", timeout=60000)


def _screens(live, browser, tmp_path, email, path, name):
    """Screenshots of ``path`` at both widths (signed in as ``email``), each measured at 390 px."""
    for label, width in WIDTHS.items():
        page = _page(browser, width)
        _login(live, page, email)
        page.goto(f"{live.url}{path}")
        page.wait_for_load_state("networkidle")
        page.screenshot(path=os.path.join(_shots(tmp_path), f"{name}-{label}.png"), full_page=True)
        if width == 390:
            _fits(live, page, path)
        page.context.close()


def test_pds_connect_reveal_after_reauth_and_reset_admin_password(live, browser, tmp_path):
    page = _page(browser, 1280)
    _signup(live, page, "ada@example.com")
    sid = _order(live, page, "pds-free", {"username": "ada"})
    connect = page.inner_text("[data-section=connect]")
    assert "https://ada.pds.example.com" in connect and "ada.pds.example.com" in connect
    first = next(d for d in live.pds.deploys() if d["hostname"] == "ada.pds.example.com")["password"]
    assert first not in page.content()
    box = page.locator(".credential[data-credential=admin_password]")
    box.locator("input[name=password]").fill("not-my-password")
    box.locator("button[type=submit]").click()
    page.wait_for_selector(".credential[data-credential=admin_password] .error:not([hidden])")
    assert first not in page.content()
    assert _reveal(page, "admin_password") == first
    _run_action(page, "reset_admin_password")
    new = next(s for s in live.pds.services() if s["hostname"] == "ada.pds.example.com")["password"]
    assert new != first and new not in page.content()
    page.reload()
    assert _reveal(page, "admin_password") == new
    history = page.inner_text("#history")
    assert "Reset admin password done" in history and "PDS admin password viewed" in history
    assert "Wrong password: PDS admin password was not shown" in history
    page.context.close()
    _screens(live, browser, tmp_path, "ada@example.com", f"/services/{sid}", "pds-service")


def test_pterodactyl_connect_deep_link_power_action_and_panel_password(live, browser, tmp_path):
    page = _page(browser, 1280)
    _signup(live, page, "gamer@example.com")
    page.goto(f"{live.url}/order/mc-1g")
    page.fill("input[name=param_server_name]", "Survival")
    page.click("#place-order")
    page.wait_for_url(re.compile(r".*/services/\d+$"))
    page.wait_for_selector("#status .badge[data-status=active]", timeout=60000)
    sid = int(page.url.rsplit("/", 1)[1])
    server = next(s for s in live.ptero.servers.values() if s["name"] == "Survival")
    live.ptero.set_status(server["id"], None)  # the egg's install finished
    page.reload()
    assert "203.0.113.5:25565" in page.inner_text("[data-section=connect]")
    link = page.get_attribute("[data-section=links] a", "href")
    assert link == f"{live.ptero.url}/server/{server['identifier']}"
    _run_action(page, "restart")
    assert live.ptero.power_log[-1] == (server["identifier"], "restart")
    _run_action(page, "reset_password")
    user_id = server["user"]
    page.reload()
    assert _reveal(page, "panel_password") == live.ptero.user_passwords[user_id]
    page.context.close()
    _screens(live, browser, tmp_path, "gamer@example.com", f"/services/{sid}", "pterodactyl-service")


def test_docker_connect_admin_credential_and_restart(live, browser, tmp_path):
    if not live.docker_image:
        pytest.skip("no Docker Engine (or no static busybox) here")
    page = _page(browser, 1280)
    _signup(live, page, "community@example.com")
    sid = _order(live, page, "postiz", {"space": "makers"})
    assert "https://makers.communities.test" in page.inner_text("[data-section=connect]")
    password = _reveal(page, "admin_password")
    assert len(password) >= 20
    _run_action(page, "restart")
    assert "Restart done" in page.inner_text("#history")
    page.context.close()
    _screens(live, browser, tmp_path, "community@example.com", f"/services/{sid}", "docker-service")


def test_failed_service_for_the_customer_and_the_operator(live, browser, tmp_path):
    live.pds.set_faults(deploy=[422])
    page = _page(browser, 1280)
    _signup(live, page, "failing@example.com")
    page.goto(f"{live.url}/order/pds-free")
    page.click("#place-order")
    page.wait_for_url(re.compile(r".*/services/\d+$"))
    page.wait_for_selector("#status .badge[data-status=failed]", timeout=30000)
    page.wait_for_selector("#support-contact", timeout=10000)  # the settled page was swapped in, no reload
    sid = int(page.url.rsplit("/", 1)[1])
    text = page.inner_text("#status-card")
    assert "We could not finish setting up your service." in text and "help@hostpanel.example" in text
    assert "422" not in page.content() and "rejected by a stand-in fault" not in page.content()
    page.context.close()
    _screens(live, browser, tmp_path, "failing@example.com", f"/services/{sid}", "failed-customer")
    page = _page(browser, 1280)
    _login(live, page, "ops@hostpanel.example")
    page.goto(f"{live.url}/admin/services/{sid}")
    assert "HTTP 422" in page.inner_text("#status-detail")
    assert page.is_visible("#retry")
    page.context.close()
    _screens(live, browser, tmp_path, "ops@hostpanel.example", f"/admin/services/{sid}", "failed-operator")


def test_suspended_by_the_operator_with_a_reason(live, browser, tmp_path):
    page = _page(browser, 1280)
    _signup(live, page, "suspended@example.com")
    sid = _order(live, page, "pds-free", {"username": "susi"})
    page.context.close()
    ops = _page(browser, 1280)
    _login(live, ops, "ops@hostpanel.example")
    ops.goto(f"{live.url}/admin/services/{sid}")
    ops.fill("#suspend-form input[name=note]", "Abuse report 4711: spam sent from this PDS")
    ops.click("#suspend")
    ops.wait_for_selector("#status .badge[data-status=suspended]", timeout=30000)  # live, no reload
    ops.context.close()
    page = _page(browser, 1280)
    _login(live, page, "suspended@example.com")
    page.goto(f"{live.url}/services/{sid}")
    card = page.inner_text("#status-card")
    assert "Suspended by our team" in card and "Abuse report 4711: spam sent from this PDS" in card
    assert "ops@hostpanel.example" not in page.content()
    page.context.close()
    _screens(live, browser, tmp_path, "suspended@example.com", f"/services/{sid}", "suspended")


def test_german_locale(live, browser, tmp_path):
    page = _page(browser, 1280, locale="de-CH")
    page.set_extra_http_headers({"Accept-Language": "de-CH,de;q=0.9"})
    _signup(live, page, "heidi@example.ch")
    assert page.locator("nav a[aria-current=page]").inner_text() == "Angebote"
    sid = _order(live, page, "pds-free", {"username": "heidi"})
    assert "Ihr Dienst läuft" in page.inner_text("#status-card")
    assert "So verbinden Sie sich" in page.inner_text("[data-section=connect]")
    assert "Dienst bereit" in page.inner_text("#history")
    when = page.inner_text("#history time")
    assert "UTC" not in when  # shown in the viewer's zone by the page's script
    page.screenshot(path=os.path.join(_shots(tmp_path), "german-desktop.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 900})
    page.goto(f"{live.url}/services/{sid}")
    page.screenshot(path=os.path.join(_shots(tmp_path), "german-phone.png"), full_page=True)
    _fits(live, page, "/services (de)")
    assert page.is_visible("#menu-toggle") and not page.is_visible("#site-nav")
    page.click("#menu-toggle")
    assert page.is_visible("#site-nav") and page.inner_text("#site-nav a[aria-current=page]") == "Meine Dienste"
    page.context.close()


def test_hostname_txt_verification_against_the_dns_standin(live, browser, tmp_path):
    page = _page(browser, 1280)
    _signup(live, page, "owner@jane.example.org")
    page.goto(f"{live.url}/order/pds-free")
    page.fill("input[name=param_hostname]", "pds.jane.example.org")
    page.click("#place-order")
    assert "is not verified yet" in page.inner_text("#order-form")
    page.goto(f"{live.url}/domains")
    page.fill("#hostname", "pds.jane.example.org")
    page.click("#add-domain button[type=submit]")
    name = page.inner_text(".record-name")
    value = page.inner_text(".record-value")
    assert name == "_hostpanel-challenge.pds.jane.example.org" and value.startswith("hostpanel-verification=")
    page.screenshot(path=os.path.join(_shots(tmp_path), "domains-pending-desktop.png"), full_page=True)
    page.click(".check-now")
    assert "No TXT record" in page.inner_text(".flash")
    live.dns.set_txt(name, value)
    page.click(".check-now")
    assert "is verified" in page.inner_text(".flash")
    page.goto(f"{live.url}/order/pds-free")
    page.fill("input[name=param_hostname]", "pds.jane.example.org")
    page.click("#place-order")
    page.wait_for_url(re.compile(r".*/services/\d+$"))
    page.wait_for_selector("#status .badge[data-status=active]", timeout=30000)
    assert any(d["hostname"] == "pds.jane.example.org" for d in live.pds.deploys())
    page.context.close()
    _screens(live, browser, tmp_path, "owner@jane.example.org", "/domains", "domains")


def test_will_be_shown_before_ordering(live, browser, tmp_path):
    page = _page(browser, 390)
    _signup(live, page, "jm@example.com")
    page.goto(f"{live.url}/order/pds-free")
    page.fill("input[name=param_username]", "Jürgen Müller")
    page.wait_for_selector("[data-preview-for=username]:not([hidden])")
    assert "j-rgen-m-ller" in page.inner_text("[data-preview-for=username]")
    page.screenshot(path=os.path.join(_shots(tmp_path), "will-be-phone.png"), full_page=True)
    _fits(live, page, "/order/pds-free")
    page.context.close()


def test_no_page_is_wider_than_a_phone(live, browser, tmp_path):
    """Every customer and operator page at 390 px, measured in the browser."""
    customer_pages = ["/plans", "/services", "/domains", "/account", "/order/pds-free", "/order/mc-1g", "/no/such/page"]
    public_pages = ["/login", "/signup", "/plans"]
    operator_pages = ["/admin/", "/admin/operations", "/admin/plans", "/admin/customers", "/admin/plugins",
                      "/admin/pterodactyl/nodes"]
    page = _page(browser, 390)
    for path in public_pages:
        page.goto(f"{live.url}{path}")
        _fits(live, page, f"{path} (visitor)")
    _signup(live, page, "narrow@example.com")
    sid = _order(live, page, "pds-free", {"username": "narrow"})
    for path in customer_pages + [f"/services/{sid}"]:
        page.goto(f"{live.url}{path}")
        page.wait_for_load_state("networkidle")
        _fits(live, page, path)
    page.context.close()
    page = _page(browser, 390)
    _login(live, page, "ops@hostpanel.example")
    from panel.extensions import db
    from panel.models import Service

    with live.app.app_context():
        ids = [s.id for s in db.session.scalars(db.select(Service)).all()]
    for path in operator_pages + [f"/admin/services/{i}" for i in ids]:
        page.goto(f"{live.url}{path}")
        page.wait_for_load_state("networkidle")
        _fits(live, page, path)
    page.screenshot(path=os.path.join(_shots(tmp_path), "operator-service-phone.png"), full_page=True)
    page.goto(f"{live.url}/admin/")
    page.screenshot(path=os.path.join(_shots(tmp_path), "operator-list-phone.png"), full_page=True)
    page.context.close()
    assert all(live.measured.values()) and len(live.measured) >= 20


def test_usage_charts_limits_units_and_no_chart_of_a_constant(live, browser, tmp_path):
    from datetime import timedelta

    from panel.extensions import db
    from panel.models import UsageSample
    from panel.models.base import utcnow

    page = _page(browser, 1280)
    _signup(live, page, "charts@example.com")
    sid = _order(live, page, "pds-free", {"username": "charts"})
    page.wait_for_selector("#usage-empty")  # a message until the first sample exists
    with live.app.app_context():
        now = utcnow()
        for i in range(6):
            db.session.add(UsageSample(service_id=sid, at=now - timedelta(minutes=5 * (6 - i)), metrics=[
                {"name": "memory", "label": "Memory", "value": (200 + 40 * i) * 1024 * 1024, "unit": "bytes",
                 "limit": 1024 * 1024 * 1024},
                {"name": "storage_allocated", "label": "Storage allocated", "value": 5.0, "unit": "GiB", "limit": 5.0}]))
        db.session.commit()
    page.reload()
    page.wait_for_selector("#usage-charts canvas[data-metric=memory]")
    assert page.locator("#usage-charts canvas").count() == 1  # the constant one is text, not a chart
    constant = page.inner_text("#usage-charts li[data-metric=storage_allocated]")
    assert "5 GiB / 5 GiB" in constant and "unchanged" in constant
    page.screenshot(path=os.path.join(_shots(tmp_path), "usage-charts-desktop.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 900})
    page.reload()
    page.wait_for_selector("#usage-charts canvas[data-metric=memory]")
    _fits(live, page, f"/services/{sid} (charts)")
    page.context.close()
