"""The plugin author kit: ``panel plugins new`` scaffolds a distribution that installs out of tree and
whose generated tests (and hostpanel's contract suite) run against its loopback stand-in."""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from panel.testing import BackendContract

BIN = Path(sys.executable).parent
CONTRACT_TESTS = sorted(name for name in dir(BackendContract) if name.startswith("test_"))


def scaffold(tmp_path: Path, name: str, *extra: str) -> Path:
    """Run the real ``panel plugins new`` console script; returns the project folder."""
    dest = tmp_path / f"hostpanel-{name}"
    done = subprocess.run([str(BIN / "panel"), "plugins", "new", name, "--dest", str(dest), *extra],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if not k.startswith("PANEL_")})
    assert done.returncode == 0, done.stderr
    assert f"created {dest}" in done.stdout
    return dest


def install_out_of_tree(project: Path, target: Path) -> None:
    """``pip install --target``: the plugin lands in ``target`` (used through PYTHONPATH), never in
    the shared test virtualenv."""
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                           "--target", str(target), str(project)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def run_pytest(project: Path, target: Path, junit: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the project's tests with the installed copy first on the path; returns the process and
    ``{test id: (outcome, message)}`` from the JUnit XML report."""
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run([str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           f"--junitxml={junit}", "tests"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=900)
    results = {}
    for case in ET.parse(junit).iter("testcase"):
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        outcome = "failed" if problem is not None else "skipped" if skipped is not None else "passed"
        message = (problem.get("message", "") + (problem.text or "")) if problem is not None else ""
        results[f"{case.get('classname')}::{case.get('name')}"] = (outcome, message)
    return done, results


@pytest.mark.slow
def test_a_scaffolded_plugin_installs_out_of_tree_and_runs_its_tests(tmp_path):
    project = scaffold(tmp_path, "acme", "--label", "Acme sites")
    for path in ("pyproject.toml", "README.md", "panel_acme/__init__.py", "panel_acme/backend.py",
                 "panel_acme/standin.py", "tests/conftest.py", "tests/test_acme_backend.py",
                 "tests/test_acme_stubs.py", "tests/test_acme_contract.py"):
        assert (project / path).is_file(), path
    pyproject = (project / "pyproject.toml").read_text()
    assert '[project.entry-points.panel]\nacme = "panel_acme"' in pyproject
    assert 'name = "hostpanel-acme"' in pyproject
    backend = (project / "panel_acme/backend.py").read_text()
    assert "class AcmeBackend(Backend):" in backend and 'label = "Acme sites"' in backend

    target = tmp_path / "site"
    install_out_of_tree(project, target)
    assert (target / "panel_acme" / "backend.py").is_file()
    where = subprocess.run([sys.executable, "-c", "import panel_acme; print(panel_acme.__file__)"], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr
    # nothing was installed into the shared virtualenv
    assert subprocess.run([sys.executable, "-c", "import panel_acme"], cwd=tmp_path, capture_output=True,
                          timeout=60).returncode != 0

    done, results = run_pytest(project, target, tmp_path / "junit.xml")
    generated = {k: v for k, v in results.items() if "test_acme_contract" not in k}
    contract = {k.rsplit("::", 1)[1]: v for k, v in results.items() if "test_acme_contract" in k}
    # the generated tests pass: entry point, schemas, settings, the stand-in, and every method a stub
    assert generated and all(outcome == "passed" for outcome, _ in generated.values()), done.stdout[-4000:]
    assert any("test_the_entry_point_registers_the_backend" in k for k in generated)
    assert sum("test_each_operation_is_a_stub" in k for k in generated) == 6
    # the whole contract suite is collected and runs: against stubs, each test that needs a method
    # fails on its NotSupportedError, never on a fixture, an import or the stand-in
    assert sorted(contract) == CONTRACT_TESTS, done.stdout[-4000:]
    failed = {name: message for name, (outcome, message) in contract.items() if outcome == "failed"}
    assert "test_provision_is_idempotent" in failed and "test_rejected_credentials_are_permanent" in failed
    for name, message in failed.items():
        assert "is not implemented yet" in message or "NotSupportedError" in message, (name, message[-2000:])
    passed = {name for name, (outcome, _) in contract.items() if outcome == "passed"}
    assert {"test_backend_declares_itself", "test_unknown_order_params_are_field_errors"} <= passed
    assert done.returncode == 1  # pytest: some tests failed (the to-do list), none errored


def test_plugins_new_refuses_a_bad_name_or_a_non_empty_folder(tmp_path):
    bad = subprocess.run([str(BIN / "panel"), "plugins", "new", "Not-A-Name", "--dest", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "lower-case letters" in bad.stderr
    assert not (tmp_path / "x").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    busy = subprocess.run([str(BIN / "panel"), "plugins", "new", "ok", "--dest", str(tmp_path / "full")],
                          capture_output=True, text=True, timeout=60)
    assert busy.returncode == 1 and "not empty" in busy.stderr
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["keep.txt"]


@pytest.mark.slow
def test_the_template_ships_in_the_wheel_and_scaffolds_from_it(tmp_path):
    """``pip install .`` (non-editable) keeps ``panel plugins new`` working: the wheel carries the
    template, and scaffolding from the unpacked wheel (not this source tree) renders every file."""
    import zipfile

    ROOT = Path(__file__).resolve().parents[1]
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                            "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next((tmp_path / "dist").glob("hostpanel-*.whl"))
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    template = {p.relative_to(ROOT / "panel" / "plugin_template") for p in (ROOT / "panel" / "plugin_template").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    shipped = {p.relative_to(unpacked / "panel" / "plugin_template")
               for p in (unpacked / "panel" / "plugin_template").rglob("*") if p.is_file()}
    assert template and shipped == template
    code = ("import panel.scaffold as s, sys; assert s.__file__.startswith(sys.argv[1]), s.__file__; "
            "s.scaffold_plugin('wheelcheck', sys.argv[2])")
    done = subprocess.run([sys.executable, "-c", code, str(unpacked), str(tmp_path / "out")], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(unpacked)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "panel_wheelcheck" / "backend.py").read_text().count("NotSupportedError") >= 2
