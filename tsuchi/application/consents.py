"""Consents: opt-ins and refusals with their evidence (特定電子メール法).

A consent records when and how it was obtained (source, the exact wording
shown, who recorded it); a refusal takes effect at once.  The consent view
(:mod:`tsuchi.infrastructure.sql.consent_view`) lists them without scanning
the event log.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

from tsuchi.application import validation as v
from tsuchi.application.accounts import Accounts
from tsuchi.application.context import Context
from tsuchi.application.senders import Senders
from tsuchi.application.unit_of_work import UnitOfWork
from tsuchi.application.views import ConsentView
from tsuchi.domain.consent import Consent, consent_id
from tsuchi.domain.message import Message
from tsuchi.domain.personal import Personal
from tsuchi.domain.sender import Sender
from tsuchi.domain.values import Purpose
from tsuchi.errors import InvalidInput
from tsuchi.infrastructure.sql import Session
from tsuchi.infrastructure.sql import consent_view as consent_view_table


class Consents:
    def __init__(self, ctx: Context, uow: UnitOfWork, senders: Senders, accounts: Accounts) -> None:
        self.ctx = ctx
        self.uow = uow
        self.senders = senders
        self.accounts = accounts

    def find(self, account_id: UUID, sender_id: UUID, purpose: Purpose) -> Consent | None:
        return self.uow.find(Consent, consent_id(account_id, sender_id, purpose))

    def for_message(self, m: Message) -> Consent | None:
        """The consent a purpose decision needs (none for security notices)."""
        if m.purpose is Purpose.SECURITY:
            return None
        return self.find(m.account_id, m.sender_id, m.purpose)

    def save(self, s: Session, c: Consent) -> None:
        """Store a changed consent and its view row."""
        self.uow.save(c)
        consent_view_table.put(
            s,
            c.id.hex,
            c.account_id.hex,
            c.sender_id.hex,
            c.purpose.value,
            c.granted,
            int(c.version),
            self.ctx.now(),
        )

    def grant(
        self, account_id: UUID, sender_id: UUID, purpose: str, *, source: str, wording: str, by: str
    ) -> int:
        p = v.purpose(purpose)
        Consent.check_purpose_needs_consent(p)
        v.text(source, "evidence.source", 100)
        v.text(wording, "evidence.wording", 2000, multiline=True)
        v.text(by, "evidence.by", 100)

        def run(s: Session) -> int:
            a = self.accounts.get(account_id)
            a.check_open()
            if self.senders.get(sender_id).tenant != a.tenant:
                raise InvalidInput("account_id", "account belongs to another tenant")
            c = self.find(account_id, sender_id, p) or Consent(
                account_id=account_id, sender_id=sender_id, purpose=p
            )
            c.grant(source, wording, Personal(account_id, by), self.ctx.now())
            self.save(s, c)
            return int(c.version)

        return self.uow.run(run)

    def withdraw(self, account_id: UUID, sender_id: UUID, purpose: str, *, source: str) -> None:
        p = v.purpose(purpose)
        Consent.check_purpose_needs_consent(p)
        v.text(source, "source", 100)

        def run(s: Session) -> None:
            self.accounts.get(account_id)
            self.senders.get(sender_id)
            c = self.find(account_id, sender_id, p) or Consent(
                account_id=account_id, sender_id=sender_id, purpose=p
            )
            c.withdraw(source, self.ctx.now())
            self.save(s, c)

        self.uow.run(run)

    def view(self, account_id: UUID, sender_id: UUID, purpose: str) -> ConsentView | None:
        p = v.purpose(purpose)
        with self.uow.read():
            c = self.find(account_id, sender_id, p)
        return None if c is None else ConsentView.of(c)

    def as_of(
        self, account_id: UUID, sender_id: UUID, purpose: str, at: datetime
    ) -> dict[str, Any]:
        p = v.purpose(purpose)
        if p is Purpose.SECURITY:
            return {"purpose": p.value, "granted": True, "rule": "security_always_allowed"}
        with self.uow.read():
            c = self.find(account_id, sender_id, p)
        change = c.state_at(v.aware(at)) if c is not None else None
        default = p is Purpose.TRANSACTIONAL
        return {
            "consent_id": str(c.id) if c is not None else None,
            "purpose": p.value,
            "granted": default if change is None else change.action == "granted",
            "version": None if change is None else change.version,
            "at": None if change is None else change.at.isoformat(),
            "source": None if change is None else change.source,
            "wording": None if change is None else change.wording,
        }

    def of_account(self, s: Session, account_id: UUID) -> list[Consent]:
        """An account's consents, by sender and purpose (inside a unit)."""
        ids = [UUID(hex=h) for h in consent_view_table.of_account(s, account_id.hex)]
        return [c for c in (self.uow.find(Consent, i) for i in ids) if c]

    def register(self) -> Iterator[dict[str, Any]]:
        with self.uow.read() as s:
            ids = consent_view_table.all_ids(s)
        for consent_hex in ids:
            with self.uow.read():
                c = self.uow.find(Consent, UUID(hex=consent_hex))
                sender = self.uow.find(Sender, c.sender_id) if c is not None else None
            if c is None:
                continue
            yield {
                "consent_id": str(c.id),
                "account_id": str(c.account_id),
                "tenant": sender.tenant if sender else "",
                "sender": sender.display_name if sender else str(c.sender_id),
                "purpose": c.purpose.value,
                "status": "granted" if c.granted else "withdrawn",
                "version": int(c.version),
                "history": [
                    {
                        "version": h.version,
                        "action": h.action,
                        "at": h.at.isoformat(),
                        "source": h.source,
                        "wording": h.wording,
                        "by": None if h.by is None else ("erased" if h.by.erased else "recorded"),
                    }
                    for h in c.history
                ],
            }
