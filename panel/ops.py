"""Operations: health and readiness probes, Prometheus metrics, JSON logs.

* ``GET /healthz``: 200 while the process serves requests (touches nothing else).
* ``GET /readyz``: 200 when the database answers, Redis answers (if ``PANEL_REDIS_URL`` is set)
  and the database schema is at the newest migration; else 503. Body:
  ``{"status": "ready"|"not ready", "checks": {"database", "redis", "migrations"}}``.
* ``GET /metrics``: Prometheus text format (prometheus-client), only with
  ``Authorization: Bearer <PANEL_METRICS_TOKEN>``; without the setting the route answers 404.
  Under gunicorn set ``PROMETHEUS_MULTIPROC_DIR`` (an empty, writable folder) and start gunicorn
  with ``-c python:panel.gunicorn_conf`` so every worker's counts are summed.
  Metrics: ``panel_http_requests_total{method,endpoint,status}``,
  ``panel_http_request_duration_seconds{endpoint}`` (histogram),
  ``panel_stripe_webhooks_total{outcome}`` (accepted, duplicate, ignored, rejected,
  not_configured, error), and, read from the database at scrape time,
  ``panel_operations{state,backend}``, ``panel_services{status,backend}``, ``panel_queue_depth``
  and ``panel_operation_duration_seconds{action,backend,quantile}`` (finished operations of the
  last hour, start to finish, seconds).
* ``PANEL_LOG_FORMAT=json``: one JSON object per log line (python-json-logger).
"""
from __future__ import annotations

import hmac
import logging
import os
import time

from flask import Blueprint, current_app, g, jsonify, request

bp = Blueprint("ops", __name__)

_metrics = None


class _Metrics:
    """The process's prometheus-client objects (created once)."""

    def __init__(self):
        from prometheus_client import Counter, Histogram

        self.requests = Counter("panel_http_requests_total", "HTTP requests answered",
                                ["method", "endpoint", "status"])
        self.latency = Histogram("panel_http_request_duration_seconds", "Time to answer a request (seconds)",
                                 ["endpoint"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.webhooks = Counter("panel_stripe_webhooks_total", "Stripe webhook deliveries by outcome", ["outcome"])


def metrics() -> _Metrics:
    """The process-wide metric objects."""
    global _metrics
    if _metrics is None:
        _metrics = _Metrics()
    return _metrics


def _webhook_outcome(response) -> str:
    if response.status_code == 400:
        return "rejected"
    if response.status_code == 503:
        return "not_configured"
    if response.status_code >= 500:
        return "error"
    body = response.get_json(silent=True) or {}
    return "duplicate" if body.get("duplicate") else "ignored" if body.get("ignored") else "accepted"


def _start_timer():
    g._panel_started = time.perf_counter()


def _count(response):
    endpoint = request.endpoint or "unmatched"
    if endpoint == "ops.metrics_view":
        return response
    m = metrics()
    m.requests.labels(request.method, endpoint, str(response.status_code)).inc()
    started = g.get("_panel_started")
    if started is not None:
        m.latency.labels(endpoint).observe(time.perf_counter() - started)
    if endpoint == "stripe_webhook.webhook":
        m.webhooks.labels(_webhook_outcome(response)).inc()
    return response


class DatabaseCollector:
    """Gauges read from the database (and the queue) when Prometheus scrapes."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from panel.extensions import db
        from panel.models import Operation, Service
        from panel.models.base import utcnow

        with self.app.app_context():
            ops = GaugeMetricFamily("panel_operations", "Operations (jobs) by state and backend",
                                    labels=["state", "backend"])
            for state, backend, n in db.session.execute(
                    db.select(Operation.state, Service.backend, db.func.count())
                    .join(Service, Service.id == Operation.service_id)
                    .group_by(Operation.state, Service.backend)).all():
                ops.add_metric([state, backend], n)
            yield ops
            services = GaugeMetricFamily("panel_services", "Services by status and backend",
                                         labels=["status", "backend"])
            for status, backend, n in db.session.execute(
                    db.select(Service.status, Service.backend, db.func.count())
                    .group_by(Service.status, Service.backend)).all():
                services.add_metric([status, backend], n)
            yield services
            depth = GaugeMetricFamily("panel_queue_depth", "Jobs waiting in the queue")
            depth.add_metric([], queue_depth())
            yield depth
            from datetime import timedelta

            since = utcnow() - timedelta(hours=1)
            rows = db.session.execute(
                db.select(Operation.action, Service.backend, Operation.started_at, Operation.created_at,
                          Operation.finished_at)
                .join(Service, Service.id == Operation.service_id)
                .where(Operation.finished_at.is_not(None), Operation.finished_at >= since)
                .limit(20000)).all()
            durations: dict[tuple[str, str], list[float]] = {}
            for action, backend, started, created, finished in rows:
                begin = started or created
                if begin is None:
                    continue
                durations.setdefault((action, backend), []).append(max(0.0, (_aware(finished) - _aware(begin))
                                                                     .total_seconds()))
            latency = GaugeMetricFamily("panel_operation_duration_seconds",
                                        "Operation latency, start to finish, over the last hour (seconds)",
                                        labels=["action", "backend", "quantile"])
            for (action, backend), values in sorted(durations.items()):
                values.sort()
                for q in (0.5, 0.9, 0.99):
                    latency.add_metric([action, backend, str(q)], values[min(len(values) - 1, int(q * len(values)))])
            yield latency
            db.session.remove()


def _aware(value):
    from datetime import timezone

    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def queue_depth() -> int:
    """Jobs waiting: the RQ queue's length with Redis (-1 while Redis is unreachable), the
    in-process runner's waiting jobs without (``panel.dispatch``)."""
    from panel import dispatch

    if current_app.config.get("REDIS_URL"):
        try:
            return len(dispatch.queue())
        except Exception:  # Redis down: readiness says so; metrics stay up
            return -1
    runner = current_app.extensions.get("panel_runner")
    return len(runner.waiting_keys()) if runner is not None else 0


@bp.get("/healthz")
def healthz():
    """GET /healthz: the process is up (no dependency is checked)."""
    return jsonify({"status": "ok"})


def readiness() -> tuple[bool, dict]:
    """Check the database, Redis and the migration level; ``(ready, {check: "ok" | reason})``."""
    from sqlalchemy import text

    from panel.extensions import db

    checks: dict[str, str] = {}
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
            checks["migrations"] = migration_state(conn)
    except Exception as exc:
        checks["database"] = f"unreachable ({type(exc).__name__})"
        checks["migrations"] = "unknown"
    if current_app.config.get("REDIS_URL"):
        from panel import dispatch

        try:
            dispatch.redis_connection().ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unreachable ({type(exc).__name__})"
    else:
        checks["redis"] = "not configured (jobs run in-process)"
    ready = all(v == "ok" or v.startswith("not configured") for v in checks.values())
    return ready, checks


def migration_state(conn) -> str:
    """``"ok"`` when the database is at the newest migration, else what is missing."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from panel.app import resource_dir

    heads = set(ScriptDirectory(resource_dir("panel.migrations")).get_heads())
    current = set(MigrationContext.configure(conn).get_current_heads())
    if current == heads:
        return "ok"
    if not current:
        return "no migrations applied: run `panel db upgrade`"
    return f"at {', '.join(sorted(current))}, newest is {', '.join(sorted(heads))}: run `panel db upgrade`"


@bp.get("/readyz")
def readyz():
    """GET /readyz: 200 when the database, Redis and the migrations are ready, else 503."""
    ready, checks = readiness()
    response = jsonify({"status": "ready" if ready else "not ready", "checks": checks})
    response.status_code = 200 if ready else 503
    return response


@bp.get("/metrics")
def metrics_view():
    """GET /metrics (Prometheus), with ``Authorization: Bearer <PANEL_METRICS_TOKEN>``."""
    from flask import abort
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    token = current_app.config.get("METRICS_TOKEN")
    if not token:
        abort(404)
    sent = request.headers.get("Authorization", "")
    if not sent.startswith("Bearer ") or not hmac.compare_digest(sent[7:].strip().encode(), str(token).encode()):
        from panel.api.errors import error_response

        return error_response(401, "unauthorized", "send Authorization: Bearer <PANEL_METRICS_TOKEN>")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry
    body = generate_latest(registry)
    body += generate_latest(_db_registry(current_app._get_current_object()))
    return current_app.response_class(body, mimetype=CONTENT_TYPE_LATEST)


def _db_registry(app):
    from prometheus_client import CollectorRegistry

    registry = app.extensions.get("panel_db_metrics")
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(DatabaseCollector(app))
        app.extensions["panel_db_metrics"] = registry
    return registry


def configure_logging(app) -> None:
    """Log at INFO to stderr; ``PANEL_LOG_FORMAT=json`` gives one JSON object per line."""
    fmt = str(app.config.get("LOG_FORMAT") or "text").lower()
    if fmt not in ("text", "json"):
        from panel.config import ConfigError

        raise ConfigError(f"PANEL_LOG_FORMAT must be 'text' or 'json' (got {fmt!r})")
    if app.debug or app.testing:
        return
    handler = logging.StreamHandler()
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"levelname": "level", "asctime": "time"}))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    if not any(getattr(h, "_panel", False) for h in root.handlers):
        handler._panel = True
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def init_app(app) -> None:
    """Register the probes and metrics routes (exempt from rate limits) and the request counters."""
    from panel.extensions import limiter

    app.register_blueprint(bp)
    limiter.exempt(bp)
    app.before_request(_start_timer)
    app.after_request(_count)
    if hasattr(app, "also_bare"):  # panel.app.PanelFlask: the webhook is counted and timed too
        app.also_bare(before=_start_timer, after=_count)
    configure_logging(app)
