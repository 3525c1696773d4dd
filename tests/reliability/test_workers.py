"""Workers under stress: SIGKILL during a broadcast, and two workers sharing one
PostgreSQL without double sends.

The bounded versions run in ``make test``; ``TSUCHI_LONG_TESTS=1`` runs the
full sizes (10,000 recipients, more kills)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tsuchi import Engine, Settings
from tsuchi.domain.message import gateway_reference
from tsuchi.infrastructure.tables import broadcast_recipients, message_view, outbox

from ..conftest import PG_URL, reset_postgres
from ..integration.test_cm_gateway import TOKEN, FakeCM, _serve
from ..integration.world import build
from .procs import wait_until_started

LONG = os.environ.get("TSUCHI_LONG_TESTS") == "1"
WORKER = [sys.executable, "-m", "tsuchi.cli", "worker", "--sweep-seconds", "0.2"]


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSUCHI_")}
    env["TSUCHI_GATEWAY"] = "simulator"
    env.update(extra)
    return env


def customers(n: int) -> list[dict[str, str]]:
    return [
        {
            "tenant": "acme",
            "customer_ref": f"K{i}",
            "mobile": f"0801{i:07d}",
            "name": f"顧客{i}",
            "carrier": ("docomo", "au", "softbank", "rakuten")[i % 4],
        }
        for i in range(n)
    ]


def test_sigkill_during_broadcast_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    n = 10_000 if LONG else 2_000
    kills = 20 if LONG else 6
    db = f"sqlite:///{tmp_path / 'kill.db'}"
    settings = Settings(database_url=db, keys_dir=tmp_path / "keys", create_keys=True)
    with Engine(settings) as e:
        w = build(e)
        accounts = e.register_accounts(customers(n))
        bid = e.start_broadcast(w.sender, "kill-drill", "safety_check", accounts)
    args = [*WORKER, "--db", db, "--keys", str(tmp_path / "keys")]
    rng = random.Random(42)
    for _ in range(kills):
        proc = subprocess.Popen(
            args, env=worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(1.0, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # Logs go to a file: an unread pipe would fill up and block the worker.
    final_log = (tmp_path / "final.log").open("w")
    final = subprocess.Popen(
        [*args, "--max-seconds", "600"],
        env=worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=final_log,
    )
    try:
        wait_until_started(tmp_path / "final.log")
        with Engine(settings) as e:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                report = e.broadcast_report(bid)
                if report["expanded"] and e.pending_dispatch() == 0:
                    break
                time.sleep(1.0)
            t_stop = time.monotonic()
            final.send_signal(signal.SIGTERM)
            final.wait(timeout=60)
            assert final.returncode == 0
            assert time.monotonic() - t_stop < 20  # in-flight work finishes promptly
            report = e.broadcast_report(bid)
            assert report["expanded"] and report["messages_created"] == n
            with e.store.session(commit=False) as s:
                per_recipient = s.execute(
                    select(
                        func.count(), func.count(func.distinct(broadcast_recipients.c.message_id))
                    ).where(
                        broadcast_recipients.c.broadcast_id == bid.hex,
                        broadcast_recipients.c.message_id.is_not(None),
                    )
                ).one()
                messages = s.execute(
                    select(func.count())
                    .select_from(message_view)
                    .where(message_view.c.correlation_id == f"broadcast:{bid.hex}")
                ).scalar_one()
                # Not lost: every message that is not yet submitted still has its
                # outbox row (late reports may still open SMS fallbacks).
                stranded = s.execute(
                    select(func.count())
                    .select_from(message_view)
                    .outerjoin(outbox, outbox.c.message_id == message_view.c.message_id)
                    .where(
                        message_view.c.correlation_id == f"broadcast:{bid.hex}",
                        message_view.c.status.in_(["requested", "routed", "deferred"]),
                        outbox.c.message_id.is_(None),
                    )
                ).scalar_one()
            assert tuple(per_recipient) == (n, n)  # one message each, all distinct
            assert messages == n
            assert stranded == 0
    finally:
        if final.poll() is None:
            final.kill()
        final_log.close()


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL: set TSUCHI_TEST_DATABASE_URL to run")
def test_two_workers_share_one_postgres_without_double_sends(tmp_path: Path) -> None:
    assert PG_URL
    reset_postgres(PG_URL)
    n = 2_000 if LONG else 400
    settings = Settings(database_url=PG_URL, keys_dir=tmp_path / "keys", create_keys=True)
    with Engine(settings) as e:
        w = build(e)
        accounts = e.register_accounts(customers(n))
        ids = [
            e.request_notice(
                w.sender,
                a,
                "fraud_alert",
                {"name": "顧客", "last4": "1234", "amount": 100},
                idempotency_key=f"two-{i}",
                urgency="urgent",
            ).id
            for i, a in enumerate(accounts)
        ]
    cm = FakeCM()
    _serve(cm)
    env = worker_env(TSUCHI_GATEWAY="cm", TSUCHI_CM_PRODUCT_TOKEN=TOKEN, TSUCHI_CM_URL=cm.url)
    procs = [
        subprocess.Popen(
            [
                *WORKER,
                "--db",
                PG_URL,
                "--keys",
                str(tmp_path / "keys"),
                "--id",
                wid,
                "--max-seconds",
                "120",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"{wid}.log").open("w"),  # a file: pipes could fill and block
        )
        for wid in ("w1", "w2")
    ]
    try:
        deadline = time.monotonic() + 120
        expected = {gateway_reference(i, 1) for i in ids}
        while time.monotonic() < deadline and not expected <= set(cm.processed):
            time.sleep(0.5)
        for wid in ("w1", "w2"):
            wait_until_started(tmp_path / f"{wid}.log")
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
        logs = [(tmp_path / f"{wid}.log").read_text() for wid in ("w1", "w2")]
        assert all(p.returncode == 0 for p in procs), logs
        assert expected <= set(cm.processed)
        # Every attempt was submitted exactly once, by one of the two workers.
        assert max(cm.processed.values()) == 1
        assert all(cm.received[r] == 1 for r in cm.processed)
        shares = [log.count("sweep: submitted") for log in logs]
        print(f"sweeps that submitted, per worker: {shares}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        cm.shutdown()
        cm.server_close()
