"""Egg-variable rules and the nodes/games settings, checked without a network."""
import pytest

from panel.backends import ValidationError
from panel_pterodactyl.backend import validate_games
from panel_pterodactyl.eggs import build_environment, check_rules, split_rules
from panel_pterodactyl.nodes import merge, validate_nodes


def test_regex_with_a_pipe_stays_one_rule():
    assert split_rules(r"required|regex:/^(paper|spigot)\.jar$/|max:20") == [
        "required", r"regex:/^(paper|spigot)\.jar$/", "max:20"]
    assert check_rules("paper.jar", r"required|regex:/^(paper|spigot)\.jar$/") is None
    assert "regex" in check_rules("vanilla.jar", r"required|regex:/^(paper|spigot)\.jar$/")


@pytest.mark.parametrize("value,rules,ok", [
    ("", "required|string", False),
    ("", "nullable|string|max:3", True),
    ("abcd", "string|max:3", False),
    ("25565", "required|integer|between:1024,65535", True),
    ("80", "required|integer|between:1024,65535", False),
    ("12a", "required|numeric", False),
    ("1", "required|boolean", True),
    ("maybe", "required|boolean", False),
    ("survival", "required|in:survival,creative,adventure", True),
    ("hardcore", "required|in:survival,creative,adventure", False),
    ("my-world_1", "required|alpha_dash", True),
    ("my world", "required|alpha_dash", False),
    ("HELLO", r"regex:/^hello$/i", True),
    ("x", "required|some_unknown_rule", True),
])
def test_rules(value, rules, ok):
    assert (check_rules(value, rules) is None) is ok


def test_build_environment_names_each_bad_variable():
    egg = {"id": 5, "relationships": {"variables": {"data": [
        {"attributes": {"env_variable": "A", "default_value": "1", "rules": "required|integer"}},
        {"attributes": {"env_variable": "B", "default_value": None, "rules": "nullable|string"}},
    ]}}}
    env, errors = build_environment(egg, {"A": 7})
    assert env == {"A": "7", "B": ""} and errors == {}
    env, errors = build_environment(egg, {"A": "x", "C": "1"})
    assert set(errors) == {"environment.A", "environment.C"}


def test_validate_nodes_names_each_bad_entry():
    assert validate_nodes('[{"id": 2, "region": "eu"}]') == [
        {"id": 2, "region": "eu", "enabled": True, "headroom_memory": 0, "headroom_disk": 0}]
    with pytest.raises(ValidationError) as info:
        validate_nodes([{"id": 1, "region": "eu"}, {"id": 1, "region": "EU!", "enabled": "yes",
                                                     "headroom_disk": -1, "colour": "red"}, 3])
    assert set(info.value.errors) == {"nodes[1].id", "nodes[1].region", "nodes[1].enabled",
                                      "nodes[1].headroom_disk", "nodes[1].colour", "nodes[2]"}


def test_validate_games():
    assert validate_games('{"rust": {"nest": 2, "egg": 50}}') == {"rust": {"nest": 2, "egg": 50}}
    with pytest.raises(ValidationError) as info:
        validate_games({"rust": {"nest": 2, "egg": "50"}})
    assert list(info.value.errors) == ["games.rust.egg"]


def test_free_room_follows_pterodactyl_overallocation():
    node = merge({"id": 1, "name": "n", "memory": 1000, "memory_overallocate": 20, "disk": 1000,
                  "disk_overallocate": -1, "allocated_resources": {"memory": 700, "disk": 500}},
                 {"region": "eu", "enabled": True, "headroom_memory": 100, "headroom_disk": 0})
    assert node.free_memory == 1200 - 700 - 100
    assert node.free_disk == 990 - 500  # -1 is not "unlimited" in FindViableNodesService's arithmetic
    assert node.fits(400, 490) and not node.fits(401, 10) and not node.fits(10, 491)
