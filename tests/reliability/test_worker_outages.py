"""The real ``tsuchi worker`` process through database outages: it must keep
working afterwards, never stall silently.

SQLite's database is made unavailable to the worker by another process-level
connection holding an exclusive lock for longer than the worker's busy
timeout (10 s), three times; between and after the outages notices are requested,
and every one must be submitted exactly once, with the heartbeat file
advancing again.  A worker whose scheduler thread dies exits non-zero.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tsuchi import Engine, MessageStatus, Settings

from ..integration.world import build
from .procs import wait_until_started
from .test_workers import WORKER, worker_env

OUTAGE_S = 12.0
# A security notice: never held by quiet hours (the test runs on the wall clock),
# at normal urgency: submitted by the scheduled sweep, not the urgent thread.
ALERT = {"name": "山田太郎", "last4": "1234", "amount": 52000}


def _lock_database(path: Path, seconds: float) -> None:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def test_worker_keeps_working_after_repeated_database_outages(tmp_path: Path) -> None:
    db_file = tmp_path / "outage.db"
    db = f"sqlite:///{db_file}"
    settings = Settings(database_url=db, keys_dir=tmp_path / "keys", create_keys=True)
    with Engine(settings) as e:
        w = build(e)
    heartbeat = tmp_path / "alive"
    log = (tmp_path / "worker.log").open("w")
    args = [*WORKER, "--db", db, "--keys", str(tmp_path / "keys"), "--heartbeat", str(heartbeat)]
    proc = subprocess.Popen(
        [*args, "--max-seconds", "300"], env=worker_env(), stdout=subprocess.DEVNULL, stderr=log
    )
    ids = []
    try:
        wait_until_started(tmp_path / "worker.log")
        with Engine(settings) as e:
            for round_ in range(3):
                ids.append(
                    e.request_notice(
                        w.sender,
                        w.accounts[round_],
                        "fraud_alert",
                        ALERT,
                        idempotency_key=f"o{round_}",
                    ).id
                )
                _lock_database(db_file, OUTAGE_S)  # the worker's writes fail meanwhile
                assert proc.poll() is None, "the worker exited during an outage"
            after = time.time()
            ids.append(
                e.request_notice(
                    w.sender, w.accounts[0], "fraud_alert", ALERT, idempotency_key="last"
                ).id
            )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                statuses = {e.message(i).status for i in ids}
                waiting = statuses & {MessageStatus.ROUTED, MessageStatus.REQUESTED}
                if not waiting and heartbeat.stat().st_mtime > after:
                    break
                time.sleep(0.5)
            assert heartbeat.stat().st_mtime > after, "no successful sweep after the outages"
            for mid in ids:
                view = e.message(mid)
                assert view.status not in (MessageStatus.ROUTED, MessageStatus.REQUESTED)
                assert [t.status for t in view.timeline].count("submitted") == 1
        proc.terminate()
        proc.wait(timeout=60)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert "died" not in (tmp_path / "worker.log").read_text(errors="replace")


def test_a_worker_whose_scheduler_dies_exits_non_zero(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'die.db'}"
    Engine(Settings(database_url=db, keys_dir=tmp_path / "keys", create_keys=True)).close()
    # The scheduler's thread is made to die the first time it looks for due jobs.
    code = (
        "import apscheduler.schedulers.background as b, sys\n"
        "from tsuchi.cli import main\n"
        "def boom(self, *a, **k):\n"
        "    raise SystemExit('scheduler thread killed')\n"
        "b.BackgroundScheduler._process_jobs = boom\n"
        "sys.argv = ['tsuchi', 'worker', '--db', sys.argv[1], '--keys', sys.argv[2]]\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, db, str(tmp_path / "keys")],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "WorkerDied" in proc.stderr and "scheduler" in proc.stderr
