"""The core's backend contract suite, run against the Pterodactyl stand-in over real HTTP."""
import pytest

from panel.testing import BackendContract
from panel_pterodactyl.standin import StandinRemote


class TestPterodactylContract(BackendContract):
    spec_options = {"game": "minecraft", "memory": 512, "disk": 1024, "region": "us-east"}
    spec_params = {"server_name": "contract server"}
    changed_options = {"game": "minecraft", "memory": 1024, "disk": 2048, "region": "us-east"}

    @pytest.fixture
    def backend(self, ptero):
        return ptero

    @pytest.fixture
    def unreachable_backend(self, ptero_unreachable):
        return ptero_unreachable

    @pytest.fixture
    def rejecting_backend(self, ptero_rejecting):
        return ptero_rejecting

    @pytest.fixture
    def remote(self, standin):
        return StandinRemote(standin)
