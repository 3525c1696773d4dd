"""Scheduled and multi-step notification flows: timers, deadlines, fraud alerts,
broadcasts, delivery fallbacks and opt-out replies.

Everything here runs through :class:`~tsuchi.engine.Engine`'s units of work and
the durable timers of :mod:`tsuchi.infrastructure.timers`; it holds no state
of its own, so any number of workers can run it against one database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from tsuchi.domain.broadcast import Broadcast, broadcast_id
from tsuchi.domain.consent import consent_id
from tsuchi.domain.deadline import Deadline, deadline_id
from tsuchi.domain.fraud import FraudCase, fraud_case_id
from tsuchi.domain.message import Message, message_id
from tsuchi.domain.values import Channel, MessageStatus, Purpose, Urgency
from tsuchi.errors import InvalidInput, RuleViolation, TsuchiError, UnknownAccount
from tsuchi.infrastructure import timers
from tsuchi.infrastructure.tables import broadcast_recipients, message_view
from tsuchi.policies.replies import classify_fraud_reply, classify_safety_reply, is_opt_out

if TYPE_CHECKING:
    from tsuchi.engine import Engine

log = logging.getLogger("tsuchi.flows")

EXPAND_CHUNK = 50  # short units: urgent work is never held up long behind one
EXPAND_MIN = 10  # a chunk gives way to a waiting writer after this many recipients


@dataclass(frozen=True)
class DeadlineSpec:
    """One deadline to register in bulk."""

    sender_id: UUID
    account_id: UUID
    kind: str
    reference: str
    due: date
    template: str
    variables: dict[str, str] = field(default_factory=dict)
    offsets_days: tuple[int, ...] = (60, 30, 7)


@dataclass
class SweepStats:
    timers_fired: int = 0
    late: int = 0
    submitted: int = 0
    reports: int = 0


_RECIPIENT_DONE = (
    update(broadcast_recipients)
    .where(
        broadcast_recipients.c.broadcast_id == bindparam("bid"),
        broadcast_recipients.c.account_id == bindparam("aid"),
    )
    .values(message_id=bindparam("mid"))
)


class Flows:
    def __init__(self, engine: Engine) -> None:
        self.e = engine

    # -- the sweep ---------------------------------------------------------------------
    def sweep(self, max_timers: int = 1000, stop: Callable[[], bool] | None = None) -> SweepStats:
        """One pass of the worker: urgent and due dispatch first, then status
        reports, then due timers.  ``stop`` is asked between steps; timers
        claimed but not fired when it says so are taken over after their lease."""
        halt = stop or (lambda: False)
        stats = SweepStats()
        stats.submitted += self.e.dispatch()
        stats.reports += self.e.process_reports(halt)
        fired = 0
        while fired < max_timers and not halt():
            now = self.e.now()
            limit = min(50, max_timers - fired)

            def claim(s: Session, now: datetime = now, limit: int = limit) -> list[timers.Timer]:
                return timers.claim_due(
                    s, now, self.e.settings.worker_id, limit, self.e.settings.timer_lease
                )

            claimed = self.e._unit(claim)
            if not claimed:
                break
            for t in claimed:
                if halt():
                    break
                self._fire(t)
                fired += 1
                stats.late += int(t.late)
            stats.submitted += self.e.dispatch()  # urgent work never waits behind timers
        stats.timers_fired = fired
        if not halt():
            stats.submitted += self.e.dispatch()
        return stats

    def _fire(self, t: timers.Timer) -> None:
        handler = {
            "reminder": self._fire_reminder,
            "ttl": self._fire_ttl,
            "read_window": self._fire_read_window,
            "fraud_escalation": self._fire_escalation,
            "broadcast_expand": self._fire_expand,
        }.get(t.kind)

        def run(s: Session) -> None:
            if handler is not None:
                handler(s, t)
            else:
                log.warning("timer of unknown kind %s skipped", t.kind)
            timers.mark_fired(s, t, self.e.now())

        try:
            self.e._unit(run)
        except TsuchiError as err:
            # A business refusal (closed account, retired template) ends the timer;
            # it is recorded as fired so it does not fire forever.
            log.warning("timer %s: %s", t.kind, type(err).__name__)
            self.e._unit(lambda s: timers.mark_fired(s, t, self.e.now()))
        if t.late:
            log.info("timer %s fired late (due %s)", t.kind, t.due_at.isoformat())

    # -- delivery fallbacks ----------------------------------------------------------------
    def on_submitted(self, s: Session, m: Message, attempt: int, at: datetime) -> None:
        """Schedule the delivery TTL and, for urgent notices, the read window."""
        cur = m.current
        if cur is None:
            return
        if cur.channel is not Channel.PLUS_MESSAGE:
            # SMS final reports can take up to 72 h; after that the attempt expires.
            self.e._schedule(
                s,
                [
                    (
                        f"ttl:{m.id.hex}:{attempt}",
                        "ttl",
                        at + self.e.settings.sms_report_ttl,
                        {"message_id": m.id.hex, "attempt": attempt},
                    )
                ],
            )
            return
        ttl = self.e.settings.delivery_ttl[m.urgency.value]
        items = [
            (
                f"ttl:{m.id.hex}:{attempt}",
                "ttl",
                at + ttl,
                {"message_id": m.id.hex, "attempt": attempt},
            )
        ]
        if m.urgency is Urgency.URGENT:
            items.append(
                (
                    f"read:{m.id.hex}:{attempt}",
                    "read_window",
                    at + self.e.settings.urgent_read_window,
                    {"message_id": m.id.hex, "attempt": attempt},
                )
            )
        self.e._schedule(s, items)

    def _attempt_message(self, t: timers.Timer) -> tuple[Message, int] | None:
        m = self.e._message(UUID(hex=t.payload["message_id"]), required=False)
        attempt = int(t.payload["attempt"])
        if m is None or m.current is None or m.current.number != attempt:
            return None
        return m, attempt

    def _fire_ttl(self, s: Session, t: timers.Timer) -> None:
        found = self._attempt_message(t)
        if found is None:
            return
        m, attempt = found
        if m.status in (MessageStatus.SUBMITTED, MessageStatus.ACCEPTED):
            now = self.e.now()
            m.record_report(attempt, "expired", now, code="TTL")
            self.e._maybe_fall_back(s, m, "no delivery within TTL")
            self.e.store.save(m)
            self.e._project(s, m)

    def _fire_read_window(self, s: Session, t: timers.Timer) -> None:
        found = self._attempt_message(t)
        if found is None:
            return
        m, _ = found
        if m.status in (MessageStatus.SUBMITTED, MessageStatus.ACCEPTED, MessageStatus.DELIVERED):
            self.e._maybe_fall_back(s, m, "urgent notice not read in time: SMS as well")
            self.e.store.save(m)
            self.e._project(s, m)

    # -- deadlines -----------------------------------------------------------------------
    def _reminder_at(self, due: date, offset: int) -> datetime:
        hh, mm = (int(x) for x in self.e.settings.reminder_time.split(":"))
        local = datetime.combine(
            due - timedelta(days=offset),
            time(hh, mm),
            tzinfo=ZoneInfo(self.e.settings.reminder_time_zone),
        )
        return local.astimezone(self.e.now().tzinfo)

    def register_deadlines(self, specs: Iterable[DeadlineSpec], chunk: int = 2000) -> int:
        """Register deadlines in bulk (one transaction per chunk); each schedules
        its reminders as durable timers.  Re-registering is a no-op."""
        n = 0
        batch: list[DeadlineSpec] = []
        for spec in specs:
            Deadline.check_spec(spec.kind, spec.reference, list(spec.offsets_days))
            batch.append(spec)
            if len(batch) >= chunk:
                n += self._register_batch(batch)
                batch = []
        if batch:
            n += self._register_batch(batch)
        return n

    def _register_batch(self, batch: list[DeadlineSpec]) -> int:
        def run(s: Session) -> int:
            return self._register_chunk(s, batch)

        return self.e._unit(run)

    def _register_chunk(self, s: Session, specs: Sequence[DeadlineSpec]) -> int:
        now = self.e.now()
        ids = [deadline_id(x.sender_id, x.kind, x.reference) for x in specs]
        existing = self.e.store.existing_ids(ids)
        aggregates = []
        items = []
        for did, spec in zip(ids, specs, strict=True):
            if did in existing:
                continue
            d = Deadline(
                sender_id=spec.sender_id,
                kind=spec.kind,
                reference=spec.reference,
                account_id=spec.account_id,
                due=spec.due,
                template=spec.template,
                variables=dict(spec.variables),
                offsets_days=list(spec.offsets_days),
                at=now,
            )
            aggregates.append(d)
            for offset in d.offsets_days:
                at = self._reminder_at(spec.due, offset)
                if at < now - timedelta(days=1):
                    continue  # that reminder's day is already past
                items.append(
                    (
                        f"reminder:{did.hex}:{offset}",
                        "reminder",
                        at,
                        {"deadline_id": did.hex, "offset": offset},
                    )
                )
        self.e.store.save(*aggregates)
        timers.schedule(s, items)
        return len(aggregates)

    def cancel_deadline(self, sender_id: UUID, kind: str, reference: str, reason: str) -> int:
        """Cancel a deadline (card renewed, account closed); returns how many
        pending reminders were cancelled."""

        def run(s: Session) -> int:
            d = self.e._find(Deadline, deadline_id(sender_id, kind, reference))
            if d is None:
                raise InvalidInput("reference", "no such deadline")
            d.cancel(reason, self.e.now())
            self.e.store.save(d)
            return timers.cancel(s, timers.pending(s, f"reminder:{d.id.hex}:"))

        return self.e._unit(run)

    def _fire_reminder(self, s: Session, t: timers.Timer) -> None:
        d = self.e._find(Deadline, UUID(hex=t.payload["deadline_id"]))
        if d is None or d.cancelled is not None:
            return
        offset = int(t.payload["offset"])
        variables: dict[str, Any] = {**d.variables}
        tpl = self.e._template(d.sender_id, d.template)
        assert tpl is not None
        declared = tpl.latest_approved().variables
        if "due" in declared:
            variables["due"] = d.due
        if "days_left" in declared:
            variables["days_left"] = offset
        view = self.e.request_notice(
            d.sender_id,
            d.account_id,
            d.template,
            variables,
            idempotency_key=t.id,
            correlation_id=f"deadline:{d.id.hex}",
            requested_by="reminder",
        )
        d.record_reminder(offset, view.id, t.late, self.e.now())
        self.e.store.save(d)

    # -- fraud alerts ---------------------------------------------------------------------
    def raise_fraud_alert(
        self,
        sender_id: UUID,
        account_id: UUID,
        card_last4: str,
        merchant: str,
        amount: int,
        at: datetime,
        alert_ref: str | None = None,
    ) -> UUID:
        """Open a fraud case and send the urgent "was this you?" notice."""
        if not (isinstance(card_last4, str) and len(card_last4) == 4 and card_last4.isdigit()):
            raise InvalidInput("card_last4", "exactly 4 digits")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise InvalidInput("amount", "a non-negative integer (yen)")
        if not isinstance(merchant, str) or not merchant.strip() or len(merchant) > 100:
            raise InvalidInput("merchant", "1 to 100 characters")
        ref = alert_ref or f"{account_id.hex}:{card_last4}:{at.isoformat()}:{amount}"
        cid = fraud_case_id(sender_id, ref)
        settings = self.e.settings

        def run(s: Session) -> UUID:
            case = self.e._find(FraudCase, cid)
            if case is not None and case.message_id is not None:
                return cid
            account = self.e._account(account_id)
            if case is None:
                case = FraudCase(
                    sender_id=sender_id,
                    alert_ref=ref,
                    account_id=account_id,
                    card_last4=card_last4,
                    merchant=merchant,
                    amount=amount,
                    occurred_at=at,
                    at=self.e.now(),
                )
            tpl = self.e._template(sender_id, settings.fraud_alert_template)
            assert tpl is not None
            declared = tpl.latest_approved().variables
            values: dict[str, Any] = {"last4": card_last4, "merchant": merchant, "amount": amount}
            if "when" in declared:
                values["when"] = at.astimezone(ZoneInfo(account.time_zone)).strftime("%m/%d %H:%M")
            if "name" in declared:
                values["name"] = account.name.reveal()
            values = {k: v for k, v in values.items() if k in declared}
            view = self.e.request_notice(
                sender_id,
                account_id,
                settings.fraud_alert_template,
                values,
                idempotency_key=f"fraud:{cid.hex}",
                urgency="urgent",
                correlation_id=f"fraud:{cid.hex}",
                requested_by="fraud-alert",
            )
            case.alert_sent(view.id, self.e.now())
            self.e.store.save(case)
            timers.schedule(
                s,
                [
                    (
                        f"escalate:{cid.hex}",
                        "fraud_escalation",
                        self.e.now() + settings.fraud_escalate_after,
                        {"case_id": cid.hex},
                    )
                ],
            )
            return cid

        return self.e._unit(run)

    def fraud_case(self, case_id: UUID) -> FraudCase:
        with self.e.store.session(commit=False):
            case = self.e._find(FraudCase, case_id)
        if case is None:
            raise InvalidInput("case_id", "no such fraud case")
        return case

    def _fire_escalation(self, s: Session, t: timers.Timer) -> None:
        case = self.e._find(FraudCase, UUID(hex=t.payload["case_id"]))
        if case is not None and case.open:
            case.escalate(self.e.now())
            self.e.store.save(case)
            log.info("fraud case %s escalated to the call centre", case.id)

    def on_reply(self, s: Session, m: Message, text: str, postback: str) -> None:
        """Route a reply to the flow its message belongs to."""
        if m.correlation_id.startswith("fraud:") and m.purpose is Purpose.SECURITY:
            self._fraud_reply(s, m, text, postback)
        elif m.correlation_id.startswith("broadcast:"):
            answer = classify_safety_reply(text, postback)
            s.execute(
                update(broadcast_recipients)
                .where(broadcast_recipients.c.message_id == m.id.hex)
                .values(reply=answer)
            )
        if m.purpose is Purpose.MARKETING and is_opt_out(
            text or postback, self.e.settings.opt_out_keywords
        ):
            self._opt_out(s, m)

    def _fraud_reply(self, s: Session, m: Message, text: str, postback: str) -> None:
        case = self.e._find(FraudCase, UUID(hex=m.correlation_id.split(":", 1)[1]))
        if case is None or not case.open:
            return
        answer = classify_fraud_reply(text, postback)
        if answer == "unclear":
            return
        case.answer(answer, self.e.now())
        self.e.store.save(case)
        timers.cancel(s, [f"escalate:{case.id.hex}"])
        if answer == "not_me":
            log.info("fraud case %s: card block requested", case.id)
            tpl = self.e._template(
                case.sender_id, self.e.settings.fraud_confirmation_template, required=False
            )
            if tpl is not None:
                declared = tpl.latest_approved().variables
                values = {k: v for k, v in {"last4": case.card_last4}.items() if k in declared}
                self.e.request_notice(
                    case.sender_id,
                    case.account_id,
                    tpl.name,
                    values,
                    idempotency_key=f"fraud-confirm:{case.id.hex}",
                    urgency="urgent",
                    correlation_id=f"fraud:{case.id.hex}",
                    requested_by="fraud-alert",
                )

    def _opt_out(self, s: Session, m: Message) -> None:
        consent = self.e._consent(m.account_id, m.sender_id, Purpose.MARKETING)
        if consent is None or not consent.granted:
            return  # already refused: confirm only once
        consent.withdraw("reply keyword", self.e.now())
        self.e.store.save(consent)
        self.e._project_consent(s, consent)
        tpl = self.e._template(
            m.sender_id, self.e.settings.opt_out_confirmation_template, required=False
        )
        if tpl is not None:
            self.e.request_notice(
                m.sender_id,
                m.account_id,
                tpl.name,
                {},
                idempotency_key=f"opt-out:{consent.id.hex}:{consent.version}",
                correlation_id=f"opt-out:{m.id.hex}",
                requested_by="opt-out",
            )

    # -- broadcasts -------------------------------------------------------------------------
    def start_broadcast(
        self,
        sender_id: UUID,
        name: str,
        template: str,
        account_ids: Sequence[UUID],
        variables: dict[str, str] | None = None,
        urgency: str = "normal",
        requested_by: str = "host",
    ) -> UUID:
        """Create a broadcast to ``account_ids``; its messages are created in
        chunks by the sweep (at bulk priority: urgent notices go first)."""
        if not account_ids:
            raise InvalidInput("account_ids", "a broadcast needs at least one recipient")
        if len(set(account_ids)) != len(account_ids):
            raise InvalidInput("account_ids", "each account at most once")
        bid = broadcast_id(sender_id, name)

        def run(s: Session) -> UUID:
            if bid in self.e.store.repository:
                return bid
            self.e._sender(sender_id).check_active()
            tpl = self.e._template(sender_id, template)
            assert tpl is not None
            tpl.check_variables(tpl.latest_approved(), dict(variables or {}))
            b = Broadcast(
                sender_id=sender_id,
                name=name,
                template=template,
                variables=dict(variables or {}),
                urgency=urgency,
                recipients=len(account_ids),
                requested_by=requested_by,
                at=self.e.now(),
            )
            self.e.store.save(b)
            rows = [
                {"broadcast_id": bid.hex, "account_id": a.hex, "seq": i}
                for i, a in enumerate(account_ids)
            ]
            for start in range(0, len(rows), 5000):
                s.execute(insert(broadcast_recipients), rows[start : start + 5000])
            timers.schedule(
                s,
                [
                    (
                        f"expand:{bid.hex}",
                        "broadcast_expand",
                        self.e.now(),
                        {"broadcast_id": bid.hex},
                    )
                ],
            )
            return bid

        return self.e._unit(run)

    def _fire_expand(self, s: Session, t: timers.Timer) -> None:
        bid = UUID(hex=t.payload["broadcast_id"])
        b = self.e._find(Broadcast, bid)
        if b is None or b.expanded:
            return
        rows = s.execute(
            select(broadcast_recipients.c.account_id, broadcast_recipients.c.seq)
            .where(
                broadcast_recipients.c.broadcast_id == bid.hex,
                broadcast_recipients.c.message_id.is_(None),
            )
            .order_by(broadcast_recipients.c.seq)
            .limit(EXPAND_CHUNK)
        ).all()
        # One query for the chunk's accounts, their consents to the purpose
        # and (after a crash) its messages.
        tpl = self.e._template(b.sender_id, b.template, required=False)
        purpose = tpl.purpose if tpl is not None else Purpose.SECURITY
        accounts = [UUID(hex=r[0]) for r in rows]
        self.e._prefetch(
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
            if len(done) >= EXPAND_MIN and self.e.store.writers_waiting():
                break  # another writer (an urgent alert?) waits: commit what is done
            last_seq = seq
            try:
                view = self.e.request_notice(
                    b.sender_id,
                    UUID(hex=account_hex),
                    b.template,
                    dict(b.variables),
                    idempotency_key=f"broadcast:{bid.hex}:{account_hex}",
                    urgency=b.urgency,
                    correlation_id=f"broadcast:{bid.hex}",
                    requested_by=b.requested_by,
                    priority=2,
                )
                mid = view.id.hex
            except (UnknownAccount, RuleViolation) as err:
                mid = f"skipped:{type(err).__name__}"[:32]
            done.append({"bid": bid.hex, "aid": account_hex, "mid": mid})
        if done:
            s.execute(_RECIPIENT_DONE, done)
        if len(rows) < EXPAND_CHUNK and len(done) == len(rows):
            b.mark_expanded(b.recipients, self.e.now())
            self.e.store.save(b)
        else:  # more to do: the next chunk is a new timer, so a crash loses nothing
            timers.schedule(
                s,
                [
                    (
                        f"expand:{bid.hex}:{last_seq}",
                        "broadcast_expand",
                        self.e.now(),
                        {"broadcast_id": bid.hex},
                    )
                ],
            )

    def broadcast_report(self, bid: UUID) -> dict[str, Any]:
        """Progress and outcome of a broadcast: messages by status, replies by answer."""
        with self.e.store.session(commit=False) as s:
            b = self.e._find(Broadcast, bid)
            if b is None:
                raise InvalidInput("broadcast_id", "no such broadcast")
            created = s.execute(
                select(func.count())
                .select_from(broadcast_recipients)
                .where(
                    broadcast_recipients.c.broadcast_id == bid.hex,
                    broadcast_recipients.c.message_id.is_not(None),
                )
            ).scalar_one()
            statuses: dict[str, int] = {
                str(k): int(v)
                for k, v in s.execute(
                    select(message_view.c.status, func.count())
                    .where(message_view.c.correlation_id == f"broadcast:{bid.hex}")
                    .group_by(message_view.c.status)
                )
            }
            replies: dict[str, int] = {
                str(k): int(v)
                for k, v in s.execute(
                    select(broadcast_recipients.c.reply, func.count())
                    .where(
                        broadcast_recipients.c.broadcast_id == bid.hex,
                        broadcast_recipients.c.reply.is_not(None),
                    )
                    .group_by(broadcast_recipients.c.reply)
                )
            }
        return {
            "broadcast_id": str(bid),
            "name": b.name,
            "recipients": b.recipients,
            "messages_created": int(created),
            "expanded": b.expanded,
            "by_status": {k: int(v) for k, v in statuses.items()},
            "replies": {k: int(v) for k, v in replies.items()},
        }
