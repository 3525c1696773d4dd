"""Dispatch: from the outbox to the gateway, exactly once.

One unit of work claims due rows, decides deferred messages again, re-checks
consent (a refusal takes effect before the next send; the basis that holds
now is recorded as proof of consent at send time), marks the rows as being
submitted and builds the submissions; the gateway is called after it
commits; a second unit records the results.  A claim whose worker vanished
after it started talking to the gateway is reconciled, never resent blindly.
A batch that holds an urgent notice holds urgent notices only.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from tsuchi.application.accounts import Accounts
from tsuchi.application.consents import Consents
from tsuchi.application.context import Context
from tsuchi.application.flows.fallbacks import Fallbacks
from tsuchi.application.notices import Notices
from tsuchi.application.senders import Senders
from tsuchi.application.templates import Templates
from tsuchi.application.unit_of_work import UnitOfWork
from tsuchi.domain.message import Message, gateway_reference
from tsuchi.domain.personal import Personal
from tsuchi.domain.values import Channel, MessageStatus
from tsuchi.infrastructure.sql import Session
from tsuchi.infrastructure.sql import outbox as outbox_table
from tsuchi.policies.purpose import decide_purpose
from tsuchi.ports import Gateway, Observer, Submission, SubmitResult

log = logging.getLogger("tsuchi")

RETRY_AFTER_GATEWAY_ERROR = timedelta(seconds=30)
Ready = dict[tuple[str, int], dict[str, Any]]
_CODE = re.compile(r"[a-z0-9_]{1,40}")


def _outcome(res: SubmitResult) -> str:
    if not res.accepted:
        return "rejected"
    return "unconfirmed" if res.reason == "unconfirmed" else "accepted"


def _observe_submissions(observer: Observer, outcomes: list[tuple[str, str, str, str]]) -> None:
    for tenant, channel, carrier, outcome in outcomes:
        observer.submitted(tenant, channel, carrier, outcome)
    unconfirmed = sum(o[3] == "unconfirmed" for o in outcomes)
    if unconfirmed:
        observer.unconfirmed(unconfirmed)


def _error_code(exc: Exception) -> str:
    """A gateway error as a short code: its rule when it is one, else its type."""
    rule = getattr(exc, "rule", None)
    if isinstance(rule, str) and _CODE.fullmatch(rule):
        return rule
    return type(exc).__name__


def _is_current(m: Message, attempt: int) -> bool:
    cur = m.current
    return cur is not None and cur.number == attempt and cur.status is MessageStatus.ROUTED


class Dispatch:
    def __init__(
        self,
        ctx: Context,
        uow: UnitOfWork,
        gateway: Gateway,
        notices: Notices,
        senders: Senders,
        accounts: Accounts,
        templates: Templates,
        consents: Consents,
        fallbacks: Fallbacks,
    ) -> None:
        self.ctx = ctx
        self.uow = uow
        self.gateway = gateway
        self.notices = notices
        self.senders = senders
        self.accounts = accounts
        self.templates = templates
        self.consents = consents
        self.fallbacks = fallbacks

    def claim(self, limit: int, max_priority: int | None = None) -> list[tuple[str, int]]:
        """Claim due outbox rows: (message hex, attempt) pairs safe to submit."""
        now = self.ctx.now()
        worker = self.ctx.settings.worker_id
        stale_before = now - self.ctx.settings.timer_lease

        def run(s: Session) -> list[tuple[str, int]]:
            self.uow.flush(s)
            rows = outbox_table.due_rows(s, now, stale_before, limit, max_priority)
            if rows and rows[0].priority == outbox_table.URGENT:
                # Urgent notices go out in a batch of their own: never held up
                # while bulk rows claimed with them are prepared and recorded.
                rows = [r for r in rows if r.priority == outbox_table.URGENT]
            fresh = [(r.message_hex, r.attempt) for r in rows if not r.submitting]
            ambiguous = [(r.message_hex, r.attempt) for r in rows if r.submitting]
            outbox_table.claim(s, fresh, worker, now)
            if ambiguous:
                fresh += self._reconcile(s, ambiguous, now)
            return fresh

        return self.uow.run(run)

    def _reconcile(
        self, s: Session, rows: list[tuple[str, int]], now: datetime
    ) -> list[tuple[str, int]]:
        """Rows whose submission was interrupted: ask the gateway what it has
        (if it can tell); what it has, or everything when it cannot tell, is
        recorded as submitted-unconfirmed and left to status reports and the
        delivery TTL; nothing is sent twice.  Returns rows safe to resubmit."""
        refs = [gateway_reference(UUID(hex=mid), attempt) for mid, attempt in rows]
        known_fn = getattr(self.gateway, "known", None)
        known: set[str] | None = set(known_fn(refs)) if callable(known_fn) else None
        resubmit: list[tuple[str, int]] = []
        unconfirmed = 0
        for (mid_hex, attempt), ref in zip(rows, refs, strict=True):
            if known is not None and ref not in known:
                outbox_table.reclaim_for_resubmission(
                    s, mid_hex, attempt, self.ctx.settings.worker_id, now
                )
                resubmit.append((mid_hex, attempt))
                continue
            outbox_table.delete_rows(s, [(mid_hex, attempt)])
            m = self.notices.get(UUID(hex=mid_hex))
            if not _is_current(m, attempt):
                continue
            m.mark_submitted(
                attempt,
                "unconfirmed" if known is None else ref,
                now,
                {"reconciled": "unconfirmed" if known is None else "known"},
            )
            self.fallbacks.on_submitted(s, m, attempt, now)
            self.uow.save_message_now(s, m)
            unconfirmed += known is None
            log.warning(
                "interrupted submission of %s reconciled (%s)",
                mid_hex,
                "unconfirmed" if known is None else "gateway has it",
            )
        if unconfirmed:
            observer = self.ctx.observer
            self.uow.after_commit(lambda: observer.unconfirmed(unconfirmed))
        return resubmit

    def prepare(
        self, limit: int, *, urgent_only: bool = False, held: dict[UUID, object] | None = None
    ) -> tuple[Ready, list[Submission]]:
        """The first step of a dispatch, as one unit of work: claim due rows,
        re-check consent, mark the rows as being submitted and read what to
        send.  ``held`` receives the committed states the recording step may
        reuse."""

        def run(s: Session) -> tuple[Ready, list[Submission]]:
            claimed = self.claim(limit, max_priority=outbox_table.URGENT if urgent_only else None)
            if not claimed:
                return {}, []
            self.uow.prefetch_messages([UUID(hex=mid_hex) for mid_hex, _ in claimed])
            ready = self._prepare(s, claimed)
            subs: list[Submission] = []
            for mid_hex, attempt in ready:
                sub = self.build_submission(UUID(hex=mid_hex), attempt)
                if sub is not None:
                    subs.append(sub)
            if held is not None:
                held.clear()  # a retried unit starts again
                held.update(self.uow.committed_states())
            return ready, subs

        return self.uow.run(run)

    def dispatch(self, limit: int | None = None, *, urgent_only: bool = False) -> int:
        """Submit one batch of due messages; returns how many submissions were
        made (call again while it returns more than 0)."""
        # Committed states the recording step may reuse (its first attempt only:
        # a retried one could find them changed by the attempt that failed).
        held: dict[UUID, object] = {}
        # The gateway is called after the preparing unit commits.
        ready, subs = self.prepare(
            limit or self.ctx.settings.dispatch_batch, urgent_only=urgent_only, held=held
        )
        if not ready:
            return 0
        try:
            results = self.gateway.submit(subs) if subs else []
        except Exception as exc:
            # Nothing was recorded as submitted: hand the rows back for a later
            # pass (after a pause, so an unavailable gateway is not hammered).
            self.ctx.observer.gateway_error(_error_code(exc))
            retry_at = self.ctx.now() + RETRY_AFTER_GATEWAY_ERROR
            self.uow.run(lambda s: outbox_table.release(s, list(ready), retry_at))
            raise
        by_ref = {r.reference: r for r in results}

        def record(s: Session) -> None:
            outcomes: list[tuple[str, str, str, str]] = []
            reuse = dict(held)
            held.clear()
            self.uow.prefetch_messages([UUID(hex=mid_hex) for mid_hex, _ in ready], reuse)
            outbox_table.delete_rows(s, list(ready))
            for (mid_hex, attempt), basis in ready.items():
                mid = UUID(hex=mid_hex)
                res = by_ref.get(gateway_reference(mid, attempt))
                if res is None:
                    continue
                m = self.notices.get(mid)
                now = self.ctx.now()
                m.mark_submitted(attempt, res.gateway_ref if res.accepted else "", now, basis)
                if res.accepted:
                    self.fallbacks.on_submitted(s, m, attempt, now)
                else:
                    m.record_report(
                        attempt, "failed", now, code=res.code, permanent=res.reason != "outage"
                    )
                    self.fallbacks.fall_back(s, m, res.reason or res.code)
                self.uow.save_message(s, m)
                cur = next(a for a in m.attempts if a.number == attempt)
                outcomes.append((m.tenant, cur.channel.value, cur.carrier.value, _outcome(res)))
            self.uow.after_commit(lambda: _observe_submissions(self.ctx.observer, outcomes))

        self.uow.run(record)
        return len(subs)

    def _prepare(self, s: Session, claimed: list[tuple[str, int]]) -> Ready:
        """Decide deferred messages again and re-check consent of routed ones.
        Returns the (message, attempt) pairs to submit with the consent basis
        that holds at this moment (proof of consent at send time)."""
        ready: Ready = {}
        now = self.ctx.now()
        for mid_hex, attempt in claimed:
            m = self.notices.get(UUID(hex=mid_hex))
            if attempt == 0:  # a deferred message's timer
                outbox_table.delete_rows(s, [(mid_hex, 0)])
                if m.status is not MessageStatus.DEFERRED:
                    continue
                self.notices.decide(
                    s, m, self.senders.get(m.sender_id), self.accounts.get(m.account_id), now
                )
                self.uow.save_message_now(s, m)
                if m.status not in (MessageStatus.ROUTED,):  # decide() moved it on
                    continue
                attempt = 1
                self.uow.flush(s)
                outbox_table.claim(s, [(mid_hex, 1)], self.ctx.settings.worker_id, now)
            if not _is_current(m, attempt):
                continue
            decision = decide_purpose(m.purpose, self.consents.for_message(m))
            if not decision.allowed:
                m.cancel(f"{decision.reason}_before_send", now)
                self.uow.save_message_now(s, m)
                outbox_table.delete_message(s, mid_hex)
                continue
            ready[(mid_hex, attempt)] = decision.basis
        outbox_table.mark_submitting(s, list(ready), now)
        return ready

    def build_submission(self, mid: UUID, attempt: int) -> Submission | None:
        """What to hand the gateway for one attempt (None if it is no longer
        the current, routed attempt).  Personal data is decrypted here only."""
        m = self.notices.get(mid)
        cur = m.current
        if cur is None or not _is_current(m, attempt):
            return None
        sender = self.senders.get(m.sender_id)
        account = self.accounts.get(m.account_id)
        version = self.templates.get(m.sender_id, m.template_name).get_version(m.template_version)
        values = {
            k: val.reveal() if isinstance(val, Personal) else val for k, val in m.variables.items()
        }
        plus = cur.channel is Channel.PLUS_MESSAGE
        return Submission(
            reference=gateway_reference(mid, attempt),
            channel=cur.channel,
            carrier=cur.carrier,
            sender_name=sender.display_name,
            sms_sender_id=sender.sms_sender_id,
            to=account.mobile.reveal(),
            text=version.body(cur.channel, values),
            suggestions=version.suggestions if plus else (),
            attachments=version.attachments if plus else (),
            validity=self.fallbacks.delivery_ttl(m),
            max_parts=None if plus else self.ctx.settings.sms_max_parts,
            groupings=(sender.tenant, m.purpose.value, m.template_name),
        )

    # -- probes --------------------------------------------------------------------------
    def wait_for_urgent(self, timeout: float) -> bool:
        """Block until a unit of work of this engine commits an urgent notice
        that is due (True), or ``timeout`` seconds pass (False)."""
        woke = self.uow.urgent_committed.wait(timeout)
        self.uow.urgent_committed.clear()  # what is committed now, dispatch will see
        return woke

    def urgent_due(self) -> bool:
        """Whether an urgent notice waits to be claimed (one read, no write lock)."""
        now = self.ctx.now()
        with self.uow.read() as s:
            return outbox_table.urgent_due(s, now, now - self.ctx.settings.timer_lease)

    def pending(self) -> int:
        with self.uow.read() as s:
            return outbox_table.count(s)
