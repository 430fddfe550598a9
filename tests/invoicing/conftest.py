"""Invoice test fixtures: an app on a real PostgreSQL database (``pg_app``)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

from corelib import BASE_CONFIG  # noqa: E402

from panel.extensions import db  # noqa: E402

SELLER = {"INVOICE_SELLER_NAME": "Hostpanel GmbH", "INVOICE_SELLER_ADDRESS": "Bahnhofstrasse 1|8001 Zürich",
          "INVOICE_SELLER_COUNTRY": "CH", "INVOICE_SELLER_VAT_ID": "CHE-116.281.710 MWST",
          "INVOICE_SELLER_IBAN": "CH93 0076 2011 6238 5295 7"}


@pytest.fixture
def pg_url(postgres_server):
    return postgres_server.create_database()


@pytest.fixture
def pg_app(pg_url, tmp_path, monkeypatch):
    """An app on its own fresh PostgreSQL database, tables created, memory backend enabled."""
    from memory_backend import MemoryPlugin

    from panel import create_app
    from panel.plugins import set_enabled

    for key in list(os.environ):
        if key.startswith("PANEL_"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PANEL_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app(BASE_CONFIG | SELLER | {"DATABASE_URL": pg_url, "PLUGINS": [],
                                             "EXTRA_PLUGINS": [MemoryPlugin()]})
    with app.app_context():
        db.create_all()
        set_enabled("memory", True)
        db.session.commit()
        yield app
        runner = app.extensions.get("panel_runner")
        if runner is not None:
            runner.wait_idle(30)
        db.session.remove()
        db.engine.dispose()
