"""The worker keeps APScheduler's expected noise out of the logs, and nothing else."""

from __future__ import annotations

import logging
import threading

from tsuchi.worker import _SchedulerNoise


def _record(level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("apscheduler.scheduler", level, __file__, 1, msg, args, None)


def test_scheduler_noise_is_dropped_and_the_rest_kept() -> None:
    stopping = threading.Event()
    f = _SchedulerNoise(stopping)
    skipped = _record(
        logging.WARNING,
        'Execution of job "%s" skipped: maximum number of running instances reached (%d)',
        "sweep",
        1,
    )
    submit = _record(logging.ERROR, 'Error submitting job "%s" to executor "%s"', "sweep", "d")
    misfire = _record(logging.WARNING, 'Run time of job "%s" was missed by %s', "sweep", "0:01")
    assert not f.filter(skipped)
    assert f.filter(submit)  # while running, a failed submission is news
    assert f.filter(misfire)
    stopping.set()
    assert not f.filter(submit)  # while stopping, it is the executor's shutdown
    assert f.filter(misfire)
