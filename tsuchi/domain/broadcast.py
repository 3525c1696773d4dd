"""The Broadcast aggregate: one notice to many accounts (a safety check, a campaign).

The recipients live in a table beside it, one row per account, so a broadcast
to 100,000 customers is expanded into messages in chunks that survive a crash
half-way: each message's id derives from the broadcast and the account, so
re-expanding a chunk never creates a second message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

BROADCAST_NAMESPACE = uuid5(NAMESPACE_URL, "https://tsuchi.example/broadcast")


def broadcast_id(sender_id: UUID, name: str) -> UUID:
    return uuid5(BROADCAST_NAMESPACE, f"{sender_id}/{name}")


class Broadcast(Aggregate):
    @staticmethod
    def create_id(sender_id: UUID, name: str, **_: Any) -> UUID:
        return broadcast_id(sender_id, name)

    @event("Created")
    def __init__(
        self,
        sender_id: UUID,
        name: str,
        template: str,
        variables: dict[str, str],
        urgency: str,
        recipients: int,
        requested_by: str,
        at: datetime,
    ) -> None:
        self.sender_id = sender_id
        self.name = name
        self.template = template
        self.variables = variables
        self.urgency = urgency
        self.recipients = recipients
        self.requested_by = requested_by
        self.expanded = False
        self.created_at = at

    def mark_expanded(self, messages: int, at: datetime) -> None:
        if not self.expanded:
            self._expanded(messages=messages, at=at)

    @event("Expanded")
    def _expanded(self, messages: int, at: datetime) -> None:
        self.expanded = True
