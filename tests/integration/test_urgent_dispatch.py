"""Urgent notices are never held up by bulk work: their own dispatch batches,
the worker's urgent dispatcher (woken in-process, polling for other
processes), and broadcast expansion that gives way to a waiting writer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

import tsuchi.application.flows.broadcasts as flows_module
from tsuchi import Engine, ManualClock, Settings, SimulatedCarrierNetwork
from tsuchi.domain.message import gateway_reference, parse_gateway_reference
from tsuchi.worker import Worker

from .world import build

T0 = datetime(2026, 4, 1, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo
FRAUD = {"name": "山田", "last4": "1111", "amount": 52000}


def _urgent(engine: Engine, sender: UUID, account: UUID, key: str) -> UUID:
    view = engine.request_notice(
        sender, account, "fraud_alert", FRAUD, idempotency_key=key, urgency="urgent"
    )
    return view.id


def _submitted(network: SimulatedCarrierNetwork) -> set[str]:
    return {parse_gateway_reference(s.reference)[0].hex for s in list(network.submitted)}


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def test_an_urgent_batch_holds_urgent_notices_only(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    clock.set(T0)
    w = build(engine)
    for i, account in enumerate(w.accounts):
        engine.request_notice(w.sender, account, "note", {"memo": "明細"}, idempotency_key=f"n{i}")
    mid = _urgent(engine, w.sender, w.accounts[1], "u1")
    assert engine.dispatch() == 1
    assert [s.reference for s in network.submitted] == [gateway_reference(mid, 1)]
    assert engine.dispatch() == len(w.accounts)  # then the others, together


def test_a_committed_urgent_notice_wakes_the_dispatcher(engine: Engine, clock: ManualClock) -> None:
    clock.set(T0)
    w = build(engine)
    engine.wait_for_urgent(0)  # forget what set-up did
    engine.request_notice(w.sender, w.accounts[0], "note", {"memo": "x"}, idempotency_key="n")
    assert not engine.wait_for_urgent(0)
    assert not engine.urgent_due()
    _urgent(engine, w.sender, w.accounts[0], "u")
    assert engine.wait_for_urgent(0)
    assert not engine.wait_for_urgent(0)  # one wake per commit
    assert engine.urgent_due()
    assert engine.dispatch(urgent_only=True) == 1
    assert not engine.urgent_due()
    assert engine.dispatch(urgent_only=True) == 0  # the normal notice waits for the sweep


@pytest.fixture
def worker_thread(engine: Engine) -> Iterator[Worker]:
    # Sweeps once at start, then not for an hour: what is submitted after the
    # first sweep was submitted by the urgent dispatcher.
    worker = Worker(engine, sweep_every=timedelta(hours=1), freeze_heap=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert _eventually(lambda: worker.sweeps >= 1)
    yield worker
    worker.stop()
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_the_worker_submits_urgent_notices_between_sweeps(
    engine: Engine,
    clock: ManualClock,
    network: SimulatedCarrierNetwork,
    settings: Settings,
    worker_thread: Worker,
) -> None:
    clock.set(T0)
    w = build(engine)
    normal = engine.request_notice(
        w.sender, w.accounts[2], "note", {"memo": "明細"}, idempotency_key="normal"
    ).id
    here = _urgent(engine, w.sender, w.accounts[0], "here")  # this process: a wake
    assert _eventually(lambda: here.hex in _submitted(network))
    # Another process on the same database: found by the dispatcher's poll.
    with Engine(settings, clock=clock, gateway=network) as other:
        there = _urgent(other, w.sender, w.accounts[1], "there")
    assert _eventually(lambda: there.hex in _submitted(network))
    assert worker_thread.sweeps == 1
    assert normal.hex not in _submitted(network)  # bulk and normal work wait for the sweep
    assert engine.message(here).status == "submitted"


def test_broadcast_expansion_gives_way_to_a_waiting_writer(
    engine: Engine, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock.set(T0)
    w = build(engine)
    accounts = w.accounts + [
        engine.register_account("acme", f"B{i}", f"080-{2000 + i:04d}-{i:04d}", f"客{i}")
        for i in range(5)
    ]
    # Someone always waits for the write lock: every chunk commits after the
    # minimum (two recipients here).
    monkeypatch.setattr(flows_module, "EXPAND_MIN", 2)
    monkeypatch.setattr(engine.store, "writers_waiting", lambda: True)
    bid = engine.start_broadcast(w.sender, "drill", "safety_check", accounts)
    fired = 0
    for _ in range(20):
        stats = engine.sweep(max_timers=1)
        fired += stats.timers_fired
        if engine.broadcast_report(bid)["expanded"]:
            break
    report = engine.broadcast_report(bid)
    assert report["expanded"] and report["messages_created"] == len(accounts)
    assert fired >= len(accounts) // 2  # one chunk per two recipients
    ids = engine.messages(correlation_id=f"broadcast:{bid.hex}")
    assert len(ids) == len(set(ids)) == len(accounts)
