"""The plugin inside a real hostpanel app: entry point loading, settings stored through the core,
the README's example catalog, and a provision through ``get_backend``."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from k8s_testlib import NAMESPACE, TOKEN, ours
from panel.testing import make_spec

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def panel_app(tmp_path, monkeypatch):
    """A hostpanel app on a temporary SQLite file that loads only the kubernetes plugin."""
    from panel import create_app
    from panel.extensions import db

    for key in list(os.environ):
        if key.startswith("PANEL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PANEL_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app({"TESTING": True, "SECRET_KEY": "k8s-test-secret-key-0123456789", "PLUGINS": ["kubernetes"],
                      "DATABASE_URL": f"sqlite:///{tmp_path}/panel.db"})
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_settings_through_the_core_and_a_provision_via_get_backend(panel_app, standin):
    from panel.backends import ValidationError
    from panel.plugins import get_backend, set_setting

    with panel_app.app_context():
        set_setting("kubernetes", "api_url", standin.url)
        set_setting("kubernetes", "token", TOKEN)
        set_setting("kubernetes", "namespace", NAMESPACE)
        set_setting("kubernetes", "ready_timeout_seconds", "3")
        set_setting("kubernetes", "spec_template", '{"domain": "{tenant_name}.example.com"}')
        with pytest.raises(ValidationError) as info:
            set_setting("kubernetes", "spec_template", '{"domain": "{oops}"}')
        assert "unknown placeholder {oops}" in info.value.errors["spec_template"]
        backend = get_backend("kubernetes")
        assert TOKEN not in repr(backend)
        assert "is served" in backend.test_connection()
        spec = make_spec(backend, options={"packages": ["a"]}, params={"tenant_name": "panel"})
        result = backend.provision(spec)
        assert result.resource_id == "hp-panel"
        assert standin.get(NAMESPACE, "hp-panel")["spec"]["domain"] == "panel.example.com"
        assert len(ours(standin, spec)) == 1


def test_the_readme_example_catalog_imports(panel_app):
    from panel.catalog import import_catalog
    from panel.models import Plan

    blocks = re.findall(r"```yaml\n(plans:.*?)```", README.read_text(), re.S)
    assert blocks, "README.md has no example plans block"
    with panel_app.app_context():
        report = import_catalog(blocks[0])
        assert {"tenant-starter", "tenant-team"} <= set(report.created)
        plan = Plan.by_slug("tenant-team")
        assert plan.backend == "kubernetes"
        assert plan.options["packages"] == ["searxng-local-search", "threema-gateway"]
