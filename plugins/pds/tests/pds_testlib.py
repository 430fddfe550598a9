"""Shared helpers of the pds plugin's tests (a uniquely named module, unlike ``conftest``)."""
from __future__ import annotations

import time

from panel.backends import Secret
from panel_pds.backend import PdsBackend

TOKEN = "pds-test-token-8f3a2c"


def make_backend(url: str, token: str = TOKEN, **settings) -> PdsBackend:
    """A PdsBackend pointed at ``url`` with short timeouts."""
    return PdsBackend({"api_url": url, "api_token": Secret(token), "timeout_seconds": 3, **settings})


def wait_for(predicate, timeout: float = 3.0) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds (for answers that arrive late)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
