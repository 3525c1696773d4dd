"""Templates: versioned bodies a sender drafts, a second person approves, and
notices render.

Marketing templates must carry the advertising duties (sender name, how to
refuse, a contact) before they can be approved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from tsuchi.application import validation as v
from tsuchi.application.context import Context
from tsuchi.application.senders import Senders
from tsuchi.application.unit_of_work import UnitOfWork
from tsuchi.domain.suggestions import Suggestion
from tsuchi.domain.template import Template, VariableType, template_id
from tsuchi.domain.values import Purpose
from tsuchi.errors import InvalidInput, UnknownTemplate
from tsuchi.infrastructure.sql import Session
from tsuchi.policies.marketing_law import check_advertising_duties


class Templates:
    def __init__(self, ctx: Context, uow: UnitOfWork, senders: Senders) -> None:
        self.ctx = ctx
        self.uow = uow
        self.senders = senders

    def get(self, sender_id: UUID, name: str) -> Template:
        """The template, inside a unit of work; :class:`UnknownTemplate` if none."""
        t = self.find(sender_id, name)
        if t is None:
            raise UnknownTemplate(name)
        return t

    def find(self, sender_id: UUID, name: str) -> Template | None:
        return self.uow.find(Template, template_id(sender_id, name))

    def draft(
        self,
        sender_id: UUID,
        name: str,
        *,
        purpose: str,
        plus_message_text: str,
        sms_text: str,
        variables: dict[str, str] | None = None,
        suggestions: Sequence[str | Suggestion] = (),
        author: str,
        attachments: list[dict[str, Any]] | None = None,
    ) -> int:
        Template.check_name(name)
        p = v.purpose(purpose)
        v.text(author, "author", 100)
        if isinstance(suggestions, str) or not isinstance(suggestions, (tuple, list)):
            raise InvalidInput(
                "suggestions", "must be a list of labels or Suggestion values, not a string"
            )
        if self.ctx.settings.gateway == "cm":
            for i, a in enumerate(attachments or []):
                if isinstance(a, dict) and a.get("kind") == "stamp":
                    # CM.com's message API documents no stamp (sticker) content type.
                    raise InvalidInput(f"attachments[{i}].kind", "CM.com cannot send stamps")
        try:
            vars_typed = {k: VariableType(t) for k, t in (variables or {}).items()}
        except ValueError:
            raise InvalidInput(
                "variables", f"types: {', '.join(t.value for t in VariableType)}"
            ) from None

        def run(s: Session) -> int:
            self.senders.get(sender_id).check_active()
            t = self.find(sender_id, name) or Template(sender_id=sender_id, name=name, purpose=p)
            if t.purpose is not p:
                raise InvalidInput("purpose", "a template keeps the purpose it was created with")
            n = t.draft(
                plus_message_text,
                tuple(suggestions),
                sms_text,
                vars_typed,
                author,
                self.ctx.now(),
                self.ctx.settings.sms_max_parts,
                attachments,
            )
            self.uow.save(t)
            return n

        return self.uow.run(run)

    def approve(self, sender_id: UUID, name: str, version: int, approver: str) -> None:
        v.text(approver, "approver", 100)

        def run(s: Session) -> None:
            t = self.get(sender_id, name)
            if t.purpose is Purpose.MARKETING:
                sender = self.senders.get(sender_id)
                tv = t.get_version(version)
                check_advertising_duties(
                    {"plus_message": tv.plus_message_text, "sms": tv.sms_text},
                    sender.display_name,
                    sender.sms_sender_id,
                    sender.contact,
                )
            t.approve(version, approver, self.ctx.now())
            self.uow.save(t)

        self.uow.run(run)

    def retire(self, sender_id: UUID, name: str, version: int) -> None:
        def run(s: Session) -> None:
            t = self.get(sender_id, name)
            t.retire(version, self.ctx.now())
            self.uow.save(t)

        self.uow.run(run)

    def versions(self, sender_id: UUID, name: str) -> dict[int, str]:
        with self.uow.read():
            t = self.find(sender_id, name)
        return {} if t is None else {n: tv.status.value for n, tv in t.versions.items()}
