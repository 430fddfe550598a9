"""The core's import graph: ``lifecycle`` decides and records without the job machinery or billing.

Every ``import`` in ``panel/`` counts, also the ones inside functions (a lazy import is still a
dependency). ``from panel import name`` counts as an import of ``panel.name`` when that is a module.
"""
import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "panel")


def _modules() -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                found[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """``{module: {panel modules it imports}}`` for every module of the ``panel`` package."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                if name in modules and name != "panel" and name != module:
                    edges.add(name)
        graph[module] = edges
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_graph_sees_lazy_imports():
    graph = import_graph()
    assert "panel.billing.checkout" in graph["panel.billing"]  # imported inside a function there
    assert "panel.lifecycle" in graph["panel.jobs"]


def test_lifecycle_imports_neither_the_job_machinery_nor_billing():
    deps = reachable(import_graph(), "panel.lifecycle")
    forbidden = {m for m in deps if m in ("panel.jobs", "panel.dispatch", "panel.app")
                 or m == "panel.billing" or m.startswith("panel.billing.")}
    assert not forbidden, f"panel.lifecycle reaches {sorted(forbidden)}"


def test_lifecycle_is_in_no_import_cycle():
    graph = import_graph()
    cycle = {m for m in reachable(graph, "panel.lifecycle") if "panel.lifecycle" in reachable(graph, m)}
    assert not cycle, f"panel.lifecycle is in an import cycle with {sorted(cycle)}"


def test_the_job_path_reads_without_billing():
    graph = import_graph()
    for module in ("panel.jobs", "panel.dispatch", "panel.work"):
        billing = {m for m in reachable(graph, module) if m == "panel.billing" or m.startswith("panel.billing.")}
        assert not billing, f"{module} reaches {sorted(billing)}"
