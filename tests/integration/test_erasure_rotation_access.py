"""Erasure by key destruction, key rotation and subject access, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from tsuchi import ERASED, Engine, ManualClock, MessageStatus, Settings, StatusReport, errors
from tsuchi.demo import run_demo
from tsuchi.domain.message import gateway_reference
from tsuchi.infrastructure.crypto import LocalKMS, promote_staged_kek, stage_new_kek
from tsuchi.infrastructure.tables import data_keys

from .test_personal_data_at_rest import database_bytes, personal_strings
from .world import NAMES, NUMBERS, build, count_events

FRAUD = {"name": "山田太郎", "last4": "1234", "amount": 52000}


def test_erasure_destroys_keys_and_leaves_loadable_events(
    engine: Engine, settings: Settings, db_url: str
) -> None:
    w = build(engine)
    victim, other = w.accounts[0], w.accounts[1]
    engine.grant_consent(victim, w.sender, "marketing", source="web", wording="v3", by="山田太郎")
    delivered = engine.request_notice(w.sender, victim, "fraud_alert", FRAUD, idempotency_key="a")
    engine.dispatch()
    pending = engine.request_notice(
        w.sender, victim, "note", {"memo": "ご住所変更の件"}, idempotency_key="b"
    )
    with engine.store.session(commit=False) as s:
        wrapped = [
            bytes(r[0])
            for r in s.execute(
                select(data_keys.c.wrapped).where(data_keys.c.subject_id == victim.hex)
            )
        ]
    events_before = count_events(engine)

    assert engine.erase_account(victim, requested_by="dpo@acme") == 1

    assert count_events(engine) > events_before  # Erased (+ Cancelled) appended, nothing removed
    view = engine.account(victim)
    assert view.erased and view.closed
    assert (view.mobile, view.name, view.customer_ref) == (ERASED, ERASED, ERASED)
    assert engine.find_accounts(mobile=NUMBERS[0]) == []
    assert engine.find_accounts(customer_ref="C0") == []
    assert engine.message(pending.id).status is MessageStatus.CANCELLED
    assert engine.message(delivered.id).status is not MessageStatus.CANCELLED
    report = engine.subject_access_report(victim)
    assert report["account"]["name"] == ERASED
    assert report["consents"][0]["history"][0]["by"] == ERASED
    assert "山田太郎" not in str(report)
    # Other customers are unaffected.
    assert engine.account(other).name == NAMES[1]
    assert engine.find_accounts(mobile=NUMBERS[1]) == [other]
    # Replies arriving later for the erased customer are recorded without text.
    engine.handle_report(
        StatusReport(
            gateway_reference(delivered.id, 1), "reply", engine.now(), text="いいえ", postback="no"
        )
    )
    with pytest.raises(errors.AccountClosed):
        engine.request_notice(w.sender, victim, "fraud_alert", FRAUD, idempotency_key="c")

    # A fresh process with the same KEK recovers nothing.
    with Engine(settings) as fresh:
        again = fresh.account(victim)
        assert again.mobile == ERASED and again.name == ERASED
        with fresh.store.session(commit=False) as s:
            rows = s.execute(
                select(data_keys.c.wrapped).where(data_keys.c.subject_id == victim.hex)
            ).all()
        assert rows and all(r[0] is None for r in rows)
    raw = database_bytes(engine, db_url)
    assert wrapped and not any(w_ in raw for w_ in wrapped)


def test_kek_rotation_rewraps_keys_without_touching_events(
    engine: Engine, settings: Settings
) -> None:
    w = build(engine)
    with engine.store.session(commit=False) as s:
        events = s.execute(text("SELECT id, state FROM tsuchi_events ORDER BY id")).all()
    directory = settings.resolved_keys_dir()
    new = stage_new_kek(directory)
    assert engine.rewrap_data_keys(new) == 3
    promote_staged_kek(directory)
    engine.close()
    with Engine(settings) as reopened:
        assert reopened.account(w.accounts[2]).name == NAMES[2]
        with reopened.store.session(commit=False) as s:
            assert (
                s.execute(text("SELECT id, state FROM tsuchi_events ORDER BY id")).all() == events
            )
    # The old KEK no longer opens the database.
    old = directory / "kek.key.old"
    (directory / "kek.key").unlink()
    old.rename(directory / "kek.key")
    with pytest.raises(errors.KeyMaterialError, match="not the one"):
        Engine(settings)


def test_interrupted_rotation_completes_at_next_start(engine: Engine, settings: Settings) -> None:
    w = build(engine)
    new = stage_new_kek(settings.resolved_keys_dir())
    engine.rewrap_data_keys(new)  # committed, but the files were not promoted
    engine.close()
    with Engine(settings) as reopened:
        assert reopened.keyring.kek.key_id == new.key_id
        assert reopened.account(w.accounts[0]).name == NAMES[0]


def test_wrong_kek_for_rewrap_leaves_everything_as_it_was(engine: Engine) -> None:
    w = build(engine)
    engine.store.keys.kek = LocalKMS(b"\x01" * 32)  # simulate unwrapping with the wrong KEK
    with pytest.raises(errors.KeyMaterialError):
        engine.rewrap_data_keys(LocalKMS(b"\x02" * 32))
    engine.store.keys.kek = engine.keyring.kek
    engine.drop_caches()
    assert engine.account(w.accounts[0]).name == NAMES[0]


def test_subject_key_rotation_for_new_writes(engine: Engine) -> None:
    w = build(engine)
    assert engine.rotate_subject_key(w.accounts[0]) == 2
    engine.change_mobile(w.accounts[0], "090-7777-8888", carrier="docomo")
    engine.drop_caches()
    assert engine.account(w.accounts[0]).mobile == "+819077778888"
    assert engine.account(w.accounts[0]).name == NAMES[0]  # written under key v1
    assert engine.find_accounts(mobile="09077778888") == [w.accounts[0]]
    assert engine.find_accounts(mobile=NUMBERS[0]) == []


def test_subject_access_report_holds_everything(engine: Engine, clock: ManualClock) -> None:
    w = build(engine)
    a = w.accounts[0]
    engine.grant_consent(
        a, w.sender, "marketing", source="web", wording="同意文言 v3", by="山田太郎"
    )
    engine.withdraw_consent(a, w.sender, "marketing", source="reply 停止")
    m = engine.request_notice(w.sender, a, "fraud_alert", FRAUD, idempotency_key="x")
    engine.dispatch()
    engine.handle_report(
        StatusReport(
            gateway_reference(m.id, 1), "reply", engine.now(), text="はい、私です", postback="yes"
        )
    )
    r = engine.subject_access_report(a)
    assert r["account"]["mobile"] == "+819011112222" and r["account"]["name"] == "山田太郎"
    assert [h["action"] for h in r["consents"][0]["history"]] == ["granted", "withdrawn"]
    assert r["consents"][0]["history"][0]["wording"] == "同意文言 v3"
    msg = r["messages"][0]
    assert "山田太郎様" in msg["content"]["plus_message"] and "****1234" in msg["content"]["sms"]
    assert [t["status"] for t in msg["timeline"]][:3] == ["requested", "routed", "submitted"]
    assert msg["replies"][0]["text"] == "はい、私です"


def test_no_personal_data_in_logs_or_error_messages(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    settings = Settings(database_url=db_url, keys_dir=tmp_path / "keys", create_keys=True)
    caplog.set_level(logging.DEBUG)
    messages: list[str] = []
    with Engine(settings, clock=clock) as e:
        run_demo(e, clock.advance, seed=2, customers=30)
        w = build(e)
        for bad in ("03-1234-5678", "+1 650 253 0000", "090-12"):
            with pytest.raises(errors.TsuchiError) as exc:
                e.register_account("acme", "Z", bad, "高橋")
            messages.append(str(exc.value))
        with pytest.raises(errors.TsuchiError) as exc:
            e.request_notice(
                w.sender,
                w.accounts[0],
                "fraud_alert",
                {**FRAUD, "amount": "山田"},
                idempotency_key="z",
            )
        messages.append(str(exc.value))
        e.erase_account(w.accounts[1], "dpo")
        clock.advance(timedelta(hours=1))
        e.process_reports()
        secrets = personal_strings(e) + NUMBERS + ["03-1234-5678", "6502530000", "高橋"]
    logged = "\n".join(r.getMessage() for r in caplog.records) + "\n".join(messages)
    assert caplog.records, "the scan needs log records to scan"
    assert not [s for s in secrets if s in logged]
