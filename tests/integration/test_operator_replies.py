"""An operator answers a customer who wrote in (engine.reply), on SQLite and
PostgreSQL: the customer's MO arrives through CM's inbound route, the answer
goes through CMGateway to the loopback CM server on the channel the customer
used; the window, the body checks and the operator's identity."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tsuchi import (
    ERASED,
    AccountClosed,
    BodyTooLong,
    Engine,
    InvalidInput,
    ManualClock,
    RuleViolation,
)
from tsuchi.domain.values import Channel
from tsuchi.projections.audit import verify_export
from tsuchi.reporting.subject_access import render_text

from . import test_cm_callbacks as cb
from .test_cm_gateway import FakeCM
from .test_cm_mo_matching import mo, send
from .world import build, count_events

cm = cb.cm
cm_engine = cb.cm_engine
base_url = cb.base_url


def customer_wrote(engine: Engine, base_url: str, channel: str) -> Any:
    w = build(engine)
    engine.request_notice(w.sender, w.accounts[0], "note", {"memo": "明細"}, idempotency_key="n")
    engine.dispatch()
    body = mo("口座の住所変更をしたいです", "2026-04-01T00:10:00")
    body["channel"] = channel
    assert send(base_url, body)["accepted"] == 1
    return w


@pytest.mark.parametrize(("channel", "allowed"), [("SMS", ["SMS"]), ("RCS", ["RCS"])])
def test_the_answer_goes_back_on_the_customers_channel_with_the_operator_recorded(
    cm_engine: Engine, cm: FakeCM, base_url: str, channel: str, allowed: list[str]
) -> None:
    w = customer_wrote(cm_engine, base_url, channel)
    sent_before = len(cm.requests)
    answer = "担当の佐藤です。お手続きをご案内します。"
    result = cm_engine.reply(w.accounts[0], answer, operator="op-0042")
    assert result.accepted and result.channel is Channel(
        "sms" if channel == "SMS" else "plus_message"
    )
    assert len(cm.requests) == sent_before + 1 and cm.violations == []
    [msg] = cm.requests[-1]["messages"]["msg"]
    assert msg["allowedChannels"] == allowed
    assert msg["to"] == [{"number": "00819011112222"}]
    assert msg["body"]["content"] == "担当の佐藤です。お手続きをご案内します。"
    assert msg["reference"] == result.reference and msg["from"] == "ACME"
    report = cm_engine.subject_access_report(w.accounts[0])
    [reply] = report["operator_replies"]
    assert (reply["operator"], reply["status"], reply["text"]) == ("op-0042", "submitted", answer)
    text = render_text(report)
    assert answer in text and "口座の住所変更をしたいです" in text and "op-0042" in text


def test_the_audit_trail_names_the_operator_and_holds_no_text(
    cm_engine: Engine, base_url: str, tmp_path: Path
) -> None:
    w = customer_wrote(cm_engine, base_url, "SMS")
    answer = "担当の佐藤です。お手続きをご案内します。"
    cm_engine.reply(w.accounts[0], answer, operator="op-0042")
    cm_engine.audit.catch_up()
    cm_engine.audit.export(tmp_path / "audit", cm_engine.now())
    assert verify_export(tmp_path / "audit", cm_engine.audit.public_key).ok
    raw = (tmp_path / "audit" / "records.jsonl").read_text("utf-8")
    recs = [json.loads(line) for line in raw.splitlines()]
    [asked] = [r for r in recs if r["event_type"] == "ReplyRequested"]
    assert (asked["aggregate_type"], asked["actor"], asked["tenant"]) == (
        "Conversation",
        "op-0042",
        "acme",
    )
    assert {"InboundReceived", "ReplySubmitted"} <= {r["event_type"] for r in recs}
    assert answer not in raw and "口座の住所変更" not in raw


def test_erasure_takes_the_conversation_with_it(
    cm_engine: Engine, base_url: str, cm: FakeCM
) -> None:
    w = customer_wrote(cm_engine, base_url, "RCS")
    cm_engine.reply(w.accounts[0], "承知しました", operator="op-7")
    cm_engine.erase_account(w.accounts[0], "dpo")
    cm_engine.drop_caches()
    report = cm_engine.subject_access_report(w.accounts[0])
    assert report["operator_replies"][0]["text"] == ERASED
    assert report["inbound"][0]["text"] == ERASED
    # The number is forgotten: a new MO from it is kept by digest only.
    before = count_events(cm_engine)
    assert send(base_url, mo("まだいますか", "2026-04-01T00:20:00"))["orphans"] == 1
    assert count_events(cm_engine) == before
    with pytest.raises(AccountClosed):
        cm_engine.reply(w.accounts[0], "はい", operator="op-7")


def test_no_answer_after_the_window_or_before_the_customer_wrote(
    cm_engine: Engine, cm: FakeCM, base_url: str, clock: ManualClock
) -> None:
    w = customer_wrote(cm_engine, base_url, "SMS")
    with pytest.raises(RuleViolation) as info:
        cm_engine.reply(w.accounts[1], "ご連絡ください", operator="op-1")
    assert info.value.rule == "no_inbound"
    clock.advance(cm_engine.settings.operator_reply_window + timedelta(seconds=1))
    before, sent = count_events(cm_engine), len(cm.requests)
    with pytest.raises(RuleViolation) as info:
        cm_engine.reply(w.accounts[0], "遅くなりました", operator="op-1")
    assert info.value.rule == "reply_window_closed"
    assert count_events(cm_engine) == before and len(cm.requests) == sent


@pytest.mark.parametrize(
    ("text", "error", "field"),
    [
        ("カード番号 4111 1111 1111 1111 を確認", InvalidInput, "text"),
        ("端末\x1b[31m赤", InvalidInput, "text"),
        ("", InvalidInput, "text"),
        ("あ" * 700, BodyTooLong, "text"),  # more than 10 SMS parts
    ],
)
def test_the_text_is_checked_like_a_body_and_a_refused_one_records_and_sends_nothing(
    cm_engine: Engine, cm: FakeCM, base_url: str, text: str, error: type[Exception], field: str
) -> None:
    w = customer_wrote(cm_engine, base_url, "SMS")
    before, sent = count_events(cm_engine), len(cm.requests)
    with pytest.raises(error) as info:
        cm_engine.reply(w.accounts[0], text, operator="op-1")
    assert getattr(info.value, "field", None) == field
    assert "4111" not in str(info.value)
    assert count_events(cm_engine) == before and len(cm.requests) == sent
    with pytest.raises(InvalidInput) as bad_operator:
        cm_engine.reply(w.accounts[0], "こんにちは", operator="")
    assert bad_operator.value.field == "operator"
