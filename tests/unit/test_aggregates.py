from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from tsuchi.domain.consent import Consent
from tsuchi.domain.message import Message
from tsuchi.domain.personal import ERASED, Personal
from tsuchi.domain.sender import Sender
from tsuchi.domain.template import Template, VariableType, render
from tsuchi.domain.values import Carrier, Channel, MessageStatus, Purpose, Urgency
from tsuchi.errors import (
    DataErased,
    FourEyesViolation,
    InvalidInput,
    InvalidVariables,
    RuleViolation,
    SenderNotActive,
    TemplateNotApproved,
)

T0 = datetime(2026, 4, 1, tzinfo=UTC)


def sender() -> Sender:
    return Sender(
        tenant="t", display_name="D", industry="card", sms_sender_id="S", contact="0120", at=T0
    )


def test_sender_vetting_per_carrier_and_verification() -> None:
    s = sender()
    assert not s.verified
    s.submit_vetting(Carrier.DOCOMO, T0)
    s.submit_vetting(Carrier.AU, T0)
    s.decide_vetting(Carrier.AU, False, T0, "docs")
    assert not s.verified
    s.decide_vetting(Carrier.DOCOMO, True, T0)
    assert s.verified and s.approved_on(Carrier.DOCOMO) and not s.approved_on(Carrier.AU)
    with pytest.raises(InvalidInput):
        s.submit_vetting(Carrier.RAKUTEN, T0)
    with pytest.raises(RuleViolation):
        s.decide_vetting(Carrier.SOFTBANK, True, T0)  # never submitted


def test_sender_suspend_reinstate_close() -> None:
    s = sender()
    s.suspend("complaints", T0)
    with pytest.raises(SenderNotActive):
        s.check_active()
    s.reinstate(T0)
    s.check_active()
    s.close(T0)
    with pytest.raises(SenderNotActive):
        s.reinstate(T0)
    names = [type(e).__name__ for e in s.collect_events()]
    assert names == ["Registered", "Suspended", "Reinstated", "Closed"]


def test_template_four_eyes_and_only_approved_versions_usable() -> None:
    sid = uuid4()
    t = Template(sender_id=sid, name="stmt", purpose=Purpose.TRANSACTIONAL)
    v = t.draft(
        "明細 {amount}", (), "stmt {amount}", {"amount": VariableType.AMOUNT}, "alice", T0, 10
    )
    with pytest.raises(TemplateNotApproved):
        t.usable(None)
    with pytest.raises(FourEyesViolation):
        t.approve(v, "alice", T0)
    t.approve(v, "bob", T0)
    assert t.usable(None).number == 1
    v2 = t.draft(
        "明細2 {amount}", (), "s2 {amount}", {"amount": VariableType.AMOUNT}, "alice", T0, 10
    )
    with pytest.raises(TemplateNotApproved):
        t.usable(v2)
    t.retire(1, T0)
    with pytest.raises(TemplateNotApproved):
        t.usable(None)


@pytest.mark.parametrize("body", ["{undeclared}", "{a.__class__}", "{a!r}", "{a:>10}", "{"])
def test_template_refuses_unsafe_or_undeclared_placeholders(body: str) -> None:
    t = Template(sender_id=uuid4(), name="x", purpose=Purpose.TRANSACTIONAL)
    with pytest.raises(InvalidInput):
        t.draft(body, (), "ok", {"a": VariableType.TEXT}, "alice", T0, 10)


def test_variables_are_typed_and_card_numbers_masked() -> None:
    t = Template(sender_id=uuid4(), name="x", purpose=Purpose.SECURITY)
    n = t.draft(
        "{card} {amount} {when}",
        (),
        "{card}",
        {
            "card": VariableType.CARD_NUMBER,
            "amount": VariableType.AMOUNT,
            "when": VariableType.DATE,
        },
        "a",
        T0,
        10,
    )
    version = t.get_version(n)
    stored = t.check_variables(
        version, {"card": "4111 1111 1111 1111", "amount": 1200, "when": T0.date()}
    )
    assert stored["card"] == "1111"
    assert (
        render(version.plus_message_text, version.variables, stored)
        == "****1111 1,200円 2026-04-01"
    )
    with pytest.raises(InvalidVariables) as e:
        t.check_variables(version, {"card": "4111", "amount": 1, "when": T0.date()})
    assert e.value.field == "variables"
    with pytest.raises(InvalidVariables) as e:
        t.check_variables(version, {"card": "4111111111111111", "amount": "1", "when": T0.date()})
    assert e.value.field == "variables.amount"
    with pytest.raises(InvalidVariables):
        t.check_variables(version, {"card": "4111111111111111", "amount": 1})


def message() -> Message:
    return Message(
        sender_id=uuid4(),
        idempotency_key="k",
        tenant="t",
        account_id=uuid4(),
        template_id=uuid4(),
        template_name="x",
        template_version=1,
        purpose=Purpose.SECURITY,
        urgency=Urgency.URGENT,
        variables={},
        correlation_id="c",
        requested_by="h",
        at=T0,
    )


def test_message_status_only_moves_forward() -> None:
    m = message()
    m.route(Channel.PLUS_MESSAGE, Carrier.DOCOMO, {}, T0)
    m.mark_submitted(1, "g", T0)
    assert m.record_report(1, "delivered", T0)
    assert m.record_report(1, "read", T0)
    assert not m.record_report(1, "delivered", T0)  # late: recorded, not applied
    assert not m.record_report(1, "failed", T0)
    assert m.status is MessageStatus.READ
    assert m.timeline[-1].status == "late failed"


def test_message_fallback_opens_sms_attempt_and_ignores_old_attempt_reports() -> None:
    m = message()
    m.route(Channel.PLUS_MESSAGE, Carrier.AU, {}, T0)
    m.mark_submitted(1, "g", T0)
    assert m.record_report(1, "failed", T0, "403")
    assert m.fall_back("not_capable", Carrier.AU, T0) == 2
    assert m.current is not None and m.current.channel is Channel.SMS
    assert m.status is MessageStatus.ROUTED
    assert not m.record_report(1, "delivered", T0 + timedelta(seconds=5))
    m.mark_submitted(2, "g2", T0)
    assert m.record_report(2, "delivered", T0)
    with pytest.raises(RuleViolation):
        m.fall_back("again", Carrier.AU, T0)


def test_blocked_message_cannot_be_routed() -> None:
    m = message()
    m.block("marketing_no_consent", T0)
    with pytest.raises(RuleViolation):
        m.route(Channel.SMS, Carrier.AU, {}, T0)


def test_consent_history_and_as_of() -> None:
    a, s = uuid4(), uuid4()
    c = Consent(account_id=a, sender_id=s, purpose=Purpose.MARKETING)
    c.grant("web", "wording v3", Personal(a, "山田"), T0)
    c.withdraw("reply STOP", T0 + timedelta(days=2))
    assert not c.granted
    assert [h.action for h in c.history] == ["granted", "withdrawn"]
    then = c.state_at(T0 + timedelta(days=1))
    assert then is not None and then.action == "granted" and then.version == 2
    assert c.state_at(T0 - timedelta(days=1)) is None
    with pytest.raises(InvalidInput):
        c.grant("", "w", Personal(a, "x"), T0)
    with pytest.raises(RuleViolation):
        Consent.check_purpose_needs_consent(Purpose.SECURITY)


def test_personal_never_shows_plaintext_in_repr() -> None:
    p = Personal(uuid4(), "+819012345678")
    assert "9012345678" not in repr(p) and "9012345678" not in str(p) and "9012345678" not in f"{p}"
    gone = Personal(uuid4(), None)
    assert gone.shown() == ERASED
    with pytest.raises(DataErased):
        gone.reveal()
