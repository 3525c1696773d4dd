"""The delivery report projection over a real event log, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import MetaData, select, text, update
from sqlalchemy.orm import Session

from tsuchi import Engine, ManualClock, SimulatedCarrierNetwork
from tsuchi.infrastructure.delivery_report import DeliveryReport, facts, message_log
from tsuchi.infrastructure.projection_runner import (
    ProjectionRunner,
    StoredNotification,
    positions,
)

from .world import NAMES, NUMBERS, World, build

FRAUD = {"name": "山田太郎", "last4": "1234", "amount": 52000}
DAY1_10_00_JST = datetime(2026, 4, 1, 1, 0, tzinfo=UTC)
DAY1_23_00_JST = datetime(2026, 4, 1, 14, 0, tzinfo=UTC)
DAY2_08_00_JST = datetime(2026, 4, 1, 23, 0, tzinfo=UTC)


def drain(engine: Engine, clock: ManualClock, rounds: int = 30) -> None:
    for _ in range(rounds):
        engine.sweep()
        clock.advance(timedelta(minutes=5))


def history(
    engine: Engine,
    clock: ManualClock,
    network: SimulatedCarrierNetwork,
    report: DeliveryReport | None = None,
) -> World:
    """Two Japanese days of notices: +Message, SMS fallback, blocked for two
    reasons, deferred by quiet hours and sent the next morning.  With
    ``report``, catch up in small batches along the way."""

    def step() -> None:
        if report is not None:
            report.catch_up(batch=3)

    w = build(engine)
    network.capability["+819011112222"] = True  # account 0: +Message
    network.capability["+818033334444"] = False  # account 1: SMS after a fallback
    clock.set(DAY1_10_00_JST)
    for i, account in enumerate(w.accounts):
        engine.request_notice(
            w.sender, account, "fraud_alert", FRAUD, idempotency_key=f"fa-{i}", urgency="urgent"
        )
    step()
    engine.request_notice(w.sender, w.accounts[0], "campaign", idempotency_key="camp-0")
    engine.grant_consent(w.accounts[2], w.sender, "marketing", source="web", wording="v3", by="x")
    engine.withdraw_consent(w.accounts[2], w.sender, "marketing", source="reply STOP")
    engine.request_notice(w.sender, w.accounts[2], "campaign", idempotency_key="camp-2")
    drain(engine, clock)
    step()
    clock.set(DAY1_23_00_JST)
    engine.request_notice(
        w.sender, w.accounts[0], "note", {"memo": "明細のお知らせ"}, idempotency_key="note-0"
    )
    engine.grant_consent(w.accounts[1], w.sender, "marketing", source="web", wording="v3", by="y")
    engine.request_notice(w.sender, w.accounts[1], "campaign", idempotency_key="camp-1")
    step()
    clock.set(DAY2_08_00_JST)
    drain(engine, clock)
    step()
    engine.request_notice(
        w.sender, w.accounts[2], "fraud_alert", FRAUD, idempotency_key="fa-day2", urgency="urgent"
    )
    drain(engine, clock)
    return w


def all_message_ids(engine: Engine, w: World) -> list[Any]:
    return [m for a in w.accounts for m in engine.messages(account_id=a)]


def total(rows: Sequence[dict[str, Any]], field: str) -> int:
    return sum(int(r[field]) for r in rows)


def reasons(rows: Sequence[dict[str, Any]], field: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        for k, v in r[field].items():
            out[k] = out.get(k, 0) + v
    return out


def test_catch_up_builds_the_report_with_reasons_and_fallback(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    w = history(engine, clock, network)
    report = DeliveryReport(engine.store)
    assert report.catch_up() > 0
    rows = report.rows()
    ids = all_message_ids(engine, w)
    assert total(rows, "requested") == len(ids) == 8
    assert reasons(rows, "blocked_by_reason") == {
        "marketing_no_consent": 1,
        "marketing_withdrawn": 1,
    }
    assert reasons(rows, "deferred_by_reason") == {"quiet_hours": 2}
    assert total(rows, "fallback") >= 1
    assert {r["day"] for r in rows} == {"2026-04-01", "2026-04-02"}
    # The report agrees with the engine's own message view.
    summary = engine.delivery_summary()
    assert total(rows, "blocked") == sum(s["count"] for s in summary if s["status"] == "blocked")
    assert total(rows, "fallback") == sum(s["fallback"] for s in summary)
    assert total(rows, "delivered") >= total(rows, "read") > 0
    by_channel = {r["channel"]: r for r in report.rows(by=("channel",))}
    assert by_channel["sms"]["fallback"] >= 1
    assert by_channel["plus_message"]["delivery_p50_s"] is not None
    blocked = [r for r in rows if r["blocked"]]
    assert all(r["channel"] == "-" and r["template"] == "campaign" for r in blocked)
    assert report.rows(since=datetime(2026, 4, 2).date()) == [
        r for r in rows if r["day"] == "2026-04-02"
    ]


def test_catch_up_is_idempotent_and_tracks_its_position(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    w = history(engine, clock, network)
    report = DeliveryReport(engine.store)
    report.catch_up(batch=7)
    rows = report.rows()
    status = report.status()
    assert status["lag"] == 0 and status["position"] == status["head"] > 0
    assert report.catch_up() == 0
    assert DeliveryReport(engine.store).catch_up() == 0  # another instance, same position
    assert report.rows() == rows
    with engine.store.session(commit=False) as s:
        n_facts = s.execute(select(text("count(*)")).select_from(facts)).scalar_one()
    assert n_facts == len(all_message_ids(engine, w))


def test_rebuild_from_zero_gives_identical_rows_and_logs(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    report = DeliveryReport(engine.store)
    w = history(engine, clock, network, report)  # caught up incrementally, 3 events a batch
    report.catch_up()
    rows = report.rows()
    ids = all_message_ids(engine, w)
    logs = {m: report.message_log(m) for m in ids}
    replayed = report.rebuild(batch=50)
    assert replayed == report.status()["head"]
    assert report.rows() == rows
    assert {m: report.message_log(m) for m in ids} == logs


def test_message_log_matches_the_message_timeline(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    w = history(engine, clock, network)
    report = DeliveryReport(engine.store)
    report.catch_up()
    ids = all_message_ids(engine, w)
    assert ids
    for mid in ids:
        timeline = engine.message(mid).timeline
        log = report.message_log(mid)
        assert [e["status"] for e in log] == [t.status for t in timeline]
        assert [e["attempt"] for e in log] == [t.attempt for t in timeline]
        assert [datetime.fromisoformat(e["at"]) for e in log] == [t.at for t in timeline]
        for e, t in zip(log, timeline, strict=True):
            if t.status != "reply":
                assert e["detail"] == t.detail
    assert report.message_log(ids[0].hex) == report.message_log(ids[0])


def test_lookups_by_correlation_and_account(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    w = history(engine, clock, network)
    report = DeliveryReport(engine.store)
    report.catch_up()
    found = report.messages_by_correlation("note-0")
    assert [m["message_id"] for m in found] == [
        str(i) for i in engine.messages(correlation_id="note-0")
    ]
    assert found[0]["template"] == "note" and found[0]["purpose"] == "transactional"
    for a in w.accounts:
        mine = report.messages_by_account(a)
        assert sorted(m["message_id"] for m in mine) == sorted(
            str(i) for i in engine.messages(account_id=a)
        )
        assert all(m["account_id"] == a.hex for m in mine)
    assert report.messages_by_correlation("nope") == []


def test_report_tables_hold_no_personal_data(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    history(engine, clock, network)
    report = DeliveryReport(engine.store)
    report.catch_up()
    with engine.store.session(commit=False) as s:
        dumped = repr(s.execute(select(facts)).all()) + repr(s.execute(select(message_log)).all())
    # Ids and timestamps are not personal data, but a random one may hold "1234".
    uuid = r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}"
    dumped = re.sub(uuid, "<id>", dumped)
    dumped = re.sub(r"datetime\.datetime\([^)]*\)|\d{4}-\d\d-\d\d[T ][0-9:.+]+", "<t>", dumped)
    assert "<id>" in dumped
    digits = [n.replace("-", "") for n in NUMBERS]
    for secret in [*NAMES, *digits, *(d[1:] for d in digits), "明細のお知らせ", "1234"]:
        assert secret not in dumped


class _Failing:
    """Writes its rows, then fails: nothing of the batch may remain."""

    name = DeliveryReport.name
    metadata: MetaData = DeliveryReport.metadata

    def __init__(self, inner: DeliveryReport) -> None:
        self.inner = inner

    def apply(self, s: Session, notifications: Sequence[StoredNotification]) -> None:
        self.inner.apply(s, notifications)
        raise RuntimeError("boom")

    def clear(self, s: Session) -> None:
        self.inner.clear(s)


class _Raced:
    """Another runner moves the position once while this one applies a batch."""

    name = DeliveryReport.name
    metadata: MetaData = DeliveryReport.metadata

    def __init__(self, inner: DeliveryReport) -> None:
        self.inner = inner
        self.raced = False

    def apply(self, s: Session, notifications: Sequence[StoredNotification]) -> None:
        self.inner.apply(s, notifications)
        if not self.raced:
            self.raced = True
            s.execute(
                update(positions)
                .where(positions.c.name == self.name)
                .values(position=positions.c.position + 1)
            )

    def clear(self, s: Session) -> None:
        self.inner.clear(s)


def test_view_rows_and_position_commit_together(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    history(engine, clock, network)
    report = DeliveryReport(engine.store)
    runner = ProjectionRunner(engine.store)
    with pytest.raises(RuntimeError):
        runner.catch_up(_Failing(report), batch=500)
    assert report.status()["position"] == 0 and report.rows() == []
    expected = report.status()["head"]
    assert runner.catch_up(_Raced(report), batch=10_000) == expected  # retried once, cleanly
    reference = DeliveryReport(engine.store)
    rows = report.rows()
    reference.rebuild()
    assert reference.rows() == rows


def test_follower_keeps_the_report_current(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    w = build(engine)
    report = DeliveryReport(engine.store)
    postgres = engine.store.engine.dialect.name == "postgresql"
    # On PostgreSQL the poll interval is far longer than the test waits: only
    # LISTEN/NOTIFY can wake the follower in time.  SQLite polls.
    follower = report.follower(poll_interval=60 if postgres else 0.05)
    thread = threading.Thread(target=follower.run)
    thread.start()
    try:
        if postgres:
            assert follower.listening.wait(10), "the follower never started listening"
        assert follower.listen is postgres
        deadline = time.monotonic() + 10
        while follower.rounds < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        engine.request_notice(
            w.sender, w.accounts[0], "fraud_alert", FRAUD, idempotency_key="live", urgency="urgent"
        )
        found: list[dict[str, Any]] = []
        while not found and time.monotonic() < deadline:
            time.sleep(0.05)
            found = report.messages_by_correlation("live")
        assert found and found[0]["status"] == "routed"
    finally:
        follower.stop()
        thread.join(10)
    assert not thread.is_alive()
