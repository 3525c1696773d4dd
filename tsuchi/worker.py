"""The worker: runs the sweeps and periodic jobs until told to stop.

APScheduler 3 drives a few jobs per worker, defined at every start and kept
in memory (so the database is never on the scheduler's own path: an outage
cannot kill its thread): the sweep (dispatch, status reports, due durable
timers) every second, projections every 5 s, the audit checkpoint (chain,
sign, anchor outside the database) every ``settings.audit_checkpoint_every``
(30 s), and a daily delivery summary.  Reminders
are not scheduler jobs: they are rows in ``tsuchi_timers`` fired by the sweep,
which scales to millions.  Sweeps
coalesce and never misfire-drop (``misfire_grace_time=None``); the work itself
is claimed from the database, so several workers can share one PostgreSQL.

Beside the scheduler, an urgent dispatcher thread submits urgent notices
(fraud alerts) the moment they are due, so they never wait behind a sweep busy
with a broadcast: it is woken at once when a request in this process commits
one, and every ``urgent_every`` (50 ms) it asks the database, without taking
the write lock, whether another process queued one.  For the same reason the
worker moves what is alive when it starts out of the cyclic garbage
collector's sight (``gc.freeze``, unless ``freeze_heap=False``): a full
collection of a freshly started process's ~90,000 objects stalls every thread
for ~30 ms, and more as the heap grows.

A failing job is logged and retried by its next run; the worker keeps
running through database outages.  A watchdog checks every second that the
scheduler and the urgent dispatcher are alive: if either has died, the
worker stops and raises :class:`~tsuchi.errors.WorkerDied`, and ``tsuchi
worker`` exits 1 so a supervisor restarts it.  :meth:`Worker.liveness` gives
the seconds since each job last succeeded; ``heartbeat`` (a file path) is
touched after every successful sweep, for a liveness probe; while the worker
runs, the engine's metrics report the same ages
(``tsuchi_worker_seconds_since_success``).

On SIGTERM or SIGINT the worker stops scheduling, lets the job in flight
finish, and returns.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from tsuchi.engine import Engine
from tsuchi.errors import WorkerDied

log = logging.getLogger("tsuchi.worker")

_ACTIVE: dict[str, Worker] = {}
_ACTIVE_LOCK = threading.Lock()


def run_job(worker_id: str, job: str) -> None:
    """Entry point of every persisted job (APScheduler stores only a reference)."""
    with _ACTIVE_LOCK:
        worker = _ACTIVE.get(worker_id)
    if worker is None:
        log.debug("job %s belongs to worker %s, not running in this process", job, worker_id)
        return
    worker.run_named(job)


class _SchedulerNoise(logging.Filter):
    """Drops two APScheduler log records of this worker's jobs that are
    expected here: a sweep skipped because the previous one is still draining
    work (sweeps run as long as there is work, longer than their interval;
    kept once a sweep has run for ``hung_after`` seconds, the sign of a hung
    one), and a job the scheduler tried to start while the worker was
    shutting down.  Other jobs' records (a host's own scheduler) pass."""

    def __init__(
        self,
        stopping: threading.Event,
        busy_since: Callable[[], float | None],
        hung_after: float = 300.0,
    ) -> None:
        super().__init__()
        self.stopping = stopping
        self.busy_since = busy_since
        self.hung_after = hung_after

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if not args or not str(args[0]).startswith(f"{run_job.__name__} "):
            return True  # not one of this module's jobs
        msg = str(record.msg)
        if "maximum number of running instances reached" in msg:
            since = self.busy_since()
            return since is not None and time.monotonic() - since > self.hung_after
        return not (self.stopping.is_set() and msg.startswith("Error submitting job"))


class Worker:
    def __init__(
        self,
        engine: Engine,
        *,
        sweep_every: timedelta = timedelta(seconds=1),
        checkpoint_every: timedelta | None = None,
        urgent_every: timedelta = timedelta(milliseconds=50),
        freeze_heap: bool = True,
        heartbeat: Path | None = None,
    ) -> None:
        self.engine = engine
        self.worker_id = engine.settings.worker_id
        self.sweep_every = sweep_every
        self.checkpoint_every = (
            engine.settings.audit_checkpoint_every if checkpoint_every is None else checkpoint_every
        )
        self.urgent_every = urgent_every
        self.freeze_heap = freeze_heap
        self._stop = threading.Event()
        self._busy = threading.Lock()
        self._busy_since: float | None = None  # when the job in flight started
        self.sweeps = 0
        self.heartbeat = heartbeat
        self._succeeded: dict[str, float] = {}  # job -> monotonic time of its last success

    # -- jobs ------------------------------------------------------------------------
    def run_named(self, job: str) -> None:
        if self._stop.is_set():
            return
        with self._busy:
            self._busy_since = time.monotonic()
            try:
                if job == "sweep":
                    self.sweep()
                elif job == "projections":  # bounded: a stop request never waits long
                    self.engine.catch_up_projections(max_events=2000)
                elif job == "checkpoint":
                    self.checkpoint()
                elif job == "daily_report":
                    self.daily_report()
            except Exception as e:  # a failed pass is retried by the next one
                log.error("%s failed: %s", job, type(e).__name__)
            else:
                self._succeeded[job] = time.monotonic()
                if job == "sweep" and self.heartbeat is not None:
                    self.heartbeat.touch()
            finally:
                self._busy_since = None

    def liveness(self) -> dict[str, float | None]:
        """Seconds since each job last succeeded (None: not yet)."""
        now = time.monotonic()
        jobs = ("sweep", "projections", "checkpoint", "urgent")
        return {j: (now - self._succeeded[j]) if j in self._succeeded else None for j in jobs}

    def dispatch_urgent(self) -> None:
        """The urgent dispatcher's loop (its own thread), until :meth:`stop`."""
        poll = self.urgent_every.total_seconds()
        while not self._stop.is_set():
            woke = self.engine.wait_for_urgent(poll)
            if self._stop.is_set():
                return
            try:
                if woke or self.engine.urgent_due():
                    while self.engine.dispatch(urgent_only=True) and not self._stop.is_set():
                        pass
                self._succeeded["urgent"] = time.monotonic()
            except Exception as e:  # retried on the next wake or poll
                log.error("urgent dispatch failed: %s", type(e).__name__)
                self._stop.wait(1.0)

    def sweep(self) -> None:
        stats = self.engine.sweep(stop=self._stop.is_set)
        self.sweeps += 1
        if stats.submitted or stats.reports or stats.timers_fired:
            log.info(
                "sweep: submitted %d, reports %d, timers %d (late %d)",
                stats.submitted,
                stats.reports,
                stats.timers_fired,
                stats.late,
            )

    def checkpoint(self) -> None:
        hook = getattr(self.engine, "audit_checkpoint", None)
        if hook is not None:
            hook()

    def daily_report(self) -> None:
        rows = self.engine.delivery_summary()
        total = sum(int(r["count"]) for r in rows)
        blocked = sum(int(r["count"]) for r in rows if r["status"] == "blocked")
        log.info("daily summary: %d messages, %d blocked", total, blocked)

    # -- lifecycle ------------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: finishing in-flight work", signum)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _watch(
        self, scheduler: BackgroundScheduler, urgent: threading.Thread, max_seconds: float | None
    ) -> None:
        """Wait for a stop (or ``max_seconds``), checking every second that no
        part of the worker has died; raise :class:`WorkerDied` if one has."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        while not self._stop.is_set():
            step = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if step <= 0 or self._stop.wait(step):
                return
            thread = getattr(scheduler, "_thread", None)
            if not scheduler.running or (thread is not None and not thread.is_alive()):
                log.critical("the scheduler thread died: stopping so a supervisor restarts us")
                raise WorkerDied("scheduler")
            if not urgent.is_alive():
                log.critical("the urgent dispatcher died: stopping so a supervisor restarts us")
                raise WorkerDied("urgent dispatcher")

    def run(self, max_seconds: float | None = None) -> None:
        """Block until :meth:`stop` (or a signal, or ``max_seconds``)."""
        with _ACTIVE_LOCK:
            _ACTIVE[self.worker_id] = self
        self.engine.metrics.watch_jobs(self.liveness)
        scheduler = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        ref = "tsuchi.worker:run_job"
        scheduler.add_job(
            ref,
            "interval",
            seconds=self.sweep_every.total_seconds(),
            id=f"sweep:{self.worker_id}",
            args=[self.worker_id, "sweep"],
            replace_existing=True,
        )
        scheduler.add_job(
            ref,
            "interval",
            seconds=5,
            id=f"projections:{self.worker_id}",
            args=[self.worker_id, "projections"],
            replace_existing=True,
        )
        scheduler.add_job(
            ref,
            "interval",
            seconds=self.checkpoint_every.total_seconds(),
            id=f"checkpoint:{self.worker_id}",
            args=[self.worker_id, "checkpoint"],
            replace_existing=True,
        )
        scheduler.add_job(
            ref,
            "cron",
            hour=0,
            minute=5,
            id=f"daily:{self.worker_id}",
            args=[self.worker_id, "daily_report"],
            replace_existing=True,
        )
        noise = _SchedulerNoise(self._stop, lambda: self._busy_since)
        scheduler_log = logging.getLogger("apscheduler.scheduler")
        urgent = threading.Thread(
            target=self.dispatch_urgent, name=f"tsuchi-urgent-{self.worker_id}", daemon=True
        )
        scheduler_log.addFilter(noise)
        # What is alive now (modules, the engine, the host's start-up state)
        # mostly lives as long as the process: out of the cyclic collector's
        # sight, a full collection no longer stalls every thread for tens of
        # ms.  Undone when the worker stops; left alone if the host froze first.
        freeze = self.freeze_heap and gc.get_freeze_count() == 0
        try:
            if freeze:
                gc.collect()
                gc.freeze()
            log.info("worker %s started", self.worker_id)
            scheduler.start()
            urgent.start()
            self.run_named("sweep")  # catch up at once: timers that fell due while down
            self._watch(scheduler, urgent, max_seconds)
        finally:
            self._stop.set()
            if scheduler.running:
                scheduler.pause()  # no new job starts while the ones in flight finish
                scheduler.shutdown(wait=True)
            if urgent.ident is not None:
                urgent.join()
            scheduler_log.removeFilter(noise)
            if freeze:
                gc.unfreeze()
            with self._busy:  # the sweep in flight, if any, has finished
                pass
            with _ACTIVE_LOCK:
                _ACTIVE.pop(self.worker_id, None)
            self.engine.metrics.watch_jobs(None)
            log.info("worker %s stopped after %d sweeps", self.worker_id, self.sweeps)
