"""Add-ons through the core onto a tenant custom resource: a catalog add-on whose option appends to
``packages`` ends up in ``spec.packages`` at provision, and adding or removing one on a running
tenant patches the custom resource; the core's add-on log follows what the API returned."""
from __future__ import annotations

import os

import pytest

from k8s_testlib import NAMESPACE, TOKEN

CATALOG = """
plans:
  - slug: tenant-free
    name: Tenant
    backend: kubernetes
    options: {packages: [base-skill], memory_mib: 512}
    addons: [searxng, more-memory]
addons:
  - slug: searxng
    name: Local search
    options: {packages: '+["searxng-local-search"]'}
  - slug: more-memory
    name: 512 MiB more
    options: {memory_mib: "+512"}
"""


@pytest.fixture
def panel_app(tmp_path, monkeypatch, standin):
    from panel import create_app
    from panel.extensions import db
    from panel.plugins import set_enabled, set_setting

    for key in list(os.environ):
        if key.startswith("PANEL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PANEL_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app({"TESTING": True, "SECRET_KEY": "k8s-test-secret-key-0123456789", "PLUGINS": ["kubernetes"],
                      "DATABASE_URL": f"sqlite:///{tmp_path}/panel.db", "JOB_BACKOFF": [0]})
    with app.app_context():
        db.create_all()
        set_setting("kubernetes", "api_url", standin.url)
        set_setting("kubernetes", "token", TOKEN)
        set_setting("kubernetes", "namespace", NAMESPACE)
        set_setting("kubernetes", "ready_timeout_seconds", "3")
        set_enabled("kubernetes", True)
        yield app
        from panel import dispatch

        dispatch.inprocess_runner().wait_idle(30)
        db.session.remove()
        db.engine.dispose()


def _settle(app):
    from panel import dispatch
    from panel.extensions import db

    assert dispatch.inprocess_runner().wait_idle(60)
    db.session.expire_all()


def test_addons_reach_spec_packages_and_resources(panel_app, standin):
    from panel.billing.changes import change_addons
    from panel.catalog import import_catalog
    from panel.extensions import db
    from panel.models import AddonEvent, User
    from panel.orders import place_order

    import_catalog(CATALOG)
    user = User(email="k8s-addons@example.com")
    user.set_password("password123")
    db.session.add(user)
    db.session.commit()
    service = place_order(user, "tenant-free", {"tenant_name": "shop"}, actor="test", addons=["searxng"]).service
    _settle(panel_app)
    db.session.refresh(service)
    assert service.status == "active", service.status_detail
    cr = standin.get(NAMESPACE, "hp-shop")
    assert cr["spec"]["packages"] == ["base-skill", "searxng-local-search"]
    change_addons(service, add=["more-memory"], remove=["searxng"], actor="test")
    _settle(panel_app)
    db.session.refresh(service)
    assert service.status == "active", service.status_detail
    cr = standin.get(NAMESPACE, "hp-shop")
    assert cr["spec"]["packages"] == ["base-skill"]
    assert cr["spec"]["resources"]["memory"] in ("1024Mi", "1Gi")
    assert service.backend_data["packages_removed"] == ["searxng-local-search"]  # what the API returned
    log = [(e.addon_slug, e.kind) for e in db.session.scalars(db.select(AddonEvent).order_by(AddonEvent.id))]
    assert log == [("searxng", "enabled"), ("searxng", "disabled"), ("more-memory", "enabled")]
