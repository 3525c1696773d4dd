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

from tsuchi.errors import KeyMaterialError, WebhookRejected
from tsuchi.infrastructure.cm_callbacks import (
    CM_STATUS_KINDS,
    parse_status,
    reference_value,
    status_reports,
    time_value,
)
from tsuchi.ports import StatusReport

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
    allow_token: bool = False,
) -> None:
    """Accept the request or raise :class:`WebhookRejected` (401).

    Signature mode: ``X-Tsuchi-Signature: t=<unix>,v1=<hex>`` where ``v1`` is
    HMAC-SHA256 over ``"<t>." + body``; several ``v1`` entries are allowed
    (secret rotation) and ``t`` must be within ``tolerance`` seconds of
    ``now``, which bounds replays: a replay inside the window is accepted
    and harmless (reports are applied idempotently), one outside it gets
    401.  Token mode, off unless ``allow_token``: ``X-Tsuchi-Token`` equals
    the secret; weaker, since a token seen once is valid for any body,
    forever.  Both compare in constant time.
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


def check_auth_headers(headers: Mapping[str, str], *, allow_token: bool = False) -> None:
    """Refuse (401) a request whose authentication headers cannot succeed,
    before its body is read: no ``X-Tsuchi-Signature`` (nor, when allowed,
    ``X-Tsuchi-Token``), or a signature not of the form ``t=<unix>,v1=<hex>``.
    The signature itself needs the body: :func:`authenticate` checks it."""
    lowered = {k.lower(): v for k, v in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER)
    if signature is None:
        if allow_token and lowered.get(TOKEN_HEADER):
            return
        raise WebhookRejected(401, "authorization", "signature or token header required")
    parts = [p.strip().partition("=") for p in signature.split(",")]
    stamps = [v for k, sep, v in parts if sep and k == "t"]
    macs = [v for k, sep, v in parts if sep and k == "v1"]
    if (
        len(stamps) != 1
        or not _SIG_TIMESTAMP.fullmatch(stamps[0])
        or not macs
        or not any(_SIG_HEX.fullmatch(m) for m in macs)
    ):
        raise WebhookRejected(401, SIGNATURE_HEADER, "must be t=<unix>,v1=<hex>")


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
    attributes in any case), read by :mod:`tsuchi.infrastructure.cm_callbacks`:
    CM status codes 0..4 become accepted, failed (rejected), delivered,
    failed, read; another code is kept as ``unknown``.  A naive ``received``
    time is taken as UTC.  ``to`` and ``operator`` are not kept.

    JSON replies: ``{"type": "reply"|"postback", "reference", "text",
    "postbackdata", "received"}``, or a list of them; each becomes a
    ``reply`` report.
    """
    check_size(body, max_body)
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return _from_json(body)
    if media in ("application/xml", "text/xml") or media.endswith("+xml"):
        return parse_status(media, body)
    raise WebhookRejected(415, "content-type", "must be JSON or XML")


def read_status_webhook(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | bytes,
    now: datetime,
    max_body: int = MAX_BODY,
    tolerance: float = TOLERANCE_S,
    allow_token: bool = False,
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
        return status_reports(data["messages"], "messages")
    if isinstance(data, dict) and "type" in data:
        return [_reply(data, "body")]
    if isinstance(data, list) and data:
        return [_reply(item, f"[{i}]") for i, item in enumerate(data)]
    raise WebhookRejected(400, "body", "must be a status report or a reply")


def _reply(item: Any, path: str) -> StatusReport:
    if not isinstance(item, dict):
        raise WebhookRejected(400, path, "must be an object")
    kind = item.get("type")
    if kind not in ("reply", "postback"):
        raise WebhookRejected(400, f"{path}.type", "must be reply or postback")
    reference = reference_value(item.get("reference"), f"{path}.reference")
    at = time_value(item.get("received"), f"{path}.received", UTC)
    text = _optional_text(item.get("text"), f"{path}.text", MAX_REPLY_TEXT)
    postback = _optional_text(item.get("postbackdata"), f"{path}.postbackdata", MAX_POSTBACK)
    if kind == "reply" and text is None:
        raise WebhookRejected(400, f"{path}.text", "is required for a reply")
    if kind == "postback" and not postback:
        raise WebhookRejected(400, f"{path}.postbackdata", "is required for a postback")
    return StatusReport(reference, "reply", at, text=text or "", postback=postback or "")


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
    "check_auth_headers",
    "check_size",
    "parse_status_webhook",
    "read_status_webhook",
    "sign",
]
