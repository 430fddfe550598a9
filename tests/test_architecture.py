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


WEB_WORKER = r'''
import json, sys, tempfile
from panel import create_app
from panel.extensions import db

app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite:///" + tempfile.mktemp(suffix=".db"), "SECRET_KEY": "x" * 40,
                  "ENCRYPTION_KEY": "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=",
                  "STRIPE_SECRET_KEY": "sk_test_arch0123456789", "STRIPE_WEBHOOK_SECRET": "whsec_arch",
                  "PUBLIC_URL": "https://panel.example.test", "RATELIMIT_ENABLED": False,
                  "WTF_CSRF_ENABLED": False})
with app.app_context():
    db.create_all()
client = app.test_client()
answers = [client.get(path).status_code for path in ("/", "/login", "/plans", "/healthz", "/api/v1/plans")]
answers.append(client.post("/login", data={"email": "nobody@example.com", "password": "wrong-password"}).status_code)
print(json.dumps({"answers": answers, "modules": sorted(sys.modules)}))
'''


def test_the_web_app_does_not_import_what_only_commands_and_secrets_need():
    """A web worker serving pages (billing configured) carries neither Flask-Migrate/alembic
    (``panel db`` only), nor cryptography (only when a secret is encrypted or decrypted), nor
    stripe (Stripe calls and the webhook's signature check import it): issue 14's worker RSS.
    ``pdb`` still comes in, through flask_login's import of its test client (0.5 MB, not ours)."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", WEB_WORKER], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(code < 500 for code in result["answers"]), result["answers"]
    assert result["answers"][-1] == 200  # the login form again, with its error
    loaded = set(result["modules"])
    assert {"flask", "panel", "sqlalchemy", "pydantic"} <= loaded  # the check sees what is imported
    # (redis-py, when Redis is configured, imports the bare ``cryptography`` package to see whether
    # it is there; Fernet and the bindings are what weigh)
    unwanted = {"flask_migrate", "alembic", "mako", "cryptography.fernet", "cryptography.hazmat.bindings._rust",
                "stripe"}
    assert not loaded & unwanted, loaded & unwanted
