"""The message view table: one row per message, written with its events.

Rows come from :func:`tsuchi.projections.message_view.message_row`; this module
writes them (one batch per unit of work) and answers the look-ups the
services make: messages of an account or correlation id, marketing sends
inside the frequency-cap window, counts by status for broadcasts, and the
delivery summary.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, bindparam, case, func, select, update
from sqlalchemy.orm import Session

from tsuchi.infrastructure.tables import message_view

_INSERT = message_view.insert()
_UPDATE = (
    update(message_view)
    .where(message_view.c.message_id == bindparam("mid"))
    .values({c.name: bindparam(c.name) for c in message_view.c if c.name != "message_id"})
)


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def upsert(s: Session, message_hex: str, row: dict[str, Any], new: bool = False) -> None:
    """Write one message's row (``new``: insert without looking)."""
    if new:
        s.execute(_INSERT, {"message_id": message_hex, **row})
        return
    result = s.execute(_UPDATE, {"mid": message_hex, **row})
    if not cast("CursorResult[Any]", result).rowcount:
        s.execute(_INSERT, {"message_id": message_hex, **row})


def write_batch(
    s: Session, new: list[tuple[str, dict[str, Any]]], changed: list[tuple[str, dict[str, Any]]]
) -> None:
    """Insert the rows of new messages and update those of changed ones, one
    statement each (rows found missing are then upserted one by one)."""
    if new:
        s.execute(_INSERT, [{"message_id": mid, **row} for mid, row in new])
    if not changed:
        return
    result = s.execute(_UPDATE, [{"mid": mid, **row} for mid, row in changed])
    if cast("CursorResult[Any]", result).rowcount != len(changed):
        for mid, row in changed:
            upsert(s, mid, row)


def marketing_sends_since(
    s: Session, account_hex: str, sender_hex: str, purpose: str, since: datetime
) -> list[datetime]:
    """When this sender's notices of ``purpose`` were routed to the account
    after ``since`` (the frequency cap's window)."""
    return [
        _aware(r[0])
        for r in s.execute(
            select(message_view.c.routed_at).where(
                message_view.c.account_id == account_hex,
                message_view.c.sender_id == sender_hex,
                message_view.c.purpose == purpose,
                message_view.c.routed_at.is_not(None),
                message_view.c.routed_at > since,
            )
        )
    ]


def message_ids(
    s: Session, account_hex: str | None = None, correlation_id: str | None = None
) -> list[str]:
    """Messages in request order, of an account and/or a correlation id."""
    q = select(message_view.c.message_id).order_by(message_view.c.requested_at)
    if account_hex is not None:
        q = q.where(message_view.c.account_id == account_hex)
    if correlation_id is not None:
        q = q.where(message_view.c.correlation_id == correlation_id)
    return [r[0] for r in s.execute(q)]


def status_counts(s: Session, correlation_id: str) -> dict[str, int]:
    return {
        str(k): int(v)
        for k, v in s.execute(
            select(message_view.c.status, func.count())
            .where(message_view.c.correlation_id == correlation_id)
            .group_by(message_view.c.status)
        )
    }


def latest_request_time(s: Session) -> datetime | None:
    t = s.execute(select(func.max(message_view.c.requested_at))).scalar_one()
    return None if t is None else _aware(t)


def summary(s: Session) -> list[dict[str, Any]]:
    """Counts by tenant, purpose, channel, status and (for blocked, deferred
    and cancelled messages) reason, with how many fell back."""
    reason = case(
        (
            message_view.c.status.in_(["blocked", "deferred", "cancelled"]),
            func.coalesce(message_view.c.reason, ""),
        ),
        else_="",
    ).label("reason")
    cols = (
        message_view.c.tenant,
        message_view.c.purpose,
        message_view.c.channel,
        message_view.c.status,
        reason,
    )
    fallback = func.sum(case((message_view.c.fallback, 1), else_=0))
    rows = s.execute(select(*cols, func.count(), fallback).group_by(*cols).order_by(*cols)).all()
    return [
        {
            "tenant": t,
            "purpose": p,
            "channel": c or "-",
            "status": st,
            "reason": r,
            "count": n,
            "fallback": int(fb or 0),
        }
        for t, p, c, st, r, n, fb in rows
    ]


_NOT_SENT = ("requested", "blocked", "deferred", "cancelled", "routed")


def latest_sent_to(
    s: Session, account_hexes: list[str], until: datetime
) -> tuple[str, str, datetime] | None:
    """The latest message routed to any of these accounts at or before
    ``until`` and handed to the gateway (not held back, not still waiting
    to be submitted): (message hex, account hex, routed at)."""
    if not account_hexes:
        return None
    row = s.execute(
        select(message_view.c.message_id, message_view.c.account_id, message_view.c.routed_at)
        .where(
            message_view.c.account_id.in_(account_hexes),
            message_view.c.routed_at.is_not(None),
            message_view.c.routed_at <= until,
            message_view.c.status.not_in(_NOT_SENT),
        )
        .order_by(
            message_view.c.routed_at.desc(),
            message_view.c.requested_at.desc(),
            message_view.c.message_id.desc(),
        )
        .limit(1)
    ).first()
    return None if row is None else (str(row[0]), str(row[1]), _aware(row[2]))
