"""Japanese mobile numbers: parsing any common form to E.164.

``090-1234-5678``, ``09012345678`` and ``+81 90 1234 5678`` all normalise to
``+819012345678``.  Only the mobile ranges 070, 080 and 090 are accepted: the
engine sends +Message and SMS, which landlines cannot receive.
"""

from __future__ import annotations

import phonenumbers

from tsuchi.errors import InvalidMobileNumber

MOBILE_PREFIXES = ("+8170", "+8180", "+8190")


def normalise_mobile(raw: str, field: str = "mobile") -> str:
    """Return the E.164 form of a Japanese mobile number or raise
    :class:`InvalidMobileNumber` naming ``field`` (never the value)."""
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 32:
        raise InvalidMobileNumber(field, "must be a Japanese mobile number (070/080/090)")
    try:
        parsed = phonenumbers.parse(raw, "JP")
    except phonenumbers.NumberParseException:
        raise InvalidMobileNumber(field, "is not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidMobileNumber(field, "is not a valid phone number")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if not e164.startswith(MOBILE_PREFIXES) or len(e164) != 13:
        raise InvalidMobileNumber(field, "must be a Japanese mobile number (070/080/090)")
    return e164


def national_form(e164: str) -> str:
    """``+819012345678`` -> ``090-1234-5678`` (for display to the subject)."""
    parsed = phonenumbers.parse(e164, "JP")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
