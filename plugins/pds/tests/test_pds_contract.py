"""The core's backend contract suite, run against the real stand-in over real HTTP."""
from __future__ import annotations

import pytest

from pds_testlib import TOKEN, make_backend
from panel.backends import ServiceSpec
from panel.testing import BackendContract, free_port


class StandInRemoteView:
    """The contract's view of the remote side: stand-in services with the hostname the backend
    derives for a spec (the deploy API has no external id, hostname is the key)."""

    def __init__(self, standin, backend):
        self.standin, self.backend = standin, backend

    def _matching(self, spec: ServiceSpec) -> list[dict]:
        hostname = self.backend.target(spec).hostname
        return [s for s in self.standin.services() if s["hostname"] == hostname]

    def count(self, spec: ServiceSpec) -> int:
        return len(self._matching(spec))

    def state(self, spec: ServiceSpec) -> str:
        found = self._matching(spec)
        if not found:
            return "absent"
        return {"running": "active", "suspended": "suspended"}[found[0]["state"]]


class TestPdsContract(BackendContract):
    @pytest.fixture
    def backend(self, standin):
        return make_backend(standin.url)

    @pytest.fixture
    def unreachable_backend(self):
        return make_backend(f"http://127.0.0.1:{free_port()}")

    @pytest.fixture
    def rejecting_backend(self, standin):
        return make_backend(standin.url, token="wrong-" + TOKEN[::-1])

    @pytest.fixture
    def remote(self, standin, backend):
        return StandInRemoteView(standin, backend)
