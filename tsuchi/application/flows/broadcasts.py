"""Broadcasts: one notice to many accounts (safety checks, campaigns).

Starting a broadcast stores its recipients and schedules an expansion timer;
each fired expansion creates the messages of one chunk at bulk priority (so
urgent notices go first) and schedules the next chunk as a new timer, so a
crash loses nothing and creates nothing twice (message ids are derived from
the broadcast and the account).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from tsuchi.application import validation as v
from tsuchi.application.context import Context
from tsuchi.application.notices import Notices
from tsuchi.application.senders import Senders
from tsuchi.application.templates import Templates
from tsuchi.application.unit_of_work import UnitOfWork
from tsuchi.domain.broadcast import Broadcast, broadcast_id
from tsuchi.domain.consent import consent_id
from tsuchi.domain.message import Message, message_id
from tsuchi.domain.values import Purpose
from tsuchi.errors import InvalidInput, RuleViolation, UnknownAccount, UnknownBroadcast
from tsuchi.infrastructure.sql import Session
from tsuchi.infrastructure.sql import broadcast_recipients as recipients_table
from tsuchi.infrastructure.sql import message_view as message_view_table
from tsuchi.infrastructure.sql.timers import NewTimer, Timer
from tsuchi.policies.replies import classify_safety_reply

EXPAND = "broadcast_expand"
CORRELATION_PREFIX = "broadcast:"
EXPAND_CHUNK = 50  # short units: urgent work is never held up long behind one
EXPAND_MIN = 10  # a chunk gives way to a waiting writer after this many recipients


class Broadcasts:
    def __init__(
        self,
        ctx: Context,
        uow: UnitOfWork,
        notices: Notices,
        senders: Senders,
        templates: Templates,
    ) -> None:
        self.ctx = ctx
        self.uow = uow
        self.notices = notices
        self.senders = senders
        self.templates = templates

    def start(
        self,
        sender_id: UUID,
        name: str,
        template: str,
        account_ids: Sequence[UUID],
        variables: dict[str, str] | None = None,
        urgency: str = "normal",
        requested_by: str = "host",
    ) -> UUID:
        sender_id = v.uuid(sender_id, "sender_id")
        if isinstance(account_ids, (str, bytes)) or not isinstance(account_ids, Sequence):
            raise InvalidInput("account_ids", "must be a sequence of account ids")
        account_ids = [v.uuid(a, f"account_ids[{i}]") for i, a in enumerate(account_ids)]
        variables = v.mapping(variables, "variables")
        if not account_ids:
            raise InvalidInput("account_ids", "a broadcast needs at least one recipient")
        if len(set(account_ids)) != len(account_ids):
            raise InvalidInput("account_ids", "each account at most once")
        bid = broadcast_id(sender_id, name)

        def run(s: Session) -> UUID:
            if self.uow.exists(bid):
                return bid
            self.senders.get(sender_id).check_active()
            tpl = self.templates.get(sender_id, template)
            tpl.check_variables(tpl.latest_approved(), dict(variables or {}))
            b = Broadcast(
                sender_id=sender_id,
                name=name,
                template=template,
                variables=dict(variables or {}),
                urgency=urgency,
                recipients=len(account_ids),
                requested_by=requested_by,
                at=self.ctx.now(),
            )
            self.uow.save(b)
            recipients_table.add(s, bid.hex, account_ids)
            self.uow.schedule(
                s,
                [NewTimer(f"expand:{bid.hex}", EXPAND, self.ctx.now(), {"broadcast_id": bid.hex})],
            )
            return bid

        return self.uow.run(run)

    def fire_expand(self, s: Session, t: Timer) -> None:
        bid = UUID(hex=t.payload["broadcast_id"])
        b = self.uow.find(Broadcast, bid)
        if b is None or b.expanded:
            return
        rows = recipients_table.next_without_message(s, bid.hex, EXPAND_CHUNK)
        # One query for the chunk's accounts, their consents to the purpose
        # and (after a crash) its messages.
        tpl = self.templates.find(b.sender_id, b.template)
        purpose = tpl.purpose if tpl is not None else Purpose.SECURITY
        accounts = [UUID(hex=r[0]) for r in rows]
        self.uow.prefetch(
            accounts
            + [message_id(b.sender_id, f"broadcast:{bid.hex}:{r[0]}") for r in rows]
            + (
                []
                if purpose is Purpose.SECURITY
                else [consent_id(a, b.sender_id, purpose) for a in accounts]
            )
        )
        done: list[dict[str, str]] = []
        last_seq = None
        for account_hex, seq in rows:
            if len(done) >= EXPAND_MIN and self.ctx.store.writers_waiting():
                break  # another writer (an urgent alert?) waits: commit what is done
            last_seq = seq
            try:
                view = self.notices.request(
                    b.sender_id,
                    UUID(hex=account_hex),
                    b.template,
                    dict(b.variables),
                    idempotency_key=f"broadcast:{bid.hex}:{account_hex}",
                    urgency=b.urgency,
                    correlation_id=f"{CORRELATION_PREFIX}{bid.hex}",
                    requested_by=b.requested_by,
                    bulk=True,
                )
                mid = view.id.hex
            except (UnknownAccount, RuleViolation) as err:
                mid = f"skipped:{type(err).__name__}"[:32]
            done.append({"bid": bid.hex, "aid": account_hex, "mid": mid})
        recipients_table.record_messages(s, done)
        if len(rows) < EXPAND_CHUNK and len(done) == len(rows):
            b.mark_expanded(b.recipients, self.ctx.now())
            self.uow.save(b)
        else:  # more to do: the next chunk is a new timer, so a crash loses nothing
            self.uow.schedule(
                s,
                [
                    NewTimer(
                        f"expand:{bid.hex}:{last_seq}",
                        EXPAND,
                        self.ctx.now(),
                        {"broadcast_id": bid.hex},
                    )
                ],
            )

    def on_reply(self, s: Session, m: Message, text: str, postback: str) -> None:
        """A safety-check answer, kept per recipient."""
        recipients_table.record_reply(s, m.id.hex, classify_safety_reply(text, postback))

    def report(self, bid: UUID) -> dict[str, Any]:
        """Progress and outcome: messages by status, replies by answer."""
        with self.uow.read() as s:
            b = self.uow.find(Broadcast, bid)
            if b is None:
                raise UnknownBroadcast(str(bid))
            created = recipients_table.messages_created(s, bid.hex)
            statuses = message_view_table.status_counts(s, f"{CORRELATION_PREFIX}{bid.hex}")
            replies = recipients_table.reply_counts(s, bid.hex)
        return {
            "broadcast_id": str(bid),
            "name": b.name,
            "recipients": b.recipients,
            "messages_created": created,
            "expanded": b.expanded,
            "by_status": statuses,
            "replies": replies,
        }
