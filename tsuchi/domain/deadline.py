"""The Deadline aggregate: a date the customer must not miss.

Card expiry, payment due dates, mileage expiry and document deadlines share
one mechanism: registering a deadline schedules reminders at configured
offsets before it (e.g. 60, 30 and 7 days); renewal or closing cancels the
ones still pending.  The reference is the host's opaque id of the card,
invoice or contract; personal data never goes here.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from tsuchi.errors import InvalidInput, RuleViolation

DEADLINE_NAMESPACE = uuid5(NAMESPACE_URL, "https://tsuchi.example/deadline")
KINDS = ("card_expiry", "payment_due", "mileage_expiry", "document_deadline")


def deadline_id(sender_id: UUID, kind: str, reference: str) -> UUID:
    return uuid5(DEADLINE_NAMESPACE, f"{sender_id}/{kind}/{reference}")


class Deadline(Aggregate):
    @staticmethod
    def create_id(sender_id: UUID, kind: str, reference: str, **_: Any) -> UUID:
        return deadline_id(sender_id, kind, reference)

    @staticmethod
    def check_spec(kind: str, reference: str, offsets_days: list[int]) -> None:
        if kind not in KINDS:
            raise InvalidInput("kind", f"must be one of {', '.join(KINDS)}")
        if not reference or len(reference) > 64:
            raise InvalidInput("reference", "1 to 64 characters")
        if not offsets_days or any(
            not isinstance(o, int) or o < 0 or o > 3650 for o in offsets_days
        ):
            raise InvalidInput("offsets_days", "one or more whole days between 0 and 3650")

    @event("Registered")
    def __init__(
        self,
        sender_id: UUID,
        kind: str,
        reference: str,
        account_id: UUID,
        due: date,
        template: str,
        variables: dict[str, str],
        offsets_days: list[int],
        at: datetime,
    ) -> None:
        self.sender_id = sender_id
        self.kind = kind
        self.reference = reference
        self.account_id = account_id
        self.due = due
        self.template = template
        self.variables = variables
        self.offsets_days = sorted(set(offsets_days), reverse=True)
        self.cancelled: str | None = None
        self.reminders: dict[int, str] = {}  # offset -> message id

    def cancel(self, reason: str, at: datetime) -> None:
        if self.cancelled is not None:
            raise RuleViolation("deadline_cancelled", f"already cancelled ({self.cancelled})")
        self._cancelled(reason=reason, at=at)

    def record_reminder(self, offset: int, message_id: UUID, late: bool, at: datetime) -> None:
        if offset not in self.reminders:
            self._reminded(offset=offset, message_id=str(message_id), late=late, at=at)

    @event("Cancelled")
    def _cancelled(self, reason: str, at: datetime) -> None:
        self.cancelled = reason

    @event("Reminded")
    def _reminded(self, offset: int, message_id: str, late: bool, at: datetime) -> None:
        self.reminders[offset] = message_id
