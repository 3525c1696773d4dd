"""The Message aggregate: one notice to one account.

Lifecycle::

    requested ─┬─ blocked (reason)                               final
               ├─ deferred (until, reason) ── routed ...
               └─ routed (channel, carrier) ─ submitted ─ accepted ─ delivered ─ read
                      │                          └─ failed / expired ─ fallback ─ routed (SMS) ...
                      └─ cancelled                                     final

Each routing opens a numbered *attempt*.  Status only moves forward along an
attempt's path; a report that would move it back (a late "delivered" after
"read", anything for a superseded attempt) is recorded as ``ReportRecorded``
and changes nothing.  The id is derived from the sender and the host's
idempotency key, so the same request can never create two messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from tsuchi.domain.personal import Personal
from tsuchi.domain.values import (
    FINAL_STATUSES,
    PROGRESS_RANK,
    Carrier,
    Channel,
    MessageStatus,
    Purpose,
    Urgency,
)
from tsuchi.errors import RuleViolation

MESSAGE_NAMESPACE = uuid5(NAMESPACE_URL, "https://tsuchi.example/message")


def message_id(sender_id: UUID, idempotency_key: str) -> UUID:
    return uuid5(MESSAGE_NAMESPACE, f"{sender_id}/{idempotency_key}")


_REF_ID_LEN = 25  # a UUID's 128 bits in base 36
_REF_MAX_ATTEMPT = 9_999_999  # 7 digits: 25 + 7 = 32 characters at most
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def gateway_reference(message: UUID, attempt: int) -> str:
    """The reference one attempt of a message goes to the gateway with; reports
    and replies come back with it.

    CM.com accepts 1 to 32 characters of ``[A-Za-z0-9]``: the message id in
    base 36 (25 characters, zero-padded) followed by the attempt in decimal.
    """
    if not 1 <= attempt <= _REF_MAX_ATTEMPT:
        raise ValueError("attempt out of range")
    n, digits = message.int, []
    while n:
        n, r = divmod(n, 36)
        digits.append(_BASE36[r])
    return "".join(reversed(digits)).rjust(_REF_ID_LEN, "0") + str(attempt)


def parse_gateway_reference(reference: str) -> tuple[UUID, int]:
    """The message and attempt a gateway reference names; ValueError if it
    is not one of ours.  The earlier form ``<32 hex>:<attempt>`` is still
    read, so reports for attempts submitted with it keep correlating."""
    if ":" in reference:
        mid_hex, attempt_s = reference.split(":")
        if not (attempt_s.isascii() and attempt_s.isdigit()):
            raise ValueError("not a gateway reference")
        return UUID(hex=mid_hex), int(attempt_s)
    ref = reference.lower()
    head, tail = ref[:_REF_ID_LEN], ref[_REF_ID_LEN:]
    if not (
        ref.isascii()
        and len(ref) <= _REF_ID_LEN + 7
        and all(c in _BASE36 for c in head)
        and len(head) == _REF_ID_LEN
        and tail.isdigit()
        and int(tail) >= 1
    ):
        raise ValueError("not a gateway reference")
    return UUID(int=int(head, 36)), int(tail)


@dataclass
class Attempt:
    number: int
    channel: Channel
    carrier: Carrier
    status: MessageStatus = MessageStatus.ROUTED


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    status: str
    attempt: int | None
    detail: str


REPORT_STATUSES = {
    "accepted": MessageStatus.ACCEPTED,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.READ,
    "failed": MessageStatus.FAILED,
    "expired": MessageStatus.EXPIRED,
}


class Message(Aggregate):
    @staticmethod
    def create_id(sender_id: UUID, idempotency_key: str, **_: Any) -> UUID:
        return message_id(sender_id, idempotency_key)

    @event("Requested")
    def __init__(
        self,
        sender_id: UUID,
        idempotency_key: str,
        tenant: str,
        account_id: UUID,
        template_id: UUID,
        template_name: str,
        template_version: int,
        purpose: Purpose,
        urgency: Urgency,
        variables: dict[str, str | Personal],
        correlation_id: str,
        requested_by: str,
        at: datetime,
        bulk: bool = False,
    ) -> None:
        self.bulk = bulk
        self.sender_id = sender_id
        self.idempotency_key = idempotency_key
        self.tenant = tenant
        self.account_id = account_id
        self.template_id = template_id
        self.template_name = template_name
        self.template_version = template_version
        self.purpose = Purpose(purpose)
        self.urgency = Urgency(urgency)
        self.variables = variables
        self.correlation_id = correlation_id
        self.requested_by = requested_by
        self.requested_at = at
        self.status = MessageStatus.REQUESTED
        self.attempts: list[Attempt] = []
        self.replies: list[tuple[datetime, Personal | None]] = []
        self.reply_keys: set[str] = set()
        self.seen_reports: set[str] = set()
        self.authorisation: dict[str, Any] = {}
        self.sent_basis: dict[str, Any] = {}
        self.routed_at: datetime | None = None
        self.block_reason: str | None = None
        self.last_reason: str | None = None  # why it was last deferred, fell back or cancelled
        self.deferred_until: datetime | None = None
        self.timeline: list[TimelineEntry] = [TimelineEntry(at, "requested", None, "")]

    # -- queries ---------------------------------------------------------------
    @property
    def current(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def _settle(self) -> None:
        """The message's status only moves forward: it is the most advanced
        status of its attempts still in play (an SMS sent as well as a
        delivered +Message leaves the message delivered); only when every
        attempt has ended (failed, expired) is it the last attempt's end.
        Each attempt keeps its own status."""
        live = [a.status for a in self.attempts if a.status not in FINAL_STATUSES]
        if live:
            self.status = max(live, key=PROGRESS_RANK.__getitem__)
        elif self.attempts:
            self.status = self.attempts[-1].status

    def _note(self, at: datetime, status: str, attempt: int | None, detail: str = "") -> None:
        self.timeline.append(TimelineEntry(at, status, attempt, detail))

    # -- invariants -------------------------------------------------------------
    def check_open(self) -> None:
        if self.status in (MessageStatus.BLOCKED, MessageStatus.CANCELLED):
            raise RuleViolation("message_closed", f"message is {self.status}")

    # -- commands ----------------------------------------------------------------
    def block(self, reason: str, at: datetime) -> None:
        if self.status is not MessageStatus.REQUESTED and self.status is not MessageStatus.DEFERRED:
            raise RuleViolation("not_blockable", f"message is {self.status}")
        self._blocked(reason=reason, at=at)

    def defer(self, until: datetime, reason: str, at: datetime) -> None:
        self.check_open()
        self._deferred(until=until, reason=reason, at=at)

    def route(
        self,
        channel: Channel,
        carrier: Carrier,
        basis: dict[str, Any],
        at: datetime,
    ) -> int:
        self.check_open()
        if self.current is not None:
            raise RuleViolation("already_routed", "use fall_back for a further attempt")
        self._routed(attempt=1, channel=channel, carrier=carrier, basis=basis, at=at)
        return 1

    def mark_submitted(
        self, attempt: int, gateway_ref: str, at: datetime, basis: dict[str, Any] | None = None
    ) -> None:
        """``basis``: the purpose rule and consent (id, version) that allowed the
        send at this moment: proof of consent at send time."""
        self.check_open()
        cur = self.current
        if cur is None or cur.number != attempt or cur.status is not MessageStatus.ROUTED:
            raise RuleViolation("not_routed", "attempt is not awaiting submission")
        self._submitted(attempt=attempt, gateway_ref=gateway_ref, basis=basis or {}, at=at)

    def record_report(
        self, attempt: int, kind: str, at: datetime, code: str = "", permanent: bool = False
    ) -> bool:
        """Apply a status report if it moves the attempt forward; otherwise record
        it as late.  Returns whether the status changed."""
        if kind == "unknown":  # no documented meaning: kept with its raw code, never applied
            kind = f"unknown:{code}"
            if f"{attempt}:{kind}" not in self.seen_reports:
                self._report_recorded(attempt=attempt, kind=kind, code=code, at=at)
            return False
        new = REPORT_STATUSES[kind]
        if f"{attempt}:{kind}" in self.seen_reports:
            return False  # the very same report again (gateways retry): nothing new
        cur = self.current
        moves = (
            cur is not None
            and cur.number == attempt
            and self.status not in (MessageStatus.BLOCKED, MessageStatus.CANCELLED)
            and cur.status not in FINAL_STATUSES
            and (
                (
                    new in FINAL_STATUSES
                    and cur.status in (MessageStatus.SUBMITTED, MessageStatus.ACCEPTED)
                )
                or (new not in FINAL_STATUSES and PROGRESS_RANK[new] > PROGRESS_RANK[cur.status])
            )
        )
        if not moves:
            self._report_recorded(attempt=attempt, kind=kind, code=code, at=at)
            return False
        if new is MessageStatus.FAILED:
            self._failed(attempt=attempt, code=code, permanent=permanent, at=at)
        else:
            self._progressed(attempt=attempt, status=new, at=at)
        return True

    def fall_back(self, reason: str, carrier: Carrier, at: datetime) -> int:
        cur = self.current
        if cur is None or cur.channel is not Channel.PLUS_MESSAGE:
            raise RuleViolation("no_fallback", "only a +Message attempt can fall back to SMS")
        if self.status in (MessageStatus.BLOCKED, MessageStatus.CANCELLED):
            raise RuleViolation("message_closed", f"message is {self.status}")
        number = cur.number + 1
        self._fell_back(reason=reason, attempt=number, carrier=carrier, at=at)
        return number

    def receive_reply(
        self, text: Personal | None, postback: str, at: datetime, dedupe_key: str = ""
    ) -> bool:
        """Record a reply; ``text`` is None when the customer was erased.  A reply
        already recorded under ``dedupe_key`` (webhooks are retried) changes
        nothing; returns whether it was new."""
        if dedupe_key and dedupe_key in self.reply_keys:
            return False
        self._reply_received(text=text, postback=postback, at=at, dedupe_key=dedupe_key)
        return True

    def cancel(self, reason: str, at: datetime) -> None:
        if self.status in FINAL_STATUSES or self.status in (
            MessageStatus.SUBMITTED,
            MessageStatus.ACCEPTED,
            MessageStatus.DELIVERED,
            MessageStatus.READ,
        ):
            raise RuleViolation("not_cancellable", f"message is {self.status}")
        self._cancelled(reason=reason, at=at)

    # -- events --------------------------------------------------------------------
    @event("Blocked")
    def _blocked(self, reason: str, at: datetime) -> None:
        self.status = MessageStatus.BLOCKED
        self.block_reason = reason
        self._note(at, "blocked", None, reason)

    @event("Deferred")
    def _deferred(self, until: datetime, reason: str, at: datetime) -> None:
        self.last_reason = reason
        self.status = MessageStatus.DEFERRED
        self.deferred_until = until
        self._note(at, "deferred", None, reason)

    @event("Routed")
    def _routed(
        self,
        attempt: int,
        channel: Channel,
        carrier: Carrier,
        basis: dict[str, Any],
        at: datetime,
    ) -> None:
        self.attempts.append(Attempt(attempt, Channel(channel), Carrier(carrier)))
        self.authorisation = basis
        self.routed_at = at
        self.status = MessageStatus.ROUTED
        self._note(at, "routed", attempt, f"{Channel(channel).value} via {Carrier(carrier).value}")

    @event("Submitted")
    def _submitted(
        self, attempt: int, gateway_ref: str, basis: dict[str, Any], at: datetime
    ) -> None:
        self.sent_basis = basis
        self.attempts[-1].status = MessageStatus.SUBMITTED
        self._settle()
        self._note(at, "submitted", attempt)

    @event("Progressed")
    def _progressed(self, attempt: int, status: MessageStatus, at: datetime) -> None:
        self.seen_reports.add(f"{attempt}:{MessageStatus(status).value}")
        self.attempts[-1].status = MessageStatus(status)
        self._settle()
        self._note(at, MessageStatus(status).value, attempt)

    @event("Failed")
    def _failed(self, attempt: int, code: str, permanent: bool, at: datetime) -> None:
        self.seen_reports.add(f"{attempt}:failed")
        self.attempts[-1].status = MessageStatus.FAILED
        self._settle()
        self._note(at, "failed", attempt, f"code {code}" + (" (permanent)" if permanent else ""))

    @event("ReportRecorded")
    def _report_recorded(self, attempt: int, kind: str, code: str, at: datetime) -> None:
        self.seen_reports.add(f"{attempt}:{kind}")
        if kind.startswith("unknown:"):
            self._note(at, "unknown report", attempt, f"code {code}; status unchanged")
        else:
            self._note(at, f"late {kind}", attempt, "recorded; status not regressed")

    @event("FellBack")
    def _fell_back(self, reason: str, attempt: int, carrier: Carrier, at: datetime) -> None:
        self.last_reason = reason
        self._note(at, "fallback", attempt - 1, reason)
        self.attempts.append(Attempt(attempt, Channel.SMS, Carrier(carrier)))
        self._settle()
        self._note(at, "routed", attempt, f"sms via {Carrier(carrier).value}")

    @event("ReplyReceived")
    def _reply_received(
        self, text: Personal | None, postback: str, at: datetime, dedupe_key: str = ""
    ) -> None:
        self.replies.append((at, text))
        if dedupe_key:
            self.reply_keys.add(dedupe_key)
        self._note(at, "reply", None, postback)

    @event("Cancelled")
    def _cancelled(self, reason: str, at: datetime) -> None:
        self.last_reason = reason
        self.status = MessageStatus.CANCELLED
        self._note(at, "cancelled", None, reason)
