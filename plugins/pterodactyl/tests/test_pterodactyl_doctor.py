"""The Pterodactyl backend's ``panel doctor`` checks against the stand-in (seed 001's verification
queries): a node without a region, a configured node Pterodactyl does not have, a service on a
node that is gone, an egg of the games table that does not exist, a node without a free allocation;
and the same problems through the core's ``panel doctor`` command."""
from __future__ import annotations

import dataclasses
import os

from panel.testing import make_spec
from panel_pterodactyl import doctor
from panel_pterodactyl.standin import ADMIN_KEY

GAMES = {"minecraft": {"nest": 1, "egg": 39}, "rust": {"nest": 2, "egg": 50}}
NODES = [{"id": 1, "region": "us-east", "enabled": True, "headroom_memory": 1024, "headroom_disk": 1024},
         {"id": 2, "region": "us-east", "enabled": True},
         {"id": 3, "region": "eu", "enabled": True}]


def test_nodes_without_a_region_unknown_nodes_and_services_on_gone_nodes(standin, make_backend, plan):
    standin.add_node("node-new", memory=4096, disk=20480)  # id 4: not in the nodes setting
    ptero = make_backend(nodes=NODES + [{"id": 9, "region": "eu", "enabled": True}])
    spec = dataclasses.replace(make_spec(ptero, options=plan, params={"server_name": "x"}),
                               backend_data={"node_id": 7})
    problems = {p.message: p for p in doctor.check_nodes(ptero, [spec])}
    new = problems["node 4 (node-new) has no region in the panel, so no server is ever placed on it"]
    assert new.severity == "warning" and new.fix.startswith("panel pterodactyl node-set 4 --region")
    gone = problems["the nodes setting lists node 9 (eu), which Pterodactyl does not have"]
    assert gone.severity == "error" and gone.fix.startswith("panel pterodactyl node-remove 9")
    moved = problems[f"service {spec.service_id} ({spec.external_id}) is recorded on node 7, which Pterodactyl "
                     "no longer has"]
    assert "panel reconcile pterodactyl" in moved.fix
    standin.nodes.pop(4)
    assert doctor.check_nodes(make_backend(), []) == [], "every node configured, every configured node there"


def test_an_egg_of_the_games_table_that_does_not_exist(make_backend):
    ptero = make_backend(games={"minecraft": {"nest": 1, "egg": 39}, "rust": {"nest": 2, "egg": 50}})
    [problem] = doctor.check_eggs(ptero, [])
    assert problem.message == "the games setting maps rust to egg 50 of nest 2, which does not exist"
    assert "correct the games setting" in problem.fix
    assert doctor.check_eggs(make_backend(games={"minecraft": {"nest": 1, "egg": 39}}), []) == []


def test_an_enabled_node_without_a_free_allocation(standin, make_backend):
    standin.add_node("node-full", memory=8192, disk=51200, allocations=3, assigned=3)  # id 4
    ptero = make_backend(nodes=NODES + [{"id": 4, "region": "us-east", "enabled": True}])
    [problem] = doctor.check_allocations(ptero, [])
    assert problem.message == "node 4 (node-full, us-east) has no free allocation: no new server fits there"
    assert "add allocations (ports) to node 4" in problem.fix
    disabled = make_backend(nodes=NODES + [{"id": 4, "region": "us-east", "enabled": False}])
    assert doctor.check_allocations(disabled, []) == [], "a disabled node sells nothing"


def test_panel_doctor_runs_the_pterodactyl_checks(tmp_path, monkeypatch, standin):
    from flask_migrate import stamp

    from panel.cli import cli
    from panel.extensions import db
    from panel.plugins import set_setting
    from panel.testing import plugin_app

    for key in list(os.environ):
        if key.startswith("PANEL_"):
            monkeypatch.delenv(key)
    app = plugin_app(tmp_path / "panel.db", "pterodactyl", {"panel_url": standin.url, "application_api_key": ADMIN_KEY,
                                                            "timeout": 5, "nodes": NODES[:1], "games": GAMES})
    with app.app_context():
        stamp()
        result = app.test_cli_runner().invoke(cli, ["doctor"])
        assert "! pterodactyl nodes: node 2 (node-b) has no region in the panel" in result.output, result.output
        assert "✗ pterodactyl eggs: the games setting maps rust to egg 50 of nest 2" in result.output
        assert "✓ pterodactyl allocations: ok" in result.output
        assert "✓ plugins: in use: pterodactyl" in result.output
        assert result.exit_code == 1
        set_setting("pterodactyl", "application_api_key", "ptla_wrongWRONGwrong000000000000000000000")
        refused = app.test_cli_runner().invoke(cli, ["doctor"])
        assert "✗ plugins: pterodactyl: the connection test failed:" in refused.output
        assert "✗ pterodactyl nodes: the check could not run:" in refused.output
        db.session.remove()
        db.engine.dispose()
