"""A broadcast's recipients: one row per account, with its message and reply.

Expansion reads the next chunk of recipients without a message, records the
messages it created, and safety-check replies are kept per recipient, so the
broadcast report is a few counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from tsuchi.infrastructure.tables import broadcast_recipients as t

_DONE = (
    update(t)
    .where(t.c.broadcast_id == bindparam("bid"), t.c.account_id == bindparam("aid"))
    .values(message_id=bindparam("mid"))
)


def add(s: Session, broadcast_hex: str, account_ids: Sequence[UUID]) -> None:
    rows = [
        {"broadcast_id": broadcast_hex, "account_id": a.hex, "seq": i}
        for i, a in enumerate(account_ids)
    ]
    for start in range(0, len(rows), 5000):
        s.execute(insert(t), rows[start : start + 5000])


def next_without_message(s: Session, broadcast_hex: str, limit: int) -> list[tuple[str, int]]:
    """(account hex, seq) of the next recipients whose message is not created."""
    return [
        (r[0], int(r[1]))
        for r in s.execute(
            select(t.c.account_id, t.c.seq)
            .where(t.c.broadcast_id == broadcast_hex, t.c.message_id.is_(None))
            .order_by(t.c.seq)
            .limit(limit)
        )
    ]


def record_messages(s: Session, done: list[dict[str, str]]) -> None:
    """``done``: dicts of bid, aid, mid (a message id or a skip marker)."""
    if done:
        s.execute(_DONE, done)


def record_reply(s: Session, message_hex: str, answer: str) -> None:
    s.execute(update(t).where(t.c.message_id == message_hex).values(reply=answer))


def messages_created(s: Session, broadcast_hex: str) -> int:
    return int(
        s.execute(
            select(func.count())
            .select_from(t)
            .where(t.c.broadcast_id == broadcast_hex, t.c.message_id.is_not(None))
        ).scalar_one()
    )


def reply_counts(s: Session, broadcast_hex: str) -> dict[str, int]:
    return {
        str(k): int(v)
        for k, v in s.execute(
            select(t.c.reply, func.count())
            .where(t.c.broadcast_id == broadcast_hex, t.c.reply.is_not(None))
            .group_by(t.c.reply)
        )
    }
