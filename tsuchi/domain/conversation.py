"""The Conversation aggregate: what a customer wrote to us, per account.

Every incoming message (MO) from a known customer is kept here, whether it
answered one of our notices (``message_id``) or matched none: its text and
the references of any files it carried (URL, MIME type, name, size; never
fetched) are personal data, held as :class:`~tsuchi.domain.personal.Personal`
under the account's data key, so erasing the customer erases them too.
The id is derived from the account id (random, never from personal data),
so an account has exactly one conversation.  A retried delivery of the same
MO (``dedupe_key``) records nothing new.

An operator may answer in free text (:meth:`Conversation.request_reply`)
only within a window after the customer last wrote, on the channel the
customer used; the reply is recorded with the operator's identity before it
is handed to the gateway, and its outcome after (:meth:`record_submission`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from tsuchi.domain.personal import Personal
from tsuchi.errors import RuleViolation

CONVERSATION_NAMESPACE = uuid5(NAMESPACE_URL, "https://tsuchi.example/conversation")


def conversation_id(account_id: UUID) -> UUID:
    return uuid5(CONVERSATION_NAMESPACE, account_id.hex)


@dataclass(frozen=True)
class InboundEntry:
    """One MO as kept: ``text`` and each media ``url``/``name`` are personal."""

    number: int
    at: datetime
    received_at: datetime
    channel: str
    text: Personal | None
    media: tuple[dict[str, Any], ...]
    message_id: UUID | None


@dataclass
class OutboundReply:
    """A free-text answer by an operator; ``text`` is personal data."""

    number: int
    at: datetime
    operator: str
    channel: str
    sender_id: UUID
    reference: str
    text: Personal | None
    status: str = "requested"  # then "submitted" or "failed"
    code: str = ""


class Conversation(Aggregate):
    @staticmethod
    def create_id(account_id: UUID, **_: Any) -> UUID:
        return conversation_id(account_id)

    @event("Started")
    def __init__(self, account_id: UUID, tenant: str, at: datetime) -> None:
        self.account_id = account_id
        self.tenant = tenant
        self.started_at = at
        self.inbound: list[InboundEntry] = []
        self.seen: set[str] = set()
        self.replies: list[OutboundReply] = []

    @property
    def last_inbound(self) -> InboundEntry | None:
        return self.inbound[-1] if self.inbound else None

    def receive(
        self,
        text: Personal | None,
        media: list[dict[str, Any]],
        channel: str,
        at: datetime,
        received_at: datetime,
        message_id: UUID | None,
        dedupe_key: str,
    ) -> bool:
        """Record one MO; False (nothing recorded) if ``dedupe_key`` was seen."""
        if dedupe_key in self.seen:
            return False
        self._received(
            text=text,
            media=media,
            channel=channel,
            at=at,
            received_at=received_at,
            message_id=message_id,
            dedupe_key=dedupe_key,
        )
        return True

    def check_reply_window(self, now: datetime, window: timedelta) -> InboundEntry:
        """The customer's last message, if ``now`` is within ``window`` after it."""
        last = self.last_inbound
        if last is None:
            raise RuleViolation("no_inbound", "the customer has not written; nothing to answer")
        if now - last.received_at > window:
            raise RuleViolation("reply_window_closed", "the customer last wrote too long ago")
        return last

    def request_reply(
        self,
        text: Personal,
        operator: str,
        channel: str,
        sender_id: UUID,
        reference: str,
        at: datetime,
    ) -> int:
        number = len(self.replies) + 1
        self._reply_requested(
            number=number,
            text=text,
            requested_by=operator,  # the audit trail names it as the actor
            channel=channel,
            sender_id=sender_id,
            reference=reference,
            at=at,
        )
        return number

    def record_submission(self, number: int, accepted: bool, code: str, at: datetime) -> None:
        if not 1 <= number <= len(self.replies):
            raise RuleViolation("no_such_reply", f"no reply {number}")
        self._reply_submitted(number=number, accepted=accepted, code=code, at=at)

    @event("ReplyRequested")
    def _reply_requested(
        self,
        number: int,
        text: Personal,
        requested_by: str,
        channel: str,
        sender_id: UUID,
        reference: str,
        at: datetime,
    ) -> None:
        self.replies.append(
            OutboundReply(number, at, requested_by, channel, sender_id, reference, text)
        )

    @event("ReplySubmitted")
    def _reply_submitted(self, number: int, accepted: bool, code: str, at: datetime) -> None:
        reply = self.replies[number - 1]
        reply.status = "submitted" if accepted else "failed"
        reply.code = code

    @event("InboundReceived")
    def _received(
        self,
        text: Personal | None,
        media: list[dict[str, Any]],
        channel: str,
        at: datetime,
        received_at: datetime,
        message_id: UUID | None,
        dedupe_key: str,
    ) -> None:
        self.seen.add(dedupe_key)
        self.inbound.append(
            InboundEntry(
                number=len(self.inbound) + 1,
                at=at,
                received_at=received_at,
                channel=channel,
                text=text,
                media=tuple(dict(m) for m in media),
                message_id=message_id,
            )
        )
