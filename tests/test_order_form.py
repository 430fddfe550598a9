"""The customer's order form is generated from the JSON Schema of the backend's ``OrderParams``:
checked in a real browser (Debian's chromium through Playwright) at desktop and phone widths."""
from __future__ import annotations

import os
import threading
from typing import Literal

import pytest
from pydantic import Field

from panel import Backend, Provisioned, Schema, hookimpl
from panel.customer.forms import order_form_class
from panel.backends import json_schema

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
MADE: list[dict] = []


class FormBackend(Backend):
    name = "formtest"
    label = "Form test"

    class OrderParams(Schema):
        site_name: str = Field(max_length=20, pattern=r"^[a-z0-9-]+$", title="Site name",
                               description="Lower-case letters, digits and hyphens")
        disk_gib: int = Field(10, ge=5, le=100, title="Disk", json_schema_extra={"unit": "GiB"})
        region: Literal["eu-west", "us-east"] = Field("eu-west", title="Region")
        backups: bool = Field(False, title="Daily backups")
        tags: list[str] = Field([], title="Tags", description='A JSON list, e.g. ["blog"]')

    def provision(self, spec):
        MADE.append(dict(spec.params))
        return Provisioned(resource_id=spec.external_id, data={"site": spec.params["site_name"]})

    def suspend(self, spec): ...
    def unsuspend(self, spec): ...
    def terminate(self, spec): ...


class FormPlugin:
    @hookimpl
    def register_backends(self, register):
        register(FormBackend)


def test_the_form_class_follows_the_schema():
    form_class = order_form_class(json_schema(FormBackend.OrderParams))
    kinds = {name: getattr(form_class, name).field_class.__name__ for name in dir(form_class) if name.startswith("param_")}
    assert kinds == {"param_site_name": "StringField", "param_disk_gib": "StringField", "param_region": "SelectField",
                     "param_backups": "BooleanField", "param_tags": "TextAreaField"}
    disk = form_class.param_disk_gib
    assert disk.kwargs["label"] == "Disk (GiB) (optional)"
    assert disk.kwargs["render_kw"] == {"type": "number", "step": "1", "min": 5, "max": 100}
    assert form_class.param_site_name.kwargs["render_kw"] == {"maxlength": 20}
    assert form_class.param_region.kwargs["choices"] == [("eu-west", "eu-west"), ("us-east", "us-east")]


@pytest.fixture
def live(make_app):
    from werkzeug.serving import make_server

    from memory_backend import MemoryPlugin
    from panel.catalog import import_catalog
    from panel.plugins import set_enabled

    MADE.clear()
    app = make_app(EXTRA_PLUGINS=[MemoryPlugin(), FormPlugin()], WTF_CSRF_ENABLED=True)
    with app.app_context():
        set_enabled("formtest", True)
        import_catalog("plans: [{slug: form-free, name: Form Free, backend: formtest, options: {}}]")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.mark.browser
def test_order_form_in_a_browser(live, tmp_path):
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "Debian chromium is needed (apt-get install chromium)"
    shots = os.environ.get("HOSTPANEL_SCREENSHOT_DIR") or str(tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20000)
            page.goto(f"{live}/signup")
            page.fill("input[name=email]", "form@example.com")
            page.fill("input[name=password]", "form-pass-123")
            page.fill("input[name=confirm]", "form-pass-123")
            page.click("#signup")
            page.wait_for_url(f"{live}/plans")
            page.goto(f"{live}/order/form-free")
            assert page.get_attribute("input[name=param_disk_gib]", "type") == "number"
            assert page.get_attribute("input[name=param_disk_gib]", "min") == "5"
            assert "Disk (GiB)" in page.inner_text("#order-form")
            assert page.locator("select[name=param_region] option").all_inner_texts() == ["eu-west", "us-east"]
            # bad input: each message beside its field, nothing ordered
            page.fill("input[name=param_site_name]", "Not Valid!")
            page.fill("input[name=param_disk_gib]", "1")
            page.fill("textarea[name=param_tags]", "[oops")
            page.click("#place-order")
            page.wait_for_selector("text=must be at least 5 GiB")
            text = page.inner_text("#order-form")
            assert "has an invalid format" in text and "is not valid JSON" in text
            assert MADE == []
            page.screenshot(path=os.path.join(shots, "order-form-errors-1280.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            page.screenshot(path=os.path.join(shots, "order-form-errors-390.png"), full_page=True)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            # good input: ordered with typed values
            page.fill("input[name=param_site_name]", "my-site")
            page.fill("input[name=param_disk_gib]", "20")
            page.select_option("select[name=param_region]", "us-east")
            page.check("input[name=param_backups]")
            page.fill("textarea[name=param_tags]", '["blog"]')
            page.click("#place-order")
            page.wait_for_url(f"{live}/services/*")
        finally:
            browser.close()
    assert MADE == [{"site_name": "my-site", "disk_gib": 20, "region": "us-east", "backups": True,
                     "tags": ["blog"]}]
