"""Ports: every side effect the engine has goes through one of these.

Each port has an implementation in the library usable in tests and the demo:
:class:`~tsuchi.infrastructure.clock.ManualClock`,
:class:`~tsuchi.infrastructure.simulator.SimulatedCarrierNetwork`,
:class:`~tsuchi.infrastructure.crypto.LocalKMS`,
:class:`~tsuchi.infrastructure.audit_anchor.FileAuditAnchor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from tsuchi.domain.suggestions import Suggestion
from tsuchi.domain.values import Carrier, Channel


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class KeyEncryptionKey(Protocol):
    """Wraps data keys.  Never stored in the database."""

    @property
    def key_id(self) -> str: ...

    def wrap(self, data_key: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, blob: bytes, aad: bytes) -> bytes: ...


@dataclass(frozen=True)
class Submission:
    """One outbound message as handed to a gateway.  ``to`` and ``text`` are
    personal data: gateways must not log them."""

    reference: str
    channel: Channel
    carrier: Carrier
    sender_name: str
    sms_sender_id: str
    to: str = field(repr=False)
    text: str = field(repr=False)
    suggestions: tuple[str | Suggestion, ...] = ()
    """+Message suggestions; a plain label is a reply with its label's code."""
    attachments: tuple[dict[str, Any], ...] = ()  # +Message media, location, stamps
    validity: timedelta | None = None
    """How long the gateway may keep trying: the attempt's delivery TTL."""
    max_parts: int | None = None
    """SMS only: the most parts the text may be split into."""
    groupings: tuple[str, ...] = ()
    """Codes free of personal data for the gateway's own reports (tenant,
    purpose, template), at most three."""


@dataclass(frozen=True)
class SubmitResult:
    reference: str
    accepted: bool
    code: str = ""
    gateway_ref: str = ""
    reason: str = ""  # for rejections: "not_capable", "not_launched", ...


ReportKind = Literal["accepted", "delivered", "read", "failed", "expired", "reply", "unknown"]
"""``unknown``: a status the gateway sent that has no documented meaning; it
is recorded on the message with its raw ``code`` and never changes a status."""


@dataclass(frozen=True)
class StatusReport:
    reference: str
    kind: ReportKind
    at: datetime
    code: str = ""
    permanent: bool = False
    text: str = field(default="", repr=False)  # reply text: personal data
    postback: str = ""


class Gateway(Protocol):
    def submit(self, submissions: Sequence[Submission]) -> list[SubmitResult]:
        """Hand messages to the carrier network; one result per submission."""
        ...

    def poll_reports(self, until: datetime, limit: int = 1000) -> list[StatusReport]:
        """At most ``limit`` reports that became available up to ``until`` (push
        gateways return [])."""
        ...


@dataclass(frozen=True)
class AnchoredCheckpoint:
    """A signed audit checkpoint as kept outside the database: the chain
    ``origin`` it belongs to, the ``head`` at ``seq``, when and by which key
    it was signed (see :mod:`tsuchi.projections.audit.anchor`)."""

    origin: str
    seq: int
    head: str
    issued_at: str
    key_id: str
    signature: str


class AuditAnchor(Protocol):
    """An append-only log of signed checkpoints that whoever can write the
    database cannot rewrite (a local file; WORM storage in production)."""

    @property
    def location(self) -> str:
        """Where the log is (for messages), e.g. a file path."""
        ...

    def append(self, checkpoint: AnchoredCheckpoint) -> None:
        """Append one checkpoint durably (returns once it is on stable storage)."""
        ...

    def latest(self, origin: str) -> AnchoredCheckpoint | None:
        """The anchored checkpoint of ``origin`` with the highest seq, or None."""
        ...

    def origins(self) -> frozenset[str]:
        """Every chain origin the log holds checkpoints of."""
        ...


class Observer(Protocol):
    """What the services report for metrics, after the unit of work that did
    it committed.  Every argument is a code free of personal data (tenant,
    purpose, channel, carrier, outcome): never a number, a name, a customer
    reference or a message id."""

    def notice_requested(self, tenant: str, purpose: str, outcome: str) -> None:
        """A new notice was decided: ``outcome`` routed, blocked or deferred."""
        ...

    def submitted(self, tenant: str, channel: str, carrier: str, outcome: str) -> None:
        """One attempt handed to the gateway: accepted, unconfirmed or rejected."""
        ...

    def gateway_error(self, error: str) -> None:
        """A whole submission call failed (``error``: a rule code or type name)."""
        ...

    def unconfirmed(self, count: int) -> None:
        """Interrupted submissions recorded as submitted-unconfirmed."""
        ...

    def progressed(self, channel: str, kind: str, seconds: float) -> None:
        """An attempt was delivered or read (``kind``), ``seconds`` after submission."""
        ...

    def fell_back(self, reason: str, carrier: str) -> None:
        """An attempt fell back to SMS (``reason``: a short code)."""
        ...

    def timer_fired(self, kind: str, lag_seconds: float) -> None:
        """A durable timer fired ``lag_seconds`` after it fell due."""
        ...


class NullObserver:
    """Reports nothing: the observer of an engine without metrics."""

    def notice_requested(self, tenant: str, purpose: str, outcome: str) -> None:
        pass

    def submitted(self, tenant: str, channel: str, carrier: str, outcome: str) -> None:
        pass

    def gateway_error(self, error: str) -> None:
        pass

    def unconfirmed(self, count: int) -> None:
        pass

    def progressed(self, channel: str, kind: str, seconds: float) -> None:
        pass

    def fell_back(self, reason: str, carrier: str) -> None:
        pass

    def timer_fired(self, kind: str, lag_seconds: float) -> None:
        pass
