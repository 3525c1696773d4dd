"""The real aggregator: CM.com Business Messaging over HTTPS.

The simulator stands in for the carriers in tests and the demo; this module is
what a deployment plugs into :class:`~tsuchi.engine.Engine` as its
:class:`~tsuchi.ports.Gateway`.  It turns submissions
into CM's JSON message API (at most 100 messages per request), survives a
flaky network with retries (exponential backoff, full jitter) and a circuit
breaker, and maps CM's error codes onto :class:`~tsuchi.ports.SubmitResult`.
CM pushes status reports to a webhook (:mod:`tsuchi.infrastructure.webhooks`),
so :meth:`CMGateway.poll_reports` returns nothing.

Never two submits for one attempt
---------------------------------
CM de-duplicates nothing: a message posted twice is sent twice, and the
``reference`` (our ``message-id:attempt``) only makes both copies' reports
correlate to the same attempt.  So a request is sent again only when CM
provably did not take it:

* the connection could not be made (connect error or connect timeout), or
* CM answered with a 5xx other than 504 (its own statement that the batch was
  not processed).

Everything else after the request left this process is *ambiguous*: a read or
write timeout, a dropped connection, a 504 from a proxy, or a 2xx whose body
cannot be read.  CM may have sent those messages.  By default they are **not**
sent again; each is reported as ``SubmitResult(accepted=True,
code="unconfirmed")``, i.e. "handed over, outcome arrives by status report".
If CM never got it, no report will come: the engine should expire attempts
that stay without a report (that is a policy outside this module).  Callers
that prefer a possible duplicate to a possible loss can pass
``retry_ambiguous=True``; the duplicate then carries the same reference.

Batches are separate requests, so a retry only ever covers the batch that
failed, never messages already known accepted.  Once one batch of a call may
have reached CM, :meth:`CMGateway.submit` no longer raises for later batches
(that would lose the earlier results and invite a re-dispatch): it reports
them per message instead (``reason="outage"`` or the rejection rule).

Phone numbers, message texts and CM's free-text ``details`` (which can quote
the number) never appear in log lines or exception messages; only codes,
counts and references do.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Literal

import httpx

from tsuchi.domain.suggestions import Suggestion, SuggestionAction
from tsuchi.domain.values import Channel
from tsuchi.errors import (
    GatewayRejected,
    GatewayUnavailable,
    InvalidInput,
)
from tsuchi.ports import StatusReport, Submission, SubmitResult

log = logging.getLogger("tsuchi.cm")

DEFAULT_URL = "https://gw.messaging.cm.com/v1.0/message"
MAX_BATCH = 100
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
"""Read/write/pool 30 s, connect 5 s."""

#: Request-level CM error codes that reject the whole request; never retried.
REQUEST_ERRORS: dict[int, str] = {
    101: "authentication_failed",
    102: "balance_insufficient",
    103: "authentication_failed",  # product token incorrect
    202: "malformed_request",
    203: "malformed_request",  # the message array is incorrect
}

#: Per-message CM error codes and the rejection reason they map to.
MESSAGE_REASONS: dict[int, str] = {
    201: "not_sent",
    301: "invalid_field",
    302: "invalid_field",
    303: "invalid_field",
    304: "invalid_field",
    305: "invalid_field",
    401: "spam",
    402: "blacklisted",
    403: "rejected",
    500: "outage",
    999: "unknown",
}

UNCONFIRMED = "unconfirmed"
TOKEN_HEADER = "X-CM-PRODUCTTOKEN"  # noqa: S105 (a header name, not a secret)


BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Closed → open after ``failure_threshold`` consecutive failed requests;
    open for ``cooldown`` seconds of ``monotonic`` time; then half-open: one
    trial request, which closes the circuit on success or re-opens it."""

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise InvalidInput("failure_threshold", "must be at least 1")
        if cooldown < 0:
            raise InvalidInput("cooldown", "must not be negative")
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            if self._state == "open" and self._cooled_down():
                return "half_open"
            return self._state

    def _cooled_down(self) -> bool:
        return self._monotonic() - self._opened_at >= self.cooldown

    def acquire(self) -> None:
        """Permission for one request; raises :class:`GatewayUnavailable` while open."""
        with self._lock:
            if self._state == "open":
                if not self._cooled_down():
                    remaining = self.cooldown - (self._monotonic() - self._opened_at)
                    raise GatewayUnavailable("circuit_open", retry_after=max(remaining, 0.0))
                self._state = "half_open"
                self._probe_in_flight = False
            if self._state == "half_open":
                if self._probe_in_flight:
                    raise GatewayUnavailable("circuit_half_open", retry_after=self.cooldown)
                self._probe_in_flight = True

    def record_success(self) -> None:
        with self._lock:
            if self._state != "closed":
                log.info("aggregator circuit closed")
            self._state = "closed"
            self._failures = 0
            self._probe_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._probe_in_flight = False
            if self._state == "half_open" or self._failures >= self.failure_threshold:
                if self._state != "open":
                    log.warning(
                        "aggregator circuit opened after %d consecutive failures", self._failures
                    )
                self._state = "open"
                self._opened_at = self._monotonic()


class _NotSent(Exception):
    """Internal: this try certainly did not hand the batch over."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(what)


class _Ambiguous(Exception):
    """Internal: this try may have handed the batch over."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(what)


# Transport errors raised before the request reached the server.
_NOT_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)


class CMGateway:
    """A :class:`~tsuchi.ports.Gateway` for CM.com's Business Messaging API.

    ``sleep`` and ``rng`` drive the backoff and ``monotonic`` the circuit
    breaker's cooldown, so tests control time.  ``transport`` is handed to
    :class:`httpx.Client` (e.g. a proxy or mTLS transport).
    """

    def __init__(
        self,
        product_token: str,
        *,
        url: str = DEFAULT_URL,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        batch_size: int = MAX_BATCH,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 10.0,
        failure_threshold: int = 5,
        cooldown: float = 30.0,
        retry_ambiguous: bool = False,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not product_token or not product_token.strip():
            raise InvalidInput("product_token", "must not be empty")
        if not 1 <= batch_size <= MAX_BATCH:
            raise InvalidInput("batch_size", f"must be between 1 and {MAX_BATCH}")
        if max_attempts < 1:
            raise InvalidInput("max_attempts", "must be at least 1")
        if backoff_base < 0 or backoff_cap < 0:
            raise InvalidInput("backoff", "must not be negative")
        self._token = product_token
        self.url = url
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_ambiguous = retry_ambiguous
        self.breaker = CircuitBreaker(failure_threshold, cooldown, monotonic)
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 (jitter)
        self._client = httpx.Client(
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": "tsuchi"},
        )

    def __repr__(self) -> str:
        return f"CMGateway(url={self.url!r}, breaker={self.breaker.state!r})"

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> CMGateway:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- Gateway port ---------------------------------------------------------------------------
    def poll_reports(self, until: datetime, limit: int = 1000) -> list[StatusReport]:
        """CM pushes reports to the status webhook; nothing to poll."""
        return []

    def submit(self, submissions: Sequence[Submission]) -> list[SubmitResult]:
        """Send ``submissions`` in batches of at most ``batch_size``; one result each.

        Raises :class:`GatewayRejected` or :class:`GatewayUnavailable` only while
        nothing of this call can have reached CM (first batch); later batches'
        failures are reported per message.
        """
        subs = list(submissions)
        results: list[SubmitResult] = []
        for start in range(0, len(subs), self.batch_size):
            batch = subs[start : start + self.batch_size]
            try:
                results.extend(self._send_batch(batch))
            except GatewayRejected as exc:
                if start == 0:
                    raise
                results.extend(
                    SubmitResult(s.reference, False, exc.code, reason=exc.rule)
                    for s in subs[start:]
                )
                break
            except GatewayUnavailable as exc:
                if start == 0:
                    raise
                log.warning(
                    "aggregator unavailable (%s); %d later messages reported as outage",
                    exc.rule,
                    len(subs) - start,
                )
                results.extend(
                    SubmitResult(s.reference, False, "unavailable", reason="outage")
                    for s in subs[start:]
                )
                break
        return results

    # -- one batch --------------------------------------------------------------------------------
    def _send_batch(self, batch: list[Submission]) -> list[SubmitResult]:
        body = self.request_body(batch)
        maybe_sent = False
        last = "none"
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                delay = self._backoff(attempt - 1)
                log.warning(
                    "aggregator request failed (%s); try %d of %d in %.2fs",
                    last,
                    attempt,
                    self.max_attempts,
                    delay,
                )
                self._sleep(delay)
            try:
                self.breaker.acquire()
            except GatewayUnavailable:
                if maybe_sent:
                    return self._unconfirmed(batch, last)
                raise
            try:
                response = self._post(body)
            except _NotSent as exc:
                self.breaker.record_failure()
                last = exc.what
                continue
            except _Ambiguous as exc:
                self.breaker.record_failure()
                last = exc.what
                maybe_sent = True
                if self.retry_ambiguous:
                    continue
                return self._unconfirmed(batch, exc.what)
            except BaseException:
                self.breaker.record_failure()
                raise
            if response.status_code >= 500:
                self.breaker.record_failure()
                last = f"http_{response.status_code}"
                if response.status_code == 504:
                    maybe_sent = True
                    if not self.retry_ambiguous:
                        return self._unconfirmed(batch, last)
                continue
            self.breaker.record_success()
            try:
                return self._interpret(response, batch)
            except (GatewayRejected, GatewayUnavailable):
                if maybe_sent:  # an earlier try may have been taken: do not report "not sent"
                    return self._unconfirmed(batch, last)
                raise
        if maybe_sent:
            return self._unconfirmed(batch, last)
        log.warning("aggregator request failed (%s); %d tries exhausted", last, self.max_attempts)
        raise GatewayUnavailable("retries_exhausted")

    def _post(self, body: bytes) -> httpx.Response:
        try:
            return self._client.post(
                self.url,
                content=body,
                headers={"Content-Type": "application/json", TOKEN_HEADER: self._token},
            )
        except _NOT_SENT_ERRORS as exc:
            raise _NotSent(type(exc).__name__) from None
        except httpx.TransportError as exc:
            raise _Ambiguous(type(exc).__name__) from None

    def _backoff(self, retry: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(retry-1))]."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** (retry - 1)))
        return self._rng.uniform(0.0, ceiling)

    def _unconfirmed(self, batch: list[Submission], what: str) -> list[SubmitResult]:
        log.warning(
            "aggregator outcome unknown (%s) for %d messages; not resent, awaiting reports",
            what,
            len(batch),
        )
        return [
            SubmitResult(s.reference, True, UNCONFIRMED, gateway_ref="", reason=UNCONFIRMED)
            for s in batch
        ]

    # -- wire format ------------------------------------------------------------------------------
    def request_body(self, batch: Sequence[Submission]) -> bytes:
        """The JSON request CM expects for ``batch`` (contains personal data)."""
        msgs = [_message(s) for s in batch]
        payload = {"messages": {"msg": msgs}}
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

    def _interpret(self, response: httpx.Response, batch: list[Submission]) -> list[SubmitResult]:
        status = response.status_code
        try:
            data: Any = response.json()
        except ValueError:
            data = None
        if status == 429:
            raise GatewayUnavailable("rate_limited", retry_after=_retry_after(response))
        ok = 200 <= status < 300
        if not isinstance(data, dict):
            if ok:
                return self._unconfirmed(batch, "unreadable_response")
            raise GatewayRejected(f"http_{status}", _http_rule(status))
        code = _as_int(data.get("errorCode"))
        if code in REQUEST_ERRORS:
            raise GatewayRejected(str(code), REQUEST_ERRORS[code])
        if not ok and code is None:
            raise GatewayRejected(f"http_{status}", _http_rule(status))
        entries = data.get("messages")
        by_ref: dict[str, list[dict[str, Any]]] = {}
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("reference"), str):
                by_ref.setdefault(entry["reference"], []).append(entry)
        results: list[SubmitResult] = []
        for sub in batch:
            found = by_ref.get(sub.reference)
            entry = found.pop(0) if found else None
            results.append(_result(sub, entry, code, ok))
        accepted = sum(r.accepted and r.code != UNCONFIRMED for r in results)
        log.info(
            "aggregator batch: http %d, errorCode %s, %d of %d accepted",
            status,
            code,
            accepted,
            len(batch),
        )
        return results


def _message(s: Submission) -> dict[str, Any]:
    rcs = s.channel is Channel.PLUS_MESSAGE
    msg: dict[str, Any] = {
        "from": s.sms_sender_id,
        "to": [{"number": cm_number(s.to)}],
        "body": {"type": "auto", "content": s.text},
        "allowedChannels": ["RCS"] if rcs else ["SMS"],
        "reference": s.reference,
    }
    if not rcs and s.max_parts:
        msg["minimumNumberOfMessageParts"] = 1
        msg["maximumNumberOfMessageParts"] = s.max_parts
    if s.validity is not None:
        msg["validity"] = cm_validity(s.validity)
    keys = ("customGrouping", "customGrouping2", "customGrouping3")
    for key, code in zip(keys, s.groupings[:3], strict=False):
        msg[key] = code[:100]
    if rcs and (s.suggestions or s.attachments):
        conversation: list[dict[str, Any]] = [{"text": s.text}]
        for a in s.attachments:
            if a.get("kind") == "media":
                conversation.append(
                    {
                        "media": {
                            "mediaName": str(a["url"]).rsplit("/", 1)[-1],
                            "mediaUri": a["url"],
                            "mimeType": a["mime_type"],
                        }
                    }
                )
            elif a.get("kind") == "location":
                conversation.append(
                    {
                        "location": {  # CM types the coordinates as strings
                            "latitude": str(a["latitude"]),
                            "longitude": str(a["longitude"]),
                            "label": a.get("label", ""),
                        }
                    }
                )
            # Stamps have no CM content type; drafts with one are refused for CM.
        msg["richContent"] = {"conversation": conversation}
        if s.suggestions:
            msg["richContent"]["suggestions"] = [cm_suggestion(x) for x in s.suggestions]
    return msg


#: tsuchi's suggestion actions and CM's ``action`` values, as CM's .NET SDK
#: writes them (``SuggestionBase.cs``: ``[JsonDerivedType(..., "reply")]`` ...).
CM_ACTIONS: dict[SuggestionAction, str] = {
    SuggestionAction.REPLY: "reply",
    SuggestionAction.OPEN_URL: "openUrl",
    SuggestionAction.DIAL: "Dial",
    SuggestionAction.VIEW_LOCATION: "viewLocation",
    SuggestionAction.CALENDAR: "CreateCalendarEvent",
}


def cm_suggestion(raw: str | Suggestion) -> dict[str, Any]:
    """One suggestion in CM's ``richContent.suggestions`` form: ``action``,
    ``label`` and ``postbackdata`` (the stable code, which CM sends back on a
    tap instead of the label), plus the action's own object (``url``,
    ``dial.phoneNumber``, ``viewLocation`` with coordinates as strings or a
    ``searchQuery``, ``calendar`` with ``startTime``/``endTime`` in ISO 8601)."""
    s = raw if isinstance(raw, Suggestion) else Suggestion.reply(raw)
    out: dict[str, Any] = {
        "action": CM_ACTIONS[SuggestionAction(s.action)],
        "label": s.label,
        "postbackdata": s.code,
    }
    if s.action is SuggestionAction.OPEN_URL:
        out["url"] = s.url
    elif s.action is SuggestionAction.DIAL:
        out["dial"] = {"phoneNumber": s.phone_number}
    elif s.action is SuggestionAction.VIEW_LOCATION:
        where: dict[str, Any] = {}
        if s.latitude is not None and s.longitude is not None:
            where["latitude"], where["longitude"] = str(s.latitude), str(s.longitude)
        if s.query is not None:
            where["searchQuery"] = s.query
        if s.location_label is not None:
            where["label"] = s.location_label
        out["viewLocation"] = where
    elif s.action is SuggestionAction.CALENDAR:
        assert s.start is not None and s.end is not None
        calendar = {
            "startTime": s.start.isoformat(),
            "endTime": s.end.isoformat(),
            "title": s.title,
        }
        if s.description is not None:
            calendar["description"] = s.description
        out["calendar"] = calendar
    return out


def cm_number(e164: str) -> str:
    """``+819011112222`` → ``00819011112222``: CM wants ``00`` and the country
    code, without ``+``."""
    return "00" + e164[1:] if e164.startswith("+") else e164


MAX_VALIDITY = timedelta(hours=48)
"""CM's knowledge center: "The maximum of 48h is supported"."""


def cm_validity(ttl: timedelta) -> str:
    """A relative validity as CM documents it: whole hours (``"2h"``) or
    minutes (``"30m"``), never both; at least one minute, at most 48 hours
    (tsuchi's own TTL timer still decides when an attempt expires)."""
    minutes = max(int(min(ttl, MAX_VALIDITY).total_seconds() // 60), 1)
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"


def _result(
    sub: Submission, entry: dict[str, Any] | None, request_code: int | None, ok: bool
) -> SubmitResult:
    ref = sub.reference
    if entry is None:
        if ok and request_code in (None, 0):
            return SubmitResult(ref, True, "0", gateway_ref=ref)
        if request_code is not None and request_code != 201:
            return _rejection(sub, request_code)
        return SubmitResult(ref, True, UNCONFIRMED, reason=UNCONFIRMED)
    status = str(entry.get("status", "")).lower()
    if status == "accepted":
        return SubmitResult(ref, True, "0", gateway_ref=ref)
    if status == "rejected":
        code = _as_int(entry.get("messageErrorCode")) or request_code or 999
        return _rejection(sub, code)
    return SubmitResult(ref, True, UNCONFIRMED, reason=UNCONFIRMED)


def _rejection(sub: Submission, code: int) -> SubmitResult:
    if code == 403 and sub.channel is Channel.PLUS_MESSAGE:
        reason = "not_capable"  # RCS-only request refused: the number cannot take RCS
    else:
        reason = MESSAGE_REASONS.get(code, "rejected")
    return SubmitResult(sub.reference, False, str(code), reason=reason)


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 9:
        return int(value.strip())
    return None


def _http_rule(status: int) -> str:
    if status in (401, 403):
        return "authentication_failed"
    if status == 413:
        return "request_too_large"
    return "request_rejected"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "MAX_BATCH",
    "CMGateway",
    "CircuitBreaker",
    "GatewayRejected",
    "GatewayUnavailable",
]
