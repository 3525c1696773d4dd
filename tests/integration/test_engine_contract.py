"""The engine's contract, run on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tsuchi import (
    Engine,
    ManualClock,
    MessageStatus,
    SimulatedCarrierNetwork,
    StatusReport,
    Suggestion,
    errors,
)
from tsuchi.domain.message import gateway_reference
from tsuchi.domain.values import Capability, Channel

from .world import NUMBERS, build, count_events


def fraud_vars(**over: Any) -> dict[str, Any]:
    return {"name": "山田太郎", "last4": "1234", "amount": 52000, **over}


def drain(engine: Engine, clock: ManualClock, rounds: int = 40) -> None:
    for _ in range(rounds):
        engine.dispatch()
        clock.advance(timedelta(minutes=5))
        engine.process_reports()


def test_notice_is_routed_submitted_delivered_and_read(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    w = build(engine)
    network.capability["+819011112222"] = True
    m = engine.request_notice(
        w.sender,
        w.accounts[0],
        "fraud_alert",
        fraud_vars(),
        idempotency_key="fa-1",
        urgency="urgent",
    )
    assert m.status is MessageStatus.ROUTED and m.channel is Channel.PLUS_MESSAGE
    assert m.authorisation["rule"] == "security_always_allowed"
    assert engine.dispatch() == 1
    sub = network.submitted[-1]
    assert sub.to == "+819011112222" and "山田太郎" in sub.text and "****1234" in sub.text
    assert sub.suggestions == (
        Suggestion.reply("はい、私です"),
        Suggestion.reply("いいえ、身に覚えがありません"),
    )
    drain(engine, clock)
    final = engine.message(m.id)
    statuses = [t.status for t in final.timeline]
    assert statuses[:4] == ["requested", "routed", "submitted", "accepted"]
    assert final.status in (MessageStatus.DELIVERED, MessageStatus.READ, MessageStatus.FAILED)
    assert engine.messages(account_id=w.accounts[0]) == [m.id]
    assert engine.messages(correlation_id="fa-1") == [m.id]


def test_same_idempotency_key_returns_same_message_and_never_sends_twice(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    w = build(engine)
    a = engine.request_notice(
        w.sender, w.accounts[0], "fraud_alert", fraud_vars(), idempotency_key="k1"
    )
    b = engine.request_notice(
        w.sender, w.accounts[0], "fraud_alert", fraud_vars(), idempotency_key="k1"
    )
    assert a.id == b.id
    engine.dispatch()
    events = count_events(engine)
    c = engine.request_notice(
        w.sender, w.accounts[0], "fraud_alert", fraud_vars(), idempotency_key="k1"
    )
    assert c.id == a.id and count_events(engine) == events
    assert engine.dispatch() == 0
    assert [s.reference for s in network.submitted].count(gateway_reference(a.id, 1)) == 1
    with pytest.raises(errors.IdempotencyConflict) as e:
        engine.request_notice(
            w.sender, w.accounts[1], "fraud_alert", fraud_vars(), idempotency_key="k1"
        )
    assert e.value.field == "idempotency_key"


def test_not_capable_falls_back_to_sms_and_learns_capability(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    w = build(engine)
    network.capability["+819011112222"] = False
    m = engine.request_notice(
        w.sender, w.accounts[0], "fraud_alert", fraud_vars(), idempotency_key="fb"
    )
    assert m.channel is Channel.PLUS_MESSAGE
    engine.dispatch()
    after = engine.message(m.id)
    assert after.channel is Channel.SMS and after.attempts == 2
    assert "fallback" in [t.status for t in after.timeline]
    assert engine.account(w.accounts[0]).capability is Capability.NO
    engine.dispatch()
    assert [s.channel for s in network.submitted] == [Channel.PLUS_MESSAGE, Channel.SMS]
    assert network.submitted[-1].text == "ACME: card ****1234 52,000円"
    # The next notice goes straight to SMS.
    n = engine.request_notice(
        w.sender, w.accounts[0], "fraud_alert", fraud_vars(), idempotency_key="fb2"
    )
    assert n.channel is Channel.SMS


def test_rakuten_is_always_sms(engine: Engine) -> None:
    w = build(engine, carriers=("rakuten",))
    m = engine.request_notice(
        w.sender, w.accounts[0], "fraud_alert", fraud_vars(), idempotency_key="r"
    )
    assert m.channel is Channel.SMS


def test_marketing_needs_opt_in_and_records_the_consent_that_authorised_it(
    engine: Engine,
) -> None:
    w = build(engine)
    blocked = engine.request_notice(w.sender, w.accounts[0], "campaign", idempotency_key="m1")
    assert (
        blocked.status is MessageStatus.BLOCKED and blocked.block_reason == "marketing_no_consent"
    )
    version = engine.grant_consent(
        w.accounts[0], w.sender, "marketing", source="web", wording="同意文言 v3", by="山田太郎"
    )
    sent = engine.request_notice(w.sender, w.accounts[0], "campaign", idempotency_key="m2")
    assert sent.status is MessageStatus.ROUTED
    consent = engine.consent(w.accounts[0], w.sender, "marketing")
    assert consent is not None
    assert sent.authorisation["consent_id"] == str(consent.id)
    assert sent.authorisation["consent_version"] == version
    engine.withdraw_consent(w.accounts[0], w.sender, "marketing", source="reply STOP")
    again = engine.request_notice(w.sender, w.accounts[0], "campaign", idempotency_key="m3")
    assert again.block_reason == "marketing_withdrawn"
    with pytest.raises(errors.RuleViolation):
        engine.withdraw_consent(w.accounts[0], w.sender, "security", source="app")


BAD_REQUESTS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("unknown template", {"template": "nope"}, errors.UnknownTemplate, ""),
    (
        "missing variable",
        {"variables": {"name": "x", "amount": 1}},
        errors.InvalidVariables,
        "variables",
    ),
    (
        "mistyped variable",
        {"variables": fraud_vars(amount="lots")},
        errors.InvalidVariables,
        "variables.amount",
    ),
    (
        "undeclared variable",
        {"variables": fraud_vars(extra="x")},
        errors.InvalidVariables,
        "variables",
    ),
    ("bad urgency", {"urgency": "now"}, errors.InvalidInput, "urgency"),
    ("empty idempotency key", {"idempotency_key": ""}, errors.InvalidInput, "idempotency_key"),
]


@pytest.mark.parametrize(
    ("case", "override", "error", "field"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_requests_raise_typed_errors_and_persist_nothing(
    engine: Engine, case: str, override: dict[str, Any], error: type[Exception], field: str
) -> None:
    w = build(engine)
    before = count_events(engine)
    kwargs: dict[str, Any] = {
        "template": "fraud_alert",
        "variables": fraud_vars(),
        "idempotency_key": "bad",
        **override,
    }
    with pytest.raises(error) as e:
        engine.request_notice(
            w.sender, w.accounts[0], kwargs.pop("template"), kwargs.pop("variables"), **kwargs
        )
    if field:
        assert getattr(e.value, "field", None) == field
    assert count_events(engine) == before
    assert engine.pending_dispatch() == 0


def test_body_over_channel_limit_is_refused_at_request(engine: Engine) -> None:
    w = build(engine)
    before = count_events(engine)
    with pytest.raises(errors.BodyTooLong) as e:
        engine.request_notice(
            w.sender, w.accounts[0], "note", {"memo": "あ" * 700}, idempotency_key="long"
        )
    assert e.value.field == "body.sms"
    assert count_events(engine) == before


def test_unknown_and_unapproved_things(engine: Engine) -> None:
    from uuid import uuid4

    w = build(engine)
    engine.draft_template(
        w.sender,
        "draft_only",
        purpose="transactional",
        plus_message_text="x",
        sms_text="x",
        author="alice",
    )
    before = count_events(engine)
    with pytest.raises(errors.TemplateNotApproved):
        engine.request_notice(w.sender, w.accounts[0], "draft_only", idempotency_key="d")
    with pytest.raises(errors.UnknownAccount):
        engine.request_notice(w.sender, uuid4(), "fraud_alert", fraud_vars(), idempotency_key="u")
    with pytest.raises(errors.UnknownSender):
        engine.request_notice(
            uuid4(), w.accounts[0], "fraud_alert", fraud_vars(), idempotency_key="u2"
        )
    with pytest.raises(errors.FourEyesViolation):
        engine.approve_template(w.sender, "draft_only", 1, "alice")
    assert count_events(engine) == before


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("mobile", {"mobile": "03-1234-5678"}),
        ("mobile", {"mobile": "not a number"}),
        ("carrier", {"carrier": "vodafone"}),
        ("time_zone", {"time_zone": "Mars/Olympus"}),
        ("name", {"name": ""}),
    ],
)
def test_bad_account_input(engine: Engine, field: str, kwargs: dict[str, str]) -> None:
    build(engine)
    before = count_events(engine)
    args = {
        "tenant": "acme",
        "customer_ref": "X1",
        "mobile": "090-9999-8888",
        "name": "田中",
        **kwargs,
    }
    with pytest.raises(errors.InvalidInput) as e:
        engine.register_account(**args)
    assert e.value.field == field
    assert count_events(engine) == before


def test_find_account_by_mobile_in_any_format(engine: Engine) -> None:
    w = build(engine)
    for form in ("090-1111-2222", "+81 90 1111 2222", "09011112222"):
        assert engine.find_accounts("acme", mobile=form) == [w.accounts[0]]
    assert engine.find_accounts("acme", customer_ref="C1") == [w.accounts[1]]
    assert engine.find_accounts("other", mobile=NUMBERS[0]) == []
    assert engine.register_account("acme", "C0", NUMBERS[0], "山田太郎") == w.accounts[0]


def test_late_and_duplicate_reports_never_regress(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    w = build(engine)
    network.capability["+819011112222"] = True
    m = engine.request_notice(
        w.sender, w.accounts[0], "fraud_alert", fraud_vars(), idempotency_key="late"
    )
    engine.dispatch()
    network.poll_reports(clock.now() + timedelta(days=1))  # discard the simulator's own reports
    ref = gateway_reference(m.id, 1)
    now = clock.now()
    assert engine.handle_report(StatusReport(ref, "read", now))
    assert not engine.handle_report(StatusReport(ref, "read", now))
    assert not engine.handle_report(StatusReport(ref, "delivered", now))
    assert engine.message(m.id).status is MessageStatus.READ
    assert engine.handle_report(
        StatusReport(ref, "reply", now, text="いいえ、身に覚えがありません", postback="no")
    )
    assert not engine.handle_report(StatusReport("ffff:1", "read", now))


def test_sender_lifecycle_through_engine(engine: Engine) -> None:
    w = build(engine)
    engine.suspend_sender(w.sender, "complaints")
    with pytest.raises(errors.InvalidInput):
        engine.suspend_sender(w.sender, "free text about 山田")
    with pytest.raises(errors.SenderNotActive):
        engine.request_notice(
            w.sender, w.accounts[0], "fraud_alert", fraud_vars(), idempotency_key="s"
        )
    engine.reinstate_sender(w.sender)
    view = engine.sender(w.sender)
    assert view.verified and view.vetting == {
        "docomo": "approved",
        "au": "approved",
        "softbank": "approved",
    }
    engine.close_account(w.accounts[2])
    with pytest.raises(errors.AccountClosed):
        engine.request_notice(
            w.sender, w.accounts[2], "fraud_alert", fraud_vars(), idempotency_key="c"
        )
