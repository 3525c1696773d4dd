"""Durable timers: one row per future action, indexed by due time.

Deadline reminders, delivery TTLs, read windows for urgent notices and
fraud-alert escalations are rows here, fired by a sweep that claims due rows
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several workers share the work)
instead of one scheduler job each: this scales to millions.  Timer ids are
deterministic, so scheduling twice is harmless, and the actions a timer fires
use deterministic message ids, so firing twice can never send twice.  A timer
that fell due while nothing was running fires on the next sweep and is marked
late; it is never dropped.  Payloads hold ids only, never personal data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from tsuchi.infrastructure.tables import timers

LATE_AFTER = timedelta(minutes=5)


class NewTimer(NamedTuple):
    """A timer to schedule: deterministic id, kind, due time, payload of ids."""

    id: str
    kind: str
    due_at: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class Timer:
    id: str
    kind: str
    due_at: datetime
    payload: dict[str, Any]
    late: bool = False


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


_SCHEDULE = {  # built once: statement construction costs more than the insert
    pg: (pg_insert if pg else sqlite_insert)(timers).on_conflict_do_nothing(index_elements=["id"])
    for pg in (False, True)
}


def schedule(session: Session, items: Iterable[NewTimer]) -> None:
    """Insert timers (id, kind, due_at, payload); existing ids are left as they are."""
    rows = [
        {"id": i, "kind": k, "due_at": d, "payload": json.dumps(p, sort_keys=True)}
        for i, k, d, p in items
    ]
    if not rows:
        return
    stmt = _SCHEDULE[session.get_bind().dialect.name == "postgresql"]
    for start in range(0, len(rows), 5000):
        session.execute(stmt, rows[start : start + 5000])


def cancel(session: Session, ids: Sequence[str]) -> int:
    """Cancel pending timers; fired ones stay as a record."""
    if not ids:
        return 0
    n = 0
    for start in range(0, len(ids), 1000):
        result = session.execute(
            delete(timers).where(
                timers.c.id.in_(ids[start : start + 1000]), timers.c.fired_at.is_(None)
            )
        )
        n += int(getattr(result, "rowcount", 0) or 0)
    return n


def claim_due(
    session: Session, now: datetime, worker: str, limit: int, lease: timedelta
) -> list[Timer]:
    """Claim due, unfired timers (and ones whose claim's lease ran out)."""
    q = (
        select(timers.c.id, timers.c.kind, timers.c.due_at, timers.c.payload)
        .where(
            timers.c.fired_at.is_(None),
            timers.c.due_at <= now,
            (timers.c.claimed_by.is_(None)) | (timers.c.claimed_at < now - lease),
        )
        .order_by(timers.c.due_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    rows = session.execute(q).all()
    if rows:
        session.execute(
            update(timers)
            .where(timers.c.id.in_([r[0] for r in rows]))
            .values(claimed_by=worker, claimed_at=now)
        )
    return [
        Timer(r[0], r[1], _aware(r[2]), json.loads(r[3]), now - _aware(r[2]) > LATE_AFTER)
        for r in rows
    ]


def mark_fired(session: Session, timer: Timer, now: datetime) -> None:
    session.execute(
        update(timers).where(timers.c.id == timer.id).values(fired_at=now, late=timer.late)
    )


def pending(session: Session, prefix: str) -> list[str]:
    return [
        r[0]
        for r in session.execute(
            select(timers.c.id).where(timers.c.id.startswith(prefix), timers.c.fired_at.is_(None))
        )
    ]


def oldest_due(session: Session, now: datetime) -> datetime | None:
    """The due time of the oldest unfired timer that is due (None when none
    is): how far the sweeps lag, read at a metrics scrape."""
    oldest = session.execute(
        select(func.min(timers.c.due_at)).where(timers.c.fired_at.is_(None), timers.c.due_at <= now)
    ).scalar()
    return None if oldest is None else _aware(oldest)
