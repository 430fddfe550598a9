"""The Alembic migrations apply on a real PostgreSQL and on SQLite, and match the models."""
import os
import subprocess
import sys

import sqlalchemy as sa

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE_TABLES = {"users", "api_tokens", "plans", "plugin_settings", "services", "operations", "service_events"}


def panel(*args, env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANEL_")}
    env.update({"PANEL_SECRET_KEY": "migration-test-secret-key", "PANEL_PLUGINS": ""}, **env_extra)
    return subprocess.run([sys.executable, "-m", "panel.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def check_upgrade(url):
    up = panel("db", "upgrade", env_extra={"PANEL_DATABASE_URL": url})
    assert up.returncode == 0, up.stderr
    url = url.replace("postgresql://", "postgresql+psycopg2://")
    tables = set(sa.inspect(sa.create_engine(url)).get_table_names())
    assert CORE_TABLES <= tables
    check = panel("db", "check", env_extra={"PANEL_DATABASE_URL": url})
    assert check.returncode == 0 and "No new upgrade operations detected" in (check.stdout + check.stderr), check.stderr
    down = panel("db", "downgrade", "base", env_extra={"PANEL_DATABASE_URL": url})
    assert down.returncode == 0, down.stderr
    assert not (CORE_TABLES & set(sa.inspect(sa.create_engine(url)).get_table_names()))
    again = panel("db", "upgrade", env_extra={"PANEL_DATABASE_URL": url})
    assert again.returncode == 0, again.stderr


def test_migrations_on_sqlite(tmp_path):
    check_upgrade(f"sqlite:///{tmp_path}/m.db")


def test_migrations_on_postgresql(postgres_server):
    check_upgrade(postgres_server.create_database())


def test_the_app_runs_on_postgresql(postgres_server, tmp_path, monkeypatch):
    """A full order through the lifecycle on PostgreSQL (JSONB columns, atomic claim)."""
    url = postgres_server.create_database()
    assert panel("db", "upgrade", env_extra={"PANEL_DATABASE_URL": url}).returncode == 0
    from corelib import BASE_CONFIG, add_user, wait_jobs
    from memory_backend import REMOTE, MemoryPlugin

    from panel import create_app
    from panel.extensions import db
    from panel.models import Plan
    from panel.orders import place_order
    from panel.plugins import set_enabled

    REMOTE.__init__()
    app = create_app(BASE_CONFIG | {"DATABASE_URL": url, "PLUGINS": [], "EXTRA_PLUGINS": [MemoryPlugin()]})
    with app.app_context():
        set_enabled("memory", True)
        user = add_user("pg@example.com")
        db.session.add(Plan(slug="f", name="F", backend="memory", options={"size_mib": 8}))
        db.session.commit()
        svc = place_order(user, "f", {"name": "pg"}, actor="t").service
        wait_jobs(app)
        assert svc.status == "active" and svc.backend_data == {"host": "pg.test"}
        db.session.remove()
        db.engine.dispose()
