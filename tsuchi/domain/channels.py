"""What each channel can carry, as pure rules.

+Message: text up to 2,730 characters, at most 11 reply suggestions of at most
25 characters each.  SMS: GSM-7 when every character is in the GSM 03.38
alphabet (escape characters such as ``€`` or ``{`` cost two septets), UCS-2
otherwise (one UTF-16 unit per BMP character, two outside it); 160/153 septets
or 70/67 units per part; a part never splits a character; at most
``max_parts`` parts (10 in Japan).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

from tsuchi.errors import BodyTooLong, InvalidInput

PLUS_MESSAGE_MAX_CHARS = 2730
MAX_SUGGESTIONS = 11
MAX_SUGGESTION_CHARS = 25
SMS_DEFAULT_MAX_PARTS = 10

GSM_SINGLE, GSM_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True)
class SmsCost:
    encoding: Literal["gsm7", "ucs2"]
    parts: int
    units: int  # septets (gsm7) or UTF-16 code units (ucs2)
    characters: int


def _gsm_septets(ch: str) -> int | None:
    try:
        return len(ch.encode("gsm03.38"))
    except UnicodeEncodeError:
        return None


def _count_parts(widths: list[int], single: int, per_part: int) -> int:
    total = sum(widths)
    if total <= single:
        return 1
    parts, used = 1, 0
    for w in widths:
        if used + w > per_part:
            parts += 1
            used = 0
        used += w
    return parts


def sms_cost(text: str) -> SmsCost:
    """Encoding and number of parts an SMS text needs."""
    septets = [_gsm_septets(ch) for ch in text]
    if all(s is not None for s in septets):
        widths = [s for s in septets if s is not None]
        return SmsCost("gsm7", _count_parts(widths, GSM_SINGLE, GSM_PART), sum(widths), len(text))
    widths = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return SmsCost("ucs2", _count_parts(widths, UCS2_SINGLE, UCS2_PART), sum(widths), len(text))


def check_no_control_characters(text: str, field: str, allow_newlines: bool = True) -> None:
    """Refuse NUL and other control characters (terminal escapes, ...); bodies may
    keep line breaks and tabs."""
    allowed = "\n\r\t" if allow_newlines else ""
    if any((ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0) and ch not in allowed for ch in text):
        raise InvalidInput(field, "must not contain control characters")


def check_sms_body(
    text: str, max_parts: int = SMS_DEFAULT_MAX_PARTS, field: str = "body.sms"
) -> SmsCost:
    if not text.strip():
        raise InvalidInput(field, "must not be empty")
    check_no_control_characters(text, field)
    cost = sms_cost(text)
    if cost.parts > max_parts:
        raise BodyTooLong(field, f"needs {cost.parts} SMS parts; at most {max_parts} allowed")
    return cost


def check_plus_message_body(
    text: str, suggestions: tuple[str, ...] = (), field: str = "body.plus_message"
) -> None:
    if not text.strip():
        raise InvalidInput(field, "must not be empty")
    if len(text) > PLUS_MESSAGE_MAX_CHARS:
        raise BodyTooLong(field, f"at most {PLUS_MESSAGE_MAX_CHARS} characters")
    check_no_control_characters(text, field)
    if len(suggestions) > MAX_SUGGESTIONS:
        raise InvalidInput("suggestions", f"at most {MAX_SUGGESTIONS} reply suggestions")
    for s in suggestions:
        check_no_control_characters(s, "suggestions", allow_newlines=False)
        if not s.strip() or len(s) > MAX_SUGGESTION_CHARS:
            raise InvalidInput(
                "suggestions", f"each suggestion needs 1 to {MAX_SUGGESTION_CHARS} characters"
            )
