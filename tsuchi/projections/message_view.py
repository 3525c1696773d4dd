"""The message view: one row per message with its current routing and status.

It is written in the same unit of work as the message's events, so look-ups by
account or correlation id and the delivery summary are always consistent with
the event log.  It holds ids, statuses and reasons only: no personal data.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tsuchi.domain.message import Message


def message_row(msg: Message, updated_at: datetime) -> dict[str, Any]:
    cur = msg.current
    return {
        "tenant": msg.tenant,
        "sender_id": msg.sender_id.hex,
        "account_id": msg.account_id.hex,
        "template": msg.template_name,
        "purpose": msg.purpose.value,
        "urgency": msg.urgency.value,
        "channel": cur.channel.value if cur else None,
        "carrier": cur.carrier.value if cur else None,
        "status": msg.status.value,
        "reason": msg.block_reason or msg.last_reason,
        "fallback": len(msg.attempts) > 1,
        "correlation_id": msg.correlation_id,
        "requested_at": msg.requested_at,
        "routed_at": msg.routed_at,
        "deferred_until": msg.deferred_until if msg.status.value == "deferred" else None,
        "updated_at": updated_at,
    }
