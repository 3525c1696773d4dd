"""The FraudCase aggregate: one suspicious card transaction and the customer's answer.

An urgent +Message asks "was this you?" with two reply buttons.  "Not me"
requests a card block from the host (``CardBlockRequested``) and a
confirmation to the customer; no answer in time requires a call from the call
centre (``EscalationRequired``).  The host reads these events to act.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from tsuchi.domain.personal import Personal

FRAUD_NAMESPACE = uuid5(NAMESPACE_URL, "https://tsuchi.example/fraud")


def fraud_case_id(sender_id: UUID, alert_ref: str) -> UUID:
    return uuid5(FRAUD_NAMESPACE, f"{sender_id}/{alert_ref}")


class FraudCase(Aggregate):
    @staticmethod
    def create_id(sender_id: UUID, alert_ref: str | Personal, **_: Any) -> UUID:
        ref = alert_ref.reveal() if isinstance(alert_ref, Personal) else alert_ref
        return fraud_case_id(sender_id, ref)

    # ``alert_ref`` and ``merchant`` are the host's free text (a merchant may be
    # a person, a reference may carry a number): personal data of the
    # customer, encrypted and erased with them.  Cases opened before that
    # carry plain strings.
    @event("Opened")
    def __init__(
        self,
        sender_id: UUID,
        alert_ref: str | Personal,
        account_id: UUID,
        card_last4: str,
        merchant: str | Personal,
        amount: int,
        occurred_at: datetime,
        at: datetime,
    ) -> None:
        self.sender_id = sender_id
        self.alert_ref = alert_ref
        self.account_id = account_id
        self.card_last4 = card_last4
        self.merchant = merchant
        self.amount = amount
        self.occurred_at = occurred_at
        self.state = "open"
        self.message_id: UUID | None = None

    @property
    def open(self) -> bool:
        return self.state == "open"

    def alert_sent(self, message_id: UUID, at: datetime) -> None:
        if self.message_id is None:
            self._alert_sent(message_id=message_id, at=at)

    def answer(self, answer: str, at: datetime) -> None:
        """``answer``: "me" or "not_me"; later answers after a decision are ignored."""
        if not self.open:
            return
        if answer == "me":
            self._confirmed_by_customer(at=at)
        elif answer == "not_me":
            self._card_block_requested(
                account_id=self.account_id, card_last4=self.card_last4, at=at
            )

    def escalate(self, at: datetime) -> None:
        if self.open:
            self._escalation_required(account_id=self.account_id, at=at)

    @event("AlertSent")
    def _alert_sent(self, message_id: UUID, at: datetime) -> None:
        self.message_id = message_id

    @event("ConfirmedByCustomer")
    def _confirmed_by_customer(self, at: datetime) -> None:
        self.state = "confirmed"

    @event("CardBlockRequested")
    def _card_block_requested(self, account_id: UUID, card_last4: str, at: datetime) -> None:
        self.state = "card_block_requested"

    @event("EscalationRequired")
    def _escalation_required(self, account_id: UUID, at: datetime) -> None:
        self.state = "escalated"
