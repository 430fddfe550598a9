"""The plugin author docs: ``mkdocs build --strict`` passes, every hook and every ``Backend`` method
has a reference entry generated from its docstring, and the tutorial's code runs (datasette's habit:
the blocks are extracted from the Markdown, written out and executed, so the docs cannot rot)."""
from __future__ import annotations

import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from panel import hookspecs
from panel.backends import Backend

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr
    return out


def hook_names() -> list[str]:
    return sorted(name for name, f in vars(hookspecs).items()
                  if callable(f) and hasattr(f, "panel_spec"))


def backend_methods() -> list[str]:
    return sorted(name for name, value in vars(Backend).items()
                  if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, classmethod)))


def test_the_docs_build_with_warnings_as_errors(site):
    assert (site / "index.html").is_file() and (site / "tutorial" / "index.html").is_file()


def test_every_hook_has_a_reference_entry(site):
    html = (site / "reference" / "hooks" / "index.html").read_text()
    names = hook_names()
    assert {"register_backends", "register_blueprints", "register_commands", "service_status_changed"} <= set(names)
    for name in names:
        assert f'id="panel.hookspecs.{name}"' in html, f"hook {name} is not in docs/reference/hooks.md"
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and doc.split("``")[0][:30] in html.replace("<code>", "").replace("</code>", ""), name


def test_every_backend_method_has_a_reference_entry(site):
    html = (site / "reference" / "backend" / "index.html").read_text()
    methods = backend_methods()
    assert {"provision", "suspend", "unsuspend", "terminate", "change_plan", "usage", "details",
            "list_resources", "test_connection", "check_capacity", "claim_key"} <= set(methods)
    for name in methods:
        assert f'id="panel.backends.Backend.{name}"' in html, f"Backend.{name} is not in docs/reference/backend.md"
    for schema in ("Settings", "PlanOptions", "OrderParams"):
        assert f'id="panel.backends.Backend.{schema}"' in html


def tutorial_steps() -> list[tuple[str, str]]:
    """``(kind, text)`` in page order: ``("file", block)`` for python blocks starting with
    ``# file: PATH``, ``("sh", line)`` for each line of the sh blocks."""
    steps = []
    for lang, body in FENCE.findall((ROOT / "docs" / "tutorial.md").read_text()):
        if lang == "python" and body.startswith("# file: "):
            steps.append(("file", body))
        elif lang == "sh":
            steps += [("sh", line.split("#")[0].strip()) for line in body.splitlines() if line.split("#")[0].strip()]
    return steps


@pytest.mark.slow
def test_the_tutorial_runs(tmp_path):
    """Run the tutorial: its shell lines in order (``pip install`` becomes an out-of-tree install
    with ``--target``, so the shared virtualenv is untouched), its files written; its tests pass,
    the whole contract suite included."""
    steps = tutorial_steps()
    assert [t for k, t in steps if k == "sh"][:2] == ['panel plugins new pages --label "Static pages"',
                                                       "cd hostpanel-pages"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANEL_")}
    target = tmp_path / "site-packages"
    cwd = tmp_path
    written: dict[str, int] = {}
    ran_tests = None
    for kind, text in steps:
        if kind == "file":
            header, _, code = text.partition("\n")
            path = cwd / header.removeprefix("# file: ").strip()
            first = path.name not in written
            written[path.name] = written.get(path.name, 0) + 1
            with path.open("w" if first else "a") as out:
                out.write(code if first else "\n" + code)
            continue
        args = shlex.split(text)
        if args[0] == "cd":
            cwd = cwd / args[1]
            assert cwd.is_dir(), text
        elif args[:2] == ["pip", "install"]:
            done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                                   "--disable-pip-version-check", "--target", str(target), "."],
                                  cwd=cwd, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stdout + done.stderr
        elif args[0] == "pytest":
            ran_tests = subprocess.run([str(BIN / "pytest"), "-q", "-p", "no:cacheprovider",
                                        "-p", "no:randomly", "-rA", *args[1:]], cwd=cwd,
                                       env={**env, "PYTHONPATH": str(target)}, capture_output=True, text=True,
                                       timeout=900)
        else:
            if args[0] == "panel":
                args[0] = str(BIN / "panel")
            done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{text}: {done.stdout}{done.stderr}"
    assert written == {"backend.py": 6}
    assert ran_tests is not None, "the tutorial never runs pytest"
    output = ran_tests.stdout
    assert ran_tests.returncode == 0, output[-6000:]
    summary = output.strip().splitlines()[-1]
    assert "failed" not in summary and "error" not in summary and "skipped" not in summary, summary
    # the installed copy was tested, and the whole contract suite ran and passed
    from panel.testing import BackendContract

    contract = sorted(n for n in dir(BackendContract) if n.startswith("test_"))
    for name in contract:
        assert f"PASSED tests/test_pages_contract.py::TestPagesContract::{name}" in output, name
    assert "PASSED tests/test_pages_backend.py::test_the_entry_point_registers_the_backend" in output
    assert not (cwd / "tests" / "test_pages_stubs.py").exists()
