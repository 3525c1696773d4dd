"""The Account aggregate: a customer as the engine knows them.

The mobile number, name and the host's customer reference are personal data
and held as :class:`~tsuchi.domain.personal.Personal` under the account's own
id as data subject.  The aggregate id is random: it is never derived from
personal data.  Erasure is recorded by a personal-data-free ``Erased`` event;
the keys that make the earlier events readable are destroyed by the engine.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from tsuchi.domain.personal import Personal
from tsuchi.domain.values import Capability, Carrier
from tsuchi.errors import AccountClosed


class Account(Aggregate):
    @event("Registered")
    def __init__(
        self,
        id: UUID,
        tenant: str,
        customer_ref: Personal,
        mobile: Personal,
        name: Personal,
        carrier: Carrier,
        capability: Capability,
        time_zone: str,
        language: str,
        at: datetime,
    ) -> None:
        self.tenant = tenant
        self.customer_ref = customer_ref
        self.mobile = mobile
        self.name = name
        self.carrier = Carrier(carrier)
        self.capability = Capability(capability)
        self.time_zone = time_zone
        self.language = language
        self.registered_at = at
        self.closed = False
        self.erased = False

    def check_open(self) -> None:
        if self.closed:
            raise AccountClosed("account_closed", "the account is closed")

    def change_mobile(self, mobile: Personal, carrier: Carrier, at: datetime) -> None:
        self.check_open()
        self._mobile_changed(mobile=mobile, carrier=carrier, at=at)

    def learn_capability(self, capability: Capability, source: str, at: datetime) -> None:
        if capability is not self.capability and not self.closed:
            self._capability_learned(capability=capability, source=source, at=at)

    def close(self, at: datetime) -> None:
        self.check_open()
        self._closed(at=at)

    def mark_erased(self, at: datetime, requested_by: str) -> None:
        if not self.erased:
            self._erased(at=at, requested_by=requested_by)

    @event("MobileChanged")
    def _mobile_changed(self, mobile: Personal, carrier: Carrier, at: datetime) -> None:
        self.mobile = mobile
        self.carrier = Carrier(carrier)
        self.capability = Capability.UNKNOWN

    @event("CapabilityLearned")
    def _capability_learned(self, capability: Capability, source: str, at: datetime) -> None:
        self.capability = Capability(capability)

    @event("Closed")
    def _closed(self, at: datetime) -> None:
        self.closed = True

    @event("Erased")
    def _erased(self, at: datetime, requested_by: str) -> None:
        self.erased = True
        self.closed = True
        # A state that held the values in memory (a cached one) drops them too.
        self.customer_ref = Personal(self.id, None)
        self.mobile = Personal(self.id, None)
        self.name = Personal(self.id, None)
