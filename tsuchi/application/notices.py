"""Notices: requesting one message, deciding its fate, and cancelling it.

A request is checked (sender active, account open, same tenant, template
approved, variables typed, no card number, bodies within channel limits),
then decided: consent (:mod:`tsuchi.policies.purpose`), quiet hours and the
marketing frequency cap (:mod:`tsuchi.policies.timing`), then routing
(:mod:`tsuchi.policies.routing`).  The message ends blocked, deferred (its
outbox row due when the window opens) or routed (due now); submission is the
dispatch service's job, after the unit commits.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from tsuchi.application import validation as v
from tsuchi.application.accounts import Accounts
from tsuchi.application.consents import Consents
from tsuchi.application.context import Context
from tsuchi.application.senders import Senders
from tsuchi.application.templates import Templates
from tsuchi.application.unit_of_work import UnitOfWork
from tsuchi.application.views import MessageView
from tsuchi.domain.account import Account
from tsuchi.domain.channels import check_plus_message_body, check_sms_body
from tsuchi.domain.message import Message, message_id
from tsuchi.domain.pci import check_no_card_number
from tsuchi.domain.personal import Personal
from tsuchi.domain.sender import Sender
from tsuchi.domain.template import template_id
from tsuchi.domain.values import Purpose, Urgency
from tsuchi.errors import (
    ConcurrencyConflict,
    IdempotencyConflict,
    InvalidInput,
    RuleViolation,
    UnknownMessage,
)
from tsuchi.infrastructure.sql import Session
from tsuchi.infrastructure.sql import message_view as message_view_table
from tsuchi.infrastructure.sql import outbox as outbox_table
from tsuchi.policies.purpose import decide_purpose
from tsuchi.policies.routing import choose_route
from tsuchi.policies.timing import frequency_cap, next_window_opening, quiet_hours_apply

PRIORITY = {Urgency.URGENT: outbox_table.URGENT, Urgency.NORMAL: outbox_table.NORMAL}


class Notices:
    def __init__(
        self,
        ctx: Context,
        uow: UnitOfWork,
        senders: Senders,
        accounts: Accounts,
        templates: Templates,
        consents: Consents,
    ) -> None:
        self.ctx = ctx
        self.uow = uow
        self.senders = senders
        self.accounts = accounts
        self.templates = templates
        self.consents = consents

    def find(self, mid: UUID) -> Message | None:
        return self.uow.find(Message, mid)

    def get(self, mid: UUID) -> Message:
        """The message, inside a unit of work; :class:`UnknownMessage` if none."""
        return self.uow.get(Message, mid, UnknownMessage)

    def request(
        self,
        sender_id: UUID,
        account_id: UUID,
        template: str,
        variables: dict[str, Any] | None = None,
        *,
        idempotency_key: str,
        urgency: str = "normal",
        correlation_id: str | None = None,
        requested_by: str = "host",
        template_version: int | None = None,
        bulk: bool = False,
    ) -> MessageView:
        """Request one notice (idempotent on sender and ``idempotency_key``)."""
        sender_id = v.uuid(sender_id, "sender_id")
        account_id = v.uuid(account_id, "account_id")
        template_version = v.optional_int(template_version, "template_version")
        v.text(idempotency_key, "idempotency_key", 128)
        v.text(template, "template", 64)
        v.text(requested_by, "requested_by", 100)
        corr = correlation_id if correlation_id is not None else idempotency_key
        v.text(corr, "correlation_id", 128)
        try:
            urg = Urgency(urgency)
        except ValueError:
            raise InvalidInput("urgency", "must be normal or urgent") from None
        values = v.mapping(variables, "variables")
        mid = message_id(sender_id, idempotency_key)

        def run(s: Session) -> MessageView:
            # One query reads the message (if the key was used), sender,
            # template and account.
            self.uow.prefetch([mid, sender_id, template_id(sender_id, template), account_id])
            existing = self.find(mid)
            if existing is not None:
                self._check_same_request(existing, account_id, template, urg, values)
                return MessageView.of(existing)
            sender = self.senders.get(sender_id)
            sender.check_active()
            account = self.accounts.get(account_id)
            account.check_open()
            if account.tenant != sender.tenant:
                raise InvalidInput("account_id", "account belongs to another tenant")
            tpl = self.templates.get(sender_id, template)
            version = tpl.usable(template_version)
            stored = tpl.check_variables(version, values)
            for k, val in stored.items():
                check_no_card_number(val, f"variables.{k}")
            pm_text, sms_text = version.bodies(stored)
            key = (tpl.id, version.number, pm_text, sms_text)
            if not self.uow.body_checked(key):
                check_plus_message_body(pm_text, tuple(x.label for x in version.suggestions))
                check_sms_body(sms_text, self.ctx.settings.sms_max_parts)
                self.uow.mark_body_checked(key)  # the same bodies pass again (a broadcast)
            event_vars: dict[str, str | Personal] = {
                k: Personal(account_id, val) if version.variables[k].personal else val
                for k, val in stored.items()
            }
            now = self.ctx.now()
            msg = Message(
                sender_id=sender_id,
                idempotency_key=idempotency_key,
                tenant=sender.tenant,
                account_id=account_id,
                template_id=tpl.id,
                template_name=tpl.name,
                template_version=version.number,
                purpose=tpl.purpose,
                urgency=urg,
                variables=event_vars,
                correlation_id=corr,
                requested_by=requested_by,
                at=now,
                bulk=bulk,
            )
            self.decide(s, msg, sender, account, now)
            self.uow.add_message(s, msg)
            observer, outcome = self.ctx.observer, msg.status.value
            self.uow.after_commit(
                lambda: observer.notice_requested(sender.tenant, msg.purpose.value, outcome)
            )
            return MessageView.of(msg)

        try:
            return self.uow.run(run)
        except ConcurrencyConflict:
            # A concurrent request with the same key won: return its message.
            with self.uow.read():
                return MessageView.of(self.get(mid))

    def _check_same_request(
        self, m: Message, account_id: UUID, template: str, urgency: Urgency, values: dict[str, Any]
    ) -> None:
        """The same idempotency key must mean the same notice: same account,
        template, urgency and variables (compared as stored)."""
        conflict = IdempotencyConflict("idempotency_key", "already used for a different notice")
        if m.account_id != account_id or m.template_name != template or m.urgency is not urgency:
            raise conflict
        if any(isinstance(val, Personal) and val.erased for val in m.variables.values()):
            return  # the customer was erased: nothing left to compare
        tpl = self.templates.get(m.sender_id, template)
        try:
            stored = tpl.check_variables(tpl.get_version(m.template_version), values)
        except InvalidInput:
            raise conflict from None
        before = {
            k: val.reveal() if isinstance(val, Personal) else val for k, val in m.variables.items()
        }
        if stored != before:
            raise conflict

    def decide(
        self, s: Session, msg: Message, sender: Sender, account: Account, now: datetime
    ) -> None:
        """Consent, quiet hours, frequency cap, then routing: the message ends
        blocked, deferred (with its outbox row due when it may go) or routed."""
        decision = decide_purpose(msg.purpose, self.consents.for_message(msg))
        if not decision.allowed:
            msg.block(decision.reason, now)
            return
        settings = self.ctx.settings
        if quiet_hours_apply(msg.purpose, msg.urgency):
            window = sender.quiet_hours.get(msg.purpose.value, settings.quiet_hours_window)
            opening = next_window_opening(now, account.time_zone, window)
            if opening is not None:
                msg.defer(opening, "quiet_hours", now)
                self.enqueue(s, msg, 0, opening)
                return
        if msg.purpose is Purpose.MARKETING:
            cap = sender.frequency_cap or settings.marketing_cap.model_dump()
            sent = message_view_table.marketing_sends_since(
                s,
                msg.account_id.hex,
                msg.sender_id.hex,
                Purpose.MARKETING.value,
                now - timedelta(days=7),
            )
            verdict = frequency_cap(now, sent, int(cap["per_day"]), int(cap["per_week"]))
            if not verdict.allowed:
                assert verdict.until is not None
                if cap["over_cap"] == "drop":
                    msg.block(f"{verdict.reason}_dropped", now)
                else:
                    msg.defer(verdict.until, verdict.reason, now)
                    self.enqueue(s, msg, 0, verdict.until)
                return
        route = choose_route(sender, account)
        attempt = msg.route(
            route.channel, route.carrier, {**decision.basis, "route": route.reason}, now
        )
        self.enqueue(s, msg, attempt, now)

    def enqueue(self, s: Session, msg: Message, attempt: int, due: datetime) -> None:
        """Queue the outbox row of one attempt (attempt 0: a deferred message's
        time to be decided again)."""
        priority = outbox_table.BULK if msg.bulk else PRIORITY[msg.urgency]
        self.uow.enqueue(s, outbox_table.row(msg.id.hex, attempt, priority, due))

    def view(self, mid: UUID) -> MessageView:
        with self.uow.read():
            return MessageView.of(self.get(mid))

    def ids(self, account_id: UUID | None = None, correlation_id: str | None = None) -> list[UUID]:
        with self.uow.read() as s:
            return [
                UUID(hex=h)
                for h in message_view_table.message_ids(
                    s, account_id.hex if account_id is not None else None, correlation_id
                )
            ]

    def cancel(self, mid: UUID, reason: str) -> None:
        v.code(reason, "reason")

        def run(s: Session) -> None:
            m = self.get(mid)
            self.uow.flush(s)
            if outbox_table.submission_in_progress(s, m.id.hex):
                raise RuleViolation("submission_in_progress", "too late: it is being submitted")
            m.cancel(reason, self.ctx.now())
            outbox_table.delete_message(s, m.id.hex)
            self.uow.save_message(s, m)

        self.uow.run(run)
