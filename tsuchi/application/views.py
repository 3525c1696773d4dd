"""What the services return to the host: frozen snapshots, never aggregates.

A host must not hold (or mutate) a live aggregate outside a unit of work;
these views carry what it may read.  Personal fields are excluded from
``repr`` so they never reach a log by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from tsuchi.domain.consent import Consent, ConsentChange
from tsuchi.domain.message import Message, TimelineEntry
from tsuchi.domain.values import Capability, Carrier, Channel, MessageStatus, Purpose, Urgency


@dataclass(frozen=True)
class SenderView:
    id: UUID
    tenant: str
    display_name: str
    industry: str
    sms_sender_id: str
    contact: str
    vetting: dict[str, str]
    verified: bool
    suspended: bool
    closed: bool


@dataclass(frozen=True)
class AccountView:
    id: UUID
    tenant: str
    customer_ref: str = field(repr=False)
    mobile: str = field(repr=False)
    name: str = field(repr=False)
    carrier: Carrier = Carrier.UNKNOWN
    capability: Capability = Capability.UNKNOWN
    time_zone: str = "Asia/Tokyo"
    language: str = "ja"
    closed: bool = False
    erased: bool = False


@dataclass(frozen=True)
class MessageView:
    id: UUID
    sender_id: UUID
    account_id: UUID
    template: str
    template_version: int
    purpose: Purpose
    urgency: Urgency
    status: MessageStatus
    channel: Channel | None
    attempts: int
    block_reason: str | None
    authorisation: dict[str, Any]
    correlation_id: str
    requested_at: datetime
    timeline: tuple[TimelineEntry, ...]

    @classmethod
    def of(cls, m: Message) -> MessageView:
        return cls(
            id=m.id,
            sender_id=m.sender_id,
            account_id=m.account_id,
            template=m.template_name,
            template_version=m.template_version,
            purpose=m.purpose,
            urgency=m.urgency,
            status=m.status,
            channel=m.current.channel if m.current else None,
            attempts=len(m.attempts),
            block_reason=m.block_reason,
            authorisation=dict(m.authorisation),
            correlation_id=m.correlation_id,
            requested_at=m.requested_at,
            timeline=tuple(m.timeline),
        )


@dataclass(frozen=True)
class ConsentView:
    id: UUID
    account_id: UUID
    sender_id: UUID
    purpose: Purpose
    granted: bool
    version: int
    history: tuple[ConsentChange, ...]

    @classmethod
    def of(cls, c: Consent) -> ConsentView:
        return cls(
            c.id, c.account_id, c.sender_id, c.purpose, c.granted, int(c.version), tuple(c.history)
        )


@dataclass(frozen=True)
class WebhookResult:
    """What one webhook request did: reports newly applied, already known, or
    for no known message; ``poison``: a callback that could not be applied,
    kept for inspection (without its body)."""

    accepted: int
    duplicates: int = 0
    orphans: int = 0
    poison: int = 0


@dataclass(frozen=True)
class InboundMediaView:
    """A file a customer sent, as CM holds it: a reference, never fetched.
    ``size_bytes`` is None when the gateway does not say (CM does not)."""

    url: str = field(repr=False)
    mime_type: str
    name: str = field(default="", repr=False)
    size_bytes: int | None = None


@dataclass(frozen=True)
class InboundView:
    """One message a customer wrote: decrypted, or the erased marker.
    ``message_id``: the notice it answered, None if it matched none."""

    at: datetime
    received_at: datetime
    channel: str
    text: str = field(repr=False)
    media: tuple[InboundMediaView, ...] = ()
    message_id: UUID | None = None
    erased: bool = False


@dataclass(frozen=True)
class ReplyResult:
    """An operator's free-text answer as handed to the gateway: its
    reference, the channel (the customer's), and whether it was accepted."""

    reference: str
    channel: Channel
    accepted: bool
    code: str = ""
