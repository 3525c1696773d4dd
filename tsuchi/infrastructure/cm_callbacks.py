"""CM.com's three callbacks, read as CM documents them: status reports,
incoming (MO) messages and RCS incoming events.

CM signs none of them and retries a refused one for days, so reading is
tolerant by design: anything that parses as the documented shape becomes
:class:`~tsuchi.ports.StatusReport`\\ s; a status code CM may add later, or a
textual ``errorCode``, is kept with its raw value (kind ``unknown`` or the
text as the code) and never regresses a status.  Only a body that cannot be
parsed at all raises :class:`~tsuchi.errors.WebhookRejected` (400, naming
the field).  Error messages never quote values: the payloads hold phone
numbers and what customers wrote.

Where CM's pages are silent, the assumptions are spelled out in
``docs/cm.md``: a status report's ``received`` time without an offset is
read in ``report_tz`` (setting ``cm_report_time_zone``); an MO's ``timeUtc``
is UTC.  XML is parsed with ``defusedxml`` (DTDs and entities refused).

Hand-written because no maintained library parses CM's callback formats.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from tsuchi.errors import WebhookRejected
from tsuchi.ports import ReportKind, StatusReport

MAX_REFERENCE = 200
MAX_TEXT = 4096
MAX_POSTBACK = 1024
MAX_CODE = 64
MAX_MEDIA = 10

#: CM status codes (incoming status report) and the report kind each becomes.
CM_STATUS_KINDS: dict[int, ReportKind] = {
    0: "accepted",
    1: "failed",  # rejected by CM or the operator
    2: "delivered",
    3: "failed",
    4: "read",
}

SUGGESTION_CLICK = "suggestionclick"


@dataclass(frozen=True)
class InboundMedia:
    """A file a customer sent: where CM holds it; never fetched automatically."""

    url: str = field(repr=False)
    mime_type: str
    name: str = field(default="", repr=False)


@dataclass(frozen=True)
class InboundMessage:
    """One MO message.  ``context`` is the reference of our message it answers
    (CM's ``messageContext``), if CM knows one.  ``number`` and ``text`` are
    personal data."""

    number: str = field(repr=False)
    to: str
    text: str = field(repr=False)
    at: datetime
    channel: str
    context: str | None
    reference: str
    media: tuple[InboundMedia, ...] = ()


# -- status reports -----------------------------------------------------------------------------
def parse_status(content_type: str, body: bytes, report_tz: tzinfo = UTC) -> list[StatusReport]:
    """CM status reports, JSON (``{"messages": {"msg": ...}}``) or XML
    (``<MESSAGES><MSG>...``); element and attribute names in any case."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("application/xml", "text/xml") or media.endswith("+xml"):
        root = _xml(body)
        if _local(root.tag) != "messages":
            raise WebhookRejected(400, "messages", "XML root must be MESSAGES")
        return status_reports(_element_to_dict(root, depth=3), "messages", report_tz)
    data = _json(body)
    if not isinstance(data, dict) or "messages" not in data:
        raise WebhookRejected(400, "messages", "is required")
    return status_reports(data["messages"], "messages", report_tz)


def status_reports(messages: Any, path: str, report_tz: tzinfo = UTC) -> list[StatusReport]:
    """The reports of a decoded ``messages`` object (JSON or XML alike)."""
    if not isinstance(messages, dict):
        raise WebhookRejected(400, path, "must be an object")
    msgs = _ci(messages, "msg")
    if isinstance(msgs, dict):
        return [_status(msgs, f"{path}.msg", report_tz)]
    if isinstance(msgs, list) and msgs:
        return [_status(m, f"{path}.msg[{i}]", report_tz) for i, m in enumerate(msgs)]
    raise WebhookRejected(400, f"{path}.msg", "must be an object or a non-empty list")


def _status(msg: Any, path: str, report_tz: tzinfo) -> StatusReport:
    if not isinstance(msg, dict):
        raise WebhookRejected(400, path, "must be an object")
    reference = reference_value(_ci(msg, "reference"), f"{path}.reference")
    at = time_value(_ci(msg, "received"), f"{path}.received", report_tz)
    status = _ci(msg, "status")
    if not isinstance(status, dict):
        raise WebhookRejected(400, f"{path}.status", "must be an object")
    raw_code = _ci(status, "code")
    code = _small_int(raw_code)
    error = _raw_code(_ci(status, "errorcode"))
    if code not in CM_STATUS_KINDS:
        # A status CM documents no meaning for: kept with its raw value.
        shown = _raw_code(raw_code) or "missing"
        return StatusReport(reference, "unknown", at, code=f"status:{shown}")
    return StatusReport(
        reference=reference,
        kind=CM_STATUS_KINDS[code],
        at=at,
        code=error,
        permanent=code == 1,
    )


# -- incoming (MO) messages -------------------------------------------------------------------
def parse_inbound(body: bytes) -> InboundMessage:
    """One MO: ``{"from": {"number"}, "to": {"number"}, "message": {"text",
    "media": {...}}, "reference", "messageContext", "groupings", "timeUtc",
    "channel"}``."""
    data = _json(body)
    if not isinstance(data, dict):
        raise WebhookRejected(400, "body", "must be an object")
    number = _number(data.get("from"), "from.number")
    to_obj = data.get("to")
    to = _code(to_obj.get("number") if isinstance(to_obj, dict) else None, "to.number") or ""
    message = data.get("message")
    if not isinstance(message, dict):
        raise WebhookRejected(400, "message", "must be an object")
    text = _text(message.get("text"), "message.text", MAX_TEXT) or ""
    media = _media(message.get("media"), "message.media")
    if not text and not media:
        raise WebhookRejected(400, "message", "must hold text or media")
    context = data.get("messageContext")
    return InboundMessage(
        number=number,
        to=to,
        text=text,
        at=time_value(data.get("timeUtc"), "timeUtc", UTC),
        channel=_code(data.get("channel"), "channel") or "",
        context=reference_value(context, "messageContext") if context else None,
        reference=_optional_reference(data.get("reference"), "reference"),
        media=media,
    )


def _media(value: Any, path: str) -> tuple[InboundMedia, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_MEDIA:
        raise WebhookRejected(400, path, f"at most {MAX_MEDIA} files")
    out: list[InboundMedia] = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]" if isinstance(value, list) else path
        if not isinstance(item, dict):
            raise WebhookRejected(400, where, "must be an object")
        url = _text(item.get("mediaUri"), f"{where}.mediaUri", 2048)
        if not url:
            continue  # CM sends an empty media object with a text message
        if not url.startswith(("https://", "http://")):
            raise WebhookRejected(400, f"{where}.mediaUri", "must be an http(s) URL")
        mime = _text(item.get("contentType", item.get("mimeType")), f"{where}.contentType", 128)
        name = _text(item.get("mediaName", item.get("title")), f"{where}.mediaName", 256)
        out.append(InboundMedia(url, mime or "application/octet-stream", name or ""))
    return tuple(out)


# -- RCS incoming events ------------------------------------------------------------------------
def parse_event(body: bytes) -> list[StatusReport]:
    """An RCS event: ``{"reference", "messageContext", "from", "to", "event":
    {"type": "SuggestionClick", "custom": {"postbackdata", "label"}},
    "timeUtc", "channel"}``.  A suggestion click becomes a ``reply`` report
    for the message it answers; other event types are read and ignored."""
    data = _json(body)
    if not isinstance(data, dict):
        raise WebhookRejected(400, "body", "must be an object")
    event = data.get("event")
    if not isinstance(event, dict):
        raise WebhookRejected(400, "event", "must be an object")
    kind = _code(event.get("type"), "event.type")
    if (kind or "").lower() != SUGGESTION_CLICK:
        return []
    custom = event.get("custom")
    if not isinstance(custom, dict):
        raise WebhookRejected(400, "event.custom", "must be an object")
    postback = _text(custom.get("postbackdata"), "event.custom.postbackdata", MAX_POSTBACK)
    label = _text(custom.get("label"), "event.custom.label", MAX_TEXT)
    context = data.get("messageContext")
    if not context:
        raise WebhookRejected(400, "messageContext", "is required for a SuggestionClick")
    return [
        StatusReport(
            reference_value(context, "messageContext"),
            "reply",
            time_value(data.get("timeUtc"), "timeUtc", UTC),
            text=label or "",
            postback=postback or "",
        )
    ]


# -- fields ---------------------------------------------------------------------------------------
def _optional_reference(value: Any, path: str) -> str:
    return "" if value in (None, "") else reference_value(value, path)


def reference_value(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise WebhookRejected(400, path, "must be a non-empty string")
    ref = value.strip()
    if len(ref) > MAX_REFERENCE or not ref.isprintable():
        raise WebhookRejected(400, path, f"must be at most {MAX_REFERENCE} printable characters")
    return ref


def time_value(value: Any, path: str, naive_tz: tzinfo) -> datetime:
    """An ISO 8601 time (a space instead of ``T`` allowed); without an offset
    it is read in ``naive_tz``."""
    if not isinstance(value, str) or len(value) > 64:
        raise WebhookRejected(400, path, "must be an ISO 8601 time")
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise WebhookRejected(400, path, "must be an ISO 8601 time") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=naive_tz)
    try:
        return at.astimezone(UTC)
    except (OverflowError, ValueError):
        raise WebhookRejected(400, path, "must be an ISO 8601 time") from None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookRejected(400, "body", "must be valid JSON") from None


def _xml(body: bytes) -> Element:
    try:
        return SafeET.fromstring(body, forbid_dtd=True)
    except DefusedXmlException:
        raise WebhookRejected(400, "body", "XML must not declare a DTD or entities") from None
    except (ParseError, ValueError, LookupError, RecursionError):
        raise WebhookRejected(400, "body", "must be well-formed XML") from None


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def _element_to_dict(el: Element, depth: int) -> dict[str, Any] | str:
    """Element → JSON-like value (names lower-cased); children beyond ``depth`` are ignored."""
    children = list(el) if depth > 0 else []
    if not children and not el.attrib:
        return (el.text or "").strip()
    grouped: dict[str, list[Any]] = {}
    for child in children:
        grouped.setdefault(_local(child.tag), []).append(_element_to_dict(child, depth - 1))
    out: dict[str, Any] = {k: v[0] if len(v) == 1 else v for k, v in grouped.items()}
    for name, value in el.attrib.items():
        out.setdefault(_local(name), value)
    return out


def _ci(obj: dict[str, Any], key: str) -> Any:
    """``obj[key]`` with the key in any case (CM's JSON is camelCase, XML upper case)."""
    if key in obj:
        return obj[key]
    for k, v in obj.items():
        if isinstance(k, str) and k.lower() == key:
            return v
    return None


def _small_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        v = value.strip()
        if v.isascii() and v.isdigit() and len(v) <= 9:
            return int(v)
    return None


_DIGIT_RUN = re.compile(r"\+?\d[\d\s().-]{4,}\d")


def _raw_code(value: Any) -> str:
    """A code as CM sent it, bounded: digits stay digits, text is kept printable."""
    if value is None or isinstance(value, (dict, list)):
        return ""
    number = _small_int(value)
    if number is not None:
        return str(number)
    text = "".join(c for c in str(value).strip() if c.isprintable())
    # CM fills errorCode from [STATUSDESCRIPTION], free text that may quote the
    # recipient's number: digit runs are masked before the code is stored.
    return _DIGIT_RUN.sub("#", text)[:MAX_CODE]


def _text(value: Any, path: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise WebhookRejected(400, path, f"must be a string of at most {limit} characters")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise WebhookRejected(400, path, "must not hold lone surrogates")
    return value


def _code(value: Any, path: str) -> str | None:
    text = _text(value, path, MAX_CODE)
    if text is not None and not text.isprintable():
        raise WebhookRejected(400, path, "must be printable")
    return text


def _number(value: Any, path: str) -> str:
    number = value.get("number") if isinstance(value, dict) else None
    if not isinstance(number, str) or not 3 <= len(number) <= 32:
        raise WebhookRejected(400, path, "must be a phone number")
    digits = number.strip()
    body = digits[1:] if digits.startswith("+") else digits
    if not (body.isascii() and body.isdigit()):
        raise WebhookRejected(400, path, "must be a phone number")
    return digits


__all__ = [
    "CM_STATUS_KINDS",
    "InboundMedia",
    "InboundMessage",
    "parse_event",
    "parse_inbound",
    "parse_status",
    "reference_value",
    "status_reports",
    "time_value",
]
