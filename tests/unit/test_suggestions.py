"""Suggested replies and actions: constructors, derived codes, the rules
checked at draft (each error naming ``suggestions[i].field``), CM's JSON, and
the classifiers that read taps by their codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from tsuchi import InvalidInput, Suggestion, SuggestionAction
from tsuchi.domain.suggestions import parse_suggestions, reply_code
from tsuchi.domain.template import Template
from tsuchi.domain.values import Purpose
from tsuchi.infrastructure.cm_gateway import cm_suggestion
from tsuchi.policies.replies import classify_fraud_reply, classify_safety_reply, is_opt_out

START = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)


def every_kind() -> list[Suggestion]:
    return [
        Suggestion.reply("いいえ、私ではありません", "not_me"),
        Suggestion.open_url("詳しく見る", "https://acme.example/fraud", code="details"),
        Suggestion.dial("電話する", "+81312345678", code="call"),
        Suggestion.view_location("店舗", 35.681, 139.767, location_label="東京駅前店"),
        Suggestion.view_location("近くのATM", query="ACME ATM", code="atm"),
        Suggestion.calendar("予約", START, START + timedelta(hours=1), "来店予約", "窓口2番"),
    ]


def test_every_kind_is_valid_and_round_trips_through_its_stored_form() -> None:
    parsed = parse_suggestions(every_kind())
    assert [s.action for s in parsed] == [
        SuggestionAction.REPLY,
        SuggestionAction.OPEN_URL,
        SuggestionAction.DIAL,
        SuggestionAction.VIEW_LOCATION,
        SuggestionAction.VIEW_LOCATION,
        SuggestionAction.CALENDAR,
    ]
    assert [Suggestion.from_stored(s.to_stored()) for s in parsed] == list(parsed)


def test_a_plain_label_is_a_reply_with_a_code_derived_from_the_label_only() -> None:
    [a, b] = parse_suggestions(["はい、私です", "ＳＴＯＰ"])
    assert a == Suggestion.reply("はい、私です") and a.code == reply_code("はい、私です")
    assert b.code == reply_code("STOP")  # NFKC: full-width letters are the same label
    assert a.code.startswith("r") and len(a.code) == 13
    # The position does not matter: reordered labels keep their codes.
    assert parse_suggestions(["ＳＴＯＰ", "はい、私です"])[1].code == a.code
    assert Suggestion.from_stored("はい、私です") == a  # a version stored before codes existed


@pytest.mark.parametrize(
    ("suggestions", "field"),
    [
        ([f"s{i}" for i in range(12)], "suggestions"),
        (["x" * 26], "suggestions[0].label"),
        (["ok", Suggestion.reply("")], "suggestions[1].label"),
        ([Suggestion.reply("{name}様")], "suggestions[0].label"),
        ([Suggestion.reply("ok", "has space")], "suggestions[0].code"),
        ([Suggestion.reply("a", "same"), Suggestion.reply("b", "same")], "suggestions[1].code"),
        (["ok", Suggestion.open_url("開く", "http://acme.example")], "suggestions[1].url"),
        ([Suggestion.dial("電話", "03-1234-5678")], "suggestions[0].phone_number"),
        ([Suggestion.view_location("地図", 91.0, 139.0)], "suggestions[0].latitude"),
        ([Suggestion.view_location("地図", 35.0, 181.0)], "suggestions[0].longitude"),
        ([Suggestion.view_location("地図")], "suggestions[0].latitude"),
        (
            [Suggestion.calendar("予約", START, START, "来店")],
            "suggestions[0].end",
        ),
        (
            [Suggestion.calendar("予約", START.replace(tzinfo=None), START, "来店")],
            "suggestions[0].start",
        ),
        (
            [Suggestion.calendar("予約", START, START + timedelta(hours=1), "")],
            "suggestions[0].title",
        ),
        ([Suggestion.reply("カード 4111 1111 1111 1111")], "suggestions[0].label"),
        ([Suggestion("ok", "ok", "teleport")], "suggestions[0].action"),  # type: ignore[arg-type]
        ([42], "suggestions[0]"),
    ],
)
def test_each_rule_is_an_invalid_input_naming_the_field(suggestions: list[Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_suggestions(suggestions)
    assert info.value.field == field


def test_drafting_refuses_bad_suggestions_and_records_nothing() -> None:
    t = Template(sender_id=uuid4(), name="x", purpose=Purpose.SECURITY)
    assert len(t.collect_events()) == 1  # Created
    with pytest.raises(InvalidInput) as info:
        t.draft("本文", [Suggestion.dial("電話", "1011")], "sms", {}, "alice", START, 10)
    assert info.value.field == "suggestions[0].phone_number"
    assert t.collect_events() == [] and t.versions == {}
    assert t.draft("本文", every_kind(), "sms", {}, "alice", START, 10) == 1
    assert t.versions[1].suggestions == parse_suggestions(every_kind())


def test_cm_json_for_each_action() -> None:
    got = [cm_suggestion(s) for s in parse_suggestions(every_kind())]
    assert got[0] == {
        "action": "reply",
        "label": "いいえ、私ではありません",
        "postbackdata": "not_me",
    }
    assert got[1] == {
        "action": "openUrl",
        "label": "詳しく見る",
        "postbackdata": "details",
        "url": "https://acme.example/fraud",
    }
    assert got[2]["action"] == "Dial" and got[2]["dial"] == {"phoneNumber": "+81312345678"}
    assert got[3]["viewLocation"] == {
        "latitude": "35.681",
        "longitude": "139.767",
        "label": "東京駅前店",
    }
    assert got[3]["postbackdata"] == reply_code("店舗")
    assert got[4]["viewLocation"] == {"searchQuery": "ACME ATM"}
    assert got[5]["action"] == "CreateCalendarEvent"
    assert got[5]["calendar"] == {
        "startTime": "2026-05-01T10:00:00+00:00",
        "endTime": "2026-05-01T11:00:00+00:00",
        "title": "来店予約",
        "description": "窓口2番",
    }
    assert cm_suggestion("はい") == {
        "action": "reply",
        "label": "はい",
        "postbackdata": reply_code("はい"),
    }


def test_taps_are_read_by_code_and_typed_texts_by_keyword() -> None:
    assert classify_fraud_reply("どのラベルでも", "not_me") == "not_me"
    assert classify_fraud_reply("いいえ", "block_card") == "not_me"
    assert classify_fraud_reply("はい", "me") == "me"
    # A tap's label never decides: an unknown code is unclear whatever it says.
    assert classify_fraud_reply("いいえ、身に覚えがありません", "call") == "unclear"
    # Plain-string suggestions: the derived code of a known label, or (sent
    # before codes) the label itself as the postback.
    assert classify_fraud_reply("", reply_code("いいえ、身に覚えがありません")) == "not_me"
    assert classify_fraud_reply("", "はい、私です") == "me"
    # A plain label of the host's own wording: read like a typed reply.
    custom = "いいえ、止めてください"
    assert classify_fraud_reply(custom, reply_code(custom)) == "not_me"
    assert classify_fraud_reply("", custom) == "not_me"  # sent before codes existed
    assert classify_fraud_reply("いいえ", "details") == "unclear"  # an explicit code decides
    assert classify_safety_reply("助けが必要です", reply_code("助けが必要です")) == "need_help"
    # SMS and other typed replies: keywords.
    assert classify_fraud_reply("いいえ", "") == "not_me"
    assert classify_fraud_reply("はい、私です", "") == "me"
    assert classify_safety_reply("", "need_help") == "need_help"
    assert classify_safety_reply("無事です", "") == "safe"
    assert classify_safety_reply("無事", "other_code") == "other"
    assert is_opt_out("", postback="opt_out") and is_opt_out("停止")
    assert is_opt_out("", postback=reply_code("配信停止"))
    assert not is_opt_out("停止してほしくない")
