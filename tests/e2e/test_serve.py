"""The webhook ASGI app under a real uvicorn on a loopback port, driven by httpx."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn

from tsuchi.errors import TransientError
from tsuchi.infrastructure.webhooks import read_status_webhook, sign
from tsuchi.ports import StatusReport
from tsuchi.serve import WebhookResult, create_app

SECRET = "e2e-webhook-secret-0123456789"
MAX_BODY = 4096


class Recorder:
    """A stand-in for the engine: applies each (reference, kind) once."""

    def __init__(self) -> None:
        self.reports: list[StatusReport] = []
        self.seen: set[tuple[str, str]] = set()
        self.fail_with: Exception | None = None

    def __call__(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        if self.fail_with is not None:
            raise self.fail_with
        reports = read_status_webhook(  # as an engine with webhook_allow_token on
            headers, body, secret=SECRET, now=datetime.now(UTC), max_body=MAX_BODY, allow_token=True
        )
        new = dup = orphans = 0
        for r in reports:
            if not r.reference.startswith("known"):
                orphans += 1
            elif (r.reference, r.kind) in self.seen:
                dup += 1
            else:
                self.seen.add((r.reference, r.kind))
                self.reports.append(r)
                new += 1
        return WebhookResult(accepted=new, duplicates=dup, orphans=orphans)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def base_url(recorder: Recorder) -> Iterator[str]:
    app = create_app(recorder, max_body=MAX_BODY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def status_body(*refs: str, code: int = 2) -> bytes:
    msgs = [
        {
            "received": "2026-04-01T09:00:00Z",
            "to": "+819012345678",
            "reference": ref,
            "status": {"code": code, "errorCode": "", "errorDescription": ""},
            "operator": "44010",
        }
        for ref in refs
    ]
    return json.dumps({"messages": {"msg": msgs}}).encode()


def signed(body: bytes, ts: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if ts is None else ts
    return {"Content-Type": "application/json", "X-Tsuchi-Signature": sign(body, SECRET, stamp)}


def post(url: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/webhooks/status", content=body, headers=headers, timeout=10)


def test_healthz(base_url: str) -> None:
    r = httpx.get(f"{base_url}/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_unknown_routes_are_404(base_url: str) -> None:
    assert httpx.get(f"{base_url}/").status_code == 404
    assert httpx.get(f"{base_url}/webhooks/status").status_code == 404
    assert httpx.post(f"{base_url}/healthz").status_code == 404


def test_signed_report_is_accepted_and_a_redelivery_is_a_duplicate(
    base_url: str, recorder: Recorder
) -> None:
    body = status_body("known:1", "known:2", "stray:1")
    first = post(base_url, body, signed(body))
    assert first.status_code == 200
    assert first.json() == {"accepted": 2, "duplicates": 0, "orphans": 1, "poison": 0}
    again = post(base_url, body, signed(body))
    assert again.json() == {"accepted": 0, "duplicates": 2, "orphans": 1, "poison": 0}
    assert [(r.reference, r.kind) for r in recorder.reports] == [
        ("known:1", "delivered"),
        ("known:2", "delivered"),
    ]


def test_token_mode_and_xml(base_url: str, recorder: Recorder) -> None:
    body = (
        b"<MESSAGES><MSG RECEIVED='2026-04-01T09:00:00Z'><REFERENCE>known:9</REFERENCE>"
        b"<STATUS><CODE>4</CODE></STATUS></MSG></MESSAGES>"
    )
    r = post(base_url, body, {"Content-Type": "text/xml", "X-Tsuchi-Token": SECRET})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert recorder.reports[0].kind == "read"


def test_unsigned_forged_and_replayed_are_401(base_url: str, recorder: Recorder) -> None:
    body = status_body("known:1")
    unsigned = post(base_url, body, {"Content-Type": "application/json"})
    assert unsigned.status_code == 401 and unsigned.json()["field"] == "authorization"
    forged = {"Content-Type": "application/json", "X-Tsuchi-Signature": f"t=1,v1={'a' * 64}"}
    assert post(base_url, body, forged).status_code == 401
    stale = post(base_url, body, signed(body, int(time.time()) - 3600))
    assert stale.status_code == 401 and stale.json()["error"] == "timestamp outside tolerance"
    altered = post(base_url, status_body("known:1", code=3), signed(body))
    assert altered.status_code == 401
    assert recorder.reports == []


def test_malformed_signed_body_is_400_naming_field_and_rule(base_url: str) -> None:
    body = status_body("known:1").replace(b"2026-04-01T09:00:00Z", b"yesterday")
    r = post(base_url, body, signed(body))
    assert r.status_code == 400
    assert r.json() == {"error": "must be an ISO 8601 time", "field": "messages.msg[0].received"}
    assert "+81" not in r.text


def test_oversized_body_is_413_with_content_length(base_url: str, recorder: Recorder) -> None:
    body = b" " * (MAX_BODY + 1)
    r = post(base_url, body, signed(body))
    assert r.status_code == 413 and r.json()["field"] == "body"


def test_oversized_streamed_body_is_413_without_reading_it_all(base_url: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"x" * 1024

    r = post(base_url, chunks(), {"Content-Type": "application/json"})
    assert r.status_code == 413


def test_handler_errors_map_to_503_and_500_without_details(
    base_url: str, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    body = status_body("known:1")
    recorder.fail_with = TransientError("database busy")
    r = post(base_url, body, signed(body))
    assert r.status_code == 503
    recorder.fail_with = RuntimeError("+819012345678 leaked?")
    r = post(base_url, body, signed(body))
    assert r.status_code == 500 and r.json() == {"error": "internal error"}
    assert "RuntimeError" in caplog.text and "+81" not in caplog.text
