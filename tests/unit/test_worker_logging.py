"""The worker keeps APScheduler's expected noise about its own jobs out of the
logs, and nothing else."""

from __future__ import annotations

import logging
import threading
import time

from tsuchi.worker import _SchedulerNoise

OURS = "run_job (trigger: interval[0:00:01], next run at: 2026-04-01 00:00:01 UTC)"
THEIRS = "nightly_batch (trigger: cron[hour='2'], next run at: 2026-04-02 02:00:00 JST)"


def _record(level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("apscheduler.scheduler", level, __file__, 1, msg, args, None)


def _skipped(job: str) -> logging.LogRecord:
    return _record(
        logging.WARNING,
        'Execution of job "%s" skipped: maximum number of running instances reached (%d)',
        job,
        1,
    )


def test_scheduler_noise_of_our_jobs_is_dropped_and_the_rest_kept() -> None:
    stopping = threading.Event()
    busy_since: list[float | None] = [time.monotonic()]
    f = _SchedulerNoise(stopping, lambda: busy_since[0], hung_after=300.0)
    submit = _record(logging.ERROR, 'Error submitting job "%s" to executor "%s"', OURS, "d")
    misfire = _record(logging.WARNING, 'Run time of job "%s" was missed by %s', OURS, "0:01")
    assert not f.filter(_skipped(OURS))  # a sweep still draining work
    assert f.filter(_skipped(THEIRS))  # a host's own job: its business
    assert f.filter(submit)  # while running, a failed submission is news
    assert f.filter(misfire)
    busy_since[0] = time.monotonic() - 301
    assert f.filter(_skipped(OURS))  # a sweep running for 5 minutes may be hung: say so
    stopping.set()
    assert not f.filter(submit)  # while stopping, it is the executor's shutdown
    assert f.filter(misfire)
