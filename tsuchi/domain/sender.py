"""The Sender aggregate: an official business account (公式アカウント).

Its id derives from (tenant, SMS sender id), so registering the same official
account twice yields the same sender.  A sender is vetted separately by each
+Message carrier.  It is *verified* when at least one carrier approved it,
and it can only use +Message on the carriers that approved it.  Suspension
stops all sending until reinstated; closing is final.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from tsuchi.domain.values import VETTING_CARRIERS, Carrier, VettingStatus
from tsuchi.errors import InvalidInput, RuleViolation, SenderNotActive

SENDER_NAMESPACE = uuid5(NAMESPACE_URL, "https://tsuchi.example/sender")


def sender_id(tenant: str, sms_sender_id: str) -> UUID:
    return uuid5(SENDER_NAMESPACE, f"{tenant}/{sms_sender_id}")


class Sender(Aggregate):
    @staticmethod
    def create_id(tenant: str, sms_sender_id: str, **_: Any) -> UUID:
        return sender_id(tenant, sms_sender_id)

    @event("Registered")
    def __init__(
        self,
        tenant: str,
        display_name: str,
        industry: str,
        sms_sender_id: str,
        contact: str,
        at: datetime,
    ) -> None:
        self.tenant = tenant
        self.display_name = display_name
        self.industry = industry
        self.sms_sender_id = sms_sender_id
        self.contact = contact
        self.registered_at = at
        self.vetting: dict[str, VettingStatus] = {}
        self.suspended = False
        self.closed = False
        self.quiet_hours: dict[str, tuple[str, str]] = {}  # purpose -> ("HH:MM", "HH:MM")
        self.frequency_cap: dict[str, Any] | None = None

    # -- queries -----------------------------------------------------------
    @property
    def verified(self) -> bool:
        return any(s is VettingStatus.APPROVED for s in self.vetting.values())

    @property
    def active(self) -> bool:
        return not self.suspended and not self.closed

    def approved_on(self, carrier: Carrier) -> bool:
        return self.vetting.get(carrier.value) is VettingStatus.APPROVED

    # -- invariants ----------------------------------------------------------
    def check_not_closed(self) -> None:
        if self.closed:
            raise SenderNotActive("sender_closed", "the sender account is closed")

    def check_active(self) -> None:
        self.check_not_closed()
        if self.suspended:
            raise SenderNotActive("sender_suspended", "the sender account is suspended")

    @staticmethod
    def check_vetting_carrier(carrier: Carrier) -> None:
        if carrier not in VETTING_CARRIERS:
            raise InvalidInput("carrier", "vetting is done by docomo, au or softbank only")

    # -- commands ------------------------------------------------------------
    def submit_vetting(self, carrier: Carrier, at: datetime) -> None:
        self.check_not_closed()
        self.check_vetting_carrier(carrier)
        if self.vetting.get(carrier.value) is VettingStatus.APPROVED:
            raise RuleViolation("already_approved", f"already approved on {carrier.value}")
        self._vetting_submitted(carrier=carrier.value, at=at)

    def decide_vetting(
        self, carrier: Carrier, approved: bool, at: datetime, note: str = ""
    ) -> None:
        self.check_not_closed()
        self.check_vetting_carrier(carrier)
        if self.vetting.get(carrier.value) is not VettingStatus.SUBMITTED:
            raise RuleViolation("not_submitted", f"no pending vetting on {carrier.value}")
        if approved:
            self._vetting_approved(carrier=carrier.value, at=at)
        else:
            self._vetting_rejected(carrier=carrier.value, at=at, note=note)

    def suspend(self, reason: str, at: datetime) -> None:
        self.check_active()
        self._suspended(reason=reason, at=at)

    def reinstate(self, at: datetime) -> None:
        self.check_not_closed()
        if not self.suspended:
            raise RuleViolation("not_suspended", "the sender is not suspended")
        self._reinstated(at=at)

    def close(self, at: datetime) -> None:
        self.check_not_closed()
        self._closed(at=at)

    def set_quiet_hours(self, purpose: str, start: str, end: str, at: datetime) -> None:
        """Allowed sending window (recipient-local) for one purpose."""
        self.check_not_closed()
        for name, value in (("quiet_hours.start", start), ("quiet_hours.end", end)):
            if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
                raise InvalidInput(name, "must be HH:MM (24-hour)")
        if start == end:
            raise InvalidInput("quiet_hours", "the sending window must not be empty")
        self._quiet_hours_set(purpose=purpose, start=start, end=end, at=at)

    def set_frequency_cap(self, per_day: int, per_week: int, over_cap: str, at: datetime) -> None:
        """Marketing frequency cap per account; over-cap notices are deferred or dropped."""
        self.check_not_closed()
        if (
            not (isinstance(per_day, int) and isinstance(per_week, int))
            or per_day < 1
            or (per_week < per_day)
        ):
            raise InvalidInput("frequency_cap", "per_day >= 1 and per_week >= per_day")
        if over_cap not in ("defer", "drop"):
            raise InvalidInput("frequency_cap.over_cap", "must be defer or drop")
        self._frequency_cap_set(per_day=per_day, per_week=per_week, over_cap=over_cap, at=at)

    # -- events ----------------------------------------------------------------
    @event("VettingSubmitted")
    def _vetting_submitted(self, carrier: str, at: datetime) -> None:
        self.vetting[carrier] = VettingStatus.SUBMITTED

    @event("VettingApproved")
    def _vetting_approved(self, carrier: str, at: datetime) -> None:
        self.vetting[carrier] = VettingStatus.APPROVED

    @event("VettingRejected")
    def _vetting_rejected(self, carrier: str, at: datetime, note: str) -> None:
        self.vetting[carrier] = VettingStatus.REJECTED

    @event("Suspended")
    def _suspended(self, reason: str, at: datetime) -> None:
        self.suspended = True

    @event("Reinstated")
    def _reinstated(self, at: datetime) -> None:
        self.suspended = False

    @event("Closed")
    def _closed(self, at: datetime) -> None:
        self.closed = True

    @event("QuietHoursSet")
    def _quiet_hours_set(self, purpose: str, start: str, end: str, at: datetime) -> None:
        self.quiet_hours[purpose] = (start, end)

    @event("FrequencyCapSet")
    def _frequency_cap_set(self, per_day: int, per_week: int, over_cap: str, at: datetime) -> None:
        self.frequency_cap = {"per_day": per_day, "per_week": per_week, "over_cap": over_cap}
