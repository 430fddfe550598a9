"""The core's backend contract suite, run against the stand-in API server over real HTTP with the real
``kubernetes`` client; and, only when KUBECONFIG is set, against a real cluster."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from k8s_testlib import TOKEN, make_backend, ours
from panel.backends import Secret, ServiceSpec
from panel.testing import BackendContract, free_port
from panel_kubernetes.backend import SERVICE_LABEL, KubernetesBackend, label_value_for


class StandInRemoteView:
    """The contract's view of the remote side: stand-in objects carrying the spec's external id label."""

    def __init__(self, standin):
        self.standin = standin

    def count(self, spec: ServiceSpec) -> int:
        """Stand-in objects labelled with the spec's external id."""
        return len(ours(self.standin, spec))

    def state(self, spec: ServiceSpec) -> str:
        """absent, suspended (spec.suspend) or active."""
        found = ours(self.standin, spec)
        if not found:
            return "absent"
        return "suspended" if found[0]["spec"].get("suspend") else "active"


class TestKubernetesContract(BackendContract):
    """The contract suite against the stand-in over real HTTP."""

    spec_options = {"packages": ["searxng-local-search"], "cpu": 1, "memory_mib": 1024, "storage_gib": 5}
    changed_options = {"packages": ["searxng-local-search", "tts"], "cpu": 2, "memory_mib": 2048, "storage_gib": 5}

    @pytest.fixture
    def backend(self, standin):
        """A backend configured for the stand-in."""
        return make_backend(standin.url)

    @pytest.fixture
    def unreachable_backend(self):
        """A backend pointed where nothing listens."""
        return make_backend(f"http://127.0.0.1:{free_port()}")

    @pytest.fixture
    def rejecting_backend(self, standin):
        """A backend whose token the stand-in refuses."""
        return make_backend(standin.url, token="wrong-" + TOKEN[::-1])

    @pytest.fixture
    def remote(self, standin):
        """The contract's view of the stand-in."""
        return StandInRemoteView(standin)


# --------------------------------------------------------------------------- a real cluster

REAL = os.environ.get("KUBECONFIG")
_real_reason = ("set KUBECONFIG (and HOSTPANEL_K8S_GROUP/VERSION/PLURAL/KIND/NAMESPACE for a CRD whose operator "
                "sets status.conditions Ready) to run the contract against a real cluster")


def _real_settings(**extra) -> dict:
    path = Path(REAL.split(os.pathsep)[0]).expanduser()
    settings = {
        "kubeconfig": Secret(path.read_text()),
        "group": os.environ.get("HOSTPANEL_K8S_GROUP", "hostpanel.dev"),
        "version": os.environ.get("HOSTPANEL_K8S_VERSION", "v1"),
        "plural": os.environ.get("HOSTPANEL_K8S_PLURAL", "tenants"),
        "kind": os.environ.get("HOSTPANEL_K8S_KIND", "Tenant"),
        "namespace": os.environ.get("HOSTPANEL_K8S_NAMESPACE", "tenants"),
        "ready_timeout_seconds": int(os.environ.get("HOSTPANEL_K8S_READY_TIMEOUT", "120")),
    }
    settings.update(extra)
    return settings


class RealClusterRemoteView:
    """Counts custom resources with our label through the backend's own client."""

    def __init__(self, backend: KubernetesBackend):
        self.backend = backend

    def _found(self, spec):
        return self.backend._list(f"{SERVICE_LABEL}={label_value_for(spec.external_id)}")

    def count(self, spec):
        """Our labelled objects that are not being deleted."""
        return len([o for o in self._found(spec) if not o["metadata"].get("deletionTimestamp")])

    def state(self, spec):
        """absent, suspended (spec.suspend) or active."""
        found = [o for o in self._found(spec) if not o["metadata"].get("deletionTimestamp")]
        if not found:
            return "absent"
        return "suspended" if (found[0].get("spec") or {}).get("suspend") else "active"


@pytest.mark.skipif(not REAL, reason=_real_reason)
@pytest.mark.optional  # CI has no real cluster: this skip is allowed under CI=true
@pytest.mark.slow
class TestKubernetesRealClusterContract(BackendContract):
    """The contract suite against the cluster KUBECONFIG names."""

    @pytest.fixture
    def backend(self):
        """A backend configured from KUBECONFIG and the HOSTPANEL_K8S_* variables."""
        return KubernetesBackend(_real_settings())

    @pytest.fixture
    def unreachable_backend(self):
        """A backend pointed where nothing listens."""
        return KubernetesBackend(_real_settings(api_url=f"http://127.0.0.1:{free_port()}", kubeconfig=Secret("")))

    @pytest.fixture
    def rejecting_backend(self, backend):
        """The same API server with a token it refuses."""
        backend._custom_api()
        host = backend._api_client.configuration.host
        return KubernetesBackend(_real_settings(api_url=host, kubeconfig=Secret(""), verify_tls=False,
                                                token=Secret("not-a-valid-token-" + "x" * 20)))

    @pytest.fixture
    def remote(self, backend):
        """Lists our objects through the backend's own client."""
        return RealClusterRemoteView(backend)
