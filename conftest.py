"""Repository-wide pytest hooks (tests/ and every plugin's tests).

Under ``CI=true`` a skipped test is a failure: a skip there means a component the suite needs is
missing (a Docker Engine, a binary, a package), and a green run would hide it. A test that is an
opt-in run against something CI does not have (e.g. a real Kubernetes cluster) carries
``@pytest.mark.optional`` and may skip. Collection skips (``pytest.skip(allow_module_level=True)``,
a module-level ``importorskip``) fail too. Expected failures (``xfail``) are left alone.
"""
from __future__ import annotations

import pytest

from panel.testing import in_ci

HINT = ("CI=true: a skip is a failure here (a component the suite needs is missing); mark an opt-in "
        "test @pytest.mark.optional")


def _reason(longrepr) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (in_ci() and report.skipped and not hasattr(report, "wasxfail")
            and item.get_closest_marker("optional") is None):
        report.outcome = "failed"
        report.longrepr = f"skipped: {_reason(report.longrepr)}\n{HINT}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"{collector.nodeid} skipped at collection: {_reason(report.longrepr)}\n{HINT}"
