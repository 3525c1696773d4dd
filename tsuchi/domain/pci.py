"""PCI DSS: a full card number must never be printed.

A Luhn-valid run of 13 to 19 digits (spaces or hyphens between digit groups
allowed) in a template body or a variable value is refused.
"""

from __future__ import annotations

import re

from tsuchi.errors import InvalidInput

_RUN = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def contains_card_number(text: str) -> bool:
    for match in _RUN.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return True
    return False


def check_no_card_number(text: str, field: str) -> None:
    if contains_card_number(text):
        raise InvalidInput(field, "must not contain a full card number (PCI DSS); use card_last4")
