"""Fixtures for the Pterodactyl plugin tests: a loopback stand-in and backends pointed at it."""
from __future__ import annotations

import pytest

from panel.testing import free_port
from panel_pterodactyl import PterodactylBackend
from panel_pterodactyl.standin import ADMIN_KEY, PterodactylStandin

JARFILE_RULES = r"required|regex:/^([\w\d._-]+)(\.jar)$/"

#: A plan that fits node-a (us-east) of the default stand-in.
PLAN = {"game": "minecraft", "memory": 1024, "disk": 4096, "cpu": 100, "region": "us-east"}


def seed(standin: PterodactylStandin) -> None:
    """Two nodes in us-east (a: 8 GiB, b: in maintenance), one in eu; the Minecraft egg 1/39."""
    standin.add_node("node-a", memory=8192, disk=51200, allocations=10)           # id 1
    standin.add_node("node-b", memory=65536, disk=512000, maintenance=True)        # id 2
    standin.add_node("node-eu", memory=4096, disk=20480, ip="10.0.1.1")           # id 3
    standin.add_egg(1, 39, variables=[
        {"env_variable": "SERVER_JARFILE", "default_value": "server.jar", "rules": JARFILE_RULES},
        {"env_variable": "BUILD_NUMBER", "default_value": "latest", "rules": "required|string|max:20"},
        {"env_variable": "MINECRAFT_VERSION", "default_value": "", "rules": "nullable|string|max:20"},
    ])


NODES = [{"id": 1, "region": "us-east", "enabled": True, "headroom_memory": 1024, "headroom_disk": 1024},
         {"id": 2, "region": "us-east", "enabled": True},
         {"id": 3, "region": "eu", "enabled": True}]
GAMES = {"minecraft": {"nest": 1, "egg": 39}, "rust": {"nest": 2, "egg": 50}}


def settings_for(standin: PterodactylStandin, **overrides) -> dict:
    """Backend settings pointing at ``standin`` (plain strings: the backend wraps secrets)."""
    base = {"panel_url": standin.url, "application_api_key": ADMIN_KEY, "nodes": NODES, "games": GAMES,
            "timeout": 5}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
def standin():
    with PterodactylStandin() as server:
        seed(server)
        yield server


@pytest.fixture
def make_backend(standin):
    """``make_backend(**setting_overrides)`` -> a PterodactylBackend talking to the stand-in."""
    def make(**overrides) -> PterodactylBackend:
        return PterodactylBackend(settings_for(standin, **overrides))
    return make


@pytest.fixture
def ptero(make_backend):
    """The default backend: admin application key, no client key."""
    return make_backend()


@pytest.fixture
def ptero_unreachable():
    return PterodactylBackend({"panel_url": f"http://127.0.0.1:{free_port()}", "application_api_key": ADMIN_KEY,
                               "nodes": NODES, "games": GAMES, "timeout": 2})


@pytest.fixture
def ptero_rejecting(standin):
    return PterodactylBackend(settings_for(standin, application_api_key="ptla_wrongWRONGwrong000000000000000000000"))


@pytest.fixture
def plan() -> dict:
    """Plan options that fit node-a (us-east) of the stand-in."""
    return dict(PLAN)
