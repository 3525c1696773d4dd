"""Inbound: status reports, read receipts and replies from the gateway.

Reports are pulled (:meth:`Inbound.process_reports`) or pushed to a webhook
(:meth:`Inbound.handle_webhook`), applied idempotently, and never move a
status backwards.  A failure or expiry of a +Message attempt falls back to
SMS; a delivery teaches the account its +Message capability; a reply goes to
its flow.  Reports for unknown references are kept, without text, as orphans.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from uuid import UUID

from tsuchi.application import validation as v
from tsuchi.application.accounts import Accounts
from tsuchi.application.context import Context
from tsuchi.application.flows.fallbacks import Fallbacks
from tsuchi.application.flows.replies import Replies
from tsuchi.application.notices import Notices
from tsuchi.application.unit_of_work import UnitOfWork
from tsuchi.application.views import WebhookResult
from tsuchi.domain.message import Message, parse_gateway_reference
from tsuchi.domain.personal import Personal
from tsuchi.domain.values import Capability, Channel
from tsuchi.errors import InvalidInput, KeyMaterialError
from tsuchi.infrastructure.crypto import blind_index
from tsuchi.infrastructure.sql import Session
from tsuchi.infrastructure.sql import orphan_reports as orphan_table
from tsuchi.infrastructure.webhooks import read_status_webhook
from tsuchi.ports import Gateway, StatusReport

log = logging.getLogger("tsuchi")

APPLIED, DUPLICATE, ORPHAN = "applied", "duplicate", "orphan"
REPORT_BATCH = 200


class Inbound:
    def __init__(
        self,
        ctx: Context,
        uow: UnitOfWork,
        gateway: Gateway,
        notices: Notices,
        accounts: Accounts,
        fallbacks: Fallbacks,
        replies: Replies,
    ) -> None:
        self.ctx = ctx
        self.uow = uow
        self.gateway = gateway
        self.notices = notices
        self.accounts = accounts
        self.fallbacks = fallbacks
        self.replies = replies

    def process_reports(self, stop: Callable[[], bool] | None = None) -> int:
        """Pull due status reports from the gateway and apply them, one unit
        of work per batch; ``stop`` is asked between batches."""
        now = self.ctx.now()
        total = 0
        while True:
            chunk = self.gateway.poll_reports(now, REPORT_BATCH)
            if not chunk:
                return total

            def apply(s: Session, chunk: list[StatusReport] = chunk) -> None:
                self._prefetch_for(chunk)
                for r in chunk:
                    self.apply(s, r)

            self.uow.run(apply)
            total += len(chunk)
            if stop is not None and stop():
                return total

    def _prefetch_for(self, reports: list[StatusReport]) -> None:
        """The messages a batch of reports is about, and their accounts."""
        mids: list[UUID] = []
        for r in reports:
            try:
                mids.append(parse_gateway_reference(r.reference)[0])
            except ValueError:
                continue
        self.uow.prefetch_messages(mids)

    def handle_report(self, report: StatusReport) -> bool:
        """Apply one report; whether it changed anything."""
        if not isinstance(report, StatusReport):
            raise InvalidInput("report", "must be a StatusReport")
        return self.uow.run(lambda s: self.apply(s, report)) == APPLIED

    def handle_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        """Authenticate, parse and apply one webhook request (see the facade)."""
        settings = self.ctx.settings
        if not settings.webhook_secret:
            raise KeyMaterialError("no webhook secret configured (TSUCHI_WEBHOOK_SECRET)")
        reports = read_status_webhook(
            headers,
            body,
            secret=settings.webhook_secret,
            now=self.ctx.now(),
            max_body=settings.webhook_max_body,
            allow_token=settings.webhook_allow_token,
        )

        def run(s: Session) -> WebhookResult:
            outcomes = [self.apply(s, r) for r in reports]
            return WebhookResult(
                accepted=outcomes.count(APPLIED),
                duplicates=outcomes.count(DUPLICATE),
                orphans=outcomes.count(ORPHAN),
            )

        return self.uow.run(run)

    def apply(self, s: Session, r: StatusReport) -> str:
        """Apply a report: "applied", "duplicate" (nothing new) or "orphan"
        (no such message: kept, without any text, for reconciliation)."""
        m: Message | None
        try:
            mid, attempt = parse_gateway_reference(r.reference)
            m = self.notices.find(mid)
        except ValueError:
            m = None
        at = v.aware(r.at)
        if m is None:
            orphan_table.keep(s, r.reference, r.kind, r.code, at, self.ctx.now())
            log.warning("report for an unknown reference kept as orphan")
            return ORPHAN
        if r.kind == "reply":
            erased = self.accounts.get(m.account_id).erased
            key = blind_index(
                self.ctx.keyring.index_key,
                "reply",
                f"{r.reference}\0{at.isoformat()}\0{r.postback}\0{r.text}",
            )[:32]
            text = None if erased else Personal(m.account_id, r.text)
            changed = m.receive_reply(text, r.postback, at, dedupe_key=key)
            if changed and not erased:
                self.replies.on_reply(s, m, r.text, r.postback)
        else:
            changed = m.record_report(attempt, r.kind, at, r.code, r.permanent)
            if changed and r.kind in ("failed", "expired"):
                self.fallbacks.fall_back(s, m, f"{r.kind} {r.code}".strip())
            if (
                changed
                and r.kind == "delivered"
                and m.current
                and m.current.channel is Channel.PLUS_MESSAGE
            ):
                self.accounts.learn_capability(m.account_id, Capability.YES, "delivery report", at)
            if changed and r.kind in ("delivered", "read"):
                self._observe_progress(m, attempt, r.kind, at)
        self.uow.save_message(s, m)
        return APPLIED if changed else DUPLICATE

    def _observe_progress(self, m: Message, attempt: int, kind: str, at: datetime) -> None:
        """Report how long after its submission the attempt was delivered or read."""
        submitted = next(
            (
                e.at
                for e in reversed(m.timeline)
                if e.status == "submitted" and e.attempt == attempt
            ),
            None,
        )
        channel = next((a.channel.value for a in m.attempts if a.number == attempt), None)
        if submitted is None or channel is None:
            return
        seconds = max((at - v.aware(submitted)).total_seconds(), 0.0)
        observer = self.ctx.observer
        self.uow.after_commit(lambda: observer.progressed(channel, kind, seconds))
