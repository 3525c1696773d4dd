"""Fuzzing with hypothesis: public API inputs and random command sequences for
each state machine.  Every bad input yields a typed error (never anything
else) and persists nothing; aggregate invariants hold whatever the sequence."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsuchi import Engine, ManualClock, Settings, errors
from tsuchi.domain.consent import Consent
from tsuchi.domain.message import Message
from tsuchi.domain.personal import Personal
from tsuchi.domain.sender import Sender
from tsuchi.domain.values import PROGRESS_RANK, Carrier, Channel, MessageStatus, Purpose, Urgency

from ..integration.world import build, count_events

T0 = datetime(2026, 4, 1, tzinfo=UTC)
SLOW = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def world_engine() -> Any:
    d = tempfile.mkdtemp()
    e = Engine(
        Settings(database_url=f"sqlite:///{d}/f.db", keys_dir=Path(d) / "k", create_keys=True),
        clock=ManualClock(),
    )
    w = build(e)
    yield e, w
    e.close()


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=300),
    st.binary(max_size=50),
    st.lists(st.integers(), max_size=3),
    st.dates(),
)


@SLOW
@given(
    mobile=st.one_of(st.text(max_size=40), ANY_VALUE),
    name=ANY_VALUE,
    ref=ANY_VALUE,
    carrier=ANY_VALUE,
    tz=ANY_VALUE,
)
def test_register_account_fuzz(
    world_engine: Any, mobile: Any, name: Any, ref: Any, carrier: Any, tz: Any
) -> None:
    e, _ = world_engine
    before = count_events(e)
    try:
        e.register_account("acme", ref, mobile, name, carrier=carrier, time_zone=tz)
    except errors.TsuchiError:  # anything else escaping fails the test
        assert count_events(e) == before


@SLOW
@given(
    variables=st.dictionaries(
        st.sampled_from(["name", "last4", "amount", "x", "memo"]), ANY_VALUE, max_size=4
    ),
    template=st.sampled_from(["fraud_alert", "note", "campaign", "nope", ""]),
    urgency=st.one_of(st.sampled_from(["normal", "urgent"]), st.text(max_size=5)),
    key=st.text(min_size=0, max_size=140),
)
def test_request_notice_fuzz(
    world_engine: Any, variables: dict[str, Any], template: str, urgency: str, key: str
) -> None:
    e, w = world_engine
    before = count_events(e)
    try:
        e.request_notice(
            w.sender,
            w.accounts[0],
            template,
            variables,
            idempotency_key=key or "k",
            urgency=urgency,
        )
    except errors.TsuchiError:
        assert count_events(e) == before


@SLOW
@given(
    body=st.text(max_size=3000),
    sms=st.text(max_size=800),
    suggestions=st.lists(st.text(max_size=30), max_size=13),
    variables=st.dictionaries(st.text(max_size=10), st.text(max_size=15), max_size=3),
)
def test_draft_template_fuzz(
    world_engine: Any, body: str, sms: str, suggestions: list[str], variables: dict[str, str]
) -> None:
    e, w = world_engine
    before = count_events(e)
    try:
        e.draft_template(
            w.sender,
            "fuzzed",
            purpose="transactional",
            plus_message_text=body,
            sms_text=sms,
            suggestions=suggestions,
            variables=variables,
            author="fuzzer",
        )
    except errors.TsuchiError:
        assert count_events(e) == before


# -- state machines -----------------------------------------------------------------

MESSAGE_OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "route",
                "submit",
                "accepted",
                "delivered",
                "read",
                "failed",
                "expired",
                "fallback",
                "block",
                "defer",
                "cancel",
                "reply",
            ]
        ),
        st.integers(1, 3),
    ),
    max_size=30,
)


@settings(max_examples=400, deadline=None)
@given(ops=MESSAGE_OPS)
def test_message_state_machine_only_moves_forward(ops: list[tuple[str, int]]) -> None:
    m = Message(
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
    at = T0
    for op, attempt in ops:
        at += timedelta(seconds=1)
        before_status, before_attempts = m.status, len(m.attempts)
        before_rank = PROGRESS_RANK.get(m.current.status) if m.current else None
        try:
            if op == "route":
                m.route(Channel.PLUS_MESSAGE, Carrier.DOCOMO, {}, at)
            elif op == "submit":
                m.mark_submitted(attempt, "g", at)
            elif op in ("accepted", "delivered", "read", "failed", "expired"):
                m.record_report(attempt, op, at)
            elif op == "fallback":
                m.fall_back("x", Carrier.DOCOMO, at)
            elif op == "block":
                m.block("r", at)
            elif op == "defer":
                m.defer(at + timedelta(hours=1), "quiet_hours", at)
            elif op == "cancel":
                m.cancel("r", at)
            else:
                m.receive_reply(None, "p", at)
        except errors.TsuchiError:
            assert (m.status, len(m.attempts)) == (before_status, before_attempts)
            continue
        assert len(m.attempts) >= before_attempts
        if before_status in (MessageStatus.BLOCKED, MessageStatus.CANCELLED):
            assert m.status is before_status  # final
        if m.current and len(m.attempts) == before_attempts and before_rank is not None:
            now_rank = PROGRESS_RANK.get(m.current.status)
            assert now_rank is None or now_rank >= before_rank
    # Replaying the recorded events gives the same aggregate.
    events = m.collect_events()
    copy = None
    for ev in events:
        copy = ev.mutate(copy)  # type: ignore[arg-type]
    assert copy is not None and copy.status is m.status and len(copy.attempts) == len(m.attempts)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(st.sampled_from(["grant", "withdraw", "grant_empty"]), max_size=20))
def test_consent_state_machine(ops: list[str]) -> None:
    a = uuid4()
    c = Consent(account_id=a, sender_id=uuid4(), purpose=Purpose.MARKETING)
    at = T0
    for op in ops:
        at += timedelta(minutes=1)
        try:
            if op == "grant":
                c.grant("web", "v1", Personal(a, "x"), at)
            elif op == "grant_empty":
                c.grant("", "v1", Personal(a, "x"), at)
            else:
                c.withdraw("app", at)
        except errors.InvalidInput:
            assert op == "grant_empty"
        granted = [h for h in c.history if h.action == "granted"]
        assert c.granted == bool(c.history and c.history[-1].action == "granted")
        assert all(h.version >= 2 for h in granted)
        assert [h.at for h in c.history] == sorted(h.at for h in c.history)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["submit", "approve", "reject", "suspend", "reinstate", "close"]),
            st.sampled_from(list(Carrier)),
        ),
        max_size=20,
    )
)
def test_sender_state_machine(ops: list[tuple[str, Carrier]]) -> None:
    s = Sender(tenant="t", display_name="D", industry="i", sms_sender_id="S", contact="c", at=T0)
    for op, carrier in ops:
        was_closed = s.closed
        try:
            if op == "submit":
                s.submit_vetting(carrier, T0)
            elif op in ("approve", "reject"):
                s.decide_vetting(carrier, op == "approve", T0)
            elif op == "suspend":
                s.suspend("r", T0)
            elif op == "reinstate":
                s.reinstate(T0)
            else:
                s.close(T0)
        except errors.TsuchiError:
            pass
        if was_closed:
            assert s.closed
        assert set(s.vetting) <= {"docomo", "au", "softbank"}
        assert s.verified == any(v.value == "approved" for v in s.vetting.values())
