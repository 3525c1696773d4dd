"""Crash recovery: a worker killed at random points during dispatch loses no
message and sends none twice; the audit chain still verifies.

Interrupted submissions are reconciled, never blindly resent: a gateway that
can tell what it has (the simulator) is asked; otherwise the attempt is
recorded as submitted-unconfirmed and left to status reports and the TTL."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from tsuchi import (
    Engine,
    ManualClock,
    MessageStatus,
    Settings,
    SimulatedCarrierNetwork,
    Submission,
)
from tsuchi.domain.message import gateway_reference, parse_gateway_reference
from tsuchi.infrastructure.tables import outbox
from tsuchi.projections.audit import verify_export

from ..integration.test_cm_gateway import TOKEN, FakeCM, _serve
from ..integration.world import build
from .procs import wait_until_started
from .test_workers import LONG, WORKER, customers, worker_env

NOTE = {"memo": "明細のお知らせ"}


def _interrupt_after_prepare(engine: Engine) -> dict[str, Submission]:
    """Do what dispatch does up to the gateway call, then 'crash'."""
    _, subs = engine.services.dispatch.prepare(100)
    return {sub.reference: sub for sub in subs}


def test_interrupted_submission_is_reconciled_with_a_gateway_that_knows(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    w = build(engine)
    a = engine.request_notice(w.sender, w.accounts[0], "note", NOTE, idempotency_key="a")
    b = engine.request_notice(w.sender, w.accounts[1], "note", NOTE, idempotency_key="b")
    ready = _interrupt_after_prepare(engine)
    assert len(ready) == 2
    # The gateway got a's submission before the crash, not b's.
    network.submit([ready[gateway_reference(a.id, 1)]])
    assert engine.dispatch() == 0  # claims are still within their lease
    clock.advance(engine.settings.timer_lease + timedelta(seconds=1))
    assert engine.dispatch() == 1  # only b is (re)submitted
    refs = [s.reference for s in network.submitted]
    assert (
        refs.count(gateway_reference(a.id, 1)) == 1 and refs.count(gateway_reference(b.id, 1)) == 1
    )
    assert engine.message(a.id).status is MessageStatus.SUBMITTED
    assert engine.pending_dispatch() == 0


def test_interrupted_submission_without_reconciliation_is_never_resent(
    settings: Settings, clock: ManualClock
) -> None:
    from tsuchi.infrastructure.cm_gateway import CMGateway

    cm = FakeCM()
    _serve(cm)
    try:
        gw = CMGateway(TOKEN, url=cm.url, sleep=lambda _: None)
        with Engine(settings, clock=clock, gateway=gw) as e:
            w = build(e)
            m = e.request_notice(w.sender, w.accounts[0], "note", NOTE, idempotency_key="u")
            sub = _interrupt_after_prepare(e)[gateway_reference(m.id, 1)]
            gw.submit([sub])  # reached the aggregator, then the worker died
            clock.advance(e.settings.timer_lease + timedelta(seconds=1))
            assert e.dispatch() == 0
            assert cm.received[gateway_reference(m.id, 1)] == 1
            view = e.message(m.id)
            assert view.status is MessageStatus.SUBMITTED
            assert e.pending_dispatch() == 0
        gw.close()
    finally:
        cm.shutdown()
        cm.server_close()


def test_sigkill_during_dispatch_never_loses_or_duplicates(tmp_path: Path) -> None:
    trials = 100 if LONG else 50
    db = f"sqlite:///{tmp_path / 'crash.db'}"
    keys = tmp_path / "keys"
    settings = Settings(database_url=db, keys_dir=keys, create_keys=True)
    cm = FakeCM()
    _serve(cm)
    env = worker_env(
        TSUCHI_GATEWAY="cm",
        TSUCHI_CM_PRODUCT_TOKEN=TOKEN,
        TSUCHI_CM_URL=cm.url,
        TSUCHI_TIMER_LEASE="PT1S",
    )
    rng = random.Random(7)
    requested = []
    try:
        with Engine(settings) as e:
            w = build(e)
            accounts = e.register_accounts(customers(200))
            for trial in range(trials):
                for i in range(12):
                    requested.append(
                        e.request_notice(
                            w.sender,
                            accounts[(trial * 12 + i) % len(accounts)],
                            "fraud_alert",
                            {"name": "顧客", "last4": "1234", "amount": 100 + i},
                            idempotency_key=f"t{trial}-{i}",
                            urgency="urgent",
                        ).id
                    )
                cm.script.extend([("sleep", 0.05)] * 5)  # widen the submit-to-record window
                proc = subprocess.Popen(
                    [*WORKER, "--db", db, "--keys", str(keys)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(rng.uniform(0.8, 2.5))
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            cm.script.clear()
            log_path = tmp_path / "final.log"  # a file: an unread pipe could block the worker
            final = subprocess.Popen(
                [*WORKER, "--db", db, "--keys", str(keys), "--max-seconds", "120"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log_path.open("w"),
            )
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and e.pending_dispatch():
                time.sleep(0.5)
            time.sleep(1.5)  # leases of the last killed worker run out and reconcile
            wait_until_started(log_path)
            final.send_signal(signal.SIGTERM)
            final.wait(timeout=60)
            assert final.returncode == 0, log_path.read_text()[-2000:]
            with e.store.session(commit=False) as s:
                left = s.execute(select(func.count()).select_from(outbox)).scalar_one()
            assert left == 0
            statuses = {e.message(mid).status for mid in requested}
            assert statuses <= {MessageStatus.SUBMITTED, MessageStatus.FAILED}, statuses
            # No reference ever reached the aggregator twice.
            assert cm.received and max(cm.received.values()) == 1
            # Every message reached it, or was recorded as unconfirmed.
            reached = {parse_gateway_reference(r)[0].hex for r in cm.received}
            unconfirmed = len(requested) - len({m.hex for m in requested} & reached)
            print(f"{trials} kills, {len(requested)} messages, {unconfirmed} unconfirmed")
            out = e.audit.export(tmp_path / "audit", e.now())
            assert out["record_count"] > 0
            key, anchor = e.audit.public_key, e.settings.resolved_audit_anchor()
        assert verify_export(tmp_path / "audit", key, anchor=anchor).ok
    finally:
        cm.shutdown()
        cm.server_close()
