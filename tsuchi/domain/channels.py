"""What each channel can carry, as pure rules.

+Message: text up to 2,730 characters, at most 11 reply suggestions of at most
25 characters each, attachments (photos, videos, audio up to 100 MB each with
their MIME type; a location; stamps).  SMS: GSM-7 when every character is in the GSM 03.38
alphabet (escape characters such as ``€`` or ``{`` cost two septets), UCS-2
otherwise (one UTF-16 unit per BMP character, two outside it); 160/153 septets
or 70/67 units per part; a part never splits a character; at most
``max_parts`` parts (10 in Japan).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

from tsuchi.errors import BodyTooLong, InvalidInput

PLUS_MESSAGE_MAX_CHARS = 2730
MAX_SUGGESTIONS = 11
MAX_SUGGESTION_CHARS = 25
SMS_DEFAULT_MAX_PARTS = 10

GSM_SINGLE, GSM_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


MEDIA_MAX_BYTES = 100 * 1024 * 1024
MEDIA_TYPES = ("image/", "video/", "audio/")
MAX_ATTACHMENTS = 10
_MIME = re.compile(r"^[a-z]+/[a-z0-9][a-z0-9.+-]{0,63}$")
_STAMP = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Media:
    """A photo, video or audio file (+Message only): at most 100 MB each."""

    url: str
    mime_type: str
    size_bytes: int


@dataclass(frozen=True)
class Location:
    latitude: float
    longitude: float
    label: str


@dataclass(frozen=True)
class Stamp:
    stamp_id: str


Attachment = Media | Location | Stamp


def parse_attachment(raw: dict[str, object], field: str) -> Attachment:
    """Validate one +Message attachment given as a dict with a ``kind``."""
    kind = raw.get("kind")
    if kind == "media":
        url, mime, size = raw.get("url"), raw.get("mime_type"), raw.get("size_bytes")
        if not isinstance(url, str) or not re.fullmatch(r"https://[^\s<>\"]{1,2000}", url):
            raise InvalidInput(f"{field}.url", "media must be an https URL")
        if not isinstance(mime, str) or not _MIME.match(mime) or not mime.startswith(MEDIA_TYPES):
            raise InvalidInput(f"{field}.mime_type", "an image/, video/ or audio/ MIME type")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MEDIA_MAX_BYTES:
            raise InvalidInput(f"{field}.size_bytes", "each media file at most 100 MB")
        return Media(url, mime, size)
    if kind == "location":
        lat, lon, label = raw.get("latitude"), raw.get("longitude"), raw.get("label", "")
        if not isinstance(lat, int | float) or isinstance(lat, bool) or not -90 <= lat <= 90:
            raise InvalidInput(f"{field}.latitude", "between -90 and 90")
        if not isinstance(lon, int | float) or isinstance(lon, bool) or not -180 <= lon <= 180:
            raise InvalidInput(f"{field}.longitude", "between -180 and 180")
        if not isinstance(label, str) or len(label) > 100:
            raise InvalidInput(f"{field}.label", "at most 100 characters")
        check_no_control_characters(label, f"{field}.label", allow_newlines=False)
        return Location(float(lat), float(lon), label)
    if kind == "stamp":
        stamp = raw.get("stamp_id")
        if not isinstance(stamp, str) or not _STAMP.match(stamp):
            raise InvalidInput(f"{field}.stamp_id", "1 to 64 letters, digits, _ or -")
        return Stamp(stamp)
    raise InvalidInput(f"{field}.kind", "must be media, location or stamp")


def check_attachments(raw: list[dict[str, object]]) -> tuple[Attachment, ...]:
    if len(raw) > MAX_ATTACHMENTS:
        raise InvalidInput("attachments", f"at most {MAX_ATTACHMENTS} attachments")
    return tuple(parse_attachment(a, f"attachments.{i}") for i, a in enumerate(raw))


@dataclass(frozen=True)
class SmsCost:
    encoding: Literal["gsm7", "ucs2"]
    parts: int
    units: int  # septets (gsm7) or UTF-16 code units (ucs2)
    characters: int


def _gsm_chars(*prefix: int) -> str:
    """Characters the codec decodes from ``prefix`` + one byte."""
    chars = set()
    for b in range(128):
        if b == 0x1B:  # the escape to the extension table
            continue
        try:
            chars.add(bytes([*prefix, b]).decode("gsm03.38"))
        except UnicodeDecodeError:
            continue
    return "".join(re.escape(c) for c in sorted(c for c in chars if len(c) == 1))


# Whole-text checks for the common cases; anything else is measured per character.
# (The codec also encodes ESC itself as one septet; control characters never
# reach a body, but the count stays the codec's.)
_GSM_BASIC = re.compile(f"[{_gsm_chars()}\\x1b]*")  # one septet each
_GSM_ANY = re.compile(f"[{_gsm_chars()}{_gsm_chars(0x1B)}\\x1b]*")  # basic or extension


@lru_cache(maxsize=8192)
def _gsm_septets(ch: str) -> int | None:
    try:
        return len(ch.encode("gsm03.38"))
    except UnicodeEncodeError:
        return None


def _uniform_parts(units: int, single: int, per_part: int) -> int:
    """Parts for ``units`` one-unit characters (what :func:`_count_parts` gives them)."""
    return 1 if units <= single else -(-units // per_part)


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
    n = len(text)
    if _GSM_BASIC.fullmatch(text):  # one septet per character
        return SmsCost("gsm7", _uniform_parts(n, GSM_SINGLE, GSM_PART), n, n)
    if not _GSM_ANY.fullmatch(text) and max(text) <= "\uffff":
        # UCS-2, no surrogate pairs: one code unit per character
        return SmsCost("ucs2", _uniform_parts(n, UCS2_SINGLE, UCS2_PART), n, n)
    septets = [_gsm_septets(ch) for ch in text]
    if all(s is not None for s in septets):
        widths = [s for s in septets if s is not None]
        return SmsCost("gsm7", _count_parts(widths, GSM_SINGLE, GSM_PART), sum(widths), len(text))
    widths = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return SmsCost("ucs2", _count_parts(widths, UCS2_SINGLE, UCS2_PART), sum(widths), len(text))


# C0 and C1 control characters, with and without line breaks and tabs.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_BREAKS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def check_no_control_characters(text: str, field: str, allow_newlines: bool = True) -> None:
    """Refuse NUL and other control characters (terminal escapes, ...); bodies may
    keep line breaks and tabs."""
    if (_CONTROL_BUT_BREAKS if allow_newlines else _CONTROL).search(text):
        raise InvalidInput(field, "must not contain control characters")
    check_no_lone_surrogates(text, field)


def check_no_lone_surrogates(text: str, field: str) -> None:
    """Refuse unpaired UTF-16 surrogates: they cannot be encoded, and the
    encoder's error would carry the whole (personal) text."""
    if _LONE_SURROGATE.search(text):
        raise InvalidInput(field, "must not contain lone surrogates")


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
