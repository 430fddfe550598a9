"""Fixtures for the pds plugin's tests: one real loopback stand-in per session, reset per test."""
from __future__ import annotations

import pytest

from panel.testing import free_port
from panel_pds.standin import PdsStandIn
from pds_testlib import TOKEN, make_backend


@pytest.fixture(scope="session")
def _pds_standin_session():
    standin = PdsStandIn(token=TOKEN).start()
    yield standin
    standin.stop()


@pytest.fixture
def standin(_pds_standin_session):
    """The running stand-in with no services, deploys or faults."""
    _pds_standin_session.reset()
    yield _pds_standin_session
    _pds_standin_session.reset()


@pytest.fixture
def pds(standin):
    """A PdsBackend talking to the stand-in."""
    return make_backend(standin.url)


@pytest.fixture
def unreachable_pds():
    return make_backend(f"http://127.0.0.1:{free_port()}")
