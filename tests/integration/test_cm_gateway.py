"""CMGateway against a loopback HTTP server that speaks CM's message API.

The server is real (``ThreadingHTTPServer`` on 127.0.0.1, ephemeral port);
failures are scripted per request.  ``received`` counts every reference the
server read, ``processed`` the ones it actually took (not answered with an
injected 5xx): the design promises each reference is *processed* at most once
(and, with the default policy, *received* at most once after a timeout).
"""

from __future__ import annotations

import json
import logging
import random
import re
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from tsuchi.domain.message import gateway_reference
from tsuchi.domain.suggestions import reply_code
from tsuchi.domain.values import Carrier, Channel
from tsuchi.infrastructure.cm_gateway import CMGateway, GatewayRejected, GatewayUnavailable
from tsuchi.ports import Submission

TOKEN = "00000000-0000-0000-0000-000000000000"


REFERENCE = re.compile(r"[A-Za-z0-9]{1,32}")
CM_NUMBER = re.compile(r"00[1-9][0-9]{6,14}")
VALIDITY = re.compile(r"[0-9]+[hm]")  # relative: hours or minutes, not both
SENDER = re.compile(r"[A-Za-z0-9 ]{1,11}|[0-9]{1,16}")


def documented_mt_violations(m: dict[str, Any]) -> list[str]:
    """What CM documents a message must be (tests/fixtures/cm/mt_rules.json
    names the sources): the reference 1-32 alphanumerics, numbers ``00`` +
    country code, the sender 11 alphanumerics or 16 digits, message parts as
    a minimum and maximum together, a relative validity in hours or minutes."""
    out: list[str] = []
    if not SENDER.fullmatch(str(m.get("from", ""))):
        out.append("from: at most 11 alphanumerical characters or 16 digits")
    if not REFERENCE.fullmatch(str(m.get("reference", ""))):
        out.append("reference: 1-32 alphanumeric characters")
    for to in m.get("to", []):
        if not CM_NUMBER.fullmatch(str(to.get("number", ""))):
            out.append("to.number: 00 + country code, digits only")
    lo, hi = m.get("minimumNumberOfMessageParts"), m.get("maximumNumberOfMessageParts")
    if (lo is None) != (hi is None):
        out.append("message parts: minimum and maximum are used together")
    elif lo is not None and not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
        out.append("message parts: 1 <= minimum <= maximum")
    validity = m.get("validity")
    if validity is not None and not (isinstance(validity, str) and VALIDITY.fullmatch(validity)):
        out.append("validity: a relative offset in hours (2h) or minutes (30m)")
    elif validity is not None and int(validity[:-1]) * (60 if validity[-1] == "h" else 1) > 48 * 60:
        out.append("validity: at most 48h")
    for key in ("customGrouping", "customGrouping2", "customGrouping3"):
        if key in m and not (isinstance(m[key], str) and len(m[key]) <= 100):
            out.append(f"{key}: up to 100 characters")
    rich = m.get("richContent")
    if isinstance(rich, dict) and "suggestions" in rich:
        out += documented_suggestion_violations(rich["suggestions"])
    return out


SUGGESTION_RULES = json.loads(
    (Path(__file__).parent.parent / "fixtures" / "cm" / "rcs_suggestion_rules.json").read_text()
)["example"]
DATE_ATOM = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})")


def _coordinate(value: Any, bound: float) -> bool:
    try:
        return isinstance(value, str) and -bound <= float(value) <= bound
    except ValueError:
        return False


def documented_suggestion_violations(suggestions: Any) -> list[str]:
    """CM's suggestion rules (tests/fixtures/cm/rcs_suggestion_rules.json):
    at most 11, each label at most 25 characters, a documented action with
    the object it needs, and postback data to send back."""
    rules = SUGGESTION_RULES
    if not isinstance(suggestions, list):
        return ["suggestions: a list"]
    out: list[str] = []
    if len(suggestions) > rules["max_suggestions"]:
        out.append("suggestions: at most 11 per message")
    for s in suggestions:
        action = s.get("action")
        label = s.get("label")
        if action not in rules["actions"]:
            out.append("suggestion.action: reply, openUrl, Dial, viewLocation, CreateCalendarEvent")
        if not isinstance(label, str) or not 1 <= len(label) <= rules["max_label_characters"]:
            out.append("suggestion.label: at most 25 characters")
        if not isinstance(s.get("postbackdata"), str) or not s["postbackdata"]:
            out.append("suggestion.postbackdata: sent back instead of the label")
        if action == "openUrl" and not isinstance(s.get("url"), str):
            out.append("openUrl: url")
        if action == "Dial":
            number = (s.get("dial") or {}).get("phoneNumber")
            allowed = set(rules["dial_phone_number_characters"])
            if not isinstance(number, str) or not number or not set(number) <= allowed:
                out.append("Dial: dial.phoneNumber of digits, +, * and #")
        if action == "viewLocation":
            where = s.get("viewLocation") or {}
            by_point = _coordinate(where.get("latitude"), 90) and _coordinate(
                where.get("longitude"), 180
            )
            if not by_point and not isinstance(where.get("searchQuery"), str):
                out.append("viewLocation: latitude and longitude (strings), or searchQuery")
        if action == "CreateCalendarEvent":
            cal = s.get("calendar") or {}
            times = [cal.get("startTime"), cal.get("endTime")]
            if not all(isinstance(t, str) and DATE_ATOM.fullmatch(t) for t in times):
                out.append("calendar: startTime and endTime as ISO 8601 with offset")
            if not isinstance(cal.get("title"), str):
                out.append("calendar: title")
    return out


class FakeCM(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0, activate: bool = True) -> None:
        super().__init__(("127.0.0.1", port), _Handler, bind_and_activate=activate)
        self.lock = threading.Lock()
        self.script: deque[tuple[Any, ...]] = deque()
        self.requests: list[dict[str, Any]] = []
        self.received: Counter[str] = Counter()
        self.processed: Counter[str] = Counter()
        self.not_capable: set[str] = set()
        self.reject: dict[str, int] = {}
        self.violations: list[str] = []
        self.tokens: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1.0/message"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # broken pipes after a client gave up waiting are expected here


class _Handler(BaseHTTPRequestHandler):
    server: FakeCM

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes | dict[str, Any]) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        data = json.loads(raw)
        msgs = data["messages"]["msg"]
        refs = [m["reference"] for m in msgs]
        srv = self.server
        with srv.lock:
            action = srv.script.popleft() if srv.script else ("ok",)
            srv.requests.append(data)
            srv.tokens.append(self.headers.get("X-CM-PRODUCTTOKEN", ""))
            srv.received.update(refs)
        if action[0] == "status":
            self._send(action[1], action[2] if len(action) > 2 else b"")
            return
        if action[0] == "sleep":
            time.sleep(action[1])
        if self.headers.get("X-CM-PRODUCTTOKEN") != TOKEN:
            self._send(400, {"details": "auth", "errorCode": 103, "messages": []})
            return
        broken = [rule for m in msgs for rule in documented_mt_violations(m)]
        if broken:
            with srv.lock:
                srv.violations.extend(broken)
            self._send(400, {"details": "; ".join(broken), "errorCode": 203, "messages": []})
            return
        with srv.lock:
            srv.processed.update(refs)
        if action[0] == "raw":
            self._send(200, action[1])
            return
        out = []
        for m in msgs:
            number = "+" + m["to"][0]["number"][2:]  # CM's 00 form back to E.164
            code = srv.reject.get(number, 0)
            if number in srv.not_capable and m["allowedChannels"] == ["RCS"]:
                code = 403
            out.append(
                {
                    "to": number,
                    "status": "Rejected" if code else "Accepted",
                    "reference": m["reference"],
                    "parts": 1,
                    "messageDetails": f"Gsm '{number}' rejected" if code else None,
                    "messageErrorCode": code,
                }
            )
        rejected = any(o["messageErrorCode"] for o in out)
        self._send(200, {"details": "", "errorCode": 201 if rejected else 0, "messages": out})


def _serve(server: FakeCM) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    return thread


@pytest.fixture
def cm() -> Iterator[FakeCM]:
    server = FakeCM()
    _serve(server)
    yield server
    server.shutdown()
    server.server_close()


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def gateway(url: str, fake_time: FakeTime, **kw: Any) -> CMGateway:
    kw.setdefault("timeout", httpx.Timeout(2.0))
    return CMGateway(
        TOKEN,
        url=url,
        sleep=fake_time.sleep,
        monotonic=fake_time.monotonic,
        rng=random.Random(7),
        **kw,
    )


def state(gw: CMGateway) -> str:
    return gw.breaker.state


def number(i: int) -> str:
    return f"+8190{i:08d}"


def sub(i: int, channel: Channel = Channel.SMS, suggestions: tuple[str, ...] = ()) -> Submission:
    return Submission(
        reference=gateway_reference(UUID(int=i), 1),
        channel=channel,
        carrier=Carrier.DOCOMO,
        sender_name="Tsuchi Card",
        sms_sender_id="TSUCHI",
        to=number(i),
        text=f"ご利用確認 {i}",
        suggestions=suggestions,
    )


# -- batching and wire format ---------------------------------------------------------------
def test_250_messages_go_in_three_batches_each_reference_once(
    cm: FakeCM, fake_time: FakeTime
) -> None:
    subs = [sub(i) for i in range(250)]
    with gateway(cm.url, fake_time) as gw:
        results = gw.submit(subs)
    assert [len(r["messages"]["msg"]) for r in cm.requests] == [100, 100, 50]
    assert [r.reference for r in results] == [s.reference for s in subs]
    assert all(r.accepted and r.code == "0" and r.gateway_ref == r.reference for r in results)
    assert set(cm.received.values()) == {1} and len(cm.received) == 250
    assert cm.processed == cm.received
    assert fake_time.sleeps == []


def test_request_body_shape(cm: FakeCM, fake_time: FakeTime) -> None:
    subs = [
        sub(1, Channel.PLUS_MESSAGE, ("これは私です", "私ではありません")),
        sub(2, Channel.PLUS_MESSAGE),
        sub(3, Channel.SMS),
    ]
    with gateway(cm.url, fake_time) as gw:
        gw.submit(subs)
    [request] = cm.requests
    assert "authentication" not in request["messages"]  # the token goes in X-CM-PRODUCTTOKEN
    assert cm.tokens == [TOKEN]
    rcs, plain_rcs, sms = request["messages"]["msg"]
    assert rcs["from"] == "TSUCHI"
    assert rcs["to"] == [{"number": "00" + number(1)[1:]}]
    assert rcs["body"] == {"type": "auto", "content": "ご利用確認 1"}
    assert rcs["allowedChannels"] == ["RCS"]
    assert rcs["reference"] == subs[0].reference
    assert rcs["richContent"] == {
        "conversation": [{"text": "ご利用確認 1"}],
        "suggestions": [
            # A plain label is a reply whose postback is its label's stable code.
            {
                "action": "reply",
                "label": "これは私です",
                "postbackdata": reply_code("これは私です"),
            },
            {
                "action": "reply",
                "label": "私ではありません",
                "postbackdata": reply_code("私ではありません"),
            },
        ],
    }
    assert "richContent" not in plain_rcs and plain_rcs["allowedChannels"] == ["RCS"]
    assert "richContent" not in sms and sms["allowedChannels"] == ["SMS"]
    assert cm.violations == []


def test_every_documented_field_is_sent_as_cm_documents_it(cm: FakeCM, fake_time: FakeTime) -> None:
    s = replace(
        sub(7),
        validity=timedelta(hours=72),
        max_parts=10,
        groupings=("acme", "security", "fraud_alert"),
    )
    urgent = replace(sub(8, Channel.PLUS_MESSAGE), validity=timedelta(minutes=10))
    with gateway(cm.url, fake_time) as gw:
        results = gw.submit([s, urgent])
    assert cm.violations == [] and all(r.accepted for r in results)
    sms, rcs = cm.requests[-1]["messages"]["msg"]
    assert sms["validity"] == "48h" and rcs["validity"] == "10m"  # CM supports at most 48h
    assert (sms["minimumNumberOfMessageParts"], sms["maximumNumberOfMessageParts"]) == (1, 10)
    assert "maximumNumberOfMessageParts" not in rcs
    assert [sms["customGrouping"], sms["customGrouping2"], sms["customGrouping3"]] == [
        "acme",
        "security",
        "fraud_alert",
    ]


def test_the_loopback_server_refuses_what_cm_documents_as_wrong(
    cm: FakeCM, fake_time: FakeTime
) -> None:
    bad = replace(sub(9), reference="not:a:cm:reference", validity=timedelta(minutes=90))
    with gateway(cm.url, fake_time) as gw, pytest.raises(GatewayRejected) as info:
        gw.submit([bad])
    assert info.value.code == "203"
    assert cm.violations == ["reference: 1-32 alphanumeric characters"]
    # 90 minutes is sent as "90m" (hours and minutes are never combined).
    assert cm.requests[-1]["messages"]["msg"][0]["validity"] == "90m"


def test_poll_reports_is_empty_because_cm_pushes(cm: FakeCM, fake_time: FakeTime) -> None:
    with gateway(cm.url, fake_time) as gw:
        assert gw.poll_reports(datetime.now(UTC)) == []


# -- retries --------------------------------------------------------------------------------
def test_retries_5xx_with_jittered_backoff_then_succeeds(cm: FakeCM, fake_time: FakeTime) -> None:
    cm.script.extend([("status", 500), ("status", 503)])
    subs = [sub(i) for i in range(5)]
    with gateway(cm.url, fake_time, backoff_base=0.5, backoff_cap=10.0) as gw:
        results = gw.submit(subs)
    assert all(r.accepted and r.code == "0" for r in results)
    assert len(cm.requests) == 3
    assert len(fake_time.sleeps) == 2
    assert 0 <= fake_time.sleeps[0] <= 0.5 and 0 <= fake_time.sleeps[1] <= 1.0
    assert set(cm.processed.values()) == {1} and len(cm.processed) == 5


def test_backoff_is_capped(cm: FakeCM, fake_time: FakeTime) -> None:
    cm.script.extend([("status", 502)] * 5)
    with gateway(
        cm.url, fake_time, max_attempts=6, backoff_base=1.0, backoff_cap=2.0, failure_threshold=99
    ) as gw:
        gw.submit([sub(1)])
    assert len(fake_time.sleeps) == 5 and max(fake_time.sleeps) <= 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_is_retried_and_nothing_is_sent_twice(fake_time: FakeTime) -> None:
    port = free_port()
    late = FakeCM(port, activate=False)
    late.allow_reuse_address = True

    def sleep_then_start(seconds: float) -> None:
        fake_time.sleep(seconds)
        if len(fake_time.sleeps) == 2:  # the server comes up before the third try
            late.server_bind()
            late.server_activate()
            _serve(late)

    gw = gateway(late.url, fake_time)
    gw._sleep = sleep_then_start
    try:
        results = gw.submit([sub(i) for i in range(3)])
    finally:
        gw.close()
        late.shutdown()
        late.server_close()
    assert all(r.accepted for r in results)
    assert len(fake_time.sleeps) == 2 and len(late.requests) == 1
    assert set(late.received.values()) == {1}


def test_unreachable_raises_retryable_error_after_all_tries(fake_time: FakeTime) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1.0/message"
    with gateway(url, fake_time, max_attempts=3) as gw:
        with pytest.raises(GatewayUnavailable) as info:
            gw.submit([sub(1)])
    assert info.value.rule == "retries_exhausted"
    assert len(fake_time.sleeps) == 2


def test_read_timeout_is_not_resent_by_default(cm: FakeCM, fake_time: FakeTime) -> None:
    cm.script.append(("sleep", 1.0))
    subs = [sub(i) for i in range(4)]
    with gateway(cm.url, fake_time, timeout=httpx.Timeout(0.3)) as gw:
        results = gw.submit(subs)
    # Outcome unknown: reported as handed over, to be settled by status reports.
    assert all(r.accepted and r.code == "unconfirmed" for r in results)
    assert fake_time.sleeps == []
    time.sleep(1.0)  # let the slow request finish on the server
    assert set(cm.received.values()) == {1} and len(cm.received) == 4


def test_read_timeout_retried_when_caller_opts_in(cm: FakeCM, fake_time: FakeTime) -> None:
    cm.script.append(("sleep", 1.0))
    subs = [sub(i) for i in range(4)]
    with gateway(cm.url, fake_time, timeout=httpx.Timeout(0.3), retry_ambiguous=True) as gw:
        results = gw.submit(subs)
    assert all(r.accepted and r.code == "0" for r in results)
    assert len(fake_time.sleeps) == 1
    time.sleep(1.0)
    # The documented price of opting in: CM saw (and would send) each message twice.
    assert set(cm.received.values()) == {2}


def test_gateway_timeout_504_is_ambiguous_and_not_resent(cm: FakeCM, fake_time: FakeTime) -> None:
    cm.script.append(("status", 504))
    with gateway(cm.url, fake_time) as gw:
        [result] = gw.submit([sub(1)])
    assert result.accepted and result.code == "unconfirmed"
    assert len(cm.requests) == 1


def test_unreadable_success_body_is_not_resent(cm: FakeCM, fake_time: FakeTime) -> None:
    cm.script.append(("raw", b"<html>ok</html>"))
    with gateway(cm.url, fake_time) as gw:
        [result] = gw.submit([sub(1)])
    assert result.accepted and result.code == "unconfirmed"
    assert len(cm.requests) == 1


# -- 4xx are final --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "body", "code", "rule"),
    [
        (400, {"details": "x", "errorCode": 202, "messages": []}, "202", "malformed_request"),
        (400, {"details": "x", "errorCode": 102, "messages": []}, "102", "balance_insufficient"),
        (400, b"bad request", "http_400", "request_rejected"),
        (401, b"", "http_401", "authentication_failed"),
    ],
)
def test_4xx_is_never_retried(
    cm: FakeCM, fake_time: FakeTime, status: int, body: Any, code: str, rule: str
) -> None:
    cm.script.append(("status", status, body))
    with gateway(cm.url, fake_time) as gw:
        with pytest.raises(GatewayRejected) as info:
            gw.submit([sub(1)])
    assert (info.value.code, info.value.rule) == (code, rule)
    assert len(cm.requests) == 1 and fake_time.sleeps == []


def test_wrong_token_is_authentication_failed(cm: FakeCM, fake_time: FakeTime) -> None:
    gw = CMGateway("wrong", url=cm.url, sleep=fake_time.sleep)
    with gw, pytest.raises(GatewayRejected) as info:
        gw.submit([sub(1)])
    assert (info.value.code, info.value.rule) == ("103", "authentication_failed")
    assert "wrong" not in str(info.value) and "wrong" not in repr(gw)


def test_rate_limit_429_is_transient_but_not_retried(cm: FakeCM, fake_time: FakeTime) -> None:
    cm.script.append(("status", 429, b""))
    with gateway(cm.url, fake_time) as gw:
        with pytest.raises(GatewayUnavailable) as info:
            gw.submit([sub(1)])
    assert info.value.rule == "rate_limited" and len(cm.requests) == 1


# -- circuit breaker ------------------------------------------------------------------------
def test_circuit_opens_after_repeated_5xx_and_half_opens_after_cooldown(
    cm: FakeCM, fake_time: FakeTime
) -> None:
    cm.script.extend([("status", 500)] * 3)
    gw = gateway(cm.url, fake_time, max_attempts=3, failure_threshold=3, cooldown=30.0)
    with gw:
        with pytest.raises(GatewayUnavailable):
            gw.submit([sub(1)])
        assert state(gw) == "open" and len(cm.requests) == 3

        with pytest.raises(GatewayUnavailable) as info:
            gw.submit([sub(2)])
        assert info.value.rule == "circuit_open" and info.value.retry_after == 30.0
        assert len(cm.requests) == 3  # nothing reached the server while open

        fake_time.now += 29.9
        with pytest.raises(GatewayUnavailable):
            gw.submit([sub(2)])
        assert len(cm.requests) == 3

        fake_time.now += 0.1
        assert state(gw) == "half_open"
        [result] = gw.submit([sub(2)])  # the trial request succeeds
        assert result.accepted and state(gw) == "closed"
        assert len(cm.requests) == 4


def test_failed_half_open_trial_reopens_at_once(cm: FakeCM, fake_time: FakeTime) -> None:
    cm.script.extend([("status", 500)] * 3)
    gw = gateway(cm.url, fake_time, max_attempts=2, failure_threshold=2, cooldown=10.0)
    with gw:
        with pytest.raises(GatewayUnavailable):
            gw.submit([sub(1)])
        fake_time.now += 10.0
        with pytest.raises(GatewayUnavailable) as info:
            gw.submit([sub(1)])  # one trial (500), then open again without a second try
        assert info.value.rule == "circuit_open"
        assert len(cm.requests) == 3 and state(gw) == "open"


def test_later_batch_failure_is_reported_not_raised(cm: FakeCM, fake_time: FakeTime) -> None:
    cm.script.extend([("ok",), ("status", 500), ("status", 500)])
    subs = [sub(i) for i in range(150)]
    with gateway(cm.url, fake_time, max_attempts=2) as gw:
        results = gw.submit(subs)
    assert all(r.accepted for r in results[:100])
    assert all(not r.accepted and r.reason == "outage" for r in results[100:])
    assert set(cm.processed.values()) == {1} and len(cm.processed) == 100


def test_later_batch_balance_exhausted_is_reported_not_raised(
    cm: FakeCM, fake_time: FakeTime
) -> None:
    cm.script.extend([("ok",), ("status", 400, {"errorCode": 102, "messages": []})])
    results = gateway(cm.url, fake_time).submit([sub(i) for i in range(201)])
    assert all(r.accepted for r in results[:100])
    assert {(r.accepted, r.code, r.reason) for r in results[100:]} == {
        (False, "102", "balance_insufficient")
    }
    assert len(cm.requests) == 2  # the third batch was not tried


# -- per-message outcomes -------------------------------------------------------------------
def test_per_message_rejections_are_mapped(cm: FakeCM, fake_time: FakeTime) -> None:
    cm.not_capable.update({number(1), number(2)})
    cm.reject.update({number(3): 402, number(4): 401, number(5): 303, number(6): 403})
    subs = [
        sub(0, Channel.PLUS_MESSAGE),
        sub(1, Channel.PLUS_MESSAGE, ("OK",)),
        sub(2, Channel.SMS),  # not RCS-capable, but SMS is fine
        sub(3),
        sub(4),
        sub(5),
        sub(6),
    ]
    with gateway(cm.url, fake_time) as gw:
        results = gw.submit(subs)
    got = [(r.reference, r.accepted, r.code, r.reason) for r in results]
    refs = [s.reference for s in subs]
    assert got == [
        (refs[0], True, "0", ""),
        (refs[1], False, "403", "not_capable"),
        (refs[2], True, "0", ""),
        (refs[3], False, "402", "blacklisted"),
        (refs[4], False, "401", "spam"),
        (refs[5], False, "303", "invalid_field"),
        (refs[6], False, "403", "rejected"),
    ]
    assert len(cm.requests) == 1


def test_no_personal_data_in_logs_or_errors(
    cm: FakeCM, fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    cm.reject[number(1)] = 402
    cm.script.extend([("status", 500), ("sleep", 1.0)])
    caplog.set_level(logging.DEBUG)
    subs = [sub(i) for i in range(3)]
    with gateway(cm.url, fake_time, timeout=httpx.Timeout(0.3)) as gw:
        results = gw.submit(subs)
        results += gw.submit(subs)
    text = caplog.text + repr(results)
    for s in subs:
        assert s.to not in text and s.text not in text
    assert "Gsm" not in text


def _cm_fixture(name: str) -> Any:
    path = Path(__file__).parent.parent / "fixtures" / "cm" / name
    return json.loads(path.read_text())["example"]


def test_cms_documented_responses_are_read_as_documented(cm: FakeCM, fake_time: FakeTime) -> None:
    # "Incorrect msg and a correct message": 200, errorCode 201, per-message codes.
    mixed = _cm_fixture("mt_response_error_message.json")
    subs = [sub(1), sub(2)]
    for entry, s in zip(mixed["body"]["messages"], subs, strict=True):
        entry["reference"] = s.reference
    cm.script.append(("status", mixed["http_status"], json.dumps(mixed["body"]).encode()))
    with gateway(cm.url, fake_time) as gw:
        ok, bad = gw.submit(subs)
    assert (ok.accepted, ok.code) == (True, "0")
    assert (bad.accepted, bad.code, bad.reason) == (False, "304", "invalid_field")
    # "Entire request incorrect": 400, errorCode 101, no messages.
    whole = _cm_fixture("mt_response_error_request.json")
    cm.script.append(("status", whole["http_status"], json.dumps(whole["body"]).encode()))
    with gateway(cm.url, fake_time) as gw, pytest.raises(GatewayRejected) as info:
        gw.submit([sub(3)])
    assert (info.value.code, info.value.rule) == ("101", "authentication_failed")
