"""Fraud alerts: the urgent "was this you?" notice and its answer.

Raising an alert opens a case and sends the urgent notice with reply buttons;
"not me" asks for a card block and confirms by a second notice, "it was me"
closes the case, and silence past the escalation time hands the case to the
call centre.  Only the card's last four digits are ever kept (PCI DSS).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from tsuchi.application import validation as v
from tsuchi.application.accounts import Accounts
from tsuchi.application.context import Context
from tsuchi.application.notices import Notices
from tsuchi.application.templates import Templates
from tsuchi.application.unit_of_work import UnitOfWork
from tsuchi.domain.fraud import FraudCase, fraud_case_id
from tsuchi.domain.message import Message
from tsuchi.domain.pci import check_no_card_number
from tsuchi.domain.personal import Personal
from tsuchi.errors import InvalidInput, UnknownFraudCase
from tsuchi.infrastructure.sql import Session
from tsuchi.infrastructure.sql import timers as timers_table
from tsuchi.infrastructure.sql.timers import NewTimer, Timer
from tsuchi.policies.replies import classify_fraud_reply

log = logging.getLogger("tsuchi.flows")

ESCALATION = "fraud_escalation"
CORRELATION_PREFIX = "fraud:"


def _escalation_id(case_id: UUID) -> str:
    return f"escalate:{case_id.hex}"


class Fraud:
    def __init__(
        self,
        ctx: Context,
        uow: UnitOfWork,
        notices: Notices,
        accounts: Accounts,
        templates: Templates,
    ) -> None:
        self.ctx = ctx
        self.uow = uow
        self.notices = notices
        self.accounts = accounts
        self.templates = templates

    def raise_alert(
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
        v.text(merchant, "merchant", 100)
        check_no_card_number(merchant, "merchant")
        if alert_ref is not None:
            v.text(alert_ref, "alert_ref", 200)
            check_no_card_number(alert_ref, "alert_ref")
        ref = alert_ref or f"{account_id.hex}:{card_last4}:{at.isoformat()}:{amount}"
        cid = fraud_case_id(sender_id, ref)
        settings = self.ctx.settings

        def run(s: Session) -> UUID:
            case = self.uow.find(FraudCase, cid)
            if case is not None and case.message_id is not None:
                return cid
            account = self.accounts.get(account_id)
            if case is None:
                case = FraudCase(
                    sender_id=sender_id,
                    alert_ref=Personal(account_id, ref),
                    account_id=account_id,
                    card_last4=card_last4,
                    merchant=Personal(account_id, merchant),
                    amount=amount,
                    occurred_at=at,
                    at=self.ctx.now(),
                )
            tpl = self.templates.get(sender_id, settings.fraud_alert_template)
            declared = tpl.latest_approved().variables
            values: dict[str, Any] = {"last4": card_last4, "merchant": merchant, "amount": amount}
            if "when" in declared:
                values["when"] = at.astimezone(ZoneInfo(account.time_zone)).strftime("%m/%d %H:%M")
            if "name" in declared:
                values["name"] = account.name.reveal()
            values = {k: val for k, val in values.items() if k in declared}
            view = self.notices.request(
                sender_id,
                account_id,
                settings.fraud_alert_template,
                values,
                idempotency_key=f"fraud:{cid.hex}",
                urgency="urgent",
                correlation_id=f"{CORRELATION_PREFIX}{cid.hex}",
                requested_by="fraud-alert",
            )
            case.alert_sent(view.id, self.ctx.now())
            self.uow.save(case)
            self.uow.schedule(
                s,
                [
                    NewTimer(
                        _escalation_id(cid),
                        ESCALATION,
                        self.ctx.now() + settings.fraud_escalate_after,
                        {"case_id": cid.hex},
                    )
                ],
            )
            return cid

        return self.uow.run(run)

    def case(self, case_id: UUID) -> FraudCase:
        with self.uow.read():
            case = self.uow.find(FraudCase, case_id)
        if case is None:
            raise UnknownFraudCase(str(case_id))
        return case

    def summary(self, case_id: UUID) -> dict[str, Any]:
        """The case as a host reads it: state, account, card, message."""
        case = self.case(case_id)
        return {
            "id": str(case.id),
            "state": case.state,
            "account_id": str(case.account_id),
            "card_last4": case.card_last4,
            "message_id": str(case.message_id),
        }

    def fire_escalation(self, s: Session, t: Timer) -> None:
        case = self.uow.find(FraudCase, UUID(hex=t.payload["case_id"]))
        if case is not None and case.open:
            case.escalate(self.ctx.now())
            self.uow.save(case)
            log.info("fraud case %s escalated to the call centre", case.id)

    def on_reply(self, s: Session, m: Message, text: str, postback: str) -> None:
        """The customer answered the alert: close, or block and confirm."""
        case = self.uow.find(FraudCase, UUID(hex=m.correlation_id.split(":", 1)[1]))
        if case is None or not case.open:
            return
        answer = classify_fraud_reply(text, postback)
        if answer == "unclear":
            return
        case.answer(answer, self.ctx.now())
        self.uow.save(case)
        self.uow.flush(s)
        timers_table.cancel(s, [_escalation_id(case.id)])
        if answer != "not_me":
            return
        log.info("fraud case %s: card block requested", case.id)
        tpl = self.templates.find(case.sender_id, self.ctx.settings.fraud_confirmation_template)
        if tpl is None:
            return
        declared = tpl.latest_approved().variables
        values = {k: val for k, val in {"last4": case.card_last4}.items() if k in declared}
        self.notices.request(
            case.sender_id,
            case.account_id,
            tpl.name,
            values,
            idempotency_key=f"fraud-confirm:{case.id.hex}",
            urgency="urgent",
            correlation_id=f"{CORRELATION_PREFIX}{case.id.hex}",
            requested_by="fraud-alert",
        )
