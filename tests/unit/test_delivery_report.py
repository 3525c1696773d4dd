"""The delivery report's fold and roll-up, on hand-made event states (no database)."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from tsuchi.projections.delivery_report import (
    REPORT_KEYS,
    ROW_FIELDS,
    MessageFacts,
    aggregate,
    fold,
    percentile,
    report_day,
    timeline_entries,
)
from tsuchi.reporting import render_csv, render_json, render_table

TOPIC = "tsuchi.domain.message:Message."
SENDER = UUID("b166415a-d5ba-5eec-adb2-4313019b37b6")
T0 = datetime(2026, 4, 1, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def requested(
    template: str = "fraud_alert", purpose: str = "security", when: datetime = T0, **over: Any
) -> tuple[str, dict[str, Any]]:
    state: dict[str, Any] = {
        "sender_id": SENDER,
        "idempotency_key": "k",
        "tenant": "acme",
        "account_id": uuid4(),
        "template_id": uuid4(),
        "template_name": template,
        "template_version": 1,
        "purpose": purpose,
        "urgency": "normal",
        # Sealed personal data as the transcoder leaves it: never opened.
        "variables": {"name": {"_type_": "pii", "_data_": {"s": "x", "k": 1, "b": "AAAA"}}},
        "correlation_id": "corr",
        "requested_by": "host",
        "at": when,
        "bulk": False,
    }
    state.update(over)
    return TOPIC + "Requested", state


def ev(event: str, **state: Any) -> tuple[str, dict[str, Any]]:
    return TOPIC + event, state


def routed(n: int, s: float, channel: str = "plus_message", carrier: str = "docomo") -> Any:
    return ev("Routed", attempt=n, channel=channel, carrier=carrier, basis={}, at=at(s))


def submitted(n: int, s: float) -> Any:
    return ev("Submitted", attempt=n, gateway_ref="g", basis={}, at=at(s))


def progressed(n: int, status: str, s: float) -> Any:
    return ev("Progressed", attempt=n, status=status, at=at(s))


def run(events: list[tuple[str, dict[str, Any]]], mid: UUID | None = None) -> MessageFacts:
    mid = mid or uuid4()
    facts: MessageFacts | None = None
    for version, (topic, state) in enumerate(events, start=1):
        facts = fold(facts, topic, state, mid, version)
    assert facts is not None
    return facts


def delivered_plus(read_after: float | None = None, deliver_after: float = 3.0) -> MessageFacts:
    events = [requested(), routed(1, 0), submitted(1, 0), progressed(1, "accepted", 1)]
    events.append(progressed(1, "delivered", deliver_after))
    if read_after is not None:
        events.append(progressed(1, "read", read_after))
    return run(events)


def blocked(reason: str) -> MessageFacts:
    return run(
        [requested("campaign", "marketing"), ev("Blocked", reason=reason, at=T0)],
    )


def fallback_to_sms() -> MessageFacts:
    return run(
        [
            requested(),
            routed(1, 0),
            submitted(1, 0),
            ev("Failed", attempt=1, code="403", permanent=True, at=at(0)),
            ev("FellBack", reason="not_capable", attempt=2, carrier="au", at=at(0)),
            submitted(2, 10),
            progressed(2, "accepted", 11),
            progressed(2, "delivered", 15),
        ]
    )


def scenario() -> list[MessageFacts]:
    deferred_then_sent = run(
        [
            requested("note", "transactional"),
            ev("Deferred", until=at(3600), reason="quiet_hours", at=at(0)),
            ev("Deferred", until=at(7200), reason="frequency_cap_day", at=at(3600)),
            routed(1, 7200),
            submitted(1, 7200),
            progressed(1, "delivered", 7202),
        ]
    )
    failed = run(
        [
            requested(),
            routed(1, 0, "sms", "rakuten"),
            submitted(1, 0),
            ev("Failed", attempt=1, code="UNDELIV", permanent=True, at=at(5)),
        ]
    )
    expired = run(
        [
            requested(),
            routed(1, 0, "sms", "softbank"),
            submitted(1, 0),
            progressed(1, "expired", 3600),
        ]
    )
    cancelled = run(
        [
            requested("campaign", "marketing"),
            ev("Deferred", until=at(600), reason="quiet_hours", at=at(0)),
            ev("Cancelled", reason="marketing_withdrawn_before_send", at=at(60)),
        ]
    )
    in_flight = run([requested(), routed(1, 0), submitted(1, 0)])
    return [
        delivered_plus(read_after=60),
        delivered_plus(read_after=120),
        delivered_plus(),
        blocked("marketing_no_consent"),
        blocked("marketing_no_consent"),
        blocked("marketing_withdrawn"),
        deferred_then_sent,
        failed,
        expired,
        cancelled,
        in_flight,
        fallback_to_sms(),
    ]


def totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    keys = ("requested", "blocked", "deferred", "submitted", "delivered", "read", "failed")
    keys += ("expired", "cancelled", "fallback", "pending")
    return {k: sum(r[k] for r in rows) for k in keys}


def test_funnel_counts_each_message_once() -> None:
    rows = aggregate(scenario())
    assert totals(rows) == {
        "requested": 12,
        "blocked": 3,
        "deferred": 2,
        "submitted": 8,
        "delivered": 5,
        "read": 2,
        "failed": 1,
        "expired": 1,
        "cancelled": 1,
        "fallback": 1,
        "pending": 1,
    }
    assert list(rows[0]) == list(ROW_FIELDS)


def test_blocked_counted_by_reason_and_filed_under_no_channel() -> None:
    rows = aggregate(scenario())
    (row,) = [r for r in rows if r["template"] == "campaign" and r["blocked"]]
    assert row["channel"] == "-" and row["carrier"] == "-"
    assert row["blocked_by_reason"] == {"marketing_no_consent": 2, "marketing_withdrawn": 1}
    assert sum(row["blocked_by_reason"].values()) == row["blocked"] == 3


def test_deferred_counted_once_under_its_first_reason() -> None:
    rows = aggregate(scenario(), ("purpose",))
    by = {r["purpose"]: r for r in rows}
    assert by["transactional"]["deferred"] == 1
    assert by["transactional"]["deferred_by_reason"] == {"quiet_hours": 1}
    assert by["transactional"]["delivered"] == 1
    assert by["marketing"]["deferred_by_reason"] == {"quiet_hours": 1}
    assert by["marketing"]["cancelled"] == 1
    facts = next(f for f in scenario() if f.template == "note")
    assert facts.deferrals == 2 and facts.defer_reason == "quiet_hours"


def test_fallback_is_filed_under_sms_with_latency_from_the_sms_submission() -> None:
    f = fallback_to_sms()
    assert f.fallback and f.fallback_reason == "not_capable"
    assert f.channels == ("plus_message", "sms")
    assert (f.channel, f.carrier, f.status) == ("sms", "au", "delivered")
    assert f.delivery_ms == 5000  # submitted at +10 s, delivered at +15 s
    (row,) = aggregate([f])
    assert row["fallback"] == 1 and row["failed"] == 0 and row["delivered"] == 1
    assert row["delivery_p50_s"] == 5.0


def test_late_reports_after_fallback_count_as_delivered_and_read_without_regressing() -> None:
    f = run(
        [
            requested(urgency="urgent"),
            routed(1, 0),
            submitted(1, 0),
            progressed(1, "delivered", 2),
            ev(
                "FellBack",
                reason="urgent notice not read in time",
                attempt=2,
                carrier="docomo",
                at=at(900),
            ),
            submitted(2, 900),
            progressed(2, "delivered", 903),
            ev("ReportRecorded", attempt=1, kind="read", code="", at=at(1000)),
        ]
    )
    assert f.status == "delivered" and f.read and f.read_ms == 1_000_000
    assert f.channel == "plus_message" and f.delivery_ms == 2000  # the first delivery


def test_percentiles_are_nearest_rank_and_exact() -> None:
    values = list(range(1, 101))
    random.Random(4).shuffle(values)
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile([7], 95) == 7
    assert percentile([], 50) is None
    assert percentile([1, 2, 3, 4], 50) == 2
    with pytest.raises(ValueError):
        percentile([1], 0)
    facts = [delivered_plus(deliver_after=s, read_after=s * 100) for s in range(1, 21)]
    (row,) = aggregate(facts)
    assert row["delivery_p50_s"] == 10.0 and row["delivery_p95_s"] == 19.0
    assert row["read_p50_s"] == 1000.0 and row["read_p95_s"] == 1900.0
    assert row["delivery_samples"] == row["read_samples"] == 20


def test_latency_is_none_without_samples() -> None:
    (row,) = aggregate([blocked("marketing_no_consent")])
    assert row["delivery_p50_s"] is None and row["read_p95_s"] is None


def test_day_is_the_request_date_in_tokyo() -> None:
    late_utc = datetime(2026, 4, 1, 15, 30, tzinfo=UTC)  # 00:30 on 2 April in Tokyo
    assert report_day(late_utc) == date(2026, 4, 2)
    f = run([requested(when=late_utc)])
    assert f.day == date(2026, 4, 2)
    assert aggregate([f])[0]["day"] == "2026-04-02"


def test_fold_is_idempotent_and_ignores_other_aggregates() -> None:
    mid = uuid4()
    f = run([requested(), routed(1, 0), submitted(1, 0)], mid)
    again = fold(f, *submitted(1, 50), mid, 3)
    assert again is f  # version 3 was folded in already
    assert fold(f, "tsuchi.domain.account:Account.Registered", {"at": T0}, mid, 4) is f
    assert fold(None, *routed(1, 0), mid, 2) is None  # no Requested seen: ignored


def test_accepts_string_ids_and_iso_times() -> None:
    topic, state = requested()
    state = {**state, "sender_id": str(SENDER), "account_id": str(uuid4()), "at": T0.isoformat()}
    f = fold(None, topic, state, str(uuid4()), 1)
    assert f is not None and f.sender_id == SENDER.hex and f.requested_at == T0


def test_output_is_sorted_and_independent_of_input_order() -> None:
    facts = scenario()
    first = aggregate(facts)
    shuffled = facts[:]
    random.Random(1).shuffle(shuffled)
    assert aggregate(shuffled) == first
    keys = [tuple(r[k] for k in REPORT_KEYS) for r in first]
    assert keys == sorted(keys)


def test_timeline_entries_mirror_the_aggregate_without_reply_contents() -> None:
    lines = timeline_entries(*ev("FellBack", reason="not_capable", attempt=2, carrier="au", at=T0))
    assert [(e.status, e.attempt, e.detail) for e in lines] == [
        ("fallback", 1, "not_capable"),
        ("routed", 2, "sms via au"),
    ]
    sealed = {"_type_": "pii", "_data_": {"s": "x"}}
    (reply,) = timeline_entries(*ev("ReplyReceived", text=sealed, postback="いいえ", at=T0))
    assert (reply.status, reply.detail) == ("reply", "button")
    (failed,) = timeline_entries(*ev("Failed", attempt=1, code="403", permanent=True, at=T0))
    assert failed.detail == "code 403 (permanent)"
    assert timeline_entries("tsuchi.domain.account:Account.Registered", {"at": T0}) == []


def test_csv_json_and_table_carry_every_row() -> None:
    rows = aggregate(scenario())
    csv_text = render_csv(rows)
    lines = csv_text.strip().split("\n")
    assert lines[0].split(",") == list(ROW_FIELDS)
    assert len(lines) == len(rows) + 1
    assert "marketing_no_consent=2;marketing_withdrawn=1" in csv_text

    assert json.loads(render_json(rows)) == rows
    assert len(render_table(rows).strip().split("\n")) == len(rows) + 1
    assert render_csv([]).strip().split(",") == list(ROW_FIELDS)
