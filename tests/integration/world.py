"""A small world the integration tests share: one approved card issuer, templates, customers."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import func, select, text

from tsuchi import Engine

NUMBERS = ["090-1111-2222", "080-3333-4444", "070-5555-6666"]
NAMES = ["山田太郎", "佐藤花子", "鈴木一郎"]


@dataclass
class World:
    sender: UUID
    accounts: list[UUID]


def build(engine: Engine, carriers: tuple[str, ...] = ("docomo", "au", "softbank")) -> World:
    s = engine.register_sender("acme", "ACMEカード", "card_issuer", "ACME", "0120-000-000")
    for c in ("docomo", "au", "softbank"):
        engine.submit_vetting(s, c)
        engine.decide_vetting(s, c, True)
    engine.draft_template(
        s,
        "fraud_alert",
        purpose="security",
        plus_message_text="{name}様 カード末尾{last4}で{amount}のご利用。",
        sms_text="ACME: card {last4} {amount}",
        variables={"name": "name", "last4": "card_last4", "amount": "amount"},
        suggestions=["はい、私です", "いいえ、身に覚えがありません"],
        author="alice",
    )
    engine.approve_template(s, "fraud_alert", 1, "bob")
    engine.draft_template(
        s,
        "campaign",
        purpose="marketing",
        plus_message_text="ACMEカード キャンペーン 停止は「停止」と返信 0120-000-000",
        sms_text="ACME campaign. Reply STOP to opt out. 0120-000-000",
        author="alice",
    )
    engine.approve_template(s, "campaign", 1, "bob")
    engine.draft_template(
        s,
        "note",
        purpose="transactional",
        plus_message_text="{memo}",
        sms_text="{memo}",
        variables={"memo": "personal_text"},
        author="alice",
    )
    engine.approve_template(s, "note", 1, "bob")
    for name, purpose, body, variables, suggestions in [
        (
            "card_expiry",
            "transactional",
            "カード末尾{last4}の有効期限は{due}です。",
            {"last4": "card_last4", "due": "date"},
            [],
        ),
        (
            "fraud_confirmation",
            "security",
            "カード末尾{last4}を停止しました。",
            {"last4": "card_last4"},
            [],
        ),
        ("opt_out_confirmation", "transactional", "配信を停止しました。", {}, []),
        ("safety_check", "security", "安否確認: ご無事ですか？", {}, ["無事です", "助けが必要"]),
    ]:
        engine.draft_template(
            s,
            name,
            purpose=purpose,
            plus_message_text=body,
            sms_text=body,
            variables=variables,
            suggestions=suggestions,
            author="alice",
        )
        engine.approve_template(s, name, 1, "bob")
    accounts = [
        engine.register_account("acme", f"C{i}", number, name, carrier=carriers[i % len(carriers)])
        for i, (number, name) in enumerate(zip(NUMBERS, NAMES, strict=True))
    ]
    return World(s, accounts)


def count_events(engine: Engine) -> int:
    with engine.store.session(commit=False) as s:
        return int(s.execute(text("SELECT count(*) FROM tsuchi_events")).scalar_one())


def count_rows(engine: Engine, table: object) -> int:
    with engine.store.session(commit=False) as s:
        return int(s.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]
