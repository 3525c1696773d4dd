"""The lifecycle commands: cancelling a notice, retiring a template version,
closing a sender.  Run on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest

from tsuchi import Engine, ManualClock, MessageStatus, SimulatedCarrierNetwork, errors
from tsuchi.domain.message import parse_gateway_reference

from .world import build, count_events

NOTE = {"memo": "明細のお知らせ"}


def test_cancel_notice_before_dispatch_sends_nothing(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    w = build(engine)
    m = engine.request_notice(w.sender, w.accounts[0], "note", NOTE, idempotency_key="c1")
    assert engine.pending_dispatch() == 1
    engine.cancel_notice(m.id, "customer_request")
    view = engine.message(m.id)
    assert view.status is MessageStatus.CANCELLED
    last = view.timeline[-1]
    assert last.status == "cancelled" and "customer_request" in last.detail
    assert engine.pending_dispatch() == 0
    clock.advance(timedelta(minutes=1))
    assert engine.dispatch() == 0
    assert not [s for s in network.submitted if parse_gateway_reference(s.reference)[0] == m.id]
    # The same idempotency key returns the cancelled message; it is not sent again.
    again = engine.request_notice(w.sender, w.accounts[0], "note", NOTE, idempotency_key="c1")
    assert again.id == m.id and again.status is MessageStatus.CANCELLED
    assert engine.dispatch() == 0


def test_cancel_notice_refuses_free_text_submitted_and_unknown(
    engine: Engine, clock: ManualClock
) -> None:
    w = build(engine)
    m = engine.request_notice(w.sender, w.accounts[0], "note", NOTE, idempotency_key="c2")
    before = count_events(engine)
    with pytest.raises(errors.InvalidInput) as bad:
        engine.cancel_notice(m.id, "山田様の依頼により")  # free text about a person
    assert bad.value.field == "reason"
    assert count_events(engine) == before
    with pytest.raises(errors.UnknownMessage):
        engine.cancel_notice(uuid4(), "customer_request")
    clock.advance(timedelta(minutes=1))
    assert engine.dispatch() == 1
    submitted = count_events(engine)
    with pytest.raises(errors.RuleViolation) as late:
        engine.cancel_notice(m.id, "too_late")
    assert late.value.rule == "not_cancellable"
    assert engine.message(m.id).status is MessageStatus.SUBMITTED
    assert count_events(engine) == submitted


def test_retired_template_version_can_no_longer_be_used(engine: Engine) -> None:
    w = build(engine)
    engine.draft_template(
        w.sender,
        "note",
        purpose="transactional",
        plus_message_text="v2 {memo}",
        sms_text="v2 {memo}",
        variables={"memo": "personal_text"},
        author="alice",
    )
    engine.approve_template(w.sender, "note", 2, "bob")
    engine.retire_template(w.sender, "note", 1)
    assert engine.template_versions(w.sender, "note") == {1: "retired", 2: "approved"}
    before = count_events(engine)
    with pytest.raises(errors.TemplateNotApproved):
        engine.request_notice(
            w.sender, w.accounts[0], "note", NOTE, idempotency_key="r1", template_version=1
        )
    assert count_events(engine) == before
    m = engine.request_notice(w.sender, w.accounts[0], "note", NOTE, idempotency_key="r2")
    assert m.status is MessageStatus.ROUTED
    with pytest.raises(errors.RuleViolation) as again:
        engine.retire_template(w.sender, "note", 1)
    assert again.value.rule == "already_retired"
    with pytest.raises(errors.UnknownTemplate):
        engine.retire_template(w.sender, "no_such_template", 1)


def test_closed_sender_sends_nothing_and_cannot_be_reopened(engine: Engine) -> None:
    w = build(engine)
    engine.close_sender(w.sender)
    assert engine.sender(w.sender).closed
    before = count_events(engine)
    with pytest.raises(errors.SenderNotActive) as closed:
        engine.request_notice(w.sender, w.accounts[0], "note", NOTE, idempotency_key="x1")
    assert closed.value.rule == "sender_closed"
    with pytest.raises(errors.SenderNotActive):
        engine.reinstate_sender(w.sender)
    with pytest.raises(errors.SenderNotActive):
        engine.set_quiet_hours(w.sender, "marketing", "09:00", "20:00")
    with pytest.raises(errors.SenderNotActive):
        engine.close_sender(w.sender)
    assert count_events(engine) == before
