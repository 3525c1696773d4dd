"""Conversations: incoming messages (MOs) matched to our notices, and kept
for the host to read.

Matching, in this order:

1. CM's ``messageContext`` (or the MO's ``reference``) names one of our
   messages: the MO answers it.
2. Otherwise the MO answers the latest message sent to the same number
   (found through the blind index of the number, any tenant) if that message
   was routed at most ``reply_window`` (setting, default 7 days) before the
   MO was written (a few minutes of clock skew allowed).

A matched MO is applied as a reply to its message (fraud and safety flows,
keyword opt-out).  An unmatched one with an opt-out keyword still withdraws
the marketing consent with the sender of the number's latest message,
however old.  Every MO from a known customer is recorded in the account's
:class:`~tsuchi.domain.conversation.Conversation`, its text and media
references encrypted under the customer's data key; when several accounts
share the number, an unmatched MO goes to the one our latest message went
to.  An MO from a number no account has (or none ever received a message
among several) is kept only as an orphan under the number's blind-index
digest: no text, no number.

An operator answers in free text with :meth:`Conversations.reply`: only
within ``operator_reply_window`` after the customer last wrote, checked like
a body (length, control characters, no card number), sent to the account's
number on the channel the customer used, from the sender they last talked
to, and recorded with the operator's identity before the gateway is called.
A reply is handed over once: it is not retried and has no fallback.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from uuid import UUID, uuid5

from tsuchi.application import validation as v
from tsuchi.application.accounts import Accounts
from tsuchi.application.context import Context
from tsuchi.application.flows.replies import Replies
from tsuchi.application.inbound import APPLIED, DUPLICATE, ORPHAN, Inbound
from tsuchi.application.notices import Notices
from tsuchi.application.senders import Senders
from tsuchi.application.unit_of_work import UnitOfWork
from tsuchi.application.views import InboundMediaView, InboundView, ReplyResult
from tsuchi.domain.channels import PLUS_MESSAGE_MAX_CHARS, check_plus_message_body, check_sms_body
from tsuchi.domain.conversation import Conversation, conversation_id
from tsuchi.domain.message import Message, gateway_reference, parse_gateway_reference
from tsuchi.domain.mobile import normalise_mobile
from tsuchi.domain.pci import check_no_card_number
from tsuchi.domain.personal import ERASED, Personal
from tsuchi.domain.values import Channel
from tsuchi.errors import InvalidInput, RuleViolation
from tsuchi.infrastructure.cm_callbacks import InboundMessage
from tsuchi.infrastructure.sql import Session
from tsuchi.infrastructure.sql import lookup as lookup_table
from tsuchi.infrastructure.sql import message_view as message_view_table
from tsuchi.infrastructure.sql import orphan_reports as orphan_table
from tsuchi.policies.replies import is_opt_out
from tsuchi.ports import Gateway, StatusReport, Submission

log = logging.getLogger("tsuchi")

CHANNELS = {"RCS": Channel.PLUS_MESSAGE, "SMS": Channel.SMS}
"""CM's ``channel`` of an MO and the channel an operator's answer goes back on."""

CLOCK_SKEW = timedelta(minutes=5)
"""An MO may carry a time a little before the send recorded by our clock."""


def _e164(number: str) -> str:
    """CM writes numbers as ``00`` + country code; the blind index keys E.164."""
    n = number.strip()
    return "+" + n[2:] if n.startswith("00") else n


def ours(reference: str | None) -> UUID | None:
    """The message a gateway reference names, if it is one of ours."""
    if not reference:
        return None
    try:
        return parse_gateway_reference(reference)[0]
    except ValueError:
        return None


class Conversations:
    def __init__(
        self,
        ctx: Context,
        uow: UnitOfWork,
        gateway: Gateway,
        senders: Senders,
        accounts: Accounts,
        notices: Notices,
        inbound: Inbound,
        replies: Replies,
    ) -> None:
        self.ctx = ctx
        self.uow = uow
        self.gateway = gateway
        self.senders = senders
        self.accounts = accounts
        self.notices = notices
        self.inbound = inbound
        self.replies = replies

    def number_digest(self, mo: InboundMessage) -> str:
        """The blind-index digest of the MO's number.  A number that is no
        Japanese mobile number (a foreign one) can belong to no account: its
        digest is taken as written, so it is kept as an orphan, not refused
        (CM would retry a refused MO for a month)."""
        e164 = _e164(mo.number)
        try:
            e164 = normalise_mobile(e164)
        except InvalidInput:
            pass
        return self.ctx.digest(lookup_table.MOBILE, e164)

    def receive(self, s: Session, mo: InboundMessage, digest: str) -> str:
        """Match, apply and record one MO (inside the caller's unit of work):
        "applied", "duplicate" or "orphan"."""
        now = self.ctx.now()
        named = next((r for r in (mo.context, mo.reference) if ours(r) is not None), None)
        holders = lookup_table.find(s, lookup_table.MOBILE, digest)
        # The same MO again (CM retries): the same key, whatever it matched.
        raw_key = f"{digest}\0{mo.reference}\0{mo.at.isoformat()}\0{mo.text}"
        key = self.ctx.digest("mo", raw_key)[:32]
        if named is None and self._seen(holders, key):
            return DUPLICATE  # CM retried it (the latest message may have changed since)
        m: Message | None = None
        outcome = ORPHAN
        if named is not None:
            outcome = self.inbound.apply(s, StatusReport(named, "reply", mo.at, text=mo.text))
            mid = ours(named)
            m = self.notices.find(mid) if mid is not None else None
        else:
            latest = message_view_table.latest_sent_to(s, holders, mo.at + CLOCK_SKEW)
            if latest is not None:
                candidate = self.notices.find(UUID(hex=latest[0]))
                if latest[2] >= mo.at - self.ctx.settings.reply_window and candidate:
                    m = candidate
                    outcome = self.inbound.apply(s, self._report(m, mo))
                elif candidate is not None and self._opts_out(mo):
                    self.replies.opt_out(s, candidate)
            if m is None and (latest is not None or len(holders) == 1):
                account_hex = latest[1] if latest is not None else holders[0]
                return self._record(UUID(hex=account_hex), mo, None, now, key)
        if m is not None:
            recorded = self._record(m.account_id, mo, m.id, now, key)
            return outcome if outcome != DUPLICATE else recorded
        if named is None:
            kind = "no_context" if holders else "unknown_number"
            orphan_table.keep(s, f"mo:{digest[:72]}", "inbound", kind, mo.at, now)
            log.info("incoming message matched no message; kept by number digest only")
        return outcome

    def _seen(self, account_hexes: list[str], key: str) -> bool:
        for account_hex in account_hexes:
            conv = self.uow.find(Conversation, conversation_id(UUID(hex=account_hex)))
            if conv is not None and key in conv.seen:
                return True
        return False

    def _opts_out(self, mo: InboundMessage) -> bool:
        return is_opt_out(mo.text, self.ctx.settings.opt_out_keywords)

    @staticmethod
    def _report(m: Message, mo: InboundMessage) -> StatusReport:
        attempt = m.current.number if m.current is not None else 1
        return StatusReport(gateway_reference(m.id, attempt), "reply", mo.at, text=mo.text)

    def _record(
        self, account_id: UUID, mo: InboundMessage, mid: UUID | None, now: datetime, key: str
    ) -> str:
        account = self.accounts.get(account_id)
        if account.erased:
            return DUPLICATE
        conv = self.uow.find(Conversation, conversation_id(account_id))
        if conv is None:
            conv = Conversation(account_id=account_id, tenant=account.tenant, at=now)
        media = [
            {
                "url": Personal(account_id, f.url),
                "mime_type": f.mime_type,
                "name": Personal(account_id, f.name) if f.name else None,
                "size_bytes": None,
            }
            for f in mo.media
        ]
        text = Personal(account_id, mo.text) if mo.text else None
        new = conv.receive(text, media, mo.channel, mo.at, now, mid, key)
        if new:
            self.uow.save(conv)
        return APPLIED if new else DUPLICATE

    # -- operator replies ---------------------------------------------------------------
    def reply(self, account_id: UUID, text: str, operator: str) -> ReplyResult:
        """Answer the customer in free text (see :meth:`Engine.reply`)."""
        v.text(operator, "operator", 100)
        v.text(text, "text", PLUS_MESSAGE_MAX_CHARS, multiline=True)
        check_no_card_number(text, "text")
        window = self.ctx.settings.operator_reply_window

        def prepare(s: Session) -> tuple[Submission, int]:
            account = self.accounts.get(account_id)
            account.check_open()
            conv = self.uow.find(Conversation, conversation_id(account_id))
            if conv is None:
                raise RuleViolation("no_inbound", "the customer has not written; nothing to answer")
            last = conv.check_reply_window(self.ctx.now(), window)
            channel = CHANNELS.get(last.channel.upper())
            if channel is None:
                raise RuleViolation("channel_unsupported", "only RCS and SMS can be answered")
            if channel is Channel.PLUS_MESSAGE:
                check_plus_message_body(text, (), "text")
            else:
                check_sms_body(text, self.ctx.settings.sms_max_parts, "text")
            sender = self.senders.get(self._sender_of(conv))
            sender.check_active()
            n = len(conv.replies) + 1
            reference = gateway_reference(uuid5(conv.id, f"reply/{n}"), 1)
            conv.request_reply(
                Personal(account_id, text),
                operator,
                channel.value,
                sender.id,
                reference,
                self.ctx.now(),
            )
            self.uow.save(conv)
            sub = Submission(
                reference=reference,
                channel=channel,
                carrier=account.carrier,
                sender_name=sender.display_name,
                sms_sender_id=sender.sms_sender_id,
                to=account.mobile.reveal(),
                text=text,
                max_parts=None
                if channel is Channel.PLUS_MESSAGE
                else self.ctx.settings.sms_max_parts,
            )
            return sub, n

        sub, n = self.uow.run(prepare)
        # The gateway is called after the reply is recorded, never inside a unit.
        try:
            [result] = self.gateway.submit([sub])
        except Exception as exc:
            self._record_submission(account_id, n, False, type(exc).__name__)
            raise
        self._record_submission(account_id, n, result.accepted, result.code)
        return ReplyResult(sub.reference, sub.channel, result.accepted, result.code)

    def _record_submission(self, account_id: UUID, n: int, accepted: bool, code: str) -> None:
        def run(s: Session) -> None:
            conv = self.uow.find(Conversation, conversation_id(account_id))
            assert conv is not None
            conv.record_submission(n, accepted, code[:32], self.ctx.now())
            self.uow.save(conv)

        self.uow.run(run)

    def _sender_of(self, conv: Conversation) -> UUID:
        """The sender the customer was talking to: of the notice they last
        answered, else of the latest notice sent to the account."""
        for entry in reversed(conv.inbound):
            if entry.message_id is not None:
                m = self.notices.find(entry.message_id)
                if m is not None:
                    return m.sender_id
        ids = self.notices.ids(account_id=conv.account_id)
        if not ids:
            raise RuleViolation("no_sender", "no notice was ever sent to this customer")
        return self.notices.get(ids[-1]).sender_id

    # -- reading ----------------------------------------------------------------------
    def of_account(self, account_id: UUID) -> list[InboundView]:
        """What the customer wrote, oldest first (see :meth:`Engine.inbound`)."""
        with self.uow.read():
            self.accounts.get(account_id)
            conv = self.uow.find(Conversation, conversation_id(account_id))
        return [] if conv is None else inbound_views(conv)


def _shown(value: object) -> tuple[str, bool]:
    if isinstance(value, Personal):
        return value.shown(), value.erased
    return "", False


def inbound_views(conv: Conversation) -> list[InboundView]:
    """The conversation's MOs as frozen views (personal fields decrypted)."""
    out: list[InboundView] = []
    for e in conv.inbound:
        text, erased = _shown(e.text)
        media = []
        for f in e.media:
            url, url_erased = _shown(f.get("url"))
            name, _ = _shown(f.get("name"))
            erased = erased or url_erased
            media.append(
                InboundMediaView(
                    url=url,
                    mime_type=str(f.get("mime_type", "")),
                    name=name,
                    size_bytes=f.get("size_bytes"),
                )
            )
        out.append(
            InboundView(
                at=e.at,
                received_at=e.received_at,
                channel=e.channel,
                text=ERASED if erased and not text else text,
                media=tuple(media),
                message_id=e.message_id,
                erased=erased,
            )
        )
    return out
