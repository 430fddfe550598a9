"""``panel worker``: one process, ``PANEL_WORKER_THREADS`` job threads, fed from the RQ queue.

Why threads in one process, not RQ's forking ``Worker``: a job here waits on a backend most of
its time (an HTTP round trip of tens to hundreds of milliseconds), and its own work is two short
database transactions. A work horse forked per job threw away, every time, what makes those
transactions cheap: the database and Redis connections, the backend's HTTP keep-alive
connection, SQLAlchemy's compiled statements, and the copy-on-write pages it faulted in; it cost
most of the CPU of a provision. RQ's ``SimpleWorker`` keeps them, but runs one job at a time and
spends about 60 Redis commands of bookkeeping per job (registries, executions, heartbeats) on
results nobody reads: outcomes live in the database. So each thread here takes a wake-up from
the queue's list with one ``BLPOP``: a durable item's wake-up is its job key alone
(``dispatch.wake_up_of``), so the kind's job function runs at once; an ordinary RQ job (an item whose id its job key cannot carry) is
read with ``Job.fetch`` and deleted (RQ results are not kept). One Redis round trip per job.

Liveness comes from the database leases (``panel.work``), not from RQ: a run that stops
(killed process, lost database) is taken over once its lease runs out, and fencing refuses a
late completion. So nothing is lost when a wake-up popped from the queue dies with its process:
the row is still due, and the sweep hands it over again.

* ``PANEL_JOB_TIMEOUT``: a thread cannot be killed, so a job running longer than this stops
  renewing its lease (another worker takes the item over, and this run's completion will be
  refused), and a new thread takes its place; the old one ends when its call returns.
* SIGTERM/SIGINT: warm shutdown; running jobs finish (up to ``PANEL_JOB_TIMEOUT``), then exit
  status 0. A second signal exits at once (the leases run out and the work is taken over).
* Redis unreachable: each thread waits 1, 2, 4 ... 30 s (with jitter) and tries again; the
  process never exits because of it.
* The process registers itself as an RQ worker (``rq info`` lists it, with its heartbeat), one
  per process, whatever its thread count.
"""
from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field

from panel.extensions import db

log = logging.getLogger(__name__)

DEQUEUE_TIMEOUT = 1  # seconds a thread blocks in BLPOP before it looks at the stop flag
REGISTRATION_EVERY = 30.0  # seconds between RQ worker heartbeats


@dataclass
class _Slot:
    """One job thread: what it runs now (``job_id``, since ``started`` monotonic) and whether the
    supervisor replaced it (``abandoned``: it ends after its current job)."""

    index: int
    thread: threading.Thread | None = None
    job_id: str | None = None
    started: float = 0.0
    abandoned: bool = False


@dataclass(frozen=True)
class _WakeUp:
    """A bare wake-up taken from the queue, shaped like the RQ job ``_perform`` runs."""

    id: str
    func: object
    item_id: object

    @property
    def args(self) -> tuple:
        return (self.item_id,)

    @property
    def kwargs(self) -> dict:
        return {}

    @property
    def func_name(self) -> str:
        return getattr(self.func, "__name__", str(self.func))


@dataclass
class _State:
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    busy: int = 0
    done: int = 0


class PanelWorker:
    """The ``panel worker`` process: ``threads`` job threads on the ``panel`` queue.

    ``run(burst=False)`` blocks until a warm shutdown (SIGTERM/SIGINT) or, with ``burst``, until
    the queue is empty and no thread is busy. Needs ``PANEL_REDIS_URL``.
    """

    def __init__(self, app, threads: int | None = None, *, max_backoff: float = 30.0):
        self.app = app
        self.threads = int(threads or app.config["WORKER_THREADS"])
        self.max_backoff = max_backoff
        self.timeout = float(app.config["JOB_TIMEOUT"])
        self.state = _State()
        self.slots: list[_Slot] = []
        self.burst = False
        self._registration = None
        self._registered_at = 0.0

    # ------------------------------------------------------------------ start-up

    def warm_up(self) -> None:
        """Configure the ORM mappers, load the plugins' backends and open a first database
        connection before any job runs (so the first jobs do not pay for it)."""
        from sqlalchemy.orm import configure_mappers

        from panel import dispatch
        from panel.plugins import plugins

        configure_mappers()
        with self.app.app_context():
            plugins()
            try:
                for kind in dispatch.registry(self.app).kinds.values():
                    db.session.execute(db.select(kind.model.id).limit(1)).all()
            except Exception as exc:  # the database is away: jobs connect when it is back
                log.warning("worker warm-up: the database is unreachable (%s)", type(exc).__name__)
            finally:
                db.session.remove()

    # ------------------------------------------------------------------ the job threads

    def _slot_loop(self, slot: _Slot) -> None:
        from rq import Queue
        from rq.exceptions import DequeueTimeout
        from rq.job import Job

        from panel import dispatch

        conn = dispatch.redis_connection(self.app)
        keys = [dispatch.queue(self.app).key]
        backoff = 1.0
        state = self.state
        while not state.stopping.is_set() and not slot.abandoned:
            try:
                popped = Queue.lpop(keys, None if self.burst else DEQUEUE_TIMEOUT, connection=conn)
                if popped is None:  # burst: the queue is empty
                    with state.lock:
                        if state.busy == 0:
                            return
                    time.sleep(0.05)
                    continue
                job_id = popped[1].decode() if isinstance(popped[1], bytes) else str(popped[1])
                wake = dispatch.wake_up_of(job_id, self.app)
                if wake is not None:  # a bare wake-up: the kind's job function, by item id
                    backoff = 1.0
                    self._perform(slot, _WakeUp(job_id, wake[0].run, wake[1]))
                    continue
                try:
                    job = Job.fetch(job_id, connection=conn)
                except Exception as exc:  # gone (expired, Redis restarted) or unreadable: the sweep has it
                    log.info("job %s could not be read (%s); skipped", job_id, type(exc).__name__)
                    continue
                finally:
                    conn.delete(Job.key_for(job_id))
                backoff = 1.0
            except DequeueTimeout:
                continue
            except Exception as exc:  # Redis unreachable
                pause = backoff * (0.5 + random.random())
                log.warning("could not reach Redis (%s); reconnecting to Redis in %.1f s", type(exc).__name__, pause)
                if state.stopping.wait(pause):
                    return
                backoff = min(backoff * 2, self.max_backoff)
                continue
            self._perform(slot, job)

    def _perform(self, slot: _Slot, job) -> None:
        state = self.state
        with state.lock:
            state.busy += 1
            slot.job_id, slot.started = job.id, time.monotonic()
        try:
            with self.app.app_context():
                try:
                    job.func(*job.args, **job.kwargs)
                except Exception:
                    log.exception("job %s (%s) failed", job.id, job.func_name)
                finally:
                    try:
                        db.session.remove()
                    except Exception:
                        log.exception("job %s: closing its database session failed", job.id)
        finally:
            with state.lock:
                state.busy -= 1
                state.done += 1
                slot.job_id = None

    def _start_slot(self, index: int) -> _Slot:
        slot = _Slot(index)
        slot.thread = threading.Thread(target=self._slot_loop, args=(slot,), name=f"panel-job-{index}",
                                       daemon=True)
        self.slots.append(slot)
        slot.thread.start()
        return slot

    def _replace_stuck(self) -> None:
        """A job past ``PANEL_JOB_TIMEOUT``: its lease is no longer renewed (``work.Heartbeat``);
        give its thread's place to a new thread."""
        now = time.monotonic()
        for slot in list(self.slots):
            if slot.abandoned or slot.job_id is None or now - slot.started <= self.timeout:
                continue
            slot.abandoned = True
            log.error("job %s has run for %.0f s (PANEL_JOB_TIMEOUT %.0f s): its lease is no longer renewed, so "
                      "another worker takes the work over; a new thread takes this one's place",
                      slot.job_id, now - slot.started, self.timeout)
            self._start_slot(slot.index)
        stuck = sum(1 for s in self.slots if s.abandoned and s.thread.is_alive())
        if stuck > 4 * self.threads:
            log.critical("%d job threads are stuck past PANEL_JOB_TIMEOUT; exiting so the process supervisor "
                         "starts a fresh worker", stuck)
            os._exit(70)

    # ------------------------------------------------------------------ RQ registration

    def _register(self) -> None:
        """Register (again, after Redis lost its data) as an RQ worker, or send a heartbeat.
        Never raises."""
        from rq import SimpleWorker

        from panel import dispatch

        now = time.monotonic()
        if self._registration is not None and now - self._registered_at < REGISTRATION_EVERY:
            return
        self._registered_at = now
        try:
            conn = dispatch.redis_connection(self.app)
            if self._registration is None:
                self._registration = SimpleWorker([dispatch.queue(self.app)], connection=conn)
            if conn.exists(self._registration.key):
                self._registration.heartbeat()
            else:
                self._registration.register_birth()
        except Exception as exc:
            log.debug("RQ worker registration failed (%s)", type(exc).__name__)

    def _unregister(self) -> None:
        try:
            if self._registration is not None:
                self._registration.register_death()
        except Exception:
            pass

    # ------------------------------------------------------------------ the process

    def run(self, *, burst: bool = False, sweep_interval: float | None = None) -> None:
        """Run until a warm shutdown or, with ``burst``, until there is nothing left to do (one
        sweep first). ``sweep_interval`` (default ``PANEL_SWEEP_INTERVAL``; 0: none) runs the
        periodic thread (the sweep and the registered periodic tasks)."""
        from panel import dispatch

        self.burst = burst
        self.warm_up()
        interval = float(self.app.config["SWEEP_INTERVAL"] if sweep_interval is None else sweep_interval)
        if burst:
            with self.app.app_context():
                try:
                    dispatch.sweep()
                finally:
                    db.session.remove()
        elif interval > 0:
            dispatch.start_periodic(self.app, interval)
        state = self.state
        signals = {"count": 0}

        def stop(signum, frame):
            signals["count"] += 1
            if signals["count"] > 1:
                log.warning("second signal: exiting now; running work is taken over once its lease runs out")
                os._exit(1)
            log.info("warm shutdown: running jobs finish first (a second signal exits at once)")
            state.stopping.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
        log.info("panel worker %s: %d job thread(s)%s", os.getpid(), self.threads, " (burst)" if burst else "")
        for i in range(self.threads):
            self._start_slot(i)
        try:
            while True:
                if not burst:
                    self._register()
                live = [s for s in self.slots if s.thread.is_alive() and not s.abandoned]
                if not live:
                    break
                if state.stopping.is_set():
                    deadline = time.monotonic() + self.timeout
                    for slot in live:
                        slot.thread.join(max(0.0, deadline - time.monotonic()))
                    break
                self._replace_stuck()
                state.stopping.wait(0.5)
        finally:
            if not burst:
                self._unregister()
        log.info("panel worker %s: stopped after %d job(s)", os.getpid(), state.done)
