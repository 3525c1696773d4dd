"""Suggested replies and actions: the buttons under a +Message.

A suggestion is a label the customer sees, a stable **code** that comes back
when it is tapped (CM's ``postbackdata``), and an action: ``reply``,
``open_url`` (https only), ``dial`` (an E.164 number), ``view_location``
(latitude and longitude, or a search query; an optional pin label) or
``calendar`` (start, end, title, optional description).  Flows match taps on
the code, never on the label, so a label can be reworded without breaking the
flow that reads the answer.

A plain string in a template is a reply suggestion whose code is derived from
its label: ``r`` and the first 12 hex digits of the SHA-256 of the label in
Unicode NFKC form, stripped (:func:`reply_code`).  It does not depend on the
position, so it stays the same in every template version that keeps the
label, and templates stored before codes existed (their suggestions are
plain strings) read back with the same codes.

Limits, as CM.com documents them ("Suggested replies/actions messages",
https://developers.cm.com/messaging/docs/rcs-suggested-replies-messages):
"a maximum of 11 suggestions per (text) message.  Each suggestion has a
maximum of 25 characters"; CM's PHP SDK refuses a twelfth
(``RichContent::SUGGESTIONS_LENGTH_LIMIT = 11``).  The other bounds here
(code, URL, title and description lengths) are tsuchi's own.
"""

from __future__ import annotations

import hashlib
import math
import re
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from tsuchi.domain.channels import check_no_control_characters
from tsuchi.domain.pci import check_no_card_number
from tsuchi.errors import InvalidInput

MAX_SUGGESTIONS = 11
MAX_LABEL_CHARS = 25
MAX_URL_CHARS = 2000
MAX_TITLE_CHARS = 100
MAX_DESCRIPTION_CHARS = 500
MAX_LOCATION_LABEL_CHARS = 100
MAX_QUERY_CHARS = 200

CODE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_URL_RE = re.compile(r"^https://[^\s<>\"]{1,1992}$")  # at most MAX_URL_CHARS
_E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")


class SuggestionAction(StrEnum):
    REPLY = "reply"
    OPEN_URL = "open_url"
    DIAL = "dial"
    VIEW_LOCATION = "view_location"
    CALENDAR = "calendar"


def reply_code(label: str) -> str:
    """The code of a plain-string reply suggestion: stable for its label."""
    norm = unicodedata.normalize("NFKC", label).strip()
    return "r" + hashlib.sha256(norm.encode("utf-8", "surrogatepass")).hexdigest()[:12]


@dataclass(frozen=True)
class Suggestion:
    """One suggested reply or action; build it with the constructors
    (:meth:`reply`, :meth:`open_url`, :meth:`dial`, :meth:`view_location`,
    :meth:`calendar`).  Checked when a template is drafted."""

    label: str
    code: str
    action: SuggestionAction = SuggestionAction.REPLY
    url: str | None = None
    phone_number: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    location_label: str | None = None
    query: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    title: str | None = None
    description: str | None = None

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def reply(cls, label: str, code: str | None = None) -> Suggestion:
        """A suggested reply; without ``code``, the label's derived code."""
        return cls(label, code if code is not None else reply_code(label))

    @classmethod
    def open_url(cls, label: str, url: str, *, code: str | None = None) -> Suggestion:
        """Opens an https URL in the customer's browser."""
        return cls(label, _code_or(code, label), SuggestionAction.OPEN_URL, url=url)

    @classmethod
    def dial(cls, label: str, phone_number: str, *, code: str | None = None) -> Suggestion:
        """Dials an E.164 number (``+81...``)."""
        return cls(label, _code_or(code, label), SuggestionAction.DIAL, phone_number=phone_number)

    @classmethod
    def view_location(
        cls,
        label: str,
        latitude: float | None = None,
        longitude: float | None = None,
        *,
        location_label: str | None = None,
        query: str | None = None,
        code: str | None = None,
    ) -> Suggestion:
        """Shows a place in the map app: by coordinates or by a search query."""
        return cls(
            label,
            _code_or(code, label),
            SuggestionAction.VIEW_LOCATION,
            latitude=latitude,
            longitude=longitude,
            location_label=location_label,
            query=query,
        )

    @classmethod
    def calendar(
        cls,
        label: str,
        start: datetime,
        end: datetime,
        title: str,
        description: str | None = None,
        *,
        code: str | None = None,
    ) -> Suggestion:
        """Starts a calendar event (timezone-aware start and end)."""
        return cls(
            label,
            _code_or(code, label),
            SuggestionAction.CALENDAR,
            start=start,
            end=end,
            title=title,
            description=description,
        )

    # -- stored form ----------------------------------------------------------------------
    def to_stored(self) -> dict[str, Any]:
        """The JSON-safe form kept in the ``VersionDrafted`` event."""
        out: dict[str, Any] = {"action": self.action.value, "label": self.label, "code": self.code}
        for name in ("url", "phone_number", "location_label", "query", "title", "description"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.latitude is not None and self.longitude is not None:
            out["latitude"], out["longitude"] = self.latitude, self.longitude
        if self.start is not None and self.end is not None:
            out["start"], out["end"] = self.start.isoformat(), self.end.isoformat()
        return out

    @classmethod
    def from_stored(cls, raw: str | dict[str, Any]) -> Suggestion:
        """A stored suggestion; a plain string (templates stored before
        suggestions had codes) is a reply with its label's derived code."""
        if isinstance(raw, str):
            return cls.reply(raw)
        start, end = raw.get("start"), raw.get("end")
        return cls(
            label=raw["label"],
            code=raw["code"],
            action=SuggestionAction(raw.get("action", "reply")),
            url=raw.get("url"),
            phone_number=raw.get("phone_number"),
            latitude=raw.get("latitude"),
            longitude=raw.get("longitude"),
            location_label=raw.get("location_label"),
            query=raw.get("query"),
            start=datetime.fromisoformat(start) if isinstance(start, str) else None,
            end=datetime.fromisoformat(end) if isinstance(end, str) else None,
            title=raw.get("title"),
            description=raw.get("description"),
        )


def _code_or(code: str | None, label: str) -> str:
    return code if code is not None else reply_code(label)


# -- checks ---------------------------------------------------------------------------------
def _text(value: Any, field: str, limit: int, *, required: bool) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidInput(field, f"1 to {limit} characters")
    check_no_control_characters(value, field, allow_newlines=False)
    if _has_placeholder(value):
        raise InvalidInput(field, "suggestions cannot use variables")
    check_no_card_number(value, field)


def _has_placeholder(text: str) -> bool:
    try:
        return any(name is not None for _, name, _, _ in string.Formatter().parse(text))
    except ValueError:
        return True  # unbalanced braces


def _coordinate(value: Any, field: str, bound: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not -bound <= value <= bound
    ):
        raise InvalidInput(field, f"a number between -{bound:g} and {bound:g}")


def _aware_time(value: Any, field: str) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput(field, "a timezone-aware datetime")


def check_suggestion(s: Suggestion, field: str) -> None:
    """One suggestion's rules; :class:`InvalidInput` names ``field.<name>``."""
    _text(s.label, f"{field}.label", MAX_LABEL_CHARS, required=True)
    if not isinstance(s.code, str) or not CODE_RE.match(s.code):
        raise InvalidInput(f"{field}.code", "1 to 64 letters, digits or _.:- (a stable code)")
    try:
        action = SuggestionAction(s.action)
    except ValueError:
        raise InvalidInput(
            f"{field}.action", "reply, open_url, dial, view_location or calendar"
        ) from None
    if action is SuggestionAction.OPEN_URL:
        if not isinstance(s.url, str) or not _URL_RE.match(s.url):
            raise InvalidInput(
                f"{field}.url", f"an https URL of at most {MAX_URL_CHARS} characters"
            )
    elif action is SuggestionAction.DIAL:
        if not isinstance(s.phone_number, str) or not _E164_RE.match(s.phone_number):
            raise InvalidInput(f"{field}.phone_number", "an E.164 number such as +81312345678")
    elif action is SuggestionAction.VIEW_LOCATION:
        if s.latitude is None and s.longitude is None:
            if s.query is None:
                raise InvalidInput(f"{field}.latitude", "latitude and longitude, or a query")
        else:
            _coordinate(s.latitude, f"{field}.latitude", 90)
            _coordinate(s.longitude, f"{field}.longitude", 180)
        _text(s.query, f"{field}.query", MAX_QUERY_CHARS, required=False)
        _text(s.location_label, f"{field}.location_label", MAX_LOCATION_LABEL_CHARS, required=False)
    elif action is SuggestionAction.CALENDAR:
        _aware_time(s.start, f"{field}.start")
        _aware_time(s.end, f"{field}.end")
        assert s.start is not None and s.end is not None
        if s.end <= s.start:
            raise InvalidInput(f"{field}.end", "must be after start")
        _text(s.title, f"{field}.title", MAX_TITLE_CHARS, required=True)
        _text(s.description, f"{field}.description", MAX_DESCRIPTION_CHARS, required=False)


def parse_suggestions(raw: Sequence[Any]) -> tuple[Suggestion, ...]:
    """A template's suggestions: plain strings (reply suggestions) or
    :class:`Suggestion` values; at most 11, codes unique."""
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise InvalidInput("suggestions", "must be a list of labels or Suggestion values")
    if len(raw) > MAX_SUGGESTIONS:
        raise InvalidInput("suggestions", f"at most {MAX_SUGGESTIONS} suggestions per message")
    out: list[Suggestion] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        field = f"suggestions[{i}]"
        if isinstance(item, str):
            _text(item, f"{field}.label", MAX_LABEL_CHARS, required=True)
            item = Suggestion.reply(item)
        elif not isinstance(item, Suggestion):
            raise InvalidInput(field, "a label or a Suggestion")
        check_suggestion(item, field)
        if item.code in seen:
            raise InvalidInput(f"{field}.code", "codes must be unique within a message")
        seen.add(item.code)
        out.append(item)
    return tuple(out)


__all__ = [
    "MAX_LABEL_CHARS",
    "MAX_SUGGESTIONS",
    "Suggestion",
    "SuggestionAction",
    "check_suggestion",
    "parse_suggestions",
    "reply_code",
]
