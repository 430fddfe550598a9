"""Rules for the suite itself (issue 15): no test guards an import of our own code with
``pytest.importorskip``. An import error in the core or a plugin must fail the run; a skip would
leave it green outside CI (and CI turns skips into failures only as a second line of defence)."""
from __future__ import annotations

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def own_modules() -> set[str]:
    """Top-level names that are ours: ``panel``, every plugin's package (``plugins/*/<pkg>``) and
    every helper module beside the tests (``corelib``, ``memory_backend``, ...)."""
    names = {"panel"}
    plugins = os.path.join(REPO, "plugins")
    for plugin in os.listdir(plugins):
        for entry in os.listdir(os.path.join(plugins, plugin)):
            if os.path.isfile(os.path.join(plugins, plugin, entry, "__init__.py")):
                names.add(entry)
    for folder in suite_folders():
        for entry in os.listdir(folder):
            if entry.endswith(".py") and not entry.startswith("test_"):
                names.add(entry[:-3])
    return names - {"conftest", "__init__"}


def suite_folders() -> list[str]:
    """``tests/`` (with its subfolders) and every plugin's ``tests/``."""
    roots = [os.path.join(REPO, "tests")] + [os.path.join(REPO, "plugins", p, "tests")
                                             for p in os.listdir(os.path.join(REPO, "plugins"))]
    folders = []
    for root in roots:
        for folder, dirs, _ in os.walk(root):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            folders.append(folder)
    return folders


def skipped_own_imports(source: str, own: set[str]) -> list[str]:
    """The arguments of ``importorskip("...")`` calls in ``source`` that name one of ``own``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
                and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "importorskip"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                and node.args[0].value.split(".")[0] in own):
            found.append(node.args[0].value)
    return found


def test_the_rule_sees_what_it_looks_for():
    own = {"panel", "panel_pds"}
    source = ('import pytest\nfrom pytest import importorskip\npytest.importorskip("panel_pds.standin")\n'
              'importorskip("panel")\npytest.importorskip("playwright.sync_api")\n'
              'def test_x():\n    pytest.importorskip("panel_pds")\n')
    assert skipped_own_imports(source, own) == ["panel_pds.standin", "panel", "panel_pds"]
    assert {"panel", "panel_pds", "panel_pterodactyl", "panel_kubernetes", "panel_docker",
            "corelib", "memory_backend"} <= own_modules()


def test_no_test_skips_on_an_import_of_our_own_code():
    own = own_modules()
    offenders = []
    for folder in suite_folders():
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as fh:
                    for module in skipped_own_imports(fh.read(), own):
                        offenders.append(f"{os.path.relpath(path, REPO)}: importorskip({module!r})")
    assert offenders == [], "import our own code directly (an import error must fail):\n" + "\n".join(offenders)
