"""Jobs: run one operation by id, call its backend, report through ``panel.lifecycle``.

With ``PANEL_REDIS_URL`` set, ``enqueue`` puts an RQ job with the unique id ``op-<id>`` on the
``panel`` queue, with ``Retry(max=PANEL_JOB_RETRIES, interval=PANEL_JOB_BACKOFF)``; ``panel
worker`` runs them. Without it, the same ``run_operation`` runs in-process on a background
thread, with the same retry policy. The sweeper (``sweep``) re-enqueues operations whose job was
lost (Redis down at enqueue time, a killed worker), so nothing is lost; ``claim`` and idempotent
backends keep anything from happening twice.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from flask import current_app

from panel import lifecycle
from panel.backends import BackendError, PermanentBackendError, TransientBackendError
from panel.extensions import db
from panel.models import Operation

log = logging.getLogger(__name__)

QUEUE_NAME = "panel"
ACTIVE_JOB_STATES = ("queued", "started", "scheduled", "deferred")


# --------------------------------------------------------------------------- the job

def run_operation(operation_id: int) -> str:
    """RQ job: perform operation ``operation_id``. Returns "succeeded", "skipped" or raises.

    Must run inside an app context (``panel worker`` and the in-process runner provide one).
    A transient error is recorded and re-raised so RQ retries it; a permanent one (or the last
    transient one) marks the service ``failed`` and is re-raised with retries disabled.
    """
    from panel.plugins import get_backend

    op = lifecycle.claim(operation_id)
    if op is None:
        return "skipped"
    service = op.service
    try:
        backend = get_backend(service.backend)
        spec = lifecycle.spec_for(service)
        if op.action == "change_plan":
            from panel.models import Plan

            new_plan = db.session.get(Plan, op.payload.get("plan_id"))
            if new_plan is None:
                raise PermanentBackendError("the plan to change to no longer exists")
            from panel.addons import target_options

            result = backend.change_plan(spec, target_options(service, new_plan, op.payload))
        elif op.action == "run_action":
            from panel import client_area

            result = client_area.perform(op, backend, spec)
        else:
            result = getattr(backend, op.action)(spec)
    except TransientBackendError as exc:
        message = _message(exc)
        retries = current_app.config["JOB_RETRIES"]
        if op.attempts <= retries:
            lifecycle.retrying(op, message, backoff_for(op.attempts, exc))
        else:
            lifecycle.fail(op, f"{message} (gave up after {op.attempts} attempts)")
            _stop_rq_retries()
        raise
    except BackendError as exc:
        lifecycle.fail(op, _message(exc))
        _stop_rq_retries()
        raise
    except Exception as exc:
        db.session.rollback()
        log.exception("operation %s (%s) raised an unexpected error", op.id, op.action)
        lifecycle.fail(db.session.get(Operation, operation_id),
                       f"internal error in the {service.backend} backend ({type(exc).__name__}); "
                       "see the worker log")
        _stop_rq_retries()
        raise
    lifecycle.succeed(op, result)
    return "succeeded"


def _message(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:2000]


def backoff_for(attempt: int, exc: TransientBackendError | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (Retry-After wins when larger)."""
    intervals = current_app.config["JOB_BACKOFF"] or [0]
    delay = float(intervals[min(attempt - 1, len(intervals) - 1)])
    if exc is not None and exc.retry_after:
        delay = max(delay, float(exc.retry_after))
    return delay


def _stop_rq_retries() -> None:
    try:
        from rq import get_current_job
    except ImportError:  # pragma: no cover
        return
    job = get_current_job()
    if job is not None:
        job.retries_left = 0


# --------------------------------------------------------------------------- queues

def redis_connection():
    """A Redis connection for ``PANEL_REDIS_URL`` (``None`` when jobs run in-process)."""
    url = current_app.config.get("REDIS_URL")
    if not url:
        return None
    ext = current_app.extensions.setdefault("panel_redis", {})
    if url not in ext:
        from redis import Redis

        ext[url] = Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    return ext[url]


def queue():
    """The RQ ``Queue`` named ``panel``."""
    from rq import Queue

    return Queue(QUEUE_NAME, connection=redis_connection(),
                 default_timeout=current_app.config["JOB_TIMEOUT"])


def enqueue(operation_id: int, *, replace_started: bool = False) -> bool:
    """Hand operation ``operation_id`` to the job runner (job id ``op-<id>``). Returns whether it
    was handed over.

    An RQ job with the same id that is still queued, scheduled or running is left alone (so a
    double enqueue is harmless) unless ``replace_started``: the sweeper passes it for a job whose
    worker died, which RQ still lists as started. Never raises for a Redis outage: the operation
    row is already committed, and the sweeper enqueues it later.
    """
    return enqueue_task(run_operation, operation_id, job_id=f"op-{operation_id}",
                        replace_started=replace_started)


def enqueue_task(func, arg, *, job_id: str, retries: int | None = None,
                 replace_started: bool = False) -> bool:
    """Run ``func(arg)`` as a job with the unique id ``job_id`` (RQ, or in-process without Redis).

    ``func`` must be a module-level function (RQ imports it by name) that runs inside an app
    context. ``TransientBackendError`` is retried ``retries`` times (default
    ``PANEL_JOB_RETRIES``) after ``PANEL_JOB_BACKOFF`` seconds. Returns whether it was handed over;
    never raises for a Redis outage (callers keep a row that a periodic job picks up again).
    """
    if not current_app.config.get("REDIS_URL"):
        return inprocess_runner().submit(job_id, func, arg)
    from rq import Retry
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        conn = redis_connection()
        try:
            job = Job.fetch(job_id, connection=conn)
            status = job.get_status(refresh=True)
            if status in ACTIVE_JOB_STATES and not (replace_started and status == "started"):
                return True
            job.delete()
        except NoSuchJobError:
            pass
        retries = current_app.config["JOB_RETRIES"] if retries is None else retries
        queue().enqueue(func, arg, job_id=job_id, result_ttl=3600, failure_ttl=7 * 86400,
                        description=f"{func.__name__}({arg!r})",
                        retry=Retry(max=retries, interval=current_app.config["JOB_BACKOFF"] or [0]) if retries else None)
        return True
    except Exception as exc:  # redis down: the sweeper (or billing cron) picks it up later
        log.warning("could not enqueue %s (%s); it will be retried by the sweeper", job_id,
                    type(exc).__name__)
        return False


def job_alive(operation_id: int, stale_seconds: int) -> bool:
    """Whether an RQ job for the operation is queued, scheduled, or running with a fresh heartbeat."""
    if not current_app.config.get("REDIS_URL"):
        return inprocess_runner().busy(f"op-{operation_id}")
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        job = Job.fetch(f"op-{operation_id}", connection=redis_connection())
    except NoSuchJobError:
        return False
    status = job.get_status(refresh=True)
    if status in ("queued", "scheduled", "deferred"):
        return True
    if status == "started":
        beat = job.last_heartbeat or job.started_at
        if beat is None:
            return False
        from datetime import datetime, timezone

        if beat.tzinfo is None:
            beat = beat.replace(tzinfo=timezone.utc)
        return (datetime.now(timezone.utc) - beat).total_seconds() < max(stale_seconds, 1)
    return False


def sweep(older_than_seconds: int | None = None) -> list[int]:
    """Re-enqueue unfinished operations that have no live job; returns their ids.

    Safe to run at any time and from many processes: enqueue is keyed on ``op-<id>`` and
    ``claim`` lets only one job run an operation.
    """
    older = current_app.config["SWEEP_AFTER"] if older_than_seconds is None else older_than_seconds
    done = []
    for op in lifecycle.unblock_pending():
        enqueue(op.id)
        done.append(op.id)
    for op in lifecycle.stale_operations(older):
        try:
            alive = job_alive(op.id, older)
        except Exception:  # redis down: nothing to do until it is back
            log.warning("sweeper: cannot reach the job queue")
            break
        if alive:
            continue
        lifecycle.requeue(op, "its job was lost (worker died or the queue was unreachable)")
        if enqueue(op.id, replace_started=True):
            done.append(op.id)
    return done


# --------------------------------------------------------------------------- in-process runner

class InProcessRunner:
    """Runs jobs on background threads when no Redis is configured (the demo).

    Each job has a unique key (its RQ job id): a second submit while it is in flight is a no-op.
    ``TransientBackendError`` is retried after ``backoff_for`` seconds, up to
    ``PANEL_JOB_RETRIES`` times, like RQ's ``Retry``.
    """

    def __init__(self, app, workers: int = 4):
        self.app = app
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="panel-job")
        self.lock = threading.Lock()
        self.inflight: set[str] = set()
        self.idle = threading.Condition(self.lock)

    def submit(self, key: str, func, arg, delay: float = 0.0, attempt: int = 1) -> bool:
        """Run ``func(arg)`` in an app context, now or after ``delay`` seconds."""
        with self.lock:
            if key in self.inflight:
                return True
            self.inflight.add(key)
        run = lambda: self._run(key, func, arg, attempt)  # noqa: E731
        if delay > 0:
            timer = threading.Timer(delay, lambda: self.pool.submit(run))
            timer.daemon = True
            timer.start()
        else:
            self.pool.submit(run)
        return True

    def busy(self, key: str) -> bool:
        """Whether job ``key`` is in flight."""
        with self.lock:
            return key in self.inflight

    def _run(self, key: str, func, arg, attempt: int) -> None:
        retry_in = None
        with self.app.app_context():
            try:
                func(arg)
            except TransientBackendError as exc:
                if attempt <= self.app.config["JOB_RETRIES"]:
                    retry_in = backoff_for(attempt, exc)
            except Exception:
                log.debug("in-process job %s failed (recorded by the job)", key, exc_info=True)
            finally:
                db.session.remove()
        with self.lock:
            self.inflight.discard(key)
            self.idle.notify_all()
        if retry_in is not None:
            self.submit(key, func, arg, retry_in, attempt + 1)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until no job is in flight (tests and the CLI use it)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.idle.wait(left)
        return True


def inprocess_runner() -> InProcessRunner:
    """The app's ``InProcessRunner`` (created on first use)."""
    ext = current_app.extensions
    if "panel_runner" not in ext:
        ext["panel_runner"] = InProcessRunner(current_app._get_current_object())
    return ext["panel_runner"]


def sample_usage(now=None) -> int:
    """Record one ``UsageSample`` for every active service (for the usage charts) and drop samples
    older than ``PANEL_USAGE_RETENTION_DAYS``. Returns how many were recorded. A backend error
    skips that service; it never stops the others."""
    from datetime import timedelta

    from panel.models import Service, UsageSample
    from panel.models.base import utcnow
    from panel.plugins import get_backend

    now = now or utcnow()
    recorded = 0
    services = db.session.scalars(db.select(Service).where(Service.status == "active")).all()
    for service in services:
        try:
            usage = get_backend(service.backend).usage(lifecycle.spec_for(service))
        except BackendError as exc:
            log.info("usage of service %s unavailable: %s", service.id, exc)
            continue
        except Exception:
            log.exception("usage of service %s failed", service.id)
            continue
        if usage.metrics:
            db.session.add(UsageSample(service_id=service.id, at=now,
                                       metrics=[m.to_json() for m in usage.metrics]))
            recorded += 1
    cutoff = now - timedelta(days=current_app.config["USAGE_RETENTION_DAYS"])
    db.session.execute(db.delete(UsageSample).where(UsageSample.at < cutoff))
    db.session.commit()
    return recorded


def make_worker(app):
    """An RQ ``Worker`` for the panel queue that runs each job in a forked work horse inside the
    app context, with a fresh database connection pool (pools must not cross ``fork``).

    The parent heartbeats running jobs, which is how the sweeper tells a live job from a lost one.
    """
    from rq import Worker
    from sqlalchemy.orm import configure_mappers

    # Warm up in the parent so each forked horse inherits it instead of redoing it per job:
    # the ORM mappers, the plugins' backend classes and a first round trip to the database.
    configure_mappers()
    from panel.plugins import plugins

    plugins()
    db.session.execute(db.select(Operation.id).limit(1)).all()
    db.session.remove()

    class PanelWorker(Worker):
        def main_work_horse(self, job, queue):
            db.engine.dispose(close=False)
            return super().main_work_horse(job, queue)

    return PanelWorker([queue()], connection=redis_connection(), job_monitoring_interval=10)


def start_periodic_sweeper(app, interval: float = 60.0) -> threading.Thread:
    """A daemon thread that runs ``sweep`` every ``interval`` seconds, the billing cron
    (``panel.billing.cron.run``: grace, pending-payment expiry, termination after retention) every
    minute when Stripe is configured, ``sample_usage`` every ``PANEL_USAGE_INTERVAL`` seconds and
    the DNS TXT checks of pending hostnames (``panel.names.check_pending``) every
    ``PANEL_DOMAIN_CHECK_INTERVAL`` seconds (workers and the demo).

    With Redis, short locks (``SET NX EX``) keep concurrent workers from doing either at once.
    """
    usage_every = app.config["USAGE_INTERVAL"]
    billing_every = 60.0
    domains_every = app.config.get("DOMAIN_CHECK_INTERVAL") or 0

    def locked(name: str, seconds: float) -> bool:
        conn = redis_connection()
        return conn is None or bool(conn.set(f"panel:{name}-lock", "1", nx=True, ex=max(int(seconds), 1)))

    def loop():
        last_usage = last_billing = last_domains = 0.0
        while True:
            time.sleep(interval)
            with app.app_context():
                try:
                    if locked("sweeper", interval):
                        sweep()
                    from panel import billing

                    if billing.configured() and time.monotonic() - last_billing >= billing_every:
                        last_billing = time.monotonic()
                        if locked("billing-cron", billing_every):
                            from panel.billing import cron

                            cron.run()
                    if usage_every and time.monotonic() - last_usage >= usage_every:
                        last_usage = time.monotonic()
                        if locked("usage", usage_every):
                            sample_usage()
                    if domains_every and time.monotonic() - last_domains >= domains_every:
                        last_domains = time.monotonic()
                        if locked("domains", domains_every):  # DNS TXT checks of customers' hostnames
                            from panel import names

                            names.check_pending()
                except Exception:
                    log.exception("periodic work failed")
                finally:
                    db.session.remove()

    thread = threading.Thread(target=loop, name="panel-sweeper", daemon=True)
    thread.start()
    return thread
