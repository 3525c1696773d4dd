"""The delivery report's tables, its projection, and the queries the CLI and hosts use.

Why this module exists: :mod:`tsuchi.projections.delivery_report` knows how to
fold Message events into per-message facts and roll them up, but not where
they live.  This module keeps them in the database (its own
:class:`~sqlalchemy.MetaData`, created on first use), applies new events
through :class:`~tsuchi.infrastructure.projection_runner.ProjectionRunner`
(view rows and position in one transaction: exactly once), and answers the
report, a message's status log and look-ups by correlation id or account.

Tables (names carry a version: a change of their schema takes new names and
a rebuild, never a migration of derived data):

``tsuchi_report_message_facts_v1``
    One row per message: ids, template, purpose, urgency, status, routing,
    reasons, the report's times and latencies.  No personal data; sealed
    fields of the events are never opened.
``tsuchi_report_message_log_v1``
    One row per timeline line (``message_id``, event ``version``, ``line``):
    time, status, attempt, detail.  Reply contents are not kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from tsuchi.errors import InvalidInput
from tsuchi.infrastructure.projection_runner import (
    Follower,
    ProjectionRunner,
    StoredNotification,
)
from tsuchi.infrastructure.store import AggregateStore
from tsuchi.projections.delivery_report import (
    REPORT_KEYS,
    AttemptFacts,
    MessageFacts,
    aggregate,
    event_type,
    fold,
    timeline_entries,
)

report_metadata = MetaData()

facts = Table(
    "tsuchi_report_message_facts_v1",
    report_metadata,
    Column("message_id", String(32), primary_key=True),
    Column("day", Date, nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("sender_id", String(32), nullable=False),
    Column("account_id", String(32), nullable=False, index=True),
    Column("template", String(64), nullable=False),
    Column("template_version", Integer, nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("urgency", String(16), nullable=False),
    Column("correlation_id", String(128), nullable=False, index=True),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("attempts", Text, nullable=False),  # JSON: {"1": {channel, carrier, submitted_at}}
    Column("channel", String(16), nullable=False),  # as the report files it; "-" if not routed
    Column("carrier", String(16), nullable=False),
    Column("fallback", Boolean, nullable=False),
    Column("fallback_reason", Text, nullable=True),
    Column("block_reason", Text, nullable=True),
    Column("defer_reason", Text, nullable=True),
    Column("deferrals", Integer, nullable=False),
    Column("cancel_reason", Text, nullable=True),
    Column("fail_code", Text, nullable=True),
    Column("first_submitted_at", DateTime(timezone=True), nullable=True),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("delivered_attempt", Integer, nullable=True),
    Column("delivery_ms", BigInteger, nullable=True),
    Column("read_at", DateTime(timezone=True), nullable=True),
    Column("read_ms", BigInteger, nullable=True),
    Column("replies", Integer, nullable=False),
    Index("tsuchi_report_facts_day", "day", "tenant", "sender_id"),
)

message_log = Table(
    "tsuchi_report_message_log_v1",
    report_metadata,
    Column("message_id", String(32), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("line", Integer, primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("status", String(32), nullable=False),
    Column("attempt", Integer, nullable=True),
    Column("detail", Text, nullable=False),
)


# -- rows <-> facts ----------------------------------------------------------------------------


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    v = _utc(value)
    return None if v is None else v.isoformat()


def _attempts_json(attempts: dict[int, AttemptFacts]) -> str:
    return json.dumps(
        {
            str(n): {
                "channel": a.channel,
                "carrier": a.carrier,
                "submitted_at": _iso(a.submitted_at),
            }
            for n, a in sorted(attempts.items())
        },
        sort_keys=True,
    )


def _attempts_of(text: str) -> dict[int, AttemptFacts]:
    out: dict[int, AttemptFacts] = {}
    for n, a in json.loads(text).items():
        at = a.get("submitted_at")
        out[int(n)] = AttemptFacts(
            channel=a["channel"],
            carrier=a["carrier"],
            submitted_at=None if at is None else datetime.fromisoformat(at),
        )
    return out


def facts_row(f: MessageFacts) -> dict[str, Any]:
    return {
        "message_id": f.message_id,
        "day": f.day,
        "tenant": f.tenant,
        "sender_id": f.sender_id,
        "account_id": f.account_id,
        "template": f.template,
        "template_version": f.template_version,
        "purpose": f.purpose,
        "urgency": f.urgency,
        "correlation_id": f.correlation_id,
        "requested_at": _utc(f.requested_at),
        "status": f.status,
        "version": f.version,
        "attempt": f.attempt,
        "attempts": _attempts_json(f.attempts),
        "channel": f.channel,
        "carrier": f.carrier,
        "fallback": f.fallback,
        "fallback_reason": f.fallback_reason,
        "block_reason": f.block_reason,
        "defer_reason": f.defer_reason,
        "deferrals": f.deferrals,
        "cancel_reason": f.cancel_reason,
        "fail_code": f.fail_code,
        "first_submitted_at": _utc(f.first_submitted_at),
        "delivered_at": _utc(f.delivered_at),
        "delivered_attempt": f.delivered_attempt,
        "delivery_ms": f.delivery_ms,
        "read_at": _utc(f.read_at),
        "read_ms": f.read_ms,
        "replies": f.replies,
    }


def facts_of_row(row: Any) -> MessageFacts:
    requested_at = _utc(row.requested_at)
    assert requested_at is not None
    day = row.day if isinstance(row.day, date) else date.fromisoformat(str(row.day))
    return MessageFacts(
        message_id=row.message_id,
        day=day,
        tenant=row.tenant,
        sender_id=row.sender_id,
        account_id=row.account_id,
        template=row.template,
        template_version=int(row.template_version),
        purpose=row.purpose,
        urgency=row.urgency,
        correlation_id=row.correlation_id,
        requested_at=requested_at,
        status=row.status,
        version=int(row.version),
        attempt=int(row.attempt),
        attempts=_attempts_of(row.attempts),
        fallback=bool(row.fallback),
        fallback_reason=row.fallback_reason,
        block_reason=row.block_reason,
        defer_reason=row.defer_reason,
        deferrals=int(row.deferrals),
        cancel_reason=row.cancel_reason,
        fail_code=row.fail_code,
        first_submitted_at=_utc(row.first_submitted_at),
        delivered_at=_utc(row.delivered_at),
        delivered_attempt=row.delivered_attempt,
        delivery_ms=None if row.delivery_ms is None else int(row.delivery_ms),
        read_at=_utc(row.read_at),
        read_ms=None if row.read_ms is None else int(row.read_ms),
        replies=int(row.replies),
    )


def _summary(f: MessageFacts) -> dict[str, Any]:
    return {
        "message_id": str(UUID(hex=f.message_id)),
        "requested_at": _iso(f.requested_at),
        "day": f.day.isoformat(),
        "tenant": f.tenant,
        "sender_id": f.sender_id,
        "account_id": f.account_id,
        "template": f.template,
        "template_version": f.template_version,
        "purpose": f.purpose,
        "urgency": f.urgency,
        "correlation_id": f.correlation_id,
        "status": f.status,
        "channel": f.channel,
        "carrier": f.carrier,
        "channels": list(f.channels),
        "fallback": f.fallback,
        "reason": f.block_reason or f.cancel_reason or f.fallback_reason or f.defer_reason,
        "delivered_at": _iso(f.delivered_at),
        "read_at": _iso(f.read_at),
    }


def _hex(value: UUID | str, field: str) -> str:
    try:
        return value.hex if isinstance(value, UUID) else UUID(str(value)).hex
    except ValueError:
        raise InvalidInput(field, "must be a UUID") from None


# -- the projection and its queries ------------------------------------------------------------


class DeliveryReport:
    """The delivery report read model over one event store.

    It is a :class:`~tsuchi.infrastructure.projection_runner.Projection`
    (``name``, ``metadata``, ``apply``, ``clear``) and the query API:
    :meth:`catch_up`, :meth:`rebuild`, :meth:`rows`, :meth:`message_log`,
    :meth:`messages_by_correlation`, :meth:`messages_by_account`.  Queries read
    the view as it stands: call :meth:`catch_up` first (or run a
    :meth:`follower`) for an up-to-date report.
    """

    name = "delivery_report"
    metadata = report_metadata

    def __init__(self, store: AggregateStore, runner: ProjectionRunner | None = None) -> None:
        self.store = store
        self.runner = runner or ProjectionRunner(store)

    # -- Projection ------------------------------------------------------------------------
    def apply(self, s: Session, notifications: Sequence[StoredNotification]) -> None:
        notes = [n for n in notifications if event_type(n.topic) is not None]
        if not notes:
            return
        ids = sorted({n.originator_id.hex for n in notes})
        stored = {
            r.message_id: facts_of_row(r)
            for r in s.execute(select(facts).where(facts.c.message_id.in_(ids)))
        }
        current: dict[str, MessageFacts] = dict(stored)
        lines: list[dict[str, Any]] = []
        for n in notes:
            mid = n.originator_id.hex
            before = current.get(mid)
            after = fold(before, n.topic, n.state, n.originator_id, n.originator_version)
            if after is None or after is before:
                continue  # not started here, or already folded in
            current[mid] = after
            for i, e in enumerate(timeline_entries(n.topic, n.state)):
                lines.append(
                    {
                        "message_id": mid,
                        "version": n.originator_version,
                        "line": i,
                        "at": _utc(e.at),
                        "status": e.status,
                        "attempt": e.attempt,
                        "detail": e.detail,
                    }
                )
        new = [facts_row(f) for mid, f in sorted(current.items()) if mid not in stored]
        changed = [
            {f"b_{k}": v for k, v in facts_row(f).items()}
            for mid, f in sorted(current.items())
            if mid in stored and stored[mid] is not f
        ]
        if new:
            s.execute(insert(facts), new)
        if changed:
            cols = [c.name for c in facts.columns if c.name != "message_id"]
            s.execute(
                update(facts)
                .where(facts.c.message_id == bindparam("b_message_id"))
                .values({c: bindparam(f"b_{c}") for c in cols}),
                changed,
            )
        if lines:
            s.execute(insert(message_log), lines)

    def clear(self, s: Session) -> None:
        s.execute(delete(message_log))
        s.execute(delete(facts))

    # -- running -----------------------------------------------------------------------------
    def catch_up(self, batch: int = 1000, max_events: int | None = None) -> int:
        """Apply new events (about ``max_events`` at most); returns how many."""
        return self.runner.catch_up(self, batch, max_events)

    def rebuild(self, batch: int = 1000) -> int:
        """Drop the view and its position and replay the whole log."""
        return self.runner.rebuild(self, batch)

    def status(self) -> dict[str, Any]:
        """``name``, ``position``, ``head`` (of the event log) and ``lag``."""
        return self.runner.status(self)

    def follower(self, poll_interval: float = 5.0, batch: int = 1000) -> Follower:
        """A loop that keeps this report current (see :class:`Follower`)."""
        return self.runner.follower([self], poll_interval=poll_interval, batch=batch)

    # -- queries -----------------------------------------------------------------------------
    def _facts(self, s: Session, stmt: Any) -> Iterator[MessageFacts]:
        for row in s.execute(stmt):
            yield facts_of_row(row)

    def rows(
        self,
        since: date | None = None,
        until: date | None = None,
        by: Sequence[str] = REPORT_KEYS,
    ) -> list[dict[str, Any]]:
        """Report rows for requests made from ``since`` to ``until`` (Japanese
        calendar days, both inclusive, both optional), grouped ``by`` (default:
        day, tenant, sender, template, purpose, channel, carrier), sorted.
        ``by=("channel",)`` gives exact per-channel totals and latencies."""
        if since is not None and until is not None and since > until:
            raise InvalidInput("since", "must not be after until")
        self.runner.ensure(self)
        q = select(facts)
        if since is not None:
            q = q.where(facts.c.day >= since)
        if until is not None:
            q = q.where(facts.c.day <= until)
        with self.store.session(commit=False) as s:
            try:
                stmt = q.order_by(facts.c.message_id).execution_options(yield_per=2000)
                return aggregate(self._facts(s, stmt), by)
            except KeyError as e:
                raise InvalidInput("by", f"unknown grouping key {e.args[0]!r}") from None

    def message_log(self, message_id: UUID | str) -> list[dict[str, Any]]:
        """A message's status timeline: ``at`` (ISO-8601 UTC), ``status``,
        ``attempt``, ``detail``; empty if the report has not seen it."""
        mid = _hex(message_id, "message_id")
        self.runner.ensure(self)
        with self.store.session(commit=False) as s:
            rows = s.execute(
                select(message_log)
                .where(message_log.c.message_id == mid)
                .order_by(message_log.c.version, message_log.c.line)
            ).all()
        return [
            {
                "at": _iso(r.at),
                "status": r.status,
                "attempt": r.attempt,
                "detail": r.detail,
            }
            for r in rows
        ]

    def _lookup(self, where: Any) -> list[dict[str, Any]]:
        self.runner.ensure(self)
        q = select(facts).where(where).order_by(facts.c.requested_at, facts.c.message_id)
        with self.store.session(commit=False) as s:
            return [_summary(f) for f in self._facts(s, q)]

    def messages_by_correlation(self, correlation_id: str) -> list[dict[str, Any]]:
        """Messages carrying the host's ``correlation_id``, oldest first."""
        if not isinstance(correlation_id, str) or not correlation_id:
            raise InvalidInput("correlation_id", "must be a non-empty string")
        return self._lookup(facts.c.correlation_id == correlation_id)

    def messages_by_account(self, account_id: UUID | str) -> list[dict[str, Any]]:
        """Messages to one account, oldest first."""
        return self._lookup(facts.c.account_id == _hex(account_id, "account_id"))
