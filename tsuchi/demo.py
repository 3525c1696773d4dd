"""The demo scenario: a card issuer and an insurer notify about 1,000 customers.

Everything runs on the embedded engine with a manual clock and the seeded
simulated carrier network: per-carrier vetting, customers across docomo, au,
SoftBank (and their MVNO brands) and Rakuten, consents, monthly statements,
fraud alerts with reply buttons, a marketing campaign that customers who never
opted in do not receive (blocked), renewal notices, deliveries, reads and SMS
fallbacks.  Running it again on the same database continues a month later.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from tsuchi.engine import Engine

SURNAMES = [
    "佐藤",
    "鈴木",
    "高橋",
    "田中",
    "伊藤",
    "渡辺",
    "山本",
    "中村",
    "小林",
    "加藤",
    "吉田",
    "山田",
    "佐々木",
    "山口",
    "松本",
    "井上",
    "木村",
    "林",
    "斎藤",
    "清水",
    "山崎",
    "森",
    "池田",
    "橋本",
    "阿部",
    "石川",
    "山下",
    "中島",
    "石井",
    "小川",
]
GIVEN = [
    "翔太",
    "陽菜",
    "蓮",
    "結衣",
    "大翔",
    "葵",
    "悠真",
    "凛",
    "湊",
    "芽依",
    "健一",
    "美咲",
    "誠",
    "由美",
    "隆",
    "恵子",
    "浩二",
    "直子",
    "拓也",
    "彩",
    "和子",
    "正樹",
    "真由美",
    "大輔",
    "さくら",
    "亮",
    "舞",
    "剛",
    "千尋",
    "光",
]
# Host network or MVNO brand, with a rough market share.
CARRIERS = [
    ("docomo", 30),
    ("ahamo", 6),
    ("au", 20),
    ("uq", 6),
    ("povo", 3),
    ("softbank", 15),
    ("ymobile", 7),
    ("linemo", 3),
    ("rakuten", 8),
    ("unknown", 2),
]

CARD = "sakura-card"
INSURER = "midori-life"


@dataclass
class DemoResult:
    customers: int
    requested: int
    summary: list[dict[str, object]]
    started: datetime
    finished: datetime


def _numbers(rng: random.Random, n: int) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        num = f"0{rng.choice('789')}0-{rng.randint(1000, 9999)}-{rng.randint(0, 9999):04d}"
        if num not in seen:
            seen.add(num)
            out.append(num)
    return out


def _ensure_vetting(engine: Engine, sender: UUID, decisions: dict[str, bool]) -> None:
    vetting = engine.sender(sender).vetting
    for carrier, approved in decisions.items():
        if vetting.get(carrier) in ("approved", "rejected"):
            continue
        if vetting.get(carrier) is None:
            engine.submit_vetting(sender, carrier)
        engine.decide_vetting(sender, carrier, approved, "" if approved else "documents incomplete")


def _ensure_template(
    engine: Engine,
    sender: UUID,
    name: str,
    *,
    purpose: str,
    plus_message_text: str,
    sms_text: str,
    variables: dict[str, str] | None = None,
    suggestions: tuple[str, ...] = (),
) -> None:
    if "approved" in engine.template_versions(sender, name).values():
        return
    version = engine.draft_template(
        sender,
        name,
        purpose=purpose,
        plus_message_text=plus_message_text,
        sms_text=sms_text,
        variables=variables,
        suggestions=suggestions,
        author="template-author",
    )
    engine.approve_template(sender, name, version, approver="compliance-officer")


def setup_senders(engine: Engine) -> tuple[UUID, UUID]:
    card = engine.register_sender(CARD, "さくらカード", "card_issuer", "SAKURACARD", "0120-000-111")
    insurer = engine.register_sender(
        INSURER, "みどり生命", "insurance", "MIDORILIFE", "0120-000-222"
    )
    _ensure_vetting(engine, card, {"docomo": True, "au": True, "softbank": True})
    _ensure_vetting(engine, insurer, {"docomo": True, "au": True, "softbank": False})
    _ensure_template(
        engine,
        card,
        "fraud_alert",
        purpose="security",
        plus_message_text=(
            "【さくらカード】{name}様、カード末尾{last4}で{merchant}にて{amount}のご利用が"
            "ありました。お心当たりはありますか？"
        ),
        suggestions=("はい、私です", "いいえ、身に覚えがありません"),
        sms_text="【さくらカード】カード末尾{last4}で{amount}のご利用がありました。心当たりがない場合は0120-000-111へ。",
        variables={"name": "name", "last4": "card_last4", "merchant": "text", "amount": "amount"},
    )
    _ensure_template(
        engine,
        card,
        "statement",
        purpose="transactional",
        plus_message_text="【さくらカード】{month}のご利用明細が確定しました。お支払額は{amount}です。",
        sms_text="【さくらカード】{month}のご利用明細が確定しました。お支払額{amount}。",
        variables={"month": "text", "amount": "amount"},
    )
    _ensure_template(
        engine,
        card,
        "spring_campaign",
        purpose="marketing",
        plus_message_text=(
            "【さくらカード】春のポイント2倍キャンペーン実施中！ 配信停止は「停止」と返信。"
            "お問い合わせ 0120-000-111"
        ),
        sms_text="【さくらカード】ポイント2倍キャンペーン。停止は「停止」と返信。0120-000-111",
        suggestions=("詳しく見る", "停止"),
    )
    _ensure_template(
        engine,
        insurer,
        "renewal",
        purpose="transactional",
        plus_message_text="【みどり生命】{name}様、ご契約の更新期限は{due}です。お手続きをお願いします。",
        sms_text="【みどり生命】ご契約の更新期限は{due}です。",
        variables={"name": "name", "due": "date"},
    )
    return card, insurer


def run_demo(
    engine: Engine,
    advance: Callable[[timedelta], datetime],
    *,
    seed: int = 7,
    customers: int = 1000,
    progress: Callable[[str], None] = lambda _: None,
) -> DemoResult:
    """Run the scenario; ``advance`` moves the engine's (manual) clock."""
    rng = random.Random(seed)
    started = engine.now()
    month = started.strftime("%Y-%m")
    progress("registering senders, vetting and templates")
    card, insurer = setup_senders(engine)

    progress(f"registering {customers} customers and their consents")
    numbers = _numbers(rng, customers)
    brands = [c for c, _ in CARRIERS]
    weights = [w for _, w in CARRIERS]
    card_accounts: list[tuple[UUID, str]] = []
    insurer_accounts: list[tuple[UUID, str]] = []
    for i, number in enumerate(numbers):
        name = f"{rng.choice(SURNAMES)} {rng.choice(GIVEN)}"
        carrier = rng.choices(brands, weights)[0]
        tenant = CARD if i % 5 < 3 else INSURER
        account = engine.register_account(
            tenant, f"C{seed:03d}-{i:06d}", number, name, carrier=carrier
        )
        if tenant == CARD:
            card_accounts.append((account, name))
            opted_in = rng.random() < 0.4
            current = engine.consent(account, card, "marketing")
            if opted_in and (current is None or not current.granted):
                engine.grant_consent(
                    account,
                    card,
                    "marketing",
                    source="web_signup",
                    wording="キャンペーン情報をSMS/+メッセージで受け取る (同意文言 v3)",
                    by=name,
                )
        else:
            insurer_accounts.append((account, name))

    requested = 0
    progress("requesting statements, renewal notices and the campaign")
    for account, _name in card_accounts:
        engine.request_notice(
            card,
            account,
            "statement",
            {"month": month, "amount": rng.randint(1000, 300000)},
            idempotency_key=f"statement/{month}/{account}",
        )
        engine.request_notice(
            card, account, "spring_campaign", {}, idempotency_key=f"campaign/{month}/{account}"
        )
        requested += 2
    due = (started + timedelta(days=30)).date()
    for account, name in insurer_accounts:
        engine.request_notice(
            insurer,
            account,
            "renewal",
            {"name": name, "due": due},
            idempotency_key=f"renewal/{month}/{account}",
        )
        requested += 1
    progress("raising fraud alerts")
    for account, name in rng.sample(card_accounts, k=min(50, len(card_accounts))):
        engine.request_notice(
            card,
            account,
            "fraud_alert",
            {
                "name": name,
                "last4": f"{rng.randint(0, 9999):04d}",
                "merchant": rng.choice(["ONLINE SHOP", "家電量販店", "海外ECサイト"]),
                "amount": rng.randint(20000, 400000),
            },
            idempotency_key=f"fraud/{month}/{account}",
            urgency="urgent",
        )
        requested += 1

    progress("delivering through the simulated carrier network")
    for _ in range(200):
        sent = engine.dispatch(100)
        if sent:
            continue
        engine.process_reports()
        if engine.pending_dispatch() == 0 and advance(timedelta(minutes=10)) > started + timedelta(
            hours=6
        ):
            break
    engine.process_reports()
    return DemoResult(customers, requested, engine.delivery_summary(), started, engine.now())


def demo_start(engine: Engine) -> datetime:
    """Where the demo clock starts: 09:00 JST on 2026-04-01, or a month after
    the previous run on the same database."""
    latest = engine.latest_request_time()
    if latest is None:
        return datetime(2026, 4, 1, 0, 0, tzinfo=UTC)
    return latest + timedelta(days=30)
