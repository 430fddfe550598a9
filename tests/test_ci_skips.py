"""Under ``CI=true`` a skip caused by a missing component is a failure (conftest.py at the root and
``panel.testing.missing_component``); without it the same test skips with its reason.

Each check runs a real pytest in a subprocess over a small test file, with the repository's
conftest loaded as a plugin, and reads the outcome from its JUnit XML report.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SAMPLE = '''
import pytest

def test_plain_skip():
    pytest.skip("the frobnicator is not installed")

@pytest.mark.optional
def test_opt_in_skip():
    pytest.skip("set FROB_URL to run against a real frobnicator")

@pytest.mark.xfail(reason="known bug", strict=True)
def test_expected_failure():
    assert False

@pytest.mark.skipif(True, reason="no engine")
def test_skipif():
    pass

def test_redis_missing(redis_server):
    pass

def test_passes():
    assert True
'''

MODULE_SKIP = '''
import pytest

pytest.skip("module needs the frobnicator", allow_module_level=True)

def test_never_runs():
    pass
'''


def run_pytest(tmp_path, files: dict[str, str], *, ci: bool, extra_env: dict | None = None, args=()):
    """Run pytest on ``files`` (name -> source) in ``tmp_path``; returns (exit code, {test: outcome})."""
    for name, source in files.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = os.path.dirname(sys.executable)  # no redis-server, postgres or docker on it
    if ci:
        env["CI"] = "true"
    env.update(extra_env or {})
    report = tmp_path / "report.xml"
    plugin = ["-p", "conftest"] if files else []  # the repository's conftest.py, for files outside it
    proc = subprocess.run([sys.executable, "-m", "pytest", *plugin, "-p", "no:randomly",
                           "-p", "no:cacheprovider", f"--junitxml={report}", "-q", *args, *files],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name") or case.get("classname")] = kinds[0] if kinds else "passed"
    return proc.returncode, outcomes, proc.stdout + proc.stderr


def test_under_ci_a_skip_fails_unless_the_test_is_opt_in(tmp_path):
    code, outcomes, output = run_pytest(tmp_path, {"test_sample.py": SAMPLE}, ci=True)
    assert code == 1, output
    assert outcomes["test_plain_skip"] == "failure"
    assert outcomes["test_skipif"] == "error"  # a skip marker acts at setup: JUnit calls it an error
    assert outcomes["test_redis_missing"] in ("failure", "error")
    assert "redis-server is not installed" in output and "CI=true" in output
    assert outcomes["test_opt_in_skip"] == "skipped"
    assert outcomes["test_expected_failure"] == "skipped"  # JUnit reports an xfail as skipped
    assert outcomes["test_passes"] == "passed"


def test_without_ci_the_same_tests_skip_and_the_run_is_green(tmp_path):
    code, outcomes, output = run_pytest(tmp_path, {"test_sample.py": SAMPLE}, ci=False)
    assert code == 0, output
    assert outcomes["test_plain_skip"] == outcomes["test_skipif"] == outcomes["test_redis_missing"] == "skipped"
    assert outcomes["test_passes"] == "passed"


def test_under_ci_a_module_level_skip_fails(tmp_path):
    code, _, output = run_pytest(tmp_path, {"test_module_skip.py": MODULE_SKIP}, ci=True)
    assert code != 0 and "skipped at collection" in output, output
    code, _, output = run_pytest(tmp_path, {"test_module_skip.py": MODULE_SKIP}, ci=False)
    assert code == 5 and "1 skipped" in output, output  # 5: pytest ran no test, and said why


@pytest.mark.parametrize("ci", [True, False], ids=["CI=true", "no CI"])
def test_docker_tests_with_no_engine_fail_under_ci_and_skip_otherwise(tmp_path, ci):
    """The Docker backend's tests pointed at a socket where no engine listens (the machine's shared
    dockerd is left alone)."""
    target = os.path.join(ROOT, "plugins", "docker", "tests", "test_docker_backend.py")
    code, outcomes, output = run_pytest(
        tmp_path, {}, ci=ci, extra_env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock", "PATH": os.environ["PATH"]},
        args=[f"{target}::test_health_timeout_is_permanent", f"--rootdir={ROOT}"])
    assert "no Docker Engine reachable" in output, output
    if ci:
        assert code == 1 and list(outcomes.values()) in (["failure"], ["error"]), output
    else:
        assert code == 0 and list(outcomes.values()) == ["skipped"], output
