"""The deployable artifact: build the hostpanel and PDS plugin wheels, install them (not editable)
into a fresh virtualenv, migrate a real PostgreSQL database and serve pages with gunicorn."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import urllib.request

import pytest

from panel.testing import free_port, stop_process, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IGNORE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "instance", "__pycache__", "*.egg-info", "*.db",
                                "node_modules", "test-results")


def test_every_panel_package_is_in_the_wheel_list():
    """pyproject lists packages explicitly (for the templates/migrations mapping): a new
    subpackage must be added there or the wheel would miss it."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        listed = set(tomllib.load(fh)["tool"]["setuptools"]["packages"])
    found = {os.path.relpath(d, ROOT).replace(os.sep, ".") for d, _, files in os.walk(os.path.join(ROOT, "panel"))
             if "__init__.py" in files}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert {"panel.templates", "panel.migrations"} <= listed


def _run(args, **kwargs):
    done = subprocess.run(args, capture_output=True, text=True, timeout=kwargs.pop("timeout", 600), **kwargs)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.mark.slow
def test_wheel_installs_migrates_postgresql_and_serves(tmp_path, postgres_server):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w", str(dist),
          str(src), str(src / "plugins" / "pds")], cwd=tmp_path)
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    assert [w.split("-")[0] for w in wheels] == ["hostpanel", "hostpanel_pds"], wheels

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    bindir = venv / "bin"
    _run([str(bindir / "pip"), "install", "-q", "--disable-pip-version-check", *map(str, dist.glob("*.whl"))],
         cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PANEL_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PANEL_SECRET_KEY="wheel-test-secret-key-0123", PANEL_DATABASE_URL=postgres_server.create_database(),
               PANEL_PLUGINS="pds", PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}")
    site = _run([str(bindir / "python"), "-c", "import panel, panel_pds; print(panel.__file__)"], cwd=tmp_path, env=env)
    assert str(venv) in site.stdout and str(src) not in site.stdout  # the installed copy, not the source
    panel = str(bindir / "panel")
    before = subprocess.run([panel, "users", "create", "ops@example.com", "--password", "longenough1", "--operator"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert before.returncode != 0 and "panel db upgrade" in before.stderr and "Traceback" not in before.stderr
    _run([panel, "db", "upgrade"], cwd=tmp_path, env=env)
    check = _run([panel, "db", "check"], cwd=tmp_path, env=env)
    assert "No new upgrade operations detected" in check.stdout + check.stderr
    _run([panel, "users", "create", "ops@example.com", "--password", "longenough1", "--operator"], cwd=tmp_path, env=env)
    assert "pds" in _run([panel, "plugins", "list"], cwd=tmp_path, env=env).stdout

    port = free_port()
    metrics_dir = tmp_path / "metrics"
    env.update(PANEL_METRICS_TOKEN="wheel-metrics-token-1", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    server = subprocess.Popen([str(bindir / "gunicorn"), "-w", "2", "-c", "python:panel.gunicorn_conf",
                               "-b", f"127.0.0.1:{port}", "panel.wsgi:app"],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"

        def up():
            try:
                return urllib.request.urlopen(f"{base}/healthz", timeout=2).status == 200
            except OSError:
                return server.poll() is not None

        assert wait_for(up, timeout=60), "gunicorn did not answer"
        assert server.poll() is None, server.stderr.read().decode()[-3000:]
        page = urllib.request.urlopen(f"{base}/login", timeout=10)
        html = page.read().decode()
        assert page.status == 200 and "<h1>Log in</h1>" in html and "script-src 'self'" in page.headers["Content-Security-Policy"]
        css = urllib.request.urlopen(f"{base}/static/panel.css", timeout=10)
        assert css.status == 200 and b"{" in css.read()
        ready = urllib.request.urlopen(f"{base}/readyz", timeout=10)
        assert ready.status == 200
        for _ in range(6):  # spread over both workers
            assert urllib.request.urlopen(f"{base}/plans", timeout=10).status == 200
        scrape = urllib.request.Request(f"{base}/metrics", headers={"Authorization": "Bearer wheel-metrics-token-1"})
        text = urllib.request.urlopen(scrape, timeout=10).read().decode()
        counted = [line for line in text.splitlines()
                   if line.startswith('panel_http_requests_total{endpoint="customer.plans",method="GET",status="200"}')]
        assert counted and float(counted[0].rsplit(" ", 1)[1]) == 6.0, text[:2000]  # summed over the workers
        assert any(metrics_dir.iterdir())  # multiprocess files
    finally:
        stop_process(server)
