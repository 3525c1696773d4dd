"""Every bad argument is a typed InvalidInput naming the field (never the
value), and nothing is persisted; on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tsuchi import Engine, Settings, errors

from .world import World, build, count_events

SURROGATE = "\ud800"


def refused(engine: Engine, field: str, call: Callable[[], Any], secret: str = "") -> None:
    before = count_events(engine)
    with pytest.raises(errors.InvalidInput) as info:
        call()
    assert info.value.field == field, info.value
    shown = str(info.value) + repr(info.value.args)
    assert not secret or secret not in shown
    assert count_events(engine) == before


def note(engine: Engine, w: World, **kw: Any) -> Any:
    args: dict[str, Any] = {"variables": {"memo": "明細"}, "idempotency_key": "k1"} | kw
    return lambda: engine.request_notice(w.sender, w.accounts[0], "note", **args)


def test_lone_surrogates_are_refused_where_text_enters(engine: Engine) -> None:
    w = build(engine)
    refused(
        engine,
        "name",
        lambda: engine.register_account("acme", "C9", "090-1234-5678", "山田" + SURROGATE),
        secret="山田",
    )
    refused(
        engine,
        "customer_ref",
        lambda: engine.register_account("acme", "C" + SURROGATE, "090-1234-5678", "山田"),
        secret="090-1234-5678",
    )
    refused(
        engine,
        "variables.memo",
        note(engine, w, variables={"memo": "残高" + SURROGATE}),
        secret="残高",
    )
    refused(
        engine,
        "idempotency_key",
        note(engine, w, idempotency_key="key-09012345678" + SURROGATE),
        secret="09012345678",
    )
    refused(
        engine,
        "evidence.by",
        lambda: engine.grant_consent(
            w.accounts[0], w.sender, "marketing", source="app", wording="w", by="山" + SURROGATE
        ),
        secret="山",
    )


def test_control_characters_and_nul_are_refused(engine: Engine) -> None:
    w = build(engine)
    refused(
        engine,
        "name",
        lambda: engine.register_account("acme", "C9", "090-1234-5678", "山田\x00\x1b[31m太郎"),
        secret="太郎",
    )
    refused(
        engine,
        "idempotency_key",
        note(engine, w, idempotency_key="key-09012345678\x00"),
        secret="09012345678",
    )


def test_wrong_types_name_the_field(engine: Engine) -> None:
    w = build(engine)
    refused(
        engine,
        "carrier",
        lambda: engine.register_account("acme", "C9", "090-1234-5678", "山田", carrier=None),  # type: ignore[arg-type]
    )
    refused(engine, "variables", note(engine, w, variables=5))
    refused(engine, "variables", note(engine, w, variables="abc"))
    refused(engine, "template_version", note(engine, w, template_version=[]))
    refused(
        engine,
        "sender_id",
        lambda: engine.request_notice("acme", w.accounts[0], "note", idempotency_key="k"),  # type: ignore[arg-type]
    )
    refused(
        engine,
        "sender_id",
        lambda: engine.start_broadcast(None, "b", "safety_check", w.accounts),  # type: ignore[arg-type]
    )
    refused(engine, "report", lambda: engine.handle_report(None))  # type: ignore[arg-type]
    refused(engine, "message_id", lambda: engine.message("not-a-uuid"))  # type: ignore[arg-type]


def test_a_bare_string_is_not_a_list_of_suggestions(engine: Engine) -> None:
    w = build(engine)
    refused(
        engine,
        "suggestions",
        lambda: engine.draft_template(
            w.sender,
            "yesno",
            purpose="security",
            plus_message_text="確認",
            sms_text="確認",
            suggestions="はい",
            author="alice",
        ),
    )


def test_undeclared_variable_names_are_not_echoed(engine: Engine) -> None:
    w = build(engine)
    secret = "090-7777-1234"
    with pytest.raises(errors.InvalidVariables) as info:
        note(engine, w, variables={"memo": "x", secret: "y"})()
    assert secret not in str(info.value) and "1 undeclared" in str(info.value)


def test_unreachable_database_is_a_transient_error(tmp_path: Path) -> None:
    url = "postgresql+psycopg://root@127.0.0.1:1/none"
    with pytest.raises(errors.TransientError) as info:
        Engine(Settings(database_url=url, keys_dir=tmp_path / "k", create_keys=True))
    assert "127.0.0.1" not in str(info.value)
    assert not (tmp_path / "k").exists()  # no key was created for it


def test_a_known_customer_ref_with_another_number_is_a_conflict(engine: Engine) -> None:
    w = build(engine)
    assert engine.register_account("acme", "C0", "090-1111-2222", "山田太郎") == w.accounts[0]
    before = count_events(engine)
    with pytest.raises(errors.IdempotencyConflict) as info:
        engine.register_account("acme", "C0", "090-9999-0000", "山田太郎")
    assert info.value.field == "mobile" and "9999" not in str(info.value)
    assert count_events(engine) == before
    with pytest.raises(errors.IdempotencyConflict):
        engine.register_accounts(
            [
                {"tenant": "acme", "customer_ref": "N1", "mobile": "080-1212-3434", "name": "甲"},
                {"tenant": "acme", "customer_ref": "N1", "mobile": "080-5656-7878", "name": "甲"},
            ]
        )


def test_the_same_idempotency_key_for_a_different_notice_is_a_conflict(engine: Engine) -> None:
    w = build(engine)
    first = note(engine, w)()
    assert note(engine, w)().id == first.id  # the very same request: the same message
    before = count_events(engine)
    for changed in ({"variables": {"memo": "別の明細"}}, {"urgency": "urgent"}):
        with pytest.raises(errors.IdempotencyConflict) as info:
            note(engine, w, **changed)()
        assert info.value.field == "idempotency_key" and "別の明細" not in str(info.value)
    assert count_events(engine) == before
