"""What a customer's reply means: pure classification for the flows.

Fraud alerts offer "はい、私です" / "いいえ、身に覚えがありません"; safety checks offer
"無事です" / "助けが必要".  A tapped suggestion is matched on its **code** (CM's
postback data), never on its label: the documented codes are ``me`` and
``not_me`` (alias ``block_card``) for fraud alerts, ``safe`` and
``need_help`` for safety checks, ``opt_out`` (alias ``stop``) for refusing
marketing.  A suggestion with a code of its own is read by that code alone,
whatever its label says.  A plain-string suggestion has no code of its own
(its postback is its label's derived code,
:func:`~tsuchi.domain.suggestions.reply_code`; before codes existed it was
the label itself): its label is read like a typed reply.  Texts typed as
replies (SMS, or +Message without a tap) are matched by keywords.  Opt-out keywords (STOP,
停止, 配信停止) withdraw marketing consent whether typed or tapped.
"""

from __future__ import annotations

import unicodedata

from tsuchi.domain.suggestions import CODE_RE, reply_code

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


FRAUD_ME_CODES = ("me",)
FRAUD_NOT_ME_CODES = ("not_me", "block_card")
SAFE_CODES = ("safe",)
NEED_HELP_CODES = ("need_help",)
OPT_OUT_CODES = ("opt_out", "stop")


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().lower()


def _codes(explicit: tuple[str, ...], labels: tuple[str, ...]) -> frozenset[str]:
    return frozenset(explicit) | {reply_code(label) for label in labels}


_FRAUD_ME = _codes(FRAUD_ME_CODES, FRAUD_ME)
_FRAUD_NOT_ME = _codes(FRAUD_NOT_ME_CODES, FRAUD_NOT_ME)
_SAFE = _codes(SAFE_CODES, SAFE)
_NEED_HELP = _codes(NEED_HELP_CODES, NEED_HELP)


def _tapped(postback: str) -> set[str]:
    """The codes a postback may stand for: itself, or (a label sent as the
    postback before suggestions had codes) that label's derived code."""
    return {postback, reply_code(postback)}


def _plain_label(text: str, postback: str) -> str | None:
    """The label of a tapped suggestion that had no code of its own: a plain
    label (its postback is the label's derived code), or one sent before
    codes existed (its postback is the label itself).  None for a suggestion
    with an explicit code: only the code decides then."""
    if not CODE_RE.match(postback):
        return postback
    if text and postback == reply_code(text):
        return text
    return None


def _fraud_keywords(text: str) -> str:
    n = _norm(text)
    if not n:
        return "unclear"
    if any(n == _norm(k) or n.startswith(_norm(k)) for k in FRAUD_NOT_ME):
        return "not_me"
    if any(n == _norm(k) or n.startswith(_norm(k)) for k in FRAUD_ME):
        return "me"
    return "unclear"


def _safety_keywords(text: str) -> str:
    n = _norm(text)
    if any(_norm(k) in n for k in NEED_HELP):
        return "need_help"
    if any(_norm(k) in n for k in SAFE):
        return "safe"
    return "other"


def classify_fraud_reply(text: str, postback: str) -> str:
    """ "me", "not_me" or "unclear".  A tap is read by its code."""
    if not postback:
        return _fraud_keywords(text)
    tapped = _tapped(postback)
    if tapped & _FRAUD_NOT_ME:
        return "not_me"
    if tapped & _FRAUD_ME:
        return "me"
    label = _plain_label(text, postback)
    return _fraud_keywords(label) if label is not None else "unclear"


def classify_safety_reply(text: str, postback: str) -> str:
    """ "safe", "need_help" or "other".  A tap is read by its code."""
    if not postback:
        return _safety_keywords(text)
    tapped = _tapped(postback)
    if tapped & _NEED_HELP:
        return "need_help"
    if tapped & _SAFE:
        return "safe"
    label = _plain_label(text, postback)
    return _safety_keywords(label) if label is not None else "other"


def is_opt_out(text: str, keywords: tuple[str, ...] = OPT_OUT, postback: str = "") -> bool:
    """A refusal: an opt-out code or keyword tapped, or a keyword typed.
    Refusals are honoured generously (特定電子メール法): a tapped label that
    is a keyword counts too."""
    if postback:
        tapped = _tapped(postback)
        if tapped & (_codes(OPT_OUT_CODES, keywords)):
            return True
    n = _norm(text)
    return any(n == _norm(k) for k in keywords)
