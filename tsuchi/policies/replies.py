"""What a customer's reply means: pure classification for the flows.

Fraud alerts offer "はい、私です" / "いいえ、身に覚えがありません"; safety checks offer
"無事です" / "助けが必要".  Button postbacks are matched exactly; typed replies by
keywords.  Opt-out keywords (STOP, 停止, 配信停止) withdraw marketing consent.
"""

from __future__ import annotations

import unicodedata

FRAUD_ME = ("はい、私です", "はい", "私です", "yes", "me")
FRAUD_NOT_ME = (
    "いいえ、身に覚えがありません",
    "いいえ",
    "身に覚えがない",
    "身に覚えがありません",
    "no",
    "not me",
)
SAFE = ("無事です", "無事", "safe")
NEED_HELP = ("助けが必要", "助けて", "help")
OPT_OUT = ("STOP", "停止", "配信停止")


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().lower()


def classify_fraud_reply(text: str, postback: str) -> str:
    """ "me", "not_me" or "unclear"."""
    for candidate in (postback, text):
        n = _norm(candidate)
        if not n:
            continue
        if any(n == _norm(k) or n.startswith(_norm(k)) for k in FRAUD_NOT_ME):
            return "not_me"
        if any(n == _norm(k) or n.startswith(_norm(k)) for k in FRAUD_ME):
            return "me"
    return "unclear"


def classify_safety_reply(text: str, postback: str) -> str:
    """ "safe", "need_help" or "other"."""
    for candidate in (postback, text):
        n = _norm(candidate)
        if any(_norm(k) in n for k in NEED_HELP):
            return "need_help"
        if any(_norm(k) in n for k in SAFE):
            return "safe"
    return "other"


def is_opt_out(text: str, keywords: tuple[str, ...] = OPT_OUT) -> bool:
    n = _norm(text)
    return any(n == _norm(k) for k in keywords)
