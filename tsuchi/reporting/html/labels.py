"""The Japanese and English names the HTML report prints for codes.

Why this module exists: report rows hold codes (``plus_message``,
``softbank``, ``quiet_hours``, ``delivery_p95_s``...); the people who read the
page need words in both languages.  The names are kept apart from the drawing
so they can be reviewed and corrected in one place; a code with no name here
is printed as it is.
"""

from __future__ import annotations

from collections.abc import Mapping

CHANNEL_LABELS = {
    "plus_message": "+メッセージ (+Message)",
    "sms": "SMS",
    "-": "未送信 (not routed)",
}
CARRIER_LABELS = {
    "docomo": "NTTドコモ (docomo)",
    "au": "au (KDDI)",
    "softbank": "ソフトバンク (SoftBank)",
    "rakuten": "楽天モバイル (Rakuten)",
    "unknown": "不明 (unknown)",
    "-": "未送信 (not routed)",
}
PURPOSE_LABELS = {
    "security": "セキュリティ (security)",
    "transactional": "取引 (transactional)",
    "marketing": "広告・販促 (marketing)",
}
REASON_LABELS = {
    "marketing_no_consent": "広告の同意なし / no marketing opt-in",
    "marketing_withdrawn": "広告の同意撤回 / marketing opt-in withdrawn",
    "transactional_withdrawn": "取引通知の受信拒否 / transactional notices refused",
    "quiet_hours": "夜間の配信停止時間帯 / quiet hours",
    "frequency_cap_day": "1日の配信上限 / daily frequency cap",
    "frequency_cap_week": "1週間の配信上限 / weekly frequency cap",
    "frequency_cap_day_dropped": "1日の配信上限で破棄 / dropped: daily cap",
    "frequency_cap_week_dropped": "1週間の配信上限で破棄 / dropped: weekly cap",
}

COLUMN_LABELS = {
    "day": "日付 Day",
    "tenant": "組織 Tenant",
    "sender_id": "送信者 Sender",
    "template": "テンプレート Template",
    "purpose": "目的 Purpose",
    "channel": "チャネル Channel",
    "carrier": "キャリア Carrier",
    "requested": "依頼 Requested",
    "blocked": "ブロック Blocked",
    "deferred": "保留 Deferred",
    "submitted": "送信 Submitted",
    "delivered": "配達 Delivered",
    "read": "既読 Read",
    "failed": "失敗 Failed",
    "expired": "期限切れ Expired",
    "cancelled": "取消 Cancelled",
    "fallback": "SMS切替 Fallback",
    "pending": "処理中 Pending",
    "replied": "返信 Replied",
    "blocked_by_reason": "ブロック理由 Block reasons",
    "deferred_by_reason": "保留理由 Deferral reasons",
    "delivery_p50_s": "配達 p50 (秒 s)",
    "delivery_p95_s": "配達 p95 (秒 s)",
    "read_p50_s": "既読 p50 (秒 s)",
    "read_p95_s": "既読 p95 (秒 s)",
    "delivery_samples": "配達計測数 Delivery samples",
    "read_samples": "既読計測数 Read samples",
}


def label(mapping: Mapping[str, str], code: str) -> str:
    """The name of ``code`` in ``mapping``, or the code itself."""
    return mapping.get(code, code)
