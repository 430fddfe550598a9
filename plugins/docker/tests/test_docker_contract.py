"""The core's backend contract suite, run against a real Docker Engine and a real PostgreSQL."""
from __future__ import annotations

import pytest

from docker_backend_testkit import new_space
from panel.testing import BackendContract, free_port, make_spec


class DockerRemoteView:
    """The remote side as the suite sees it: containers labelled ``panel.service=<external id>``."""

    def __init__(self, client):
        self.client = client

    def _containers(self, spec):
        return self.client.containers.list(all=True, filters={"label": f"panel.service={spec.external_id}"})

    def count(self, spec) -> int:
        return len(self._containers(spec))

    def state(self, spec) -> str:
        found = self._containers(spec)
        if not found:
            return "absent"
        return "active" if found[0].status == "running" else "suspended"


class TestDockerContract(BackendContract):
    spec_options = {"memory_mib": 128, "cpus": 0.5}
    changed_options = {"memory_mib": 192, "cpus": 0.75}

    def new_spec(self, backend):
        # Each service needs its own space (the suite's spec_params would be shared by all specs).
        return make_spec(backend, options=dict(self.spec_options), params={"space": new_space("c")})

    @pytest.fixture
    def backend(self, make_backend):
        return make_backend()

    @pytest.fixture
    def unreachable_backend(self, make_backend):
        # Nothing listens on this loopback port: the engine is unreachable.
        return make_backend(docker_url=f"tcp://127.0.0.1:{free_port()}", api_timeout_seconds=5)

    @pytest.fixture
    def rejecting_backend(self, make_backend, norights_url):
        # PostgreSQL accepts the login but the role may not create roles or databases.
        return make_backend(postgres_url=norights_url)

    @pytest.fixture
    def remote(self, docker_client):
        return DockerRemoteView(docker_client)
