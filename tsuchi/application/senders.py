"""Senders: the official accounts a tenant sends from, and their settings.

Registration, per-carrier vetting, suspension and closure, quiet hours and
the marketing frequency cap; each command is "get, call, save" in one unit
of work.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from tsuchi.application import validation as v
from tsuchi.application.context import Context
from tsuchi.application.unit_of_work import UnitOfWork
from tsuchi.application.views import SenderView
from tsuchi.domain.sender import Sender, sender_id
from tsuchi.domain.values import parse_carrier
from tsuchi.errors import InvalidInput, UnknownSender
from tsuchi.infrastructure.sql import Session


class Senders:
    def __init__(self, ctx: Context, uow: UnitOfWork) -> None:
        self.ctx = ctx
        self.uow = uow

    def get(self, sid: UUID) -> Sender:
        """The sender, inside a unit of work; :class:`UnknownSender` if none."""
        return self.uow.get(Sender, sid, UnknownSender)

    def register(
        self, tenant: str, display_name: str, industry: str, sms_sender_id: str, contact: str
    ) -> UUID:
        v.tenant(tenant)
        v.text(display_name, "display_name", 100)
        v.text(industry, "industry", 64)
        v.text(contact, "contact", 200)
        if not isinstance(sms_sender_id, str) or not v.SMS_SENDER_RE.match(sms_sender_id):
            raise InvalidInput("sms_sender_id", "1 to 11 letters/digits, or up to 15 digits")

        def run(s: Session) -> UUID:
            sid = sender_id(tenant, sms_sender_id)
            if self.uow.exists(sid):
                return sid  # idempotent: the same official account
            sender = Sender(
                tenant=tenant,
                display_name=display_name,
                industry=industry,
                sms_sender_id=sms_sender_id,
                contact=contact,
                at=self.ctx.now(),
            )
            self.uow.save(sender)
            return sid

        return self.uow.run(run)

    def _command(self, sid: UUID, fn: Callable[[Sender], None]) -> None:
        def run(s: Session) -> None:
            sender = self.get(sid)
            fn(sender)
            self.uow.save(sender)

        self.uow.run(run)

    def submit_vetting(self, sid: UUID, carrier: str) -> None:
        c = parse_carrier(carrier)
        self._command(sid, lambda x: x.submit_vetting(c, self.ctx.now()))

    def decide_vetting(self, sid: UUID, carrier: str, approved: bool, note: str = "") -> None:
        c = parse_carrier(carrier)
        self._command(sid, lambda x: x.decide_vetting(c, approved, self.ctx.now(), note))

    def suspend(self, sid: UUID, reason: str) -> None:
        v.code(reason, "reason")
        self._command(sid, lambda x: x.suspend(reason, self.ctx.now()))

    def reinstate(self, sid: UUID) -> None:
        self._command(sid, lambda x: x.reinstate(self.ctx.now()))

    def close(self, sid: UUID) -> None:
        self._command(sid, lambda x: x.close(self.ctx.now()))

    def set_quiet_hours(self, sid: UUID, purpose: str, start: str, end: str) -> None:
        p = v.purpose(purpose)
        self._command(sid, lambda x: x.set_quiet_hours(p.value, start, end, self.ctx.now()))

    def set_frequency_cap(
        self, sid: UUID, per_day: int, per_week: int, over_cap: str = "defer"
    ) -> None:
        self._command(
            sid, lambda x: x.set_frequency_cap(per_day, per_week, over_cap, self.ctx.now())
        )

    def view(self, sid: UUID) -> SenderView:
        with self.uow.read():
            x = self.get(sid)
        return SenderView(
            id=x.id,
            tenant=x.tenant,
            display_name=x.display_name,
            industry=x.industry,
            sms_sender_id=x.sms_sender_id,
            contact=x.contact,
            vetting={k: val.value for k, val in x.vetting.items()},
            verified=x.verified,
            suspended=x.suspended,
            closed=x.closed,
        )
