"""The Consent aggregate: one per (account, sender, purpose).

Under 特定電子メール法 a marketing message needs prior opt-in with a kept
record of when and how consent was obtained (or the exact wording shown).
Every grant carries that evidence; every withdrawal its source; the full
history stays in the event log, so the state at any past moment can be
reconstructed.  ``security`` notices need no consent and cannot be refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from tsuchi.domain.personal import Personal
from tsuchi.domain.values import Purpose
from tsuchi.errors import InvalidInput, RuleViolation

CONSENT_NAMESPACE = uuid5(NAMESPACE_URL, "https://tsuchi.example/consent")


@dataclass(frozen=True)
class ConsentChange:
    """One entry of a consent's history."""

    version: int
    action: str  # "granted" | "withdrawn"
    at: datetime
    source: str
    wording: str
    by: Personal | None


def consent_id(account_id: UUID, sender_id: UUID, purpose: Purpose) -> UUID:
    return uuid5(CONSENT_NAMESPACE, f"{account_id}/{sender_id}/{purpose.value}")


class Consent(Aggregate):
    @staticmethod
    def create_id(account_id: UUID, sender_id: UUID, purpose: Purpose) -> UUID:
        return consent_id(account_id, sender_id, Purpose(purpose))

    @event("Opened")
    def __init__(self, account_id: UUID, sender_id: UUID, purpose: Purpose) -> None:
        self.account_id = account_id
        self.sender_id = sender_id
        self.purpose = Purpose(purpose)
        self.granted = False
        self.history: list[ConsentChange] = []

    @staticmethod
    def check_purpose_needs_consent(purpose: Purpose) -> None:
        if purpose is Purpose.SECURITY:
            raise RuleViolation(
                "security_not_optional",
                "security notices are always allowed and cannot be granted or refused",
            )

    def grant(self, source: str, wording: str, by: Personal, at: datetime) -> None:
        if not source.strip():
            raise InvalidInput("evidence.source", "is required")
        if not wording.strip():
            raise InvalidInput("evidence.wording", "the wording or its version is required")
        self._granted(source=source, wording=wording, by=by, at=at)

    def withdraw(self, source: str, at: datetime) -> None:
        if not source.strip():
            raise InvalidInput("source", "is required")
        if self.granted or not self.history:  # a refusal before any grant counts too
            self._withdrawn(source=source, at=at)

    def state_at(self, moment: datetime) -> ConsentChange | None:
        """The last change at or before ``moment`` (None: never granted then)."""
        last = None
        for change in self.history:
            if change.at <= moment:
                last = change
        return last

    @event("Granted")
    def _granted(self, source: str, wording: str, by: Personal, at: datetime) -> None:
        self.granted = True
        self.history.append(ConsentChange(self.version + 1, "granted", at, source, wording, by))

    @event("Withdrawn")
    def _withdrawn(self, source: str, at: datetime) -> None:
        self.granted = False
        self.history.append(ConsentChange(self.version + 1, "withdrawn", at, source, "", None))
