"""The dispatcher: hands owed work to workers. The database decides; Redis/RQ only wakes workers.

* A ``WorkKind`` is one kind of durable work (``panel.work``): its name (the job key prefix), its
  model and its job function. ``panel.jobs`` registers ``op`` (operations); billing registers
  ``stripe`` (Stripe events), the way a plugin would.
* After a commit, the items noted with ``work.wake_after_commit`` are handed over: with
  ``PANEL_REDIS_URL``, a wake-up ``<kind>-<id>-w<nonce>`` pushed on the ``panel`` queue's list
  (one ``RPUSH`` for all the items of a commit: the row says everything, so nothing is pickled
  and no RQ job hash is written; ``panel worker`` runs the kind's job function for it; retry
  delays are the rows' ``due_at``, no RQ retry, no RQ scheduler); without Redis, the in-process
  runner (the demo). Handing over never raises: the row is committed and the sweep finds it.
  An item whose id does not survive its job key (characters RQ refuses) travels as an ordinary
  RQ job on the same queue. Mail is durable work too (``mail``, ``panel.notify``).
* ``sweep()`` hands over every item that is due, or whose lease expired, and that is not already
  waiting in the queue (read from the queue itself, not from RQ's job statuses). ``panel worker``
  runs it every ``PANEL_SWEEP_INTERVAL`` seconds (default 5), as does the demo.
* ``run_worker()`` is ``panel worker``: an RQ ``Worker`` (a forked work horse per job) that is
  rebuilt with backoff when Redis goes away, plus the periodic thread (the sweep and the periodic
  tasks registered with ``register_periodic``, e.g. the billing cron and usage sampling).

Liveness comes from the leases in the database, not from RQ's job heartbeats, so any RQ worker
class (``SimpleWorker``, a worker pool) runs these jobs the same way.
"""
from __future__ import annotations

import logging
import random
import re
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from flask import current_app
from sqlalchemy import event

from panel import work
from panel.extensions import db
from panel.models.base import utcnow

log = logging.getLogger(__name__)

QUEUE_NAME = "panel"
SWEEP_LIMIT = 1000  # items handed over per kind and sweep; the next sweep takes the rest
JOB_TTL = 86400  # seconds an RQ job waits in the queue before it expires (the sweep re-sends it)
WAKE_MARK = "w"  # nonce prefix of a bare wake-up (RQ's job ids here end in hex: never "w")


@dataclass(frozen=True)
class WorkKind:
    """One kind of durable work. ``run(item_id)`` is a module-level job function (RQ imports it
    by name) that claims the item itself; ``before_sweep()``, when given, runs before each sweep
    (e.g. starting operations that waited behind a finished one)."""

    name: str
    model: type
    run: Callable[[Any], str]
    before_sweep: Callable[[], Any] | None = None
    id_from_key: Callable[[str], Any] = str  # the item id back from its job key (``int`` for operations)


@dataclass
class Periodic:
    """A task the periodic thread runs every ``every`` seconds (one worker at a time with Redis)."""

    name: str
    every: float
    run: Callable[[], Any]
    last: float = field(default=0.0)


@dataclass
class Registry:
    """What ``init_app`` keeps in ``app.extensions["panel_dispatch"]``."""

    kinds: dict[str, WorkKind] = field(default_factory=dict)
    periodic: dict[str, Periodic] = field(default_factory=dict)


def init_app(app) -> None:
    """Create the app's registry and hook the after-commit hand-over onto the session (once)."""
    app.extensions["panel_dispatch"] = Registry()
    if not event.contains(db.session, "after_commit", _after_commit):
        event.listen(db.session, "after_commit", _after_commit)
        event.listen(db.session, "after_soft_rollback", _after_rollback)


def registry(app=None) -> Registry:
    """The ``Registry`` of ``app`` (default: the current app)."""
    return (app or current_app).extensions["panel_dispatch"]


def register_kind(app, kind: WorkKind) -> None:
    """Register a kind of durable work (its name must be unique)."""
    registry(app).kinds[kind.name] = kind


def register_periodic(app, name: str, every_seconds: float, func: Callable[[], Any]) -> None:
    """Have ``panel worker`` (and the demo) run ``func()`` every ``every_seconds`` seconds, in an app
    context, on one worker at a time when Redis is there. ``func`` must be idempotent."""
    registry(app).periodic[name] = Periodic(name, float(every_seconds), func)


# --------------------------------------------------------------------------- handing over

def job_key(kind: str, item_id: Any) -> str:
    """The key of an item in the queue: ``op-12``, ``stripe-evt_1A2b`` (characters RQ does not
    take in job ids become ``_``)."""
    return f"{kind}-{re.sub(r'[^A-Za-z0-9_]', '_', str(item_id))[:120]}"


def _key_of_job_id(job_id: str) -> str:
    return job_id.rsplit("-", 1)[0]


def _after_commit(session) -> None:
    wakes = session.info.pop(work.WAKE_KEY, None)
    if not wakes:
        return
    try:
        app = current_app._get_current_object()
    except RuntimeError:  # no app context (a script's own session): the sweep picks them up
        return
    hand_over_many(wakes, app=app)


def _after_rollback(session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(work.WAKE_KEY, None)


def hand_over(kind: str, item_id: Any, due_at: datetime | None = None, *, app=None) -> bool:
    """Hand item ``item_id`` of ``kind`` to a worker: now, or (in-process) once ``due_at`` comes.
    With Redis, an item due later is left to the sweep. Returns whether it was handed over;
    never raises (the row is committed, and the sweep hands it over later)."""
    return hand_over_many([(kind, item_id, due_at)], app=app) == 1


def hand_over_many(items, *, app=None) -> int:
    """Hand over ``(kind, item_id, due_at)`` items (see ``hand_over``) with one Redis round trip
    for all of them (a pipeline of RQ enqueues: nothing is read first; the database already
    decided that they are owed). Returns how many were handed over; never raises."""
    app = app or current_app._get_current_object()
    kinds = registry(app).kinds
    inprocess = not app.config.get("REDIS_URL")
    now = utcnow()
    count, batch = 0, []
    for kind, item_id, due_at in items:
        found = kinds.get(kind)
        if found is None:
            log.error("no work kind %r is registered; item %s waits", kind, item_id)
            continue
        delay = max(0.0, (due_at - now).total_seconds()) if due_at is not None else 0.0
        key = job_key(kind, item_id)
        if inprocess:
            count += bool(inprocess_runner(app).submit(key, found.run, item_id, delay))
        elif delay <= 1.0:  # later ones: the sweep hands them over when they are due
            batch.append((found, item_id, key))
    if batch:
        try:
            q = queue(app)
            bare = [f"{key}-{WAKE_MARK}{uuid.uuid4().hex[:8]}" for found, item_id, key in batch
                    if _bare(found, item_id, key)]
            rq_jobs = [(found, item_id, key) for found, item_id, key in batch if not _bare(found, item_id, key)]
            if bare and not rq_jobs:
                q.connection.rpush(q.key, *bare)  # one command, nothing to pickle
            else:
                with q.connection.pipeline(transaction=False) as pipe:
                    if bare:
                        pipe.rpush(q.key, *bare)
                    for found, item_id, key in rq_jobs:
                        _enqueue(q, found.run, item_id, key, pipe, app)
                    pipe.execute()
            count += len(batch)
        except Exception as exc:  # Redis down: the rows are committed; the sweep hands them over later
            log.warning("could not hand %s to the job queue (%s); the sweep will",
                        ", ".join(key for _, _, key in batch), type(exc).__name__)
    return count


def _bare(kind: WorkKind, item_id: Any, key: str) -> bool:
    """Whether ``item_id`` of ``kind`` can travel as a bare wake-up: its job key gives it back."""
    try:
        return kind.id_from_key(key.split("-", 1)[1]) == item_id
    except (ValueError, IndexError):
        return False


def wake_up_of(job_id: str, app=None) -> tuple[WorkKind, Any] | None:
    """``(kind, item id)`` when ``job_id`` (an element of the queue's list) is a bare wake-up
    ``<kind>-<id>-w<nonce>`` (no RQ job hash behind it), else ``None`` (an RQ job)."""
    key, _, nonce = job_id.rpartition("-")
    if not nonce.startswith(WAKE_MARK) or "-" not in key:
        return None
    name, _, raw = key.partition("-")
    found = registry(app).kinds.get(name)
    if found is None:
        return None
    try:
        return found, found.id_from_key(raw)
    except ValueError:
        return None


def _enqueue(q, func, arg, key: str, pipeline, app) -> None:
    """Add the RQ job ``<key>-<nonce>`` calling ``func(arg)`` to ``pipeline``. Its result is not
    kept (``result_ttl=0``: outcomes live in the database), and a wake-up nobody took within
    ``JOB_TTL`` expires (the sweep hands the item over again meanwhile)."""
    q.enqueue_call(func, args=(arg,), job_id=f"{key}-{uuid.uuid4().hex[:8]}", result_ttl=0, ttl=JOB_TTL,
                   failure_ttl=0, timeout=app.config["JOB_TIMEOUT"], description=f"{func.__name__}({arg!r})",
                   pipeline=pipeline)


def redis_connection(app=None):
    """The Redis connection for ``PANEL_REDIS_URL`` (``None`` when jobs run in-process)."""
    app = app or current_app._get_current_object()
    url = app.config.get("REDIS_URL")
    if not url:
        return None
    conns = app.extensions.setdefault("panel_redis", {})
    if url not in conns:
        from redis import Redis

        conns[url] = Redis.from_url(url, socket_timeout=10, socket_connect_timeout=3,
                                    health_check_interval=15, retry=fail_fast_retry())
    return conns[url]


def fail_fast_retry():
    """redis-py's retry policy for the panel's own connections: two quick retries (under half a
    second in all), not its default of ten, so a request never waits on an unreachable Redis:
    the rows are committed and the sweep hands them over later."""
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return Retry(ExponentialBackoff(cap=0.2, base=0.05), 2)


def queue(app=None):
    """The RQ ``Queue`` named ``panel`` (one per Redis connection, kept with it)."""
    from rq import Queue

    app = app or current_app._get_current_object()
    conn = redis_connection(app)
    conns = app.extensions.setdefault("panel_redis", {})
    found = conns.get(("queue", id(conn)))
    if found is None:
        found = conns[("queue", id(conn))] = Queue(QUEUE_NAME, connection=conn,
                                                   default_timeout=app.config["JOB_TIMEOUT"])
    return found


def waiting_keys(app=None) -> set[str]:
    """Keys of the items waiting in the queue now (read from Redis' list, or the in-process
    runner). Raises when Redis is unreachable."""
    app = app or current_app._get_current_object()
    if not app.config.get("REDIS_URL"):
        return inprocess_runner(app).waiting_keys()
    return {_key_of_job_id(job_id) for job_id in queue(app).get_job_ids()}


def due_items(now: datetime | None = None, limit: int = SWEEP_LIMIT) -> list[tuple[str, Any]]:
    """``(kind, id)`` of every item that is due or whose lease expired, oldest due first."""
    now = now or utcnow()
    out = []
    for kind in registry().kinds.values():
        model = kind.model
        ids = db.session.scalars(db.select(model.id).where(work.due(model, now))
                                 .order_by(model.due_at).limit(limit)).all()
        out += [(kind.name, item_id) for item_id in ids]
    return out


def sweep(now: datetime | None = None) -> list[str]:
    """Hand over everything due or lease-expired that is not waiting in the queue already;
    returns the keys handed over. Safe from many processes at once: claims decide who runs."""
    for kind in registry().kinds.values():
        if kind.before_sweep is not None:
            kind.before_sweep()
    items = due_items(now)
    db.session.rollback()  # end the read; nothing is held while talking to Redis
    if not items:
        return []
    try:
        waiting = waiting_keys()
    except Exception as exc:
        log.warning("sweep: the job queue is unreachable (%s); %d item(s) wait", type(exc).__name__, len(items))
        return []
    done = []
    for kind, item_id in items:
        key = job_key(kind, item_id)
        if key not in waiting and hand_over(kind, item_id):
            done.append(key)
    if done:
        log.info("sweep: handed over %d item(s)", len(done))
    return done


# --------------------------------------------------------------------------- in-process runner

class InProcessRunner:
    """Runs jobs on background threads when no Redis is configured (the demo, the tests).

    A key waits at most once (a second ``submit`` while it waits is a no-op); once it runs, it may
    be submitted again (a retry it scheduled for itself). Retries are the rows' ``due_at``: a
    submit with ``delay`` waits on a timer.
    """

    def __init__(self, app, workers: int = 4):
        self.app = app
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="panel-job")
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.waiting: set[str] = set()
        self.timers: dict[str, threading.Timer] = {}  # keys waiting for their delay
        self.inflight = 0

    def submit(self, key: str, func, arg, delay: float = 0.0) -> bool:
        """Run ``func(arg)`` in an app context, now or after ``delay`` seconds."""
        with self.lock:
            if key in self.waiting:
                return True
            self.waiting.add(key)
            self.inflight += 1
        run = lambda: self._run(key, func, arg)  # noqa: E731
        if delay > 0:
            timer = threading.Timer(delay, self._submit_later, (key, run))
            timer.daemon = True
            with self.lock:
                self.timers[key] = timer
            timer.start()
        else:
            self.pool.submit(run)
        return True

    def cancel_delayed(self) -> int:
        """Drop the submits still waiting for their delay (their rows stay due: whoever runs the
        work next picks them up). Returns how many were dropped. The tests call it before
        ``wait_idle`` when an app goes away, instead of waiting out a retry's backoff."""
        with self.lock:
            dropped = list(self.timers.items())
            self.timers.clear()
            for key, timer in dropped:
                timer.cancel()
                self.waiting.discard(key)
                self.inflight -= 1
            self.idle.notify_all()
        return len(dropped)

    def _submit_later(self, key: str, run) -> None:
        with self.lock:
            if self.timers.pop(key, None) is None:  # dropped by cancel_delayed meanwhile
                return
        try:
            self.pool.submit(run)
        except RuntimeError:  # the runner was shut down meanwhile (the app is going away): the row stays due
            with self.lock:
                self.waiting.discard(key)
                self.inflight -= 1
                self.idle.notify_all()

    def waiting_keys(self) -> set[str]:
        """Keys submitted and not started yet."""
        with self.lock:
            return set(self.waiting)

    def _run(self, key: str, func, arg) -> None:
        with self.lock:
            self.waiting.discard(key)
        try:
            with self.app.app_context():
                try:
                    func(arg)
                except Exception:
                    log.exception("in-process job %s failed", key)
                finally:
                    db.session.remove()
        finally:
            with self.lock:
                self.inflight -= 1
                self.idle.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until nothing waits or runs (tests and the CLI use it)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.idle.wait(left)
        return True


def inprocess_runner(app=None) -> InProcessRunner:
    """The app's ``InProcessRunner`` (created on first use)."""
    app = app or current_app._get_current_object()
    ext = app.extensions
    if "panel_runner" not in ext:
        ext["panel_runner"] = InProcessRunner(app)
    return ext["panel_runner"]


# --------------------------------------------------------------------------- periodic work

def _locked(app, name: str, seconds: float) -> bool:
    """A short Redis lock (``SET NX EX``) so one worker at a time runs ``name``; always true
    without Redis. Raises when Redis is unreachable."""
    conn = redis_connection(app)
    return conn is None or bool(conn.set(f"panel:{name}-lock", "1", nx=True, ex=max(int(seconds), 1)))


def run_periodic_once(app, interval: float) -> None:
    """One round of the periodic thread: the sweep, then each registered task that is due."""
    with app.app_context():
        try:
            try:
                go = _locked(app, "sweeper", interval)
            except Exception:
                go = True  # Redis is away: sweep anyway (it reports what waits), claims keep it safe
            if go:
                sweep()
        except Exception:
            log.exception("sweep failed")
        finally:
            db.session.remove()
        for task in list(registry(app).periodic.values()):
            if time.monotonic() - task.last < task.every:
                continue
            try:
                if not _locked(app, task.name, task.every):
                    task.last = time.monotonic()
                    continue
            except Exception:
                continue  # Redis is away: try again next round
            task.last = time.monotonic()
            try:
                task.run()
            except Exception:
                log.exception("periodic task %s failed", task.name)
            finally:
                db.session.remove()


def start_periodic(app, interval: float | None = None) -> threading.Thread:
    """A daemon thread that runs ``run_periodic_once`` every ``interval`` seconds (default
    ``PANEL_SWEEP_INTERVAL``), in workers and in the demo."""
    interval = float(interval if interval is not None else app.config["SWEEP_INTERVAL"])

    def loop():
        while True:
            time.sleep(interval)
            run_periodic_once(app, interval)

    thread = threading.Thread(target=loop, name="panel-periodic", daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- panel worker

def run_worker(app, *, burst: bool = False, sweep_interval: float | None = None,
               threads: int | None = None) -> None:
    """``panel worker``: ``threads`` (default ``PANEL_WORKER_THREADS``) job threads in this process
    until SIGTERM/SIGINT (or, with ``burst``, until the queue is empty, after one sweep); see
    ``panel.worker``. Redis and database outages never stop it: the threads reconnect with
    backoff, and runs that were in flight are taken over once their leases expire."""
    from panel.worker import PanelWorker

    PanelWorker(app, threads).run(burst=burst, sweep_interval=sweep_interval)
