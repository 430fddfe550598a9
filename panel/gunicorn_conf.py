"""gunicorn settings for Prometheus multiprocess metrics: ``gunicorn -c python:panel.gunicorn_conf
panel.wsgi:app`` with ``PROMETHEUS_MULTIPROC_DIR`` set to an empty, writable folder (cleared at
start-up). Other gunicorn options can still be given on the command line."""
import os
import shutil


def on_starting(server):
    """Empty the metrics folder left by an earlier run (counts start from zero)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)


def child_exit(server, worker):
    """Drop a dead worker's live gauges (prometheus-client multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
