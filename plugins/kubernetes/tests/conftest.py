"""Fixtures for the kubernetes plugin's tests: one loopback stand-in API server per session, reset per test."""
from __future__ import annotations

import pytest

from k8s_testlib import TOKEN, make_backend
from panel.testing import free_port
from panel_kubernetes.standin import KubeStandIn


@pytest.fixture(scope="session")
def _kube_standin_session():
    standin = KubeStandIn(token=TOKEN).start()
    yield standin
    standin.stop()


@pytest.fixture
def standin(_kube_standin_session):
    """The running stand-in with no objects, faults or operator settings."""
    _kube_standin_session.reset()
    yield _kube_standin_session
    _kube_standin_session.reset()


@pytest.fixture
def kube(standin):
    """A KubernetesBackend talking to the stand-in (prefix ``hp-``, namespace ``tenants``)."""
    return make_backend(standin.url)


@pytest.fixture
def unreachable_kube():
    """A KubernetesBackend pointed at a loopback port where nothing listens."""
    return make_backend(f"http://127.0.0.1:{free_port()}")
