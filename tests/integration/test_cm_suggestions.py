"""Suggested replies and actions end to end with CM.com, on SQLite and
PostgreSQL: drafted with their stable codes (bad ones refused with the field
named, nothing recorded), sent through CMGateway to the loopback CM server
(which checks CM's documented suggestion rules), tapped back through the CM
events callback route under uvicorn; and template versions stored before
suggestions had codes still load and send."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from tsuchi import Engine, InvalidInput, Suggestion
from tsuchi.domain.message import gateway_reference
from tsuchi.domain.suggestions import reply_code
from tsuchi.domain.template import Template, VariableType, template_id

from . import test_cm_callbacks as cb
from .test_cm_gateway import FakeCM
from .world import build, count_events

cm = cb.cm
cm_engine = cb.cm_engine
base_url = cb.base_url

START = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
CODED_ALERT = [
    Suggestion.reply("はい、私です", "me"),
    Suggestion.reply("いいえ、止めてください", "block_card"),
    Suggestion.dial("お電話で相談", "+81120000000", code="call"),
    Suggestion.open_url("詳しく", "https://acme.example/fraud", code="details"),
]


def draft_coded_alert(engine: Engine, sender: UUID) -> None:
    v = engine.draft_template(
        sender,
        "fraud_alert",
        purpose="security",
        plus_message_text="{name}様 カード末尾{last4}で{amount}のご利用。お心当たりは?",
        sms_text="ACME: card {last4} {amount}",
        variables={"name": "name", "last4": "card_last4", "amount": "amount"},
        suggestions=CODED_ALERT,
        author="alice",
    )
    engine.approve_template(sender, "fraud_alert", v, "bob")


def test_every_action_reaches_cm_in_its_documented_shape(cm_engine: Engine, cm: FakeCM) -> None:
    w = build(cm_engine)
    suggestions = [
        "はい",
        Suggestion.open_url("明細を見る", "https://acme.example/s", code="statement"),
        Suggestion.dial("電話する", "+81312345678", code="call"),
        Suggestion.view_location("店舗", 35.681, 139.767, location_label="東京駅前店", code="shop"),
        Suggestion.view_location("ATM", query="ACME ATM 東京", code="atm"),
        Suggestion.calendar("予約", START, START + timedelta(hours=1), "来店予約", code="visit"),
    ]
    v = cm_engine.draft_template(
        w.sender,
        "visit",
        purpose="transactional",
        plus_message_text="ご来店のご案内です。",
        sms_text="ご来店のご案内",
        suggestions=suggestions,
        author="alice",
    )
    cm_engine.approve_template(w.sender, "visit", v, "bob")
    cm_engine.request_notice(w.sender, w.accounts[0], "visit", idempotency_key="visit-1")
    assert cm_engine.dispatch() == 1
    assert cm.violations == []
    sent = cm.requests[-1]["messages"]["msg"][0]["richContent"]["suggestions"]
    assert [(s["action"], s["postbackdata"]) for s in sent] == [
        ("reply", reply_code("はい")),
        ("openUrl", "statement"),
        ("Dial", "call"),
        ("viewLocation", "shop"),
        ("viewLocation", "atm"),
        ("CreateCalendarEvent", "visit"),
    ]
    assert sent[3]["viewLocation"] == {
        "latitude": "35.681",
        "longitude": "139.767",
        "label": "東京駅前店",
    }
    assert sent[5]["calendar"]["startTime"] == "2026-05-01T10:00:00+00:00"


def test_the_loopback_cm_refuses_what_its_documentation_refuses(
    cm_engine: Engine, cm: FakeCM
) -> None:
    from .test_cm_gateway import documented_suggestion_violations

    twelve = [{"action": "reply", "label": f"s{i}", "postbackdata": f"c{i}"} for i in range(12)]
    assert "suggestions: at most 11 per message" in documented_suggestion_violations(twelve)
    long_label = [{"action": "reply", "label": "x" * 26, "postbackdata": "c"}]
    assert documented_suggestion_violations(long_label) == [
        "suggestion.label: at most 25 characters"
    ]
    no_where = [{"action": "viewLocation", "label": "地図", "postbackdata": "c"}]
    assert documented_suggestion_violations(no_where) != []


@pytest.mark.parametrize(
    ("suggestion", "field"),
    [
        (Suggestion.open_url("開く", "http://acme.example"), "suggestions[1].url"),
        (Suggestion.dial("電話", "0312345678", code="call"), "suggestions[1].phone_number"),
        (Suggestion.reply("x" * 26, "long"), "suggestions[1].label"),
        (Suggestion.calendar("予約", START, START, "来店"), "suggestions[1].end"),
    ],
)
def test_a_bad_suggestion_is_refused_at_draft_naming_the_field_and_records_nothing(
    cm_engine: Engine, suggestion: Suggestion, field: str
) -> None:
    w = build(cm_engine)
    before = count_events(cm_engine)
    with pytest.raises(InvalidInput) as info:
        cm_engine.draft_template(
            w.sender,
            "bad",
            purpose="transactional",
            plus_message_text="本文",
            sms_text="本文",
            suggestions=["ok", suggestion],
            author="alice",
        )
    assert info.value.field == field
    assert count_events(cm_engine) == before
    with pytest.raises(InvalidInput) as info:
        cm_engine.draft_template(
            w.sender,
            "bad",
            purpose="transactional",
            plus_message_text="本文",
            sms_text="本文",
            suggestions=[f"s{i}" for i in range(12)],
            author="alice",
        )
    assert info.value.field == "suggestions"
    assert count_events(cm_engine) == before


def test_tapping_the_block_card_code_requests_the_card_block_through_the_cm_route(
    cm_engine: Engine, cm: FakeCM, base_url: str
) -> None:
    w = build(cm_engine)
    draft_coded_alert(cm_engine, w.sender)
    case = cm_engine.raise_fraud_alert(w.sender, w.accounts[0], *cb.ALERT, cm_engine.now())
    mid = UUID(cm_engine.fraud_case(case)["message_id"])
    assert cm_engine.dispatch() == 1
    assert cm.violations == []
    sent = cm.requests[-1]["messages"]["msg"][0]["richContent"]["suggestions"]
    assert [s["postbackdata"] for s in sent] == ["me", "block_card", "call", "details"]

    click = cb.fixture("rcs_event_suggestion_click.json")
    click["messageContext"] = gateway_reference(mid, 1)
    # The label of another button with the code of "block card": the code decides.
    click["event"]["custom"] = {"postbackdata": "details", "label": "いいえ、止めてください"}
    r = cb.post(base_url, "events", json.dumps(click).encode())
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert cm_engine.fraud_case(case)["state"] == "open"  # "details" answers nothing

    click["event"]["custom"] = {"postbackdata": "block_card", "label": "いいえ、止めてください"}
    click["timeUtc"] = "2026-04-01T00:03:00"
    r = cb.post(base_url, "events", json.dumps(click).encode())
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert cm_engine.fraud_case(case)["state"] == "card_block_requested"


def test_a_version_stored_with_plain_string_suggestions_still_loads_and_sends(
    cm_engine: Engine, cm: FakeCM
) -> None:
    w = build(cm_engine)
    # A version as it was stored before suggestions had codes: a list of labels.
    t = Template(sender_id=w.sender, name="legacy", purpose="security")
    t._drafted(
        number=1,
        plus_message_text="ご本人確認: {last4}",
        suggestions=["はい、私です", "いいえ、身に覚えがありません"],
        sms_text="ACME {last4}",
        variables={"last4": VariableType.CARD_LAST4.value},
        author="alice",
        at=cm_engine.now(),
        attachments=[],
    )
    cm_engine.store.save(t)
    cm_engine.drop_caches()
    cm_engine.approve_template(w.sender, "legacy", 1, "bob")
    assert cm_engine.template_versions(w.sender, "legacy") == {1: "approved"}
    assert template_id(w.sender, "legacy") == t.id
    cm_engine.request_notice(
        w.sender, w.accounts[0], "legacy", {"last4": "1234"}, idempotency_key="legacy-1"
    )
    assert cm_engine.dispatch() == 1 and cm.violations == []
    sent = cm.requests[-1]["messages"]["msg"][0]["richContent"]["suggestions"]
    assert [(s["label"], s["postbackdata"]) for s in sent] == [
        ("はい、私です", reply_code("はい、私です")),
        ("いいえ、身に覚えがありません", reply_code("いいえ、身に覚えがありません")),
    ]
