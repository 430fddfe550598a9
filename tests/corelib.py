"""Helpers shared by the core's tests (a unique module name: plugins have conftest.py too)."""
from __future__ import annotations

from panel.extensions import db
from panel.models import User

BASE_CONFIG = {
    "TESTING": True,
    "SECRET_KEY": "test-secret-key-0123456789",
    "WTF_CSRF_ENABLED": False,
    "RATELIMIT_ENABLED": False,
    "JOB_BACKOFF": [0],
    "JOB_RETRIES": 3,
}


def add_user(email: str, password: str = "password123", role: str = "customer") -> User:
    from panel.models.base import utcnow

    user = User(email=email, role=role, email_verified_at=utcnow())  # an existing, confirmed account
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user


def login(client, email, password="password123"):
    return client.post("/login", data={"email": email, "password": password})


def wait_jobs(app, timeout=30):
    """Wait until the in-process runner has nothing in flight."""
    from panel import dispatch

    with app.app_context():
        assert dispatch.inprocess_runner().wait_idle(timeout), "jobs did not finish in time"
    db.session.expire_all()


def token_for(user) -> dict:
    """``{"Authorization": "Bearer hp_..."}`` for a new personal token of ``user``."""
    from panel.models import ApiToken

    _, plain = ApiToken.issue(user, "test")
    db.session.commit()
    return {"Authorization": f"Bearer {plain}"}


def configure_pds(url: str, token: str, domain: str = "pds.example.com") -> None:
    """Point the pds plugin at a stand-in (``url``, ``token``), default hostnames under ``domain``, and
    enable it."""
    from panel.plugins import set_enabled, set_setting

    set_setting("pds", "api_url", url)
    set_setting("pds", "api_token", token)
    set_setting("pds", "hostname_domain", domain)
    set_enabled("pds", True)


def running_without_a_job(service, action="provision"):
    """An operation the row says is running while nothing runs it (its worker died mid-job)."""
    from panel.models import Operation

    op = Operation(service=service, action=action, state="running", attempts=1, payload={})
    service.status = "provisioning" if action == "provision" else service.status
    db.session.add(op)
    db.session.commit()
    return op


def logged_in_browser(url: str, width: int, height: int, email: str = "ops@example.com",
                      password: str = "password123", timeout_ms: int = 20000):
    """A context manager giving a Playwright page of Debian's chromium (``test_browser``'s flags)
    at ``width`` x ``height``, logged in at ``url`` through the real /login form; the browser is
    closed afterwards."""
    import contextlib

    @contextlib.contextmanager
    def session():
        from playwright.sync_api import sync_playwright
        from test_browser import ARGS, CHROMIUM

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.set_default_timeout(timeout_ms)
                page.goto(f"{url}/login")
                page.fill("input[name=email]", email)
                page.fill("input[name=password]", password)
                page.click("#login")
                yield page
            finally:
                browser.close()

    return session()


def screenshot(page, tmp_path, name: str) -> None:
    """A full-page PNG of a Playwright ``page`` at ``tmp_path/<name>.png``, copied to the folder
    ``HOSTPANEL_SCREENSHOTS`` names when it is set (to look at after the run)."""
    import os
    import shutil

    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("HOSTPANEL_SCREENSHOTS")
    if target:
        os.makedirs(target, exist_ok=True)
        shutil.copy(path, os.path.join(target, f"{name}.png"))
