"""The outbox: one row per message attempt waiting to be submitted.

A row is written in the same transaction as the event that routed (or
deferred) its message, so nothing is sent that was not committed and nothing
committed is forgotten.  Workers claim due rows (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL); ``submitting_at`` is set and committed just before the gateway
call, so a claim that went stale after that point is reconciled, never resent
blindly.  Priority 0 is urgent, 1 normal, 2 bulk.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Select, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from tsuchi.infrastructure.tables import message_view, outbox

URGENT, NORMAL, BULK = 0, 1, 2


class Claimed(NamedTuple):
    """A due row: its message, attempt, whether a submission had started, priority."""

    message_hex: str
    attempt: int
    submitting: bool
    priority: int


_ROW = (outbox.c.message_id == bindparam("mid"), outbox.c.attempt == bindparam("att"))
_INSERT = outbox.insert()
_DELETE = delete(outbox).where(*_ROW)
_DELETE_ALL = delete(outbox).where(outbox.c.message_id == bindparam("mid"))
_CLAIM = update(outbox).where(*_ROW).values(claimed_by=bindparam("by"), claimed_at=bindparam("at"))
_SUBMITTING = update(outbox).where(*_ROW).values(submitting_at=bindparam("at"))
_RELEASE = (
    update(outbox)
    .where(*_ROW)
    .values(claimed_by=None, claimed_at=None, submitting_at=None, due_at=bindparam("due"))
)
_RECLAIM = (
    update(outbox)
    .where(*_ROW)
    .values(claimed_by=bindparam("by"), claimed_at=bindparam("at"), submitting_at=None)
)


def _claim_query(max_priority: int | None, postgres: bool) -> Select[Any]:
    q = (
        select(outbox.c.message_id, outbox.c.attempt, outbox.c.submitting_at, outbox.c.priority)
        .where(
            (outbox.c.claimed_by.is_(None)) | (outbox.c.claimed_at < bindparam("stale_before")),
            outbox.c.due_at <= bindparam("now"),
        )
        .order_by(outbox.c.priority, outbox.c.due_at)
        .limit(bindparam("lim"))
    )
    if max_priority is not None:
        q = q.where(outbox.c.priority <= max_priority)
    if postgres:
        q = q.with_for_update(skip_locked=True)
    return q


_CLAIM_QUERIES = {(p, pg): _claim_query(p, pg) for p in (None, URGENT) for pg in (False, True)}
_URGENT_DUE = _claim_query(URGENT, False).with_only_columns(outbox.c.message_id).limit(1)


def row(
    message_hex: str, attempt: int, priority: int, due: datetime, claimed_by: str | None = None
) -> dict[str, Any]:
    """The row for one attempt (claimed at once when ``claimed_by`` is given)."""
    return {
        "message_id": message_hex,
        "attempt": attempt,
        "priority": priority,
        "due_at": due,
        "claimed_by": claimed_by,
        "claimed_at": due if claimed_by else None,
        "submitting_at": None,
    }


def insert(s: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        s.execute(_INSERT, rows)


def due_rows(
    s: Session, now: datetime, stale_before: datetime, limit: int, max_priority: int | None
) -> list[Claimed]:
    """Due rows not claimed, or claimed by a worker whose lease ran out, most
    urgent first (locked against other workers on PostgreSQL)."""
    q = _CLAIM_QUERIES[(max_priority, s.get_bind().dialect.name == "postgresql")]
    rows = s.execute(q, {"stale_before": stale_before, "now": now, "lim": limit}).all()
    return [Claimed(r[0], int(r[1]), r[2] is not None, int(r[3])) for r in rows]


def claim(s: Session, pairs: Sequence[tuple[str, int]], worker: str, now: datetime) -> None:
    if pairs:
        s.execute(_CLAIM, [{"mid": m, "att": a, "by": worker, "at": now} for m, a in pairs])


def reclaim_for_resubmission(
    s: Session, message_hex: str, attempt: int, worker: str, now: datetime
) -> None:
    """Take over an interrupted claim the gateway never received."""
    s.execute(_RECLAIM, {"mid": message_hex, "att": attempt, "by": worker, "at": now})


def mark_submitting(s: Session, pairs: Sequence[tuple[str, int]], now: datetime) -> None:
    if pairs:
        s.execute(_SUBMITTING, [{"mid": m, "att": a, "at": now} for m, a in pairs])


def release(s: Session, pairs: Sequence[tuple[str, int]], due: datetime) -> None:
    """Hand claimed rows back, due again at ``due``."""
    for m, a in pairs:
        s.execute(_RELEASE, {"mid": m, "att": a, "due": due})


def delete_rows(s: Session, pairs: Sequence[tuple[str, int]]) -> None:
    if pairs:
        s.execute(_DELETE, [{"mid": m, "att": a} for m, a in pairs])


def delete_message(s: Session, message_hex: str) -> None:
    """Every row of one message."""
    s.execute(_DELETE_ALL, {"mid": message_hex})


def submission_in_progress(s: Session, message_hex: str) -> bool:
    return (
        s.execute(
            select(outbox.c.message_id).where(
                outbox.c.message_id == message_hex, outbox.c.submitting_at.is_not(None)
            )
        ).first()
        is not None
    )


def pending_of_account(s: Session, account_hex: str) -> list[str]:
    """Messages of an account with rows not yet handed to the gateway."""
    return [
        r[0]
        for r in s.execute(
            select(outbox.c.message_id)
            .join(message_view, message_view.c.message_id == outbox.c.message_id)
            .where(message_view.c.account_id == account_hex, outbox.c.submitting_at.is_(None))
        )
    ]


def urgent_due(s: Session, now: datetime, stale_before: datetime) -> bool:
    return s.execute(_URGENT_DUE, {"stale_before": stale_before, "now": now}).first() is not None


def count(s: Session) -> int:
    return int(s.execute(select(func.count()).select_from(outbox)).scalar_one())


def backlog(s: Session, now: datetime) -> tuple[dict[int, int], datetime | None]:
    """Rows waiting, by priority, and the due time of the oldest row that is
    due now (None when none is): read at a metrics scrape."""
    depth = {
        int(p): int(n)
        for p, n in s.execute(select(outbox.c.priority, func.count()).group_by(outbox.c.priority))
    }
    oldest = s.execute(select(func.min(outbox.c.due_at)).where(outbox.c.due_at <= now)).scalar()
    return depth, oldest
