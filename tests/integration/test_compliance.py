"""Compliance policies end to end, on SQLite and PostgreSQL: purposes and
consent, quiet hours, frequency caps, 特定電子メール法 duties, PCI DSS masking,
proof of consent at send time, the consent register."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tsuchi import Engine, ManualClock, MessageStatus, SimulatedCarrierNetwork, errors
from tsuchi.domain.values import Purpose

from .world import World, build, count_events

JST_2300 = datetime(2026, 4, 1, 14, 0, tzinfo=UTC)  # 23:00 in Tokyo
JST_0800_NEXT = datetime(2026, 4, 1, 23, 0, tzinfo=UTC)  # 08:00 in Tokyo the next day
FRAUD = {"name": "山田太郎", "last4": "1234", "amount": 52000}


def opt_in(engine: Engine, w: World, i: int = 0) -> None:
    engine.grant_consent(
        w.accounts[i], w.sender, "marketing", source="web", wording="v3", by="山田太郎"
    )


CASES: list[tuple[str, str, dict[str, Any], str, bool, str, str]] = [
    # name, template, variables, urgency, opted in, expected status, reason
    ("urgent at 23:00 goes at once", "fraud_alert", FRAUD, "urgent", False, "routed", ""),
    ("security at 23:00 goes at once", "fraud_alert", FRAUD, "normal", False, "routed", ""),
    (
        "transactional at 23:00 waits",
        "note",
        {"memo": "明細"},
        "normal",
        False,
        "deferred",
        "quiet_hours",
    ),
    ("urgent transactional goes", "note", {"memo": "明細"}, "urgent", False, "routed", ""),
    ("marketing at 23:00 waits", "campaign", {}, "normal", True, "deferred", "quiet_hours"),
    (
        "marketing opted out is blocked",
        "campaign",
        {},
        "normal",
        False,
        "blocked",
        "marketing_no_consent",
    ),
]


@pytest.mark.parametrize(
    ("case", "template", "variables", "urgency", "opted_in", "status", "reason"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_rules_at_23_00_tokyo(
    engine: Engine,
    clock: ManualClock,
    case: str,
    template: str,
    variables: dict[str, Any],
    urgency: str,
    opted_in: bool,
    status: str,
    reason: str,
) -> None:
    w = build(engine)
    if opted_in:
        opt_in(engine, w)
    clock.set(JST_2300)
    m = engine.request_notice(
        w.sender, w.accounts[0], template, variables, idempotency_key=case, urgency=urgency
    )
    assert m.status.value == status
    if reason:
        assert m.timeline[-1].detail == reason
    summary = engine.delivery_summary()
    assert any(r["status"] == status and r["reason"] == reason for r in summary)


def test_marketing_deferred_at_23_00_goes_at_08_00_recipient_local(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    w = build(engine)
    opt_in(engine, w)
    clock.set(JST_2300)
    m = engine.request_notice(w.sender, w.accounts[0], "campaign", idempotency_key="c")
    assert engine.dispatch() == 0 and network.submitted == []
    clock.set(JST_0800_NEXT - timedelta(seconds=1))
    assert engine.dispatch() == 0
    clock.set(JST_0800_NEXT)
    assert engine.dispatch() == 1
    after = engine.message(m.id)
    assert [t.status for t in after.timeline][:4] == [
        "requested",
        "deferred",
        "routed",
        "submitted",
    ]
    assert after.timeline[2].at == JST_0800_NEXT


def test_quiet_hours_follow_the_recipients_time_zone(engine: Engine, clock: ManualClock) -> None:
    w = build(engine)
    la = engine.register_account(
        "acme", "LA1", "090-2222-3333", "Smith", carrier="docomo", time_zone="America/Los_Angeles"
    )
    clock.set(JST_2300)  # 07:00 in Los Angeles (PDT)
    m = engine.request_notice(w.sender, la, "note", {"memo": "x"}, idempotency_key="la")
    assert m.status is MessageStatus.DEFERRED
    clock.set(datetime(2026, 4, 1, 15, 0, tzinfo=UTC))  # 08:00 in Los Angeles
    n = engine.request_notice(w.sender, la, "note", {"memo": "x"}, idempotency_key="la2")
    assert n.status is MessageStatus.ROUTED
    assert (
        engine.request_notice(
            w.sender, w.accounts[0], "note", {"memo": "x"}, idempotency_key="tokyo"
        ).status
        is MessageStatus.DEFERRED
    )


def test_quiet_hours_configurable_per_sender_and_purpose(
    engine: Engine, clock: ManualClock
) -> None:
    w = build(engine)
    engine.set_quiet_hours(w.sender, "transactional", "07:00", "23:30")
    clock.set(JST_2300)
    assert (
        engine.request_notice(
            w.sender, w.accounts[0], "note", {"memo": "x"}, idempotency_key="a"
        ).status
        is MessageStatus.ROUTED
    )
    with pytest.raises(errors.InvalidInput) as e:
        engine.set_quiet_hours(w.sender, "transactional", "25:00", "08:00")
    assert e.value.field == "quiet_hours.start"


def test_frequency_cap_defers_then_releases(engine: Engine, clock: ManualClock) -> None:
    w = build(engine)
    opt_in(engine, w)
    first = engine.request_notice(w.sender, w.accounts[0], "campaign", idempotency_key="1")
    assert first.status is MessageStatus.ROUTED
    clock.advance(timedelta(hours=2))
    second = engine.request_notice(w.sender, w.accounts[0], "campaign", idempotency_key="2")
    assert second.status is MessageStatus.DEFERRED
    assert second.timeline[-1].detail == "frequency_cap_day"
    # Another customer is not affected by the first one's cap.
    opt_in(engine, w, 1)
    assert (
        engine.request_notice(w.sender, w.accounts[1], "campaign", idempotency_key="3").status
        is MessageStatus.ROUTED
    )
    clock.set(first.requested_at + timedelta(days=1))
    engine.dispatch()
    assert engine.message(second.id).status in (
        MessageStatus.SUBMITTED,
        MessageStatus.FAILED,
        MessageStatus.ROUTED,
    )
    assert "routed" in [t.status for t in engine.message(second.id).timeline]


def test_frequency_cap_weekly_and_drop_policy(engine: Engine, clock: ManualClock) -> None:
    w = build(engine)
    opt_in(engine, w)
    engine.set_frequency_cap(w.sender, per_day=2, per_week=2, over_cap="drop")
    for i in range(2):
        assert (
            engine.request_notice(
                w.sender, w.accounts[0], "campaign", idempotency_key=f"w{i}"
            ).status
            is MessageStatus.ROUTED
        )
        clock.advance(timedelta(days=1, minutes=1))
    dropped = engine.request_notice(w.sender, w.accounts[0], "campaign", idempotency_key="w2")
    assert dropped.status is MessageStatus.BLOCKED
    assert dropped.block_reason == "frequency_cap_week_dropped"
    with pytest.raises(errors.InvalidInput):
        engine.set_frequency_cap(w.sender, per_day=3, per_week=1)


def test_refusal_takes_effect_before_the_next_send(
    engine: Engine, network: SimulatedCarrierNetwork
) -> None:
    w = build(engine)
    opt_in(engine, w)
    m = engine.request_notice(w.sender, w.accounts[0], "campaign", idempotency_key="r")
    assert m.status is MessageStatus.ROUTED
    engine.withdraw_consent(w.accounts[0], w.sender, "marketing", source="reply 停止")
    assert engine.dispatch() == 0
    assert network.submitted == []
    after = engine.message(m.id)
    assert after.status is MessageStatus.CANCELLED
    assert after.timeline[-1].detail == "marketing_withdrawn_before_send"


def test_proof_of_consent_at_send_time(engine: Engine, clock: ManualClock) -> None:
    w = build(engine)
    version = engine.grant_consent(
        w.accounts[0], w.sender, "marketing", source="web", wording="同意文言 v3", by="山田太郎"
    )
    granted_at = clock.now()
    m = engine.request_notice(w.sender, w.accounts[0], "campaign", idempotency_key="p")
    clock.advance(timedelta(minutes=1))
    engine.dispatch()
    clock.advance(timedelta(days=1))
    engine.withdraw_consent(w.accounts[0], w.sender, "marketing", source="app")
    # "Why was this sent?": the consent id and version on the message ...
    store_msg = engine.services.notices.find(m.id)
    assert store_msg is not None
    assert store_msg.sent_basis["consent_version"] == version
    # ... and the consent as it stood at that moment.
    then = engine.consent_as_of(
        w.accounts[0], w.sender, "marketing", granted_at + timedelta(minutes=1)
    )
    assert then["granted"] and then["version"] == version and then["wording"] == "同意文言 v3"
    now = engine.consent_as_of(w.accounts[0], w.sender, "marketing", clock.now())
    assert not now["granted"]
    before = engine.consent_as_of(
        w.accounts[0], w.sender, "marketing", granted_at - timedelta(days=1)
    )
    assert not before["granted"] and before["version"] is None


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ("キャンペーン 停止は「停止」と返信 0120-000-000", "body.plus_message", "name"),
        ("ACMEカード キャンペーン 0120-000-000", "body.plus_message", "refuse"),
        ("ACMEカード キャンペーン 停止は「停止」と返信", "body.plus_message", "contact"),
    ],
)
def test_marketing_template_without_legal_duties_is_refused(
    engine: Engine, body: str, field: str, rule: str
) -> None:
    w = build(engine)
    v = engine.draft_template(
        w.sender,
        "promo",
        purpose="marketing",
        plus_message_text=body,
        sms_text="ACME promo STOP 0120-000-000",
        author="alice",
    )
    with pytest.raises(errors.InvalidInput) as e:
        engine.approve_template(w.sender, "promo", v, "bob")
    assert e.value.field == field and rule in e.value.rule
    assert engine.template_versions(w.sender, "promo") == {v: "drafted"}


def test_full_card_numbers_are_refused_in_templates_and_values(engine: Engine) -> None:
    w = build(engine)
    with pytest.raises(errors.InvalidInput) as e:
        engine.draft_template(
            w.sender,
            "leak",
            purpose="transactional",
            plus_message_text="カード 4111 1111 1111 1111",
            sms_text="x",
            author="alice",
        )
    assert e.value.field == "body.plus_message" and "PCI" in e.value.rule
    before = count_events(engine)
    with pytest.raises(errors.InvalidInput) as e:
        engine.request_notice(
            w.sender,
            w.accounts[0],
            "note",
            {"memo": "番号 5555-5555-5555-4444 です"},
            idempotency_key="pci",
        )
    assert e.value.field == "variables.memo"
    assert count_events(engine) == before
    # Non-Luhn digit runs (order numbers) pass.
    engine.request_notice(
        w.sender, w.accounts[0], "note", {"memo": "注文 4111111111111112"}, idempotency_key="order"
    )


def test_consent_register(engine: Engine) -> None:
    w = build(engine)
    opt_in(engine, w)
    engine.withdraw_consent(w.accounts[1], w.sender, "transactional", source="branch")
    register = list(engine.consent_register())
    by_purpose = {(r["account_id"], r["purpose"]): r for r in register}
    mk = by_purpose[(str(w.accounts[0]), "marketing")]
    assert mk["status"] == "granted" and mk["history"][0]["by"] == "recorded"
    assert mk["history"][0]["wording"] == "v3" and mk["sender"] == "ACMEカード"
    tx = by_purpose[(str(w.accounts[1]), "transactional")]
    assert tx["status"] == "withdrawn"
    assert "山田太郎" not in str(register)
    blocked = engine.request_notice(
        w.sender, w.accounts[1], "note", {"memo": "x"}, idempotency_key="tx"
    )
    assert blocked.block_reason == "transactional_withdrawn"
    assert Purpose.SECURITY.value not in {r["purpose"] for r in register}
