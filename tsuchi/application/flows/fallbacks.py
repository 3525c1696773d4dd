"""Delivery fallbacks: from +Message to SMS when +Message does not deliver.

After a submission, a delivery TTL timer (and, for urgent notices, a read
window) is scheduled; a rejection, a failure report, an expired TTL or an
unread urgent notice makes the next attempt go by SMS.  A gateway saying the
number cannot take +Message is remembered on the account.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from uuid import UUID

from tsuchi.application.accounts import Accounts
from tsuchi.application.context import Context
from tsuchi.application.notices import Notices
from tsuchi.application.unit_of_work import UnitOfWork
from tsuchi.domain.message import Message
from tsuchi.domain.values import Capability, Channel, MessageStatus, Urgency
from tsuchi.infrastructure.sql import Session
from tsuchi.infrastructure.sql.timers import NewTimer, Timer

TTL, READ_WINDOW = "ttl", "read_window"
_CODE = re.compile(r"[a-z_]{1,32}")


def fallback_code(reason: str) -> str:
    """The short code a fallback is counted under: ``failed``, ``expired``,
    ``ttl``, ``read_window``, or the gateway's rejection reason (a code such
    as ``not_capable``); ``other`` for anything else."""
    for prefix, code in (
        ("failed", "failed"),
        ("expired", "expired"),
        ("no delivery within TTL", TTL),
        ("urgent notice not read", READ_WINDOW),
    ):
        if reason.startswith(prefix):
            return code
    return reason if _CODE.fullmatch(reason) else "other"


def _attempt_timer(kind: str, prefix: str, m: Message, attempt: int, due: datetime) -> NewTimer:
    return NewTimer(
        f"{prefix}:{m.id.hex}:{attempt}", kind, due, {"message_id": m.id.hex, "attempt": attempt}
    )


class Fallbacks:
    def __init__(self, ctx: Context, uow: UnitOfWork, notices: Notices, accounts: Accounts) -> None:
        self.ctx = ctx
        self.uow = uow
        self.notices = notices
        self.accounts = accounts

    def delivery_ttl(self, m: Message) -> timedelta:
        """How long the current attempt may take to be delivered before it
        expires (and, for +Message, falls back to SMS)."""
        cur = m.current
        if cur is None or cur.channel is not Channel.PLUS_MESSAGE:
            # SMS final reports can take up to 72 h; after that the attempt expires.
            return self.ctx.settings.sms_report_ttl
        return self.ctx.settings.delivery_ttl[m.urgency.value]

    def on_submitted(self, s: Session, m: Message, attempt: int, at: datetime) -> None:
        """Schedule the delivery TTL and, for urgent notices, the read window."""
        cur = m.current
        if cur is None:
            return
        settings = self.ctx.settings
        ttl = _attempt_timer(TTL, "ttl", m, attempt, at + self.delivery_ttl(m))
        if cur.channel is not Channel.PLUS_MESSAGE:
            self.uow.schedule(s, [ttl])
            return
        items = [ttl]
        if m.urgency is Urgency.URGENT:
            items.append(
                _attempt_timer(READ_WINDOW, "read", m, attempt, at + settings.urgent_read_window)
            )
        self.uow.schedule(s, items)

    def fall_back(self, s: Session, m: Message, reason: str) -> None:
        """Queue an SMS attempt if the current one went by +Message."""
        cur = m.current
        if cur is None or cur.channel is not Channel.PLUS_MESSAGE:
            return
        if reason == "not_capable":
            self.accounts.learn_capability(
                m.account_id, Capability.NO, "gateway rejection", self.ctx.now()
            )
        attempt = m.fall_back(reason, cur.carrier, self.ctx.now())
        self.notices.enqueue(s, m, attempt, self.ctx.now())
        observer, code, carrier = self.ctx.observer, fallback_code(reason), cur.carrier.value
        self.uow.after_commit(lambda: observer.fell_back(code, carrier))

    def _attempt_message(self, t: Timer) -> tuple[Message, int] | None:
        m = self.notices.find(UUID(hex=t.payload["message_id"]))
        attempt = int(t.payload["attempt"])
        if m is None or m.current is None or m.current.number != attempt:
            return None
        return m, attempt

    def fire_ttl(self, s: Session, t: Timer) -> None:
        found = self._attempt_message(t)
        if found is None:
            return
        m, attempt = found
        if _attempt_status(m) in (MessageStatus.SUBMITTED, MessageStatus.ACCEPTED):
            m.record_report(attempt, "expired", self.ctx.now(), code="TTL")
            self.fall_back(s, m, "no delivery within TTL")
            self.uow.save_message(s, m)

    def fire_read_window(self, s: Session, t: Timer) -> None:
        found = self._attempt_message(t)
        if found is None:
            return
        m, _ = found
        if _attempt_status(m) in (
            MessageStatus.SUBMITTED,
            MessageStatus.ACCEPTED,
            MessageStatus.DELIVERED,
        ):
            self.fall_back(s, m, "urgent notice not read in time: SMS as well")
            self.uow.save_message(s, m)


def _attempt_status(m: Message) -> MessageStatus | None:
    """The current attempt's own status (timers concern one attempt; the
    message's status is the best of all its attempts)."""
    return None if m.current is None else m.current.status
