"""The delivery report: per-message facts folded from Message events, and their roll-up.

Why this module exists: operations and compliance want to know, per day, sender,
template, purpose, channel and carrier, how many notices were requested, held
back (blocked or deferred, and why), submitted, delivered, read or lost, how
often +Message fell back to SMS, and how long delivery and reading took.  The
event log holds all of it; this module is the pure part of the read model that
answers: a *fold* of one message's events into :class:`MessageFacts`, the
status *timeline* entries each event adds, and :func:`aggregate`, which rolls
facts up into report rows.  No database, no clock, no decryption: the
infrastructure side (:mod:`tsuchi.infrastructure.delivery_report`) feeds it
stored events decoded *without* opening sealed personal fields, and keeps the
facts in its own tables.

Definitions (each message counts once per row):

``day``
    The request's calendar date in Japan (Asia/Tokyo), whatever the
    recipient's own time zone: the business day the bank asked for the notice.
``channel`` / ``carrier``
    The channel and carrier of the attempt that was delivered first, else of
    the latest attempt; ``"-"`` when the message was never routed.
``requested``, ``blocked``, ``cancelled``, ``failed``, ``expired``
    Messages, by their current (final) status for the last four.
``deferred``
    Messages held at least once; ``deferred_by_reason`` counts each under the
    reason of its *first* deferral (so the reasons add up to ``deferred``).
``submitted``
    Messages handed to the gateway at least once.
``delivered`` / ``read``
    Messages with a delivery (read) report on any attempt, including a late
    report recorded after a fallback: the customer did receive (read) it.
``fallback``
    Messages that fell back from +Message to SMS.
``pending``
    Messages neither delivered nor closed yet (requested, deferred, routed,
    submitted or accepted).
Latencies
    From the submission of the attempt a report refers to, to the first
    delivery (read) report; p50/p95 by the nearest-rank method, in seconds
    (integer milliseconds underneath, so results are exact and repeatable).

Rows come out sorted by their keys: a rebuild from zero gives identical rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

REPORT_ZONE = ZoneInfo("Asia/Tokyo")
MESSAGE_TOPIC = "tsuchi.domain.message:Message"
NO_CHANNEL = "-"

REPORT_KEYS: tuple[str, ...] = (
    "day",
    "tenant",
    "sender_id",
    "template",
    "purpose",
    "channel",
    "carrier",
)
"""The keys report rows are grouped by (in this order, which is also the sort order)."""

COUNT_FIELDS: tuple[str, ...] = (
    "requested",
    "blocked",
    "deferred",
    "submitted",
    "delivered",
    "read",
    "failed",
    "expired",
    "cancelled",
    "fallback",
    "pending",
    "replied",
)
REASON_FIELDS: tuple[str, ...] = ("blocked_by_reason", "deferred_by_reason")
LATENCY_FIELDS: tuple[str, ...] = (
    "delivery_p50_s",
    "delivery_p95_s",
    "read_p50_s",
    "read_p95_s",
)
SAMPLE_FIELDS: tuple[str, ...] = ("delivery_samples", "read_samples")

OPEN_STATUSES = frozenset({"requested", "deferred", "routed", "submitted", "accepted"})


# -- small conversions --------------------------------------------------------------------


def _hex_id(value: Any) -> str:
    """A UUID (object, canonical string, hex or 16 raw bytes) as 32 hex digits."""
    if isinstance(value, UUID):
        return value.hex
    if isinstance(value, bytes | bytearray | memoryview) and len(bytes(value)) == 16:
        return UUID(bytes=bytes(value)).hex
    if isinstance(value, dict) and value.get("_type_") == "uuid_hex":
        value = value.get("_data_")
    return UUID(str(value)).hex


def _time(value: Any) -> datetime:
    """An aware UTC datetime from a datetime or an ISO-8601 string (naive = UTC)."""
    if isinstance(value, dict) and value.get("_type_") == "datetime_iso":
        value = value.get("_data_")
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise ValueError(f"not a time: {type(value).__name__}")
    moment: datetime = value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _ms(start: datetime, end: datetime) -> int:
    delta = end - start
    return max(0, (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def report_day(moment: datetime) -> date:
    """The Japanese calendar date of ``moment``."""
    return _time(moment).astimezone(REPORT_ZONE).date()


def event_type(topic: str) -> str | None:
    """``Requested`` for ``tsuchi.domain.message:Message.Requested``; None for
    events of other aggregates."""
    prefix = MESSAGE_TOPIC + "."
    return topic[len(prefix) :] if topic.startswith(prefix) else None


# -- per-message facts -------------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptFacts:
    channel: str
    carrier: str
    submitted_at: datetime | None = None


@dataclass(frozen=True)
class MessageFacts:
    """What the report needs to know about one message (no personal data)."""

    message_id: str  # 32 hex digits
    day: date
    tenant: str
    sender_id: str
    account_id: str
    template: str
    template_version: int
    purpose: str
    urgency: str
    correlation_id: str
    requested_at: datetime
    status: str = "requested"
    version: int = 1  # the last event version folded in
    attempt: int = 0  # the current attempt; 0 before routing
    attempts: dict[int, AttemptFacts] = field(default_factory=dict)
    fallback: bool = False
    fallback_reason: str | None = None
    block_reason: str | None = None
    defer_reason: str | None = None  # of the first deferral
    deferrals: int = 0
    cancel_reason: str | None = None
    fail_code: str | None = None
    first_submitted_at: datetime | None = None
    delivered_at: datetime | None = None
    delivered_attempt: int | None = None
    delivery_ms: int | None = None
    read_at: datetime | None = None
    read_ms: int | None = None
    replies: int = 0

    # -- derived ---------------------------------------------------------------------------
    @property
    def report_attempt(self) -> AttemptFacts | None:
        """The attempt the report files this message under: the one delivered
        first, else the latest one."""
        number = self.delivered_attempt or self.attempt
        return self.attempts.get(number)

    @property
    def channel(self) -> str:
        a = self.report_attempt
        return a.channel if a is not None else NO_CHANNEL

    @property
    def carrier(self) -> str:
        a = self.report_attempt
        return a.carrier if a is not None else NO_CHANNEL

    @property
    def channels(self) -> tuple[str, ...]:
        """Channels in attempt order, e.g. ``("plus_message", "sms")``."""
        return tuple(self.attempts[n].channel for n in sorted(self.attempts))

    @property
    def submitted(self) -> bool:
        return self.first_submitted_at is not None

    @property
    def delivered(self) -> bool:
        return self.delivered_at is not None or self.read_at is not None

    @property
    def read(self) -> bool:
        return self.read_at is not None

    @property
    def pending(self) -> bool:
        return not self.delivered and self.status in OPEN_STATUSES

    def key(self, keys: Sequence[str] = REPORT_KEYS) -> tuple[str, ...]:
        values = {
            "day": self.day.isoformat(),
            "tenant": self.tenant,
            "sender_id": self.sender_id,
            "template": self.template,
            "purpose": self.purpose,
            "urgency": self.urgency,
            "channel": self.channel,
            "carrier": self.carrier,
            "status": self.status,
        }
        return tuple(values[k] for k in keys)


# -- the fold ----------------------------------------------------------------------------------


def _requested(message_id: str, state: Mapping[str, Any], version: int) -> MessageFacts:
    at = _time(state["at"])
    return MessageFacts(
        message_id=message_id,
        day=report_day(at),
        tenant=_text(state.get("tenant")),
        sender_id=_hex_id(state["sender_id"]),
        account_id=_hex_id(state["account_id"]),
        template=_text(state.get("template_name")),
        template_version=int(state.get("template_version") or 0),
        purpose=_text(state.get("purpose")),
        urgency=_text(state.get("urgency")),
        correlation_id=_text(state.get("correlation_id")),
        requested_at=at,
        version=version,
    )


def _report(f: MessageFacts, attempt: int, kind: str, at: datetime) -> MessageFacts:
    """A delivery or read report for ``attempt`` (applied or recorded late):
    keep the first of each, with its latency from that attempt's submission."""
    a = f.attempts.get(attempt)
    submitted_at = a.submitted_at if a is not None else None
    if kind == "delivered" and f.delivered_at is None:
        return replace(
            f,
            delivered_at=at,
            delivered_attempt=attempt,
            delivery_ms=_ms(submitted_at, at) if submitted_at else None,
        )
    if kind == "read" and f.read_at is None:
        f = replace(f, read_at=at, read_ms=_ms(submitted_at, at) if submitted_at else None)
        if f.delivered_attempt is None:
            # Read implies delivered; file it under this attempt, without a delivery time.
            f = replace(f, delivered_attempt=attempt)
    return f


def fold(
    facts: MessageFacts | None,
    topic: str,
    state: Mapping[str, Any],
    originator_id: Any,
    version: int | None = None,
) -> MessageFacts | None:
    """Apply one stored Message event to a message's facts; returns the new facts.

    ``state`` is the decoded event state (sealed personal fields may stay
    sealed: they are never read).  Events of other aggregates return
    ``facts`` unchanged; so does an event at or below the version already
    folded in (``version`` given), which makes the fold idempotent.  An event
    before the message's ``Requested`` (a view started mid-log) is ignored.
    """
    kind = event_type(topic)
    if kind is None:
        return facts
    if facts is not None and version is not None and version <= facts.version:
        return facts
    if kind == "Requested":
        return _requested(_hex_id(originator_id), state, version or 1)
    if facts is None:
        return None
    at = _time(state["at"])
    f = replace(facts, version=version if version is not None else facts.version + 1)
    attempt = int(state.get("attempt") or 0)
    if kind == "Blocked":
        return replace(f, status="blocked", block_reason=_text(state.get("reason")))
    if kind == "Deferred":
        return replace(
            f,
            status="deferred",
            deferrals=f.deferrals + 1,
            defer_reason=f.defer_reason or _text(state.get("reason")),
        )
    if kind == "Routed":
        attempts = {
            **f.attempts,
            attempt: AttemptFacts(_text(state.get("channel")), _text(state.get("carrier"))),
        }
        return replace(f, status="routed", attempt=attempt, attempts=attempts)
    if kind == "Submitted":
        current = f.attempts.get(attempt)
        attempts = dict(f.attempts)
        if current is not None:
            attempts[attempt] = replace(current, submitted_at=at)
        return replace(
            f,
            status="submitted",
            attempts=attempts,
            first_submitted_at=f.first_submitted_at or at,
        )
    if kind == "Progressed":
        status = _text(state.get("status"))
        if attempt == f.attempt:
            f = replace(f, status=status)
        return _report(f, attempt, status, at)
    if kind == "Failed":
        if attempt != f.attempt:
            return f
        return replace(f, status="failed", fail_code=_text(state.get("code")))
    if kind == "ReportRecorded":
        return _report(f, attempt, _text(state.get("kind")), at)
    if kind == "FellBack":
        attempts = {
            **f.attempts,
            attempt: AttemptFacts("sms", _text(state.get("carrier"))),
        }
        return replace(
            f,
            status="routed",
            attempt=attempt,
            attempts=attempts,
            fallback=True,
            fallback_reason=_text(state.get("reason")),
        )
    if kind == "ReplyReceived":
        return replace(f, replies=f.replies + 1)
    if kind == "Cancelled":
        return replace(f, status="cancelled", cancel_reason=_text(state.get("reason")))
    return f  # an event type this report does not know yet: nothing to count


# -- the status timeline -------------------------------------------------------------------------


@dataclass(frozen=True)
class LogEntry:
    """One line of a message's status timeline (as ``Message.timeline`` shows it,
    without reply contents)."""

    at: datetime
    status: str
    attempt: int | None
    detail: str


def timeline_entries(topic: str, state: Mapping[str, Any]) -> list[LogEntry]:
    """The timeline lines one stored Message event adds.  Replies show only
    whether a button was pressed: their text and postback stay out."""
    kind = event_type(topic)
    if kind is None:
        return []
    at = _time(state["at"])
    attempt = int(state["attempt"]) if state.get("attempt") is not None else None
    reason = _text(state.get("reason"))
    if kind == "Requested":
        return [LogEntry(at, "requested", None, "")]
    if kind == "Blocked":
        return [LogEntry(at, "blocked", None, reason)]
    if kind == "Deferred":
        return [LogEntry(at, "deferred", None, reason)]
    if kind == "Routed":
        detail = f"{_text(state.get('channel'))} via {_text(state.get('carrier'))}"
        return [LogEntry(at, "routed", attempt, detail)]
    if kind == "Submitted":
        return [LogEntry(at, "submitted", attempt, "")]
    if kind == "Progressed":
        return [LogEntry(at, _text(state.get("status")), attempt, "")]
    if kind == "Failed":
        code = _text(state.get("code"))
        permanent = " (permanent)" if state.get("permanent") else ""
        return [LogEntry(at, "failed", attempt, f"code {code}{permanent}")]
    if kind == "ReportRecorded":
        kind_text = _text(state.get("kind"))
        return [LogEntry(at, f"late {kind_text}", attempt, "recorded; status not regressed")]
    if kind == "FellBack":
        carrier = _text(state.get("carrier"))
        previous = attempt - 1 if attempt is not None else None
        return [
            LogEntry(at, "fallback", previous, reason),
            LogEntry(at, "routed", attempt, f"sms via {carrier}"),
        ]
    if kind == "ReplyReceived":
        postback = _text(state.get("postback"))
        return [LogEntry(at, "reply", None, "button" if postback else "text")]
    if kind == "Cancelled":
        return [LogEntry(at, "cancelled", None, reason)]
    return []


# -- aggregation -----------------------------------------------------------------------------------


def percentile(values: Sequence[int], p: float) -> int | None:
    """The nearest-rank ``p``-th percentile of ``values`` (None if empty)."""
    if not values:
        return None
    if not 0 < p <= 100:
        raise ValueError("p must be in (0, 100]")
    ordered = sorted(values)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


@dataclass
class _Group:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_FIELDS, 0))
    blocked: dict[str, int] = field(default_factory=dict)
    deferred: dict[str, int] = field(default_factory=dict)
    delivery: list[int] = field(default_factory=list)
    read: list[int] = field(default_factory=list)

    def add(self, f: MessageFacts) -> None:
        c = self.counts
        c["requested"] += 1
        if f.status == "blocked":
            c["blocked"] += 1
            reason = f.block_reason or ""
            self.blocked[reason] = self.blocked.get(reason, 0) + 1
        if f.deferrals:
            c["deferred"] += 1
            reason = f.defer_reason or ""
            self.deferred[reason] = self.deferred.get(reason, 0) + 1
        for flag, name in (
            (f.submitted, "submitted"),
            (f.delivered, "delivered"),
            (f.read, "read"),
            (f.status == "failed", "failed"),
            (f.status == "expired", "expired"),
            (f.status == "cancelled", "cancelled"),
            (f.fallback, "fallback"),
            (f.pending, "pending"),
            (f.replies > 0, "replied"),
        ):
            if flag:
                c[name] += 1
        if f.delivery_ms is not None:
            self.delivery.append(f.delivery_ms)
        if f.read_ms is not None:
            self.read.append(f.read_ms)

    def row(self, keys: Sequence[str], key: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = dict(zip(keys, key, strict=True))
        out.update(self.counts)
        out["blocked_by_reason"] = dict(sorted(self.blocked.items()))
        out["deferred_by_reason"] = dict(sorted(self.deferred.items()))
        out["delivery_p50_s"] = _seconds(percentile(self.delivery, 50))
        out["delivery_p95_s"] = _seconds(percentile(self.delivery, 95))
        out["read_p50_s"] = _seconds(percentile(self.read, 50))
        out["read_p95_s"] = _seconds(percentile(self.read, 95))
        out["delivery_samples"] = len(self.delivery)
        out["read_samples"] = len(self.read)
        return out


def aggregate(
    facts: Iterable[MessageFacts], keys: Sequence[str] = REPORT_KEYS
) -> list[dict[str, Any]]:
    """Report rows, one per distinct ``keys`` value, sorted by ``keys``.

    Each row: the key fields, then :data:`COUNT_FIELDS`, the two reason
    breakdowns (``{reason: count}``, sorted), the latency percentiles in
    seconds (None without samples) and the sample counts.  ``keys`` may be
    any subset of ``day, tenant, sender_id, template, purpose, urgency,
    channel, carrier, status`` (e.g. ``("channel",)`` for exact per-channel
    latencies).
    """
    groups: dict[tuple[str, ...], _Group] = {}
    for f in facts:
        k = f.key(keys)
        group = groups.get(k)
        if group is None:
            group = groups[k] = _Group()
        group.add(f)
    return [groups[k].row(keys, k) for k in sorted(groups)]


ROW_FIELDS: tuple[str, ...] = (
    *REPORT_KEYS,
    *COUNT_FIELDS,
    *REASON_FIELDS,
    *LATENCY_FIELDS,
    *SAMPLE_FIELDS,
)
"""Every field of a report row, in output order."""
