"""``panel pterodactyl nodes|node-set|node-remove`` through the core's real plugin settings.

Builds a real panel app (SQLite in a temp dir, only this plugin loaded), adds the plugin's commands
through its ``register_commands`` hook, and runs them with Flask's CLI runner, so
``panel.plugins.get_backend`` / ``set_setting`` are the core's own.
"""
from __future__ import annotations

import json

import click
import pytest

from panel_pterodactyl.standin import ADMIN_KEY



@pytest.fixture
def panel_app(tmp_path, standin):
    from panel import create_app
    from panel.extensions import db
    from panel.plugins import set_setting

    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path}/panel.db",
                      "PLUGINS": ["pterodactyl"], "PLUGIN_ENV": {}})
    with app.app_context():
        db.create_all()
        set_setting("pterodactyl", "panel_url", standin.url)
        set_setting("pterodactyl", "application_api_key", ADMIN_KEY)
        set_setting("pterodactyl", "nodes", [{"id": 1, "region": "us-east", "enabled": True,
                                              "headroom_memory": 1024, "headroom_disk": 0}])
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def run(panel_app):
    group = click.Group("panel")
    panel_app.extensions["panel"].pm.hook.register_commands(cli=group)
    assert "pterodactyl" in group.commands, "register_commands did not add the pterodactyl group"
    runner = panel_app.test_cli_runner()

    def invoke(*args):
        return runner.invoke(group, ["pterodactyl", *args])
    return invoke


def stored_nodes(app):
    from panel.plugins import get_backend

    with app.app_context():
        return get_backend("pterodactyl").node_config


def test_nodes_lists_live_nodes_with_free_room(run, standin):
    standin.add_server(None, 1, memory=2048, disk=1000)
    result = run("nodes", "--json")
    assert result.exit_code == 0, result.output
    nodes = {n["id"]: n for n in json.loads(result.output)["nodes"]}
    assert set(nodes) == {1, 2, 3}
    assert nodes[1]["free_memory"] == 8192 - 2048 - 1024
    assert nodes[1]["free_disk"] == 51200 - 1000
    assert nodes[2]["configured"] is False
    assert nodes[1]["location"] == "test" and nodes[1]["memory_overallocate"] == 0
    table = run("nodes")
    assert table.exit_code == 0 and "node-a" in table.output and "unconfigured" in table.output


def test_node_set_adds_and_changes_nodes(run, panel_app):
    result = run("node-set", "3", "--region", "eu", "--headroom-memory", "512")
    assert result.exit_code == 0, result.output
    assert {"id": 3, "region": "eu", "enabled": True, "headroom_memory": 512, "headroom_disk": 0} in stored_nodes(panel_app)
    result = run("node-set", "1", "--disabled", "--headroom-disk", "2048")
    assert result.exit_code == 0, result.output
    node1 = next(n for n in stored_nodes(panel_app) if n["id"] == 1)
    assert node1 == {"id": 1, "region": "us-east", "enabled": False, "headroom_memory": 1024, "headroom_disk": 2048}


def test_node_set_refuses_bad_input(run, panel_app):
    assert run("node-set", "2").exit_code != 0  # new node without --region
    unknown = run("node-set", "99", "--region", "eu")
    assert unknown.exit_code != 0 and "no node 99" in unknown.output
    bad = run("node-set", "2", "--region", "Not A Region")
    assert bad.exit_code != 0 and "region" in bad.output
    assert [n["id"] for n in stored_nodes(panel_app)] == [1]


def test_node_remove(run, panel_app):
    assert run("node-remove", "1").exit_code == 0
    assert stored_nodes(panel_app) == []
    assert run("node-remove", "1").exit_code != 0


def test_plugins_test_uses_test_connection(panel_app):
    from panel.plugins import get_backend

    with panel_app.app_context():
        line = get_backend("pterodactyl").test_connection()
    assert "application key OK" in line and "node-a" in line


def test_plugins_set_rejects_a_bad_nodes_list_when_stored(tmp_path, monkeypatch):
    """The core's set_setting calls Backend.validate_setting, so a bad list never gets stored."""
    import os

    import pytest

    from panel import create_app
    from panel.backends import ValidationError
    from panel.extensions import db
    from panel.plugins import raw_settings, set_setting

    for key in list(os.environ):
        if key.startswith("PANEL_"):
            monkeypatch.delenv(key)
    app = create_app({"TESTING": True, "SECRET_KEY": "x" * 20, "PLUGINS": ["pterodactyl"],
                      "DATABASE_URL": f"sqlite:///{tmp_path}/n.db"})
    with app.app_context():
        db.create_all()
        with pytest.raises(ValidationError) as info:
            set_setting("pterodactyl", "nodes", '[{"id": 1}]')
        assert any(k.startswith("nodes[") and "region" in k for k in info.value.errors), info.value.errors
        assert "nodes" not in raw_settings("pterodactyl")[0] or raw_settings("pterodactyl")[1]["nodes"] == "default"
        set_setting("pterodactyl", "nodes", '[{"id": 1, "region": "eu"}]')
        assert raw_settings("pterodactyl")[0]["nodes"][0]["region"] == "eu"
        db.session.remove()
        db.engine.dispose()
