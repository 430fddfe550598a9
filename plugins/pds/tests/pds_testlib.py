"""Shared helpers of the pds plugin's tests (a uniquely named module, unlike ``conftest``)."""
from __future__ import annotations


from panel.backends import Secret
from panel.testing import wait_for  # noqa: F401  (re-exported for the tests)
from panel_pds.backend import PdsBackend

TOKEN = "pds-test-token-8f3a2c"


def make_backend(url: str, token: str = TOKEN, **settings) -> PdsBackend:
    """A PdsBackend pointed at ``url`` with short timeouts."""
    return PdsBackend({"api_url": url, "api_token": Secret(token), "timeout_seconds": 3, **settings})

