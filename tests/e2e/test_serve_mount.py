"""The webhook app mounted in a host's Starlette app, and the bound on
concurrent requests, under a real uvicorn on a loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from tsuchi import Engine, Settings
from tsuchi.application.views import WebhookResult
from tsuchi.infrastructure.webhooks import sign
from tsuchi.serve import create_app, engine_app

SECRET = "mounted-webhook-secret-0123456789abcdef"
BODY = (
    b'{"messages":{"msg":{"received":"2026-04-01T09:00:00Z","reference":"stray:1",'
    b'"status":{"code":2}}}}'
)


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
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
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'tsuchi.db'}",
        keys_dir=tmp_path / "keys",
        create_keys=True,
        webhook_secret=SECRET,
    )
    with Engine(settings) as e:
        yield e


@pytest.fixture
def host_url(engine: Engine) -> Iterator[str]:
    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("the bank's own app")

    host = Starlette(routes=[Route("/", home), Mount("/tsuchi", app=engine_app(engine))])
    with serve_in_thread(host) as url:
        yield url


def test_mounted_under_a_prefix_answers_a_signed_webhook_and_its_probes(
    host_url: str, engine: Engine
) -> None:
    headers = {
        "Content-Type": "application/json",
        "X-Tsuchi-Signature": sign(BODY, SECRET, int(time.time())),
    }
    r = httpx.post(f"{host_url}/tsuchi/webhooks/status", content=BODY, headers=headers)
    assert r.status_code == 200 and r.json()["orphans"] == 1
    assert httpx.get(f"{host_url}/tsuchi/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{host_url}/tsuchi/readyz").json() == {"status": "ready"}
    metrics = httpx.get(f"{host_url}/tsuchi/metrics").text
    assert 'tsuchi_webhook_requests_total{route="status",status="200"} 1.0' in metrics
    assert httpx.get(f"{host_url}/").text == "the bank's own app"
    # Outside the mount, the host's app answers (and it knows no such route).
    assert httpx.post(f"{host_url}/webhooks/status", content=BODY).status_code == 404
    assert httpx.get(f"{host_url}/tsuchi/nothing").status_code == 404


class Gate:
    """A handler that holds every request until released, and says when
    ``expected`` requests are inside."""

    def __init__(self, expected: int) -> None:
        self.release = threading.Event()
        self.inside = threading.Semaphore(0)
        self.expected = expected

    def __call__(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        self.inside.release()
        assert self.release.wait(60), "never released"
        return WebhookResult(accepted=1)


def test_requests_beyond_the_bound_are_503_with_retry_after() -> None:
    gate = Gate(expected=2)
    app = create_app(gate, max_concurrent=2)
    results: list[int] = []
    with serve_in_thread(app) as url:

        def held() -> None:
            results.append(
                httpx.post(f"{url}/webhooks/status", content=b"{}", timeout=60).status_code
            )

        threads = [threading.Thread(target=held) for _ in range(2)]
        for t in threads:
            t.start()
        for _ in range(2):
            assert gate.inside.acquire(timeout=30), "held requests did not arrive"
        over = httpx.post(f"{url}/webhooks/status", content=b"{}", timeout=30)
        assert over.status_code == 503 and over.headers["retry-after"] == "5"
        assert over.json() == {"error": "overloaded"}
        assert httpx.get(f"{url}/healthz").status_code == 200  # liveness is never bounded
        gate.release.set()
        for t in threads:
            t.join(timeout=30)
        assert results == [200, 200]
        after = httpx.post(f"{url}/webhooks/status", content=b"{}", timeout=30)
        assert after.status_code == 200


def test_a_body_that_does_not_arrive_is_408_and_frees_its_slot() -> None:
    app = create_app(lambda h, b: WebhookResult(accepted=1), max_concurrent=1, body_timeout=0.5)
    with serve_in_thread(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"POST /webhooks/status HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert httpx.post(f"{url}/webhooks/status", content=b"{}").status_code == 200


def test_engine_app_refuses_a_short_webhook_secret(tmp_path: Path) -> None:
    from tsuchi.errors import InvalidInput

    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'short.db'}",
        keys_dir=tmp_path / "keys",
        create_keys=True,
        webhook_secret="only-twenty-one-bytes",
    )
    with Engine(settings) as e, pytest.raises(InvalidInput) as refused:
        engine_app(e)
    assert refused.value.field == "webhook_secret" and "32" in refused.value.rule
