"""The operator page ``/admin/pterodactyl/nodes`` in a real panel app (only this plugin loaded).

The app runs on SQLite in a temp dir with its blueprints added through the plugin's
``register_blueprints`` hook, is configured against the loopback stand-in, and users log in through
the real ``/login`` route. Settings are read back with the core's ``panel.plugins.raw_settings``.
"""
from __future__ import annotations

import html
import json
import os
import re

import pytest

from panel_pterodactyl.standin import ADMIN_KEY


PAGE = "/admin/pterodactyl/nodes"
PASSWORD = "correct horse battery"
NODE1 = {"id": 1, "region": "us-east", "enabled": True, "headroom_memory": 1024, "headroom_disk": 0}


@pytest.fixture
def make_app(tmp_path, monkeypatch, standin):
    """``make_app(configure=True, **config)``: a panel app with an operator and a customer."""
    from panel import create_app
    from panel.extensions import db
    from panel.models import User
    from panel.plugins import set_setting

    for key in list(os.environ):
        if key.startswith("PANEL_"):
            monkeypatch.delenv(key)
    made = []

    def make(configure: bool = True, **overrides):
        config = {"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path}/panel-{len(made)}.db",
                  "PLUGINS": ["pterodactyl"], "WTF_CSRF_ENABLED": False,
                  "SECRET_KEY": "nodes-page-test-secret-key"}
        config.update(overrides)
        app = create_app(config)
        made.append(app)
        with app.app_context():
            db.create_all()
            if configure:
                set_setting("pterodactyl", "panel_url", standin.url)
                set_setting("pterodactyl", "application_api_key", ADMIN_KEY)
                set_setting("pterodactyl", "timeout", 2)
            set_setting("pterodactyl", "nodes", [NODE1])
            for email, role in (("ops@example.com", "operator"), ("alice@example.com", "customer")):
                user = User(email=email, role=role)
                user.set_password(PASSWORD)
                db.session.add(user)
            db.session.commit()
        return app

    yield make
    for app in made:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(make_app):
    return make_app()


def login(app, email="ops@example.com"):
    """A test client logged in through the real /login form (with its CSRF token when enabled)."""
    client = app.test_client()
    data = {"email": email, "password": PASSWORD}
    token = _csrf(client.get("/login").get_data(as_text=True), "csrf_token")
    if token:
        data["csrf_token"] = token
    response = client.post("/login", data=data)
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return client


def _csrf(page: str, name: str) -> str | None:
    m = re.search(rf'name="{re.escape(name)}" type="hidden" value="([^"]+)"', page) \
        or re.search(rf'type="hidden" name="{re.escape(name)}" value="([^"]+)"', page) \
        or re.search(rf'id="{re.escape(name)}" name="{re.escape(name)}" type="hidden" value="([^"]+)"', page)
    return m.group(1) if m else None


def stored(app) -> list | None:
    from panel.plugins import raw_settings

    with app.app_context():
        values, source = raw_settings("pterodactyl")
    return values.get("nodes") if source.get("nodes") == "db" else None


def row(page: str, node_id: int) -> dict[str, str]:
    """The table row of ``node_id`` as ``{column: text}``."""
    m = re.search(rf'<tr data-node="{node_id}">(.*?)</tr>', page, re.S)
    assert m, f"no row for node {node_id}"
    cells = re.findall(r'<td data-col="(\w+)"[^>]*>(.*?)</td>', m.group(1), re.S)
    return {k: html.unescape(re.sub(r"<[^>]+>", "", v)).strip() for k, v in cells}


def field_errors(page: str) -> dict[str, str]:
    return {k: html.unescape(v) for k, v in re.findall(r'<div class="error" data-field="([\w-]+)">(.*?)</div>', page)}


def test_page_lists_live_nodes_with_free_room(app, standin):
    eu = standin.add_location("eu.fra", "Frankfurt")
    standin.add_node("node-over", memory=1000, disk=2000, memory_overallocate=50, disk_overallocate=-1,
                     location_id=eu["id"])                                                    # id 4
    standin.add_server(None, 1, memory=2048, disk=1000)
    page = login(app).get(PAGE)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    node1 = row(text, 1)
    assert node1["name"] == "node-a" and node1["region"] == "us-east" and node1["enabled"] == "enabled"
    assert node1["memory"] == "8192" and node1["allocated_memory"] == "2048" and node1["headroom_memory"] == "1024"
    assert node1["free_memory"] == str(8192 - 2048 - 1024)
    assert node1["free_disk"] == str(51200 - 1000)
    assert row(text, 2)["maintenance"] == "yes" and row(text, 2)["enabled"] == "not configured"
    node4 = row(text, 4)
    assert node4["location"] == "eu.fra" and node4["memory_overallocate"] == "50 %"
    assert node4["free_memory"] == "1500" and node4["free_disk"] == "1980"   # 2000 * 0.99
    assert 'action="/admin/pterodactyl/nodes/3"' in text and 'href="/admin/pterodactyl/nodes"' in text
    assert 'action="/admin/pterodactyl/nodes/1/remove"' in text
    assert "/admin/pterodactyl/nodes/3/remove" not in text   # nothing to remove for an unconfigured node


def test_setting_region_and_headroom_stores_the_setting(app):
    client = login(app)
    added = client.post(f"{PAGE}/3", data={"node3-region": "eu", "node3-headroom_memory": "512",
                                           "node3-headroom_disk": "256"})      # checkbox absent = disabled
    assert added.status_code == 302 and added.headers["Location"].endswith(f"{PAGE}#node-3")
    assert stored(app) == [NODE1, {"id": 3, "region": "eu", "enabled": False, "headroom_memory": 512,
                                   "headroom_disk": 256}]
    changed = client.post(f"{PAGE}/1", data={"node1-region": "us-west", "node1-enabled": "y",
                                             "node1-headroom_memory": "", "node1-headroom_disk": "2048"},
                          follow_redirects=True)
    assert changed.status_code == 200
    text = changed.get_data(as_text=True)
    assert "Node 1 saved: region us-west, enabled" in text
    assert stored(app)[0] == {"id": 1, "region": "us-west", "enabled": True, "headroom_memory": 0,
                              "headroom_disk": 2048}
    assert row(text, 1)["free_disk"] == str(51200 - 2048) and row(text, 3)["region"] == "eu"


def test_invalid_values_show_field_messages_and_store_nothing(app):
    client = login(app)
    bad = client.post(f"{PAGE}/1", data={"node1-region": "", "node1-enabled": "y",
                                         "node1-headroom_memory": "-1", "node1-headroom_disk": "10"})
    assert bad.status_code == 200
    errors = field_errors(bad.get_data(as_text=True))
    assert "region code" in errors.get("node1-region", "")
    assert ">= 0" in errors.get("node1-headroom_memory", "")
    assert "node1-headroom_disk" not in errors
    assert 'value="-1"' in bad.get_data(as_text=True)           # the operator's input is kept
    not_int = client.post(f"{PAGE}/1", data={"node1-region": "eu", "node1-headroom_disk": "lots"})
    assert "node1-headroom_disk" in field_errors(not_int.get_data(as_text=True))
    new_bad = client.post(f"{PAGE}/3", data={"node3-region": "Not A Region"})
    assert "node3-region" in field_errors(new_bad.get_data(as_text=True))
    assert stored(app) == [NODE1]


def test_unknown_node_and_removal(app):
    client = login(app)
    unknown = client.post(f"{PAGE}/99", data={"node99-region": "eu"}, follow_redirects=True)
    assert "Pterodactyl has no node 99" in unknown.get_data(as_text=True)
    assert stored(app) == [NODE1]
    removed = client.post(f"{PAGE}/1/remove", follow_redirects=True)
    assert "Node 1 removed" in removed.get_data(as_text=True)
    assert stored(app) == []
    again = client.post(f"{PAGE}/1/remove", follow_redirects=True)
    assert "Node 1 is not configured" in again.get_data(as_text=True)


def test_customers_get_404_and_anonymous_users_must_log_in(app):
    client = login(app, "alice@example.com")
    assert client.get(PAGE).status_code == 404
    assert client.post(f"{PAGE}/1", data={"node1-region": "eu"}).status_code == 404
    assert client.post(f"{PAGE}/1/remove").status_code == 404
    anonymous = app.test_client().get(PAGE)
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    assert stored(app) == [NODE1]


def test_unreachable_panel_shows_the_error_and_the_stored_config(app, standin):
    standin.stop()
    client = login(app)
    page = client.get(PAGE)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert 'id="live-error"' in text and "Could not read the nodes from Pterodactyl" in text
    node1 = row(text, 1)
    assert node1["region"] == "us-east" and node1["headroom_memory"] == "1024" and node1["enabled"] == "enabled"
    assert 'action="/admin/pterodactyl/nodes/1"' in text
    # an existing node can still be edited while the panel is down
    saved = client.post(f"{PAGE}/1", data={"node1-region": "us-east", "node1-enabled": "y",
                                           "node1-headroom_memory": "4096"})
    assert saved.status_code == 302
    assert stored(app)[0]["headroom_memory"] == 4096


def test_unconfigured_plugin_shows_the_error(make_app):
    app = make_app(configure=False)
    page = login(app).get(PAGE)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert 'id="live-error"' in text and "not configured" in text and "panel_url" in text
    assert row(text, 1)["region"] == "us-east"


def test_nodes_from_the_environment_cannot_be_changed_here(make_app, monkeypatch):
    monkeypatch.setenv("PANEL_PLUGIN_PTERODACTYL_NODES", '[{"id": 2, "region": "env"}]')
    app = make_app()
    client = login(app)
    text = client.get(PAGE).get_data(as_text=True)
    assert 'id="env-warning"' in text and row(text, 2)["region"] == "env"
    refused = client.post(f"{PAGE}/2", data={"node2-region": "eu"}, follow_redirects=True)
    assert "PANEL_PLUGIN_PTERODACTYL_NODES" in refused.get_data(as_text=True)
    from panel.extensions import db
    from panel.models import PluginSetting

    with app.app_context():
        row_value = db.session.scalar(db.select(PluginSetting.value).where(PluginSetting.plugin == "pterodactyl",
                                                                           PluginSetting.key == "nodes"))
    assert json.loads(row_value) == [NODE1]   # the database row is untouched


def test_csrf_is_required(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    client = login(app)
    assert client.post(f"{PAGE}/1", data={"node1-region": "eu", "node1-enabled": "y"}).status_code == 400
    assert client.post(f"{PAGE}/1/remove").status_code == 400
    assert stored(app) == [NODE1]
    page = client.get(PAGE).get_data(as_text=True)
    token = _csrf(page, "node1-csrf_token")
    assert token, "the node form carries no CSRF token"
    ok = client.post(f"{PAGE}/1", data={"node1-csrf_token": token, "node1-region": "eu", "node1-enabled": "y",
                                        "node1-headroom_memory": "0", "node1-headroom_disk": "0"})
    assert ok.status_code == 302
    assert stored(app)[0]["region"] == "eu"
    remove_token = _csrf(page, "csrf_token")
    assert client.post(f"{PAGE}/1/remove", data={"csrf_token": remove_token}).status_code == 302
    assert stored(app) == []


def test_the_core_plugins_page_links_to_the_nodes_page(app):
    html = login(app).get("/admin/plugins").get_data(as_text=True)
    assert 'href="/admin/pterodactyl/nodes"' in html
