"""The Conversation aggregate: what a customer wrote to us, per account.

Every incoming message (MO) from a known customer is kept here, whether it
answered one of our notices (``message_id``) or matched none: its text and
the references of any files it carried (URL, MIME type, name, size; never
fetched) are personal data, held as :class:`~tsuchi.domain.personal.Personal`
under the account's data key, so erasing the customer erases them too.
The id is derived from the account id (random, never from personal data),
so an account has exactly one conversation.  A retried delivery of the same
MO (``dedupe_key``) records nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from tsuchi.domain.personal import Personal

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
