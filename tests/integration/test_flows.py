"""Scheduled flows driven end to end by an injected clock, on SQLite and
PostgreSQL: deadline reminders, fraud alerts with replies and escalation,
broadcasts, delivery fallbacks, opt-out by reply, webhooks."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from tsuchi import (
    Engine,
    ManualClock,
    MessageStatus,
    NetworkProfile,
    Settings,
    SimulatedCarrierNetwork,
    StatusReport,
    errors,
)
from tsuchi.domain.deadline import deadline_id
from tsuchi.domain.message import gateway_reference, parse_gateway_reference
from tsuchi.domain.values import Channel
from tsuchi.flows import DeadlineSpec
from tsuchi.infrastructure.tables import timers
from tsuchi.infrastructure.webhooks import sign

from .world import World, build

T0 = datetime(2026, 4, 1, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo


def spec(
    w: World,
    ref: str = "card-1",
    due: date = date(2026, 7, 1),
    offsets: tuple[int, ...] = (60, 30, 7),
) -> DeadlineSpec:
    return DeadlineSpec(
        sender_id=w.sender,
        account_id=w.accounts[0],
        kind="card_expiry",
        reference=ref,
        due=due,
        template="card_expiry",
        variables={"last4": "4242"},
        offsets_days=offsets,
    )


def test_card_expiry_reminders_fire_at_their_offsets(engine: Engine, clock: ManualClock) -> None:
    clock.set(T0)
    w = build(engine)
    did = engine.register_deadline(spec(w))
    assert engine.register_deadlines([spec(w)]) == 0  # registering again is a no-op
    for n, day in enumerate((date(2026, 5, 2), date(2026, 6, 1), date(2026, 6, 24)), start=1):
        at_10_jst = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=1)
        clock.set(at_10_jst - timedelta(minutes=1))
        engine.sweep()
        assert len(engine.messages(correlation_id=f"deadline:{did.hex}")) == n - 1
        clock.set(at_10_jst)
        engine.sweep()
        assert len(engine.messages(correlation_id=f"deadline:{did.hex}")) == n
    clock.set(datetime(2026, 7, 2, tzinfo=UTC))
    engine.sweep()
    assert len(engine.messages(correlation_id=f"deadline:{did.hex}")) == 3


def test_renewal_cancels_pending_reminders(engine: Engine, clock: ManualClock) -> None:
    clock.set(T0)
    w = build(engine)
    engine.register_deadline(spec(w))
    clock.set(datetime(2026, 5, 2, 1, 0, tzinfo=UTC))
    engine.sweep()
    assert engine.cancel_deadline(w.sender, "card_expiry", "card-1", "renewed") == 2
    clock.set(datetime(2026, 7, 1, 1, 0, tzinfo=UTC))
    engine.sweep()
    did = deadline_id(w.sender, "card_expiry", "card-1")
    assert len(engine.messages(correlation_id=f"deadline:{did.hex}")) == 1
    with pytest.raises(errors.RuleViolation):
        engine.cancel_deadline(w.sender, "card_expiry", "card-1", "closed")


def test_timer_due_while_down_fires_late_and_double_fire_sends_once(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    clock.set(T0)
    w = build(engine)
    did = engine.register_deadline(spec(w, offsets=(60,)))
    clock.set(datetime(2026, 5, 5, 3, 0, tzinfo=UTC))  # three days after it fell due
    stats = engine.sweep()
    assert stats.timers_fired == 1 and stats.late == 1
    with engine.store.session(commit=False) as s:
        row = s.execute(
            select(timers.c.late, timers.c.fired_at).where(timers.c.kind == "reminder")
        ).one()
    assert row[0] is True and row[1] is not None
    # Fire the same timer again, as a crashed worker's retry would.
    from tsuchi.infrastructure.sql import timers as timer_mod

    t = timer_mod.Timer(
        f"reminder:{did.hex}:60", "reminder", T0, {"deadline_id": did.hex, "offset": 60}, True
    )
    engine.services.sweep.fire(t)
    engine.sweep()
    ids = engine.messages(correlation_id=f"deadline:{did.hex}")
    assert len(ids) == 1
    assert (
        len([x for x in network.submitted if parse_gateway_reference(x.reference)[0] == ids[0]])
        == 1
    )


def quiet_network(clock: ManualClock, **profile: float) -> SimulatedCarrierNetwork:
    return SimulatedCarrierNetwork(seed=9, clock=clock, profile=NetworkProfile(**profile))


def test_fraud_alert_not_me_requests_card_block_and_confirms(
    engine: Engine, clock: ManualClock
) -> None:
    clock.set(T0)
    w = build(engine)
    case = engine.raise_fraud_alert(w.sender, w.accounts[0], "1234", "海外ECサイト", 98000, T0)
    assert (
        engine.raise_fraud_alert(w.sender, w.accounts[0], "1234", "海外ECサイト", 98000, T0) == case
    )
    info = engine.fraud_case(case)
    msg = engine.message(__import__("uuid").UUID(info["message_id"]))
    assert msg.urgency.value == "urgent"
    engine.sweep()
    engine.handle_report(
        StatusReport(
            gateway_reference(msg.id, 1),
            "reply",
            clock.now(),
            text="いいえ、身に覚えがありません",
            postback="いいえ、身に覚えがありません",
        )
    )
    assert engine.fraud_case(case)["state"] == "card_block_requested"
    confirmations = [m for m in engine.messages(correlation_id=f"fraud:{case.hex}") if m != msg.id]
    assert len(confirmations) == 1
    clock.advance(timedelta(hours=1))
    engine.sweep()
    assert engine.fraud_case(case)["state"] == "card_block_requested"  # no escalation
    with engine.store.session(commit=False):
        names = [type(e).__name__ for e in engine.store.events.get(case)]
    assert "CardBlockRequested" in names and "EscalationRequired" not in names


def test_fraud_alert_without_answer_escalates_and_goes_by_sms_too(
    settings: Settings,
    clock: ManualClock,
) -> None:
    clock.set(T0)
    net = quiet_network(clock, plus_message_capable_rate=1.0, read_rate=0.0, sms_delivery_rate=0.0)
    with Engine(settings, clock=clock, gateway=net) as engine:
        w = build(engine)
        case = engine.raise_fraud_alert(w.sender, w.accounts[0], "1234", "家電量販店", 50000, T0)
        engine.sweep()
        clock.advance(timedelta(minutes=1))
        engine.sweep()
        clock.advance(engine.settings.urgent_read_window)
        engine.sweep()
        engine.sweep()
        channels = [s.channel for s in net.submitted]
        assert channels == [Channel.PLUS_MESSAGE, Channel.SMS]
        # The +Message was delivered: the SMS sent as well (which this network
        # never delivers) has its own status; the message stays delivered.
        (alert,) = engine.messages(correlation_id=f"fraud:{case.hex}")
        view = engine.message(alert)
        assert view.status is MessageStatus.DELIVERED and view.attempts == 2
        assert [e.status for e in view.timeline if e.attempt == 2][-1] in ("submitted", "failed")
        clock.advance(engine.settings.fraud_escalate_after)
        engine.sweep()
        assert engine.fraud_case(case)["state"] == "escalated"


def test_no_delivery_within_ttl_falls_back_to_sms(settings: Settings, clock: ManualClock) -> None:
    clock.set(T0)
    net = quiet_network(clock, plus_message_capable_rate=1.0, delivery_latency_s=10**7)
    with Engine(settings, clock=clock, gateway=net) as engine:
        w = build(engine)
        m = engine.request_notice(
            w.sender, w.accounts[0], "note", {"memo": "明細"}, idempotency_key="ttl"
        )
        engine.sweep()
        clock.advance(engine.settings.delivery_ttl["normal"] + timedelta(seconds=1))
        engine.sweep()
        engine.sweep()
        after = engine.message(m.id)
        assert after.channel is Channel.SMS and after.attempts == 2
        assert [s.channel for s in net.submitted] == [Channel.PLUS_MESSAGE, Channel.SMS]


def test_broadcast_safety_check_with_replies_and_urgent_first(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    clock.set(T0)
    w = build(engine)
    accounts = w.accounts + [
        engine.register_account(
            "acme", f"B{i}", f"080-{1000 + i:04d}-{i:04d}", f"客{i}", carrier="docomo"
        )
        for i in range(60)
    ]
    bid = engine.start_broadcast(
        w.sender, "earthquake-drill", "safety_check", accounts, urgency="normal"
    )
    assert engine.start_broadcast(w.sender, "earthquake-drill", "safety_check", accounts) == bid
    engine.sweep(max_timers=1)  # expand one chunk ...
    urgent = engine.request_notice(
        w.sender,
        w.accounts[0],
        "fraud_alert",
        {"name": "山田", "last4": "1111", "amount": 1},
        idempotency_key="urgent-during-broadcast",
        urgency="urgent",
    )
    network.submitted.clear()
    engine.dispatch(limit=1)  # ... the urgent notice goes before the queued bulk
    assert network.submitted[0].reference == gateway_reference(urgent.id, 1)
    for _ in range(5):
        engine.sweep()
    report = engine.broadcast_report(bid)
    assert report["recipients"] == 63 and report["messages_created"] == 63 and report["expanded"]
    ids = engine.messages(correlation_id=f"broadcast:{bid.hex}")
    assert len(ids) == 63
    engine.handle_report(
        StatusReport(
            gateway_reference(ids[0], 1), "reply", clock.now(), text="無事です", postback="無事です"
        )
    )
    engine.handle_report(
        StatusReport(
            gateway_reference(ids[1], 1),
            "reply",
            clock.now(),
            text="助けが必要",
            postback="助けが必要",
        )
    )
    assert engine.broadcast_report(bid)["replies"] == {"safe": 1, "need_help": 1}


def test_opt_out_by_reply_withdraws_and_confirms_once(engine: Engine, clock: ManualClock) -> None:
    clock.set(T0)
    w = build(engine)
    engine.grant_consent(
        w.accounts[0], w.sender, "marketing", source="web", wording="v3", by="山田"
    )
    m = engine.request_notice(w.sender, w.accounts[0], "campaign", idempotency_key="mk")
    engine.dispatch()
    for text in ("停止", "STOP"):
        engine.handle_report(
            StatusReport(gateway_reference(m.id, 1), "reply", clock.now(), text=text)
        )
        clock.advance(timedelta(seconds=5))
    consent = engine.consent(w.accounts[0], w.sender, "marketing")
    assert consent is not None and not consent.granted
    assert consent.history[-1].source == "reply keyword"
    confirmations = engine.messages(correlation_id=f"opt-out:{m.id.hex}")
    assert len(confirmations) == 1
    again = engine.request_notice(w.sender, w.accounts[0], "campaign", idempotency_key="mk2")
    assert again.status is MessageStatus.BLOCKED


def test_webhook_is_authenticated_idempotent_and_keeps_orphans(
    settings: Settings, clock: ManualClock
) -> None:
    clock.set(T0)
    s = settings.model_copy(update={"webhook_secret": "s3cret-s3cret-s3cret"})
    with Engine(s, clock=clock) as engine:
        w = build(engine)
        m = engine.request_notice(
            w.sender, w.accounts[0], "note", {"memo": "x"}, idempotency_key="wh"
        )
        engine.dispatch()
        body = json.dumps(
            {
                "messages": {
                    "msg": [
                        {
                            "received": "2026-04-01T01:00:05Z",
                            "to": "0031600000000",
                            "reference": gateway_reference(m.id, 1),
                            "status": {"code": 2},
                        },
                        {
                            "received": "2026-04-01T01:00:06Z",
                            "to": "0031600000000",
                            "reference": "0" * 32 + ":1",
                            "status": {"code": 2},
                        },
                    ]
                }
            }
        ).encode()
        ts = int(clock.now().timestamp())
        headers = {
            "content-type": "application/json",
            "x-tsuchi-signature": sign(body, "s3cret-s3cret-s3cret", ts),
        }
        first = engine.handle_webhook(headers, body)
        assert (first.accepted, first.orphans) == (1, 1)
        second = engine.handle_webhook(headers, body)
        assert (second.accepted, second.duplicates) == (0, 1)
        assert engine.message(m.id).status is MessageStatus.DELIVERED
        from tsuchi.infrastructure.webhooks import WebhookRejected

        events = engine.store.recorder.max_notification_id()
        with pytest.raises(WebhookRejected) as e:
            engine.handle_webhook({"content-type": "application/json"}, body)
        assert e.value.status == 401
        tampered = body.replace(b'"code": 2', b'"code": 3', 1)
        with pytest.raises(WebhookRejected) as e:
            engine.handle_webhook({**headers}, tampered)
        assert e.value.status == 401
        assert engine.store.recorder.max_notification_id() == events
