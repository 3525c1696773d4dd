"""Replies: a customer's answer goes to the flow its message belongs to.

A fraud alert's answer to the fraud flow, a safety check's to its broadcast;
an opt-out keyword (or code) in reply to any of a sender's notices withdraws
the marketing consent with that sender at once (特定電子メール法) and
confirms once.
"""

from __future__ import annotations

from tsuchi.application.consents import Consents
from tsuchi.application.context import Context
from tsuchi.application.flows import broadcasts, fraud
from tsuchi.application.flows.broadcasts import Broadcasts
from tsuchi.application.flows.fraud import Fraud
from tsuchi.application.notices import Notices
from tsuchi.application.templates import Templates
from tsuchi.domain.message import Message
from tsuchi.domain.values import Purpose
from tsuchi.infrastructure.sql import Session
from tsuchi.policies.replies import is_opt_out


class Replies:
    def __init__(
        self,
        ctx: Context,
        fraud: Fraud,
        broadcasts: Broadcasts,
        consents: Consents,
        notices: Notices,
        templates: Templates,
    ) -> None:
        self.ctx = ctx
        self.fraud = fraud
        self.broadcasts = broadcasts
        self.consents = consents
        self.notices = notices
        self.templates = templates

    def on_reply(self, s: Session, m: Message, text: str, postback: str) -> None:
        """Route a reply to the flow its message belongs to."""
        if m.correlation_id.startswith(fraud.CORRELATION_PREFIX) and m.purpose is Purpose.SECURITY:
            self.fraud.on_reply(s, m, text, postback)
        elif m.correlation_id.startswith(broadcasts.CORRELATION_PREFIX):
            self.broadcasts.on_reply(s, m, text, postback)
        if is_opt_out(text, self.ctx.settings.opt_out_keywords, postback):
            self.opt_out(s, m)

    def opt_out(self, s: Session, m: Message) -> None:
        """Withdraw the account's marketing consent with ``m``'s sender (a
        refusal written in answer to any of its messages) and confirm once."""
        consent = self.consents.find(m.account_id, m.sender_id, Purpose.MARKETING)
        if consent is None or not consent.granted:
            return  # already refused: confirm only once
        consent.withdraw("reply keyword", self.ctx.now())
        self.consents.save(s, consent)
        tpl = self.templates.find(m.sender_id, self.ctx.settings.opt_out_confirmation_template)
        if tpl is not None:
            self.notices.request(
                m.sender_id,
                m.account_id,
                tpl.name,
                {},
                idempotency_key=f"opt-out:{consent.id.hex}:{consent.version}",
                correlation_id=f"opt-out:{m.id.hex}",
                requested_by="opt-out",
            )
