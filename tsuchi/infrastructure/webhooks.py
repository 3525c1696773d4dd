"""Inbound webhooks from the aggregator: authenticate, bound and parse them.

CM pushes delivery status reports (JSON or XML) and customers' replies and
button postbacks to us, and retries each for up to seven days.  This module
turns one such HTTP request into :class:`~tsuchi.ports.StatusReport`\\ s,
independent of any web framework (:mod:`tsuchi.serve` is the tiny ASGI front).
The engine applies reports idempotently, so a retried or replayed webhook is
harmless; authentication keeps forged ones out.

Everything that is wrong with a request becomes a :class:`WebhookRejected`
carrying the HTTP status to answer with: 401 unsigned, forged or stale; 413
too large; 415 neither JSON nor XML; 400 malformed, naming the field and the
rule.  Error messages never quote values: the payload holds phone numbers and
reply texts.

XML is parsed with ``defusedxml`` with DTDs forbidden, so entity expansion
("billion laughs") and external entities are refused before they expand.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from tsuchi.errors import KeyMaterialError, WebhookRejected
from tsuchi.ports import ReportKind, StatusReport

MAX_BODY = 1024 * 1024
"""Default cap on a webhook body (1 MiB)."""

TOLERANCE_S = 300.0
"""How far a signature's timestamp may be from now, either way."""

SIGNATURE_HEADER = "x-tsuchi-signature"
TOKEN_HEADER = "x-tsuchi-token"  # noqa: S105 (a header name, not a secret)

MAX_REFERENCE = 200
MAX_REPLY_TEXT = 4096
MAX_POSTBACK = 1024
MIN_SECRET_BYTES = 16

#: CM status codes and the report kind each becomes.
CM_STATUS_KINDS: dict[int, ReportKind] = {
    0: "accepted",
    1: "failed",  # rejected by CM or the operator
    2: "delivered",
    3: "failed",
    4: "read",
}

_SIG_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIG_HEX = re.compile(r"[0-9a-f]{64}")


# -- authentication ---------------------------------------------------------------------------
def _secret_bytes(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if len(key) < MIN_SECRET_BYTES:
        raise KeyMaterialError(f"webhook secret must be at least {MIN_SECRET_BYTES} bytes")
    return key


def sign(body: bytes, secret: str | bytes, timestamp: int) -> str:
    """The ``X-Tsuchi-Signature`` value for ``body`` sent at unix ``timestamp``."""
    mac = hmac.new(_secret_bytes(secret), b"%d." % timestamp + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def authenticate(
    headers: Mapping[str, str],
    body: bytes,
    secret: str | bytes,
    now: datetime,
    tolerance: float = TOLERANCE_S,
    *,
    allow_token: bool = True,
) -> None:
    """Accept the request or raise :class:`WebhookRejected` (401).

    Signature mode: ``X-Tsuchi-Signature: t=<unix>,v1=<hex>`` where ``v1`` is
    HMAC-SHA256 over ``"<t>." + body``; several ``v1`` entries are allowed
    (secret rotation) and ``t`` must be within ``tolerance`` seconds of
    ``now``, which bounds replays (a replay inside the window is harmless:
    reports are applied idempotently).  Token mode (if ``allow_token``):
    ``X-Tsuchi-Token`` equals the secret.  Both compare in constant time.
    """
    key = _secret_bytes(secret)
    lowered = {k.lower(): v for k, v in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER)
    if signature is not None:
        _verify_signature(signature, body, key, now, tolerance)
        return
    token = lowered.get(TOKEN_HEADER)
    if allow_token and token is not None:
        if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), key):
            raise WebhookRejected(401, TOKEN_HEADER, "token does not match")
        return
    raise WebhookRejected(401, "authorization", "signature or token header required")


def _verify_signature(
    header: str, body: bytes, key: bytes, now: datetime, tolerance: float
) -> None:
    timestamp: str | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            timestamp = value
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not _SIG_TIMESTAMP.fullmatch(timestamp) or not candidates:
        raise WebhookRejected(401, SIGNATURE_HEADER, "must be t=<unix>,v1=<hex>")
    at = int(timestamp)
    moment = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    if abs(moment.timestamp() - at) > tolerance:
        raise WebhookRejected(401, SIGNATURE_HEADER, "timestamp outside tolerance")
    expected = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    matched = False
    for candidate in candidates:
        if _SIG_HEX.fullmatch(candidate) and hmac.compare_digest(
            candidate.encode(), expected.encode()
        ):
            matched = True
    if not matched:
        raise WebhookRejected(401, SIGNATURE_HEADER, "signature does not match")


# -- parsing ----------------------------------------------------------------------------------
def check_size(body: bytes, max_body: int = MAX_BODY) -> None:
    if len(body) > max_body:
        raise WebhookRejected(413, "body", f"must be at most {max_body} bytes")


def parse_status_webhook(
    content_type: str, body: bytes, *, max_body: int = MAX_BODY
) -> list[StatusReport]:
    """Status reports, replies and postbacks in one webhook body.

    JSON status reports: ``{"messages": {"msg": <msg> | [<msg>, ...]}}`` with
    ``msg = {received, to, reference, status: {code, errorCode,
    errorDescription}, operator}``; the same shape in XML (element names and
    attributes in any case).  CM status codes 0..4 become accepted, failed
    (rejected), delivered, failed, read.  A naive ``received`` time is taken
    as UTC.  ``to`` and ``operator`` are not kept.

    JSON replies: ``{"type": "reply"|"postback", "reference", "text",
    "postbackdata", "received"}``, or a list of them; each becomes a
    ``reply`` report.
    """
    check_size(body, max_body)
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return _from_json(body)
    if media in ("application/xml", "text/xml") or media.endswith("+xml"):
        return _from_xml(body)
    raise WebhookRejected(415, "content-type", "must be JSON or XML")


def read_status_webhook(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | bytes,
    now: datetime,
    max_body: int = MAX_BODY,
    tolerance: float = TOLERANCE_S,
    allow_token: bool = True,
) -> list[StatusReport]:
    """Size check (413), then :func:`authenticate` (401), then parse (400/415)."""
    check_size(body, max_body)
    authenticate(headers, body, secret, now, tolerance, allow_token=allow_token)
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    return parse_status_webhook(content_type, body, max_body=max_body)


def _from_json(body: bytes) -> list[StatusReport]:
    try:
        data: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookRejected(400, "body", "must be valid JSON") from None
    if isinstance(data, dict) and "messages" in data:
        return _status_reports(data["messages"], "messages")
    if isinstance(data, dict) and "type" in data:
        return [_reply(data, "body")]
    if isinstance(data, list) and data:
        return [_reply(item, f"[{i}]") for i, item in enumerate(data)]
    raise WebhookRejected(400, "body", "must be a status report or a reply")


def _from_xml(body: bytes) -> list[StatusReport]:
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except DefusedXmlException:
        raise WebhookRejected(400, "body", "XML must not declare a DTD or entities") from None
    except (ParseError, ValueError, LookupError, RecursionError):
        raise WebhookRejected(400, "body", "must be well-formed XML") from None
    if _local(root.tag) != "messages":
        raise WebhookRejected(400, "messages", "XML root must be MESSAGES")
    return _status_reports(_element_to_dict(root, depth=3), "messages")


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def _element_to_dict(el: Element, depth: int) -> dict[str, Any] | str:
    """Element → JSON-like value; children beyond ``depth`` are ignored."""
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


def _status_reports(messages: Any, path: str) -> list[StatusReport]:
    if not isinstance(messages, dict):
        raise WebhookRejected(400, path, "must be an object")
    msgs = messages.get("msg")
    if isinstance(msgs, dict):
        return [_status(msgs, f"{path}.msg")]
    if isinstance(msgs, list) and msgs:
        return [_status(m, f"{path}.msg[{i}]") for i, m in enumerate(msgs)]
    raise WebhookRejected(400, f"{path}.msg", "must be an object or a non-empty list")


def _status(msg: Any, path: str) -> StatusReport:
    if not isinstance(msg, dict):
        raise WebhookRejected(400, path, "must be an object")
    reference = _reference(msg.get("reference"), f"{path}.reference")
    at = _time(msg.get("received"), f"{path}.received")
    status = msg.get("status")
    if not isinstance(status, dict):
        raise WebhookRejected(400, f"{path}.status", "must be an object")
    code = _small_int(status.get("code"))
    if code not in CM_STATUS_KINDS:
        raise WebhookRejected(400, f"{path}.status.code", "must be 0, 1, 2, 3 or 4")
    error = status.get("errorcode", status.get("errorCode"))
    error_code = _error_code(error, f"{path}.status.errorCode")
    return StatusReport(
        reference=reference,
        kind=CM_STATUS_KINDS[code],
        at=at,
        code=error_code,
        permanent=code == 1,
    )


def _reply(item: Any, path: str) -> StatusReport:
    if not isinstance(item, dict):
        raise WebhookRejected(400, path, "must be an object")
    kind = item.get("type")
    if kind not in ("reply", "postback"):
        raise WebhookRejected(400, f"{path}.type", "must be reply or postback")
    reference = _reference(item.get("reference"), f"{path}.reference")
    at = _time(item.get("received"), f"{path}.received")
    text = _optional_text(item.get("text"), f"{path}.text", MAX_REPLY_TEXT)
    postback = _optional_text(item.get("postbackdata"), f"{path}.postbackdata", MAX_POSTBACK)
    if kind == "reply" and text is None:
        raise WebhookRejected(400, f"{path}.text", "is required for a reply")
    if kind == "postback" and not postback:
        raise WebhookRejected(400, f"{path}.postbackdata", "is required for a postback")
    return StatusReport(reference, "reply", at, text=text or "", postback=postback or "")


def _reference(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise WebhookRejected(400, path, "must be a non-empty string")
    ref = value.strip()
    if len(ref) > MAX_REFERENCE or not ref.isprintable():
        raise WebhookRejected(400, path, f"must be at most {MAX_REFERENCE} printable characters")
    return ref


def _time(value: Any, path: str) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise WebhookRejected(400, path, "must be an ISO 8601 time")
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise WebhookRejected(400, path, "must be an ISO 8601 time") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    try:
        return at.astimezone(UTC)
    except (OverflowError, ValueError):
        raise WebhookRejected(400, path, "must be an ISO 8601 time") from None


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


def _error_code(value: Any, path: str) -> str:
    if value is None or value == "":
        return ""
    number = _small_int(value)
    if number is None:
        raise WebhookRejected(400, path, "must be a number or empty")
    return str(number)


def _optional_text(value: Any, path: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise WebhookRejected(400, path, f"must be a string of at most {limit} characters")
    return value


__all__ = [
    "CM_STATUS_KINDS",
    "MAX_BODY",
    "SIGNATURE_HEADER",
    "TOKEN_HEADER",
    "TOLERANCE_S",
    "WebhookRejected",
    "authenticate",
    "check_size",
    "parse_status_webhook",
    "read_status_webhook",
    "sign",
]
