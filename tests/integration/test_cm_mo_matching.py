"""Incoming messages (MOs) through CM's inbound callback route under uvicorn,
on SQLite and PostgreSQL: matched by messageContext, or without one to the
number's latest message within ``reply_window``; keyword opt-out either way;
what matches nothing is kept encrypted in the account's conversation (read
back through ``engine.inbound``, in the subject access report, erased with
the customer), or for an unknown number only under the number's digest."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import text as sql
from sqlalchemy.engine import make_url

from tsuchi import ERASED, Engine, ManualClock, MessageStatus
from tsuchi.domain.message import gateway_reference

from . import test_cm_callbacks as cb
from .test_cm_gateway import FakeCM
from .world import build, count_events

cm = cb.cm
cm_engine = cb.cm_engine
base_url = cb.base_url

NUMBER = "00819011112222"  # accounts[0] of the world, in CM's form
SECRET_TEXT = "住所を変更したいので電話をください"
MEDIA_URL = "https://mo.example/files/passbook-7731.jpg"


def cm_fixture(name: str) -> Any:
    """A CM example: from CM's pages or CM's own repositories (Postman collection)."""
    data = json.loads((cb.FIXTURES / name).read_text())
    assert data["source"].startswith(("https://developers.cm.com/", "cmdotcom/"))
    return data["example"]


def mo(text: str, at: str, number: str = NUMBER, context: str | None = None) -> dict[str, Any]:
    body = cb.fixture("mo_message.json")
    body.pop("messageContext")
    if context is not None:
        body["messageContext"] = context
    body["from"]["number"] = number
    body["message"]["text"] = text
    body["timeUtc"] = at
    body["reference"] = f"cm-{abs(hash((text, at, number))) % 10**9}"
    return body


def send(base_url: str, body: dict[str, Any]) -> dict[str, int]:
    r = cb.post(base_url, "inbound", json.dumps(body).encode())
    assert r.status_code == 200, r.text
    result: dict[str, int] = r.json()
    return result


def stored_bytes(engine: Engine) -> bytes:
    """Everything the database holds: the SQLite files byte for byte, or on
    PostgreSQL the tables' rows as text."""
    url = make_url(engine.settings.database_url)
    if url.get_backend_name() == "sqlite":
        db = Path(str(url.database))
        return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    with engine.store.session(commit=False) as s:
        tables = list(
            s.execute(sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars()
        )
        out = [
            row.encode()
            for t in tables
            for row in s.execute(sql(f'SELECT t::text FROM "{t}" t')).scalars()
        ]
        # bytea prints as hex in t::text: the events' state byte for byte too.
        out += [bytes(state) for (state,) in s.execute(sql("SELECT state FROM tsuchi_events"))]
    return b"\n".join(out)


def test_a_reply_without_context_answers_the_numbers_latest_message_within_the_window(
    cm_engine: Engine, cm: FakeCM, base_url: str
) -> None:
    w = build(cm_engine)
    case = cm_engine.raise_fraud_alert(w.sender, w.accounts[0], *cb.ALERT, cm_engine.now())
    mid = UUID(cm_engine.fraud_case(case)["message_id"])
    assert cm_engine.dispatch() == 1
    # Typed by SMS, hours later, without messageContext: the label's keyword decides.
    result = send(base_url, mo("いいえ", "2026-04-01T09:05:00"))
    assert result == {"accepted": 1, "duplicates": 0, "orphans": 0, "poison": 0}
    assert cm_engine.fraud_case(case)["state"] == "card_block_requested"
    assert cm_engine.message(mid).timeline[-1].status == "reply"
    [entry] = cm_engine.inbound(w.accounts[0])
    assert entry.message_id == mid and entry.text == "いいえ"
    # CM retried it: nothing new.
    assert send(base_url, mo("いいえ", "2026-04-01T09:05:00"))["accepted"] == 0
    assert len(cm_engine.inbound(w.accounts[0])) == 1


def test_outside_the_reply_window_it_answers_nothing_and_is_kept_for_the_account(
    cm_engine: Engine, base_url: str
) -> None:
    w = build(cm_engine)
    case = cm_engine.raise_fraud_alert(w.sender, w.accounts[0], *cb.ALERT, cm_engine.now())
    mid = UUID(cm_engine.fraud_case(case)["message_id"])
    cm_engine.dispatch()
    replies_before = len(cm_engine.message(mid).timeline)
    late = cm_engine.now() + cm_engine.settings.reply_window + timedelta(minutes=6)
    result = send(base_url, mo("いいえ", late.strftime("%Y-%m-%dT%H:%M:%S")))
    assert result["accepted"] == 1 and result["orphans"] == 0
    assert cm_engine.fraud_case(case)["state"] != "card_block_requested"
    assert len(cm_engine.message(mid).timeline) == replies_before
    [entry] = cm_engine.inbound(w.accounts[0])
    assert entry.message_id is None and entry.text == "いいえ"


def test_a_shorter_reply_window_is_honoured(
    cm_engine: Engine, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = build(cm_engine)
    m = cm_engine.request_notice(
        w.sender, w.accounts[0], "note", {"memo": "明細"}, idempotency_key="n"
    )
    cm_engine.dispatch()
    monkeypatch.setattr(cm_engine.settings, "reply_window", timedelta(hours=1))
    send(base_url, mo("ありがとう", "2026-04-01T00:50:00"))
    send(base_url, mo("まだですか", "2026-04-01T01:10:00"))
    got = [(e.text, e.message_id) for e in cm_engine.inbound(w.accounts[0])]
    assert got == [("ありがとう", m.id), ("まだですか", None)]


def test_stop_without_context_opts_out_of_marketing(cm_engine: Engine, base_url: str) -> None:
    w = build(cm_engine)
    cm_engine.grant_consent(
        w.accounts[0], w.sender, "marketing", source="app", wording="キャンペーン", by="山田"
    )
    cm_engine.request_notice(w.sender, w.accounts[0], "campaign", idempotency_key="mk")
    cm_engine.dispatch()
    assert send(base_url, mo("停止", "2026-04-01T09:05:00"))["accepted"] == 1
    consent = cm_engine.consent(w.accounts[0], w.sender, "marketing")
    assert consent is not None and not consent.granted
    confirmations = [
        cm_engine.message(i).template for i in cm_engine.messages(account_id=w.accounts[0])
    ]
    assert confirmations.count("opt_out_confirmation") == 1


def test_stop_long_after_the_last_message_still_opts_out(cm_engine: Engine, base_url: str) -> None:
    w = build(cm_engine)
    cm_engine.grant_consent(
        w.accounts[0], w.sender, "marketing", source="app", wording="キャンペーン", by="山田"
    )
    cm_engine.request_notice(w.sender, w.accounts[0], "campaign", idempotency_key="mk")
    cm_engine.dispatch()
    send(base_url, mo("配信停止", "2026-05-20T09:00:00"))  # weeks later: matches no message
    consent = cm_engine.consent(w.accounts[0], w.sender, "marketing")
    assert consent is not None and not consent.granted
    assert cm_engine.inbound(w.accounts[0])[0].message_id is None


def test_an_unmatched_mo_is_stored_encrypted_readable_reported_and_erased(
    cm_engine: Engine, base_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    w = build(cm_engine)
    body = mo(SECRET_TEXT, "2026-04-01T09:05:00", number="00818033334444")  # accounts[1]
    media = cm_fixture("mo_message_media.json")["message"]["media"]
    media["mediaUri"], media["contentType"] = MEDIA_URL, "image/jpeg"
    body["message"]["media"] = media
    result = send(base_url, body)
    assert result == {"accepted": 1, "duplicates": 0, "orphans": 0, "poison": 0}

    [entry] = cm_engine.inbound(w.accounts[1])
    assert (entry.text, entry.message_id, entry.channel) == (SECRET_TEXT, None, "RCS")
    [file] = entry.media
    assert (file.url, file.mime_type, file.size_bytes) == (MEDIA_URL, "image/jpeg", None)
    assert SECRET_TEXT not in repr(entry) and MEDIA_URL not in repr(entry)
    assert cm_engine.inbound(w.accounts[0]) == []

    raw = stored_bytes(cm_engine)
    assert "ACMEカード".encode() in raw  # the scan sees what is stored in the clear
    assert SECRET_TEXT.encode() not in raw and MEDIA_URL.encode() not in raw
    assert b"passbook-7731" not in raw
    assert SECRET_TEXT not in caplog.text and MEDIA_URL not in caplog.text

    report = cm_engine.subject_access_report(w.accounts[1])
    assert report["inbound"][0]["text"] == SECRET_TEXT
    assert report["inbound"][0]["media"] == [{"url": MEDIA_URL, "mime_type": "image/jpeg"}]

    cm_engine.erase_account(w.accounts[1], "dpo")
    cm_engine.drop_caches()
    [gone] = cm_engine.inbound(w.accounts[1])
    assert gone.erased and gone.text == ERASED and gone.media[0].url == ERASED
    assert cm_engine.subject_access_report(w.accounts[1])["inbound"][0]["text"] == ERASED


def test_an_unknown_numbers_mo_keeps_no_plaintext(cm_engine: Engine, base_url: str) -> None:
    build(cm_engine)
    before = count_events(cm_engine)
    stranger = "00819099998888"
    result = send(base_url, mo(SECRET_TEXT, "2026-04-01T09:05:00", number=stranger))
    assert result == {"accepted": 0, "duplicates": 0, "orphans": 1, "poison": 0}
    # A foreign number (CM's Postman example) is no account's either: kept, not refused.
    foreign = cm_fixture("mo_message_text.json")
    r = cb.post(base_url, "inbound", json.dumps(foreign).encode())
    assert r.status_code == 200 and r.json()["orphans"] == 1
    assert count_events(cm_engine) == before
    raw = stored_bytes(cm_engine)
    assert "ACMEカード".encode() in raw
    for secret in (SECRET_TEXT, "9099998888", "This is an example message", "6012345678"):
        assert secret.encode() not in raw


def test_a_message_context_still_wins_over_the_latest_message(
    cm_engine: Engine, base_url: str, clock: ManualClock
) -> None:
    w = build(cm_engine)
    first = cm_engine.request_notice(
        w.sender, w.accounts[0], "note", {"memo": "一通目"}, idempotency_key="a"
    )
    cm_engine.dispatch()
    clock.advance(timedelta(minutes=1))
    second = cm_engine.request_notice(
        w.sender, w.accounts[0], "note", {"memo": "二通目"}, idempotency_key="b"
    )
    cm_engine.dispatch()
    assert cm_engine.message(second.id).status is MessageStatus.SUBMITTED

    send(base_url, mo("一通目の件", "2026-04-01T09:05:00", context=gateway_reference(first.id, 1)))
    send(base_url, mo("どちらの件?", "2026-04-01T09:06:00"))
    got = [(e.text, e.message_id) for e in cm_engine.inbound(w.accounts[0])]
    assert got == [("一通目の件", first.id), ("どちらの件?", second.id)]
