"""Personal data duties (APPI): erasure, key rotation, subject access.

Erasure is crypto-shredding: the customer's data keys are destroyed, so every
event still loads with personal fields reading as the erased marker; their
pending messages are cancelled and the blind index forgets them.  The
subject access report gathers everything held about one customer, what
they wrote to us included.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from tsuchi.application import validation as v
from tsuchi.application.accounts import Accounts
from tsuchi.application.consents import Consents
from tsuchi.application.context import Context
from tsuchi.application.notices import Notices
from tsuchi.application.senders import Senders
from tsuchi.application.templates import Templates
from tsuchi.application.unit_of_work import UnitOfWork
from tsuchi.domain.conversation import Conversation, conversation_id
from tsuchi.domain.message import Message
from tsuchi.domain.personal import ERASED, Personal
from tsuchi.domain.values import MessageStatus
from tsuchi.errors import RuleViolation
from tsuchi.infrastructure.sql import Session
from tsuchi.infrastructure.sql import lookup as lookup_table
from tsuchi.infrastructure.sql import outbox as outbox_table
from tsuchi.ports import KeyEncryptionKey

log = logging.getLogger("tsuchi")

SUBJECT_ACCESS_FORMAT = "tsuchi-subject-access/v1"
_PENDING = (MessageStatus.REQUESTED, MessageStatus.DEFERRED, MessageStatus.ROUTED)


class Privacy:
    def __init__(
        self,
        ctx: Context,
        uow: UnitOfWork,
        accounts: Accounts,
        consents: Consents,
        notices: Notices,
        senders: Senders,
        templates: Templates,
    ) -> None:
        self.ctx = ctx
        self.uow = uow
        self.accounts = accounts
        self.consents = consents
        self.notices = notices
        self.senders = senders
        self.templates = templates

    def erase(self, account_id: UUID, requested_by: str) -> int:
        """Erase a customer; returns how many pending messages were cancelled."""
        v.text(requested_by, "requested_by", 100)
        store = self.ctx.store

        def run(s: Session) -> int:
            a = self.accounts.get(account_id)
            self.uow.flush(s)
            cancelled = 0
            # Messages in flight (the gateway has them) are left to their reports.
            for mid_hex in outbox_table.pending_of_account(s, account_id.hex):
                m = self.notices.get(UUID(hex=mid_hex))
                if m.status in _PENDING:
                    m.cancel("account erased", self.ctx.now())
                    self.uow.save_message_now(s, m)
                    cancelled += 1
                outbox_table.delete_message(s, mid_hex)
            a.mark_erased(self.ctx.now(), requested_by)
            self.uow.save(a)
            lookup_table.forget_account(s, account_id.hex)
            store.keys.erase(account_id, self.ctx.now())
            return cancelled

        cancelled = self.uow.run(run)
        self.uow.forget_subject(account_id)  # no decrypted state of the customer stays in memory
        if not self.compact():
            log.warning(
                "account %s erased; storage compaction incomplete (see compact_storage)",
                account_id,
            )
        log.info("account %s erased; %d pending messages cancelled", account_id, cancelled)
        return cancelled

    def compact(self) -> bool:
        """Push erased key material out of old page images; whether it completed."""
        return self.ctx.store.compact_after_erasure()

    def rotate_subject_key(self, account_id: UUID) -> int:
        def run(s: Session) -> int:
            if self.accounts.get(account_id).erased:
                raise RuleViolation("account_erased", "an erased account has no keys")
            return self.ctx.store.keys.rotate_subject(account_id, self.ctx.now())

        return self.uow.run(run)

    def rewrap_data_keys(self, new_kek: KeyEncryptionKey) -> int:
        store = self.ctx.store

        def run(s: Session) -> int:
            n = store.keys.rewrap_all(new_kek)
            store.set_kek_id(new_kek.key_id)
            return n

        old = store.keys.kek
        try:
            return self.uow.run(run)
        except Exception:
            store.keys.kek = old
            raise

    def subject_access_report(self, account_id: UUID) -> dict[str, Any]:
        with self.uow.read() as s:
            a = self.accounts.get(account_id)
            consents = self.consents.of_account(s, account_id)
            messages = [self.notices.get(i) for i in self.notices.ids(account_id=account_id)]
            senders = {c.sender_id for c in consents} | {m.sender_id for m in messages}
            sender_names = {i: self.senders.get(i).display_name for i in senders}
            message_docs = [self._message_document(m, sender_names) for m in messages]
            conversation = self.uow.find(Conversation, conversation_id(account_id))
        return {
            "format": SUBJECT_ACCESS_FORMAT,
            "generated_at": self.ctx.now().isoformat(),
            "account": {
                "id": str(a.id),
                "tenant": a.tenant,
                "customer_ref": a.customer_ref.shown(),
                "mobile": a.mobile.shown(),
                "name": a.name.shown(),
                "carrier": a.carrier.value,
                "plus_message_capability": a.capability.value,
                "time_zone": a.time_zone,
                "language": a.language,
                "registered_at": a.registered_at.isoformat(),
                "closed": a.closed,
                "erased": a.erased,
            },
            "consents": [
                {
                    "id": str(c.id),
                    "sender": sender_names[c.sender_id],
                    "purpose": c.purpose.value,
                    "granted": c.granted,
                    "history": [
                        {
                            "version": h.version,
                            "action": h.action,
                            "at": h.at.isoformat(),
                            "source": h.source,
                            "wording": h.wording,
                            "by": h.by.shown() if h.by is not None else None,
                        }
                        for h in c.history
                    ],
                }
                for c in consents
            ],
            "messages": message_docs,
            "inbound": [
                {
                    "at": e.at.isoformat(),
                    "channel": e.channel,
                    "text": e.text.shown() if e.text is not None else "",
                    "media": [
                        {
                            "url": f["url"].shown() if isinstance(f["url"], Personal) else ERASED,
                            "mime_type": f.get("mime_type", ""),
                        }
                        for f in e.media
                    ],
                    "answered_message": str(e.message_id) if e.message_id else None,
                }
                for e in (conversation.inbound if conversation is not None else [])
            ],
            "operator_replies": [
                {
                    "at": r.at.isoformat(),
                    "channel": r.channel,
                    "text": r.text.shown() if r.text is not None else ERASED,
                    "operator": r.operator,
                    "status": r.status,
                }
                for r in (conversation.replies if conversation is not None else [])
            ],
        }

    def _message_document(self, m: Message, sender_names: dict[UUID, str]) -> dict[str, Any]:
        version = self.templates.get(m.sender_id, m.template_name).get_version(m.template_version)
        values = {k: x.shown() if isinstance(x, Personal) else x for k, x in m.variables.items()}
        plus_message, sms = version.bodies(values)
        return {
            "id": str(m.id),
            "sender": sender_names[m.sender_id],
            "template": f"{m.template_name} v{m.template_version}",
            "purpose": m.purpose.value,
            "urgency": m.urgency.value,
            "status": m.status.value,
            "requested_at": m.requested_at.isoformat(),
            "content": {"plus_message": plus_message, "sms": sms},
            "authorisation": m.authorisation,
            "timeline": [
                {
                    "at": t.at.isoformat(),
                    "status": t.status,
                    "attempt": t.attempt,
                    "detail": t.detail,
                }
                for t in m.timeline
            ],
            "replies": [
                {"at": at.isoformat(), "text": text.shown() if text else ERASED}
                for at, text in m.replies
            ],
        }
