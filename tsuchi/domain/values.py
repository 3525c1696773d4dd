"""Value types shared by the aggregates: carriers, purposes, channels, statuses.

They are ``StrEnum`` so they store as plain strings in events and read models.
"""

from __future__ import annotations

from enum import StrEnum

from tsuchi.errors import InvalidInput


class Carrier(StrEnum):
    DOCOMO = "docomo"
    AU = "au"
    SOFTBANK = "softbank"
    RAKUTEN = "rakuten"
    UNKNOWN = "unknown"


VETTING_CARRIERS: tuple[Carrier, ...] = (Carrier.DOCOMO, Carrier.AU, Carrier.SOFTBANK)
"""The carriers that run +Message and vet official accounts."""

MVNO_BRANDS: dict[str, Carrier] = {
    "ahamo": Carrier.DOCOMO,
    "irumo": Carrier.DOCOMO,
    "uq": Carrier.AU,
    "uq mobile": Carrier.AU,
    "povo": Carrier.AU,
    "ymobile": Carrier.SOFTBANK,
    "y!mobile": Carrier.SOFTBANK,
    "linemo": Carrier.SOFTBANK,
    "kddi": Carrier.AU,
    "ntt docomo": Carrier.DOCOMO,
    "rakuten mobile": Carrier.RAKUTEN,
}


def parse_carrier(name: str) -> Carrier:
    """Map a carrier or MVNO brand name to the host network."""
    if not isinstance(name, str):
        raise InvalidInput("carrier", "must be a carrier or MVNO brand name")
    key = name.strip().lower()
    try:
        return Carrier(key)
    except ValueError:
        pass
    try:
        return MVNO_BRANDS[key]
    except KeyError:
        raise InvalidInput(
            "carrier",
            "must be docomo, au, softbank, rakuten, unknown or a known MVNO brand",
        ) from None


class Capability(StrEnum):
    """Whether the number can receive +Message."""

    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


class Purpose(StrEnum):
    SECURITY = "security"
    TRANSACTIONAL = "transactional"
    MARKETING = "marketing"


class Urgency(StrEnum):
    NORMAL = "normal"
    URGENT = "urgent"


class Channel(StrEnum):
    PLUS_MESSAGE = "plus_message"
    SMS = "sms"


class VettingStatus(StrEnum):
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"


class MessageStatus(StrEnum):
    REQUESTED = "requested"
    DEFERRED = "deferred"
    ROUTED = "routed"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    READ = "read"
    BLOCKED = "blocked"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


PROGRESS_RANK: dict[MessageStatus, int] = {
    MessageStatus.REQUESTED: 0,
    MessageStatus.DEFERRED: 1,
    MessageStatus.ROUTED: 2,
    MessageStatus.SUBMITTED: 3,
    MessageStatus.ACCEPTED: 4,
    MessageStatus.DELIVERED: 5,
    MessageStatus.READ: 6,
}
"""Order of the forward path of one delivery attempt."""

FINAL_STATUSES: frozenset[MessageStatus] = frozenset(
    {
        MessageStatus.BLOCKED,
        MessageStatus.FAILED,
        MessageStatus.EXPIRED,
        MessageStatus.CANCELLED,
    }
)
