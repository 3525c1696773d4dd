"""``tsuchi serve`` and ``tsuchi worker`` as real processes on loopback ports:
probes, metrics, the checks made before a body is read, start-up refusals,
several server processes, and a clean exit on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tsuchi.infrastructure.webhooks import sign

from .test_cli import TSUCHI

SECRET = "serve-process-webhook-secret-0123456789"
CM_TOKEN = "cm-callback-token-abcdefghijklmnopqrstuvwxyz"
BODY = (
    b'{"messages":{"msg":{"received":"2026-04-01T09:00:00Z","reference":"stray:1",'
    b'"status":{"code":2}}}}'
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSUCHI_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        TSUCHI_GATEWAY="simulator",
        TSUCHI_CREATE_KEYS="true",
        TSUCHI_WEBHOOK_SECRET=SECRET,
        TSUCHI_CM_WEBHOOK_TOKEN=CM_TOKEN,
    )
    env.update(extra)
    return env


def wait_for(url: str, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    """Until ``url`` answers at all (the process is listening)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    port = free_port()
    db = tmp_path / "tsuchi.db"
    proc = subprocess.Popen(
        [*TSUCHI, "serve", "--db", f"sqlite:///{db}", "--port", str(port)],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/healthz", proc)
        yield url, db, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def signed_post(url: str, body: bytes = BODY) -> httpx.Response:
    headers = {
        "Content-Type": "application/json",
        "X-Tsuchi-Signature": sign(body, SECRET, int(time.time())),
    }
    return httpx.post(f"{url}/webhooks/status", content=body, headers=headers, timeout=30)


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in metrics.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.partition("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return 0.0


def headers_only(port: int, request: bytes) -> bytes:
    """Send a request's head (its body is announced, never sent) and read the
    answer: a server that waited for the body would never answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


def test_serve_probes_metrics_and_sigterm_exit_zero(
    serve: tuple[str, Path, subprocess.Popen[str]],
) -> None:
    url, _, proc = serve
    first = signed_post(url)
    assert first.status_code == 200 and first.json()["orphans"] == 1
    assert httpx.post(f"{url}/webhooks/status", content=BODY).status_code == 401
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
    metrics = httpx.get(f"{url}/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert sample(text, "tsuchi_webhook_requests_total", route="status", status="200") == 1
    assert sample(text, "tsuchi_webhook_requests_total", route="status", status="401") == 1
    assert sample(text, "tsuchi_backlog_readable") == 1
    for family in (
        "tsuchi_notices_requested_total",
        "tsuchi_submissions_total",
        "tsuchi_delivery_seconds",
        "tsuchi_read_seconds",
        "tsuchi_fallbacks_total",
        "tsuchi_unconfirmed_submissions_total",
        "tsuchi_gateway_errors_total",
        "tsuchi_outbox_depth",
        "tsuchi_outbox_oldest_due_seconds",
        "tsuchi_timer_lag_seconds",
        "tsuchi_projection_lag_events",
    ):
        assert f"# TYPE {family}" in text, family
    assert CM_TOKEN not in text and SECRET not in text
    code, err = stop(proc)
    assert code == 0, err[-3000:]


def test_readyz_fails_while_the_sqlite_file_is_away_and_passes_when_it_returns(
    serve: tuple[str, Path, subprocess.Popen[str]],
) -> None:
    url, db, proc = serve
    assert httpx.get(f"{url}/readyz").status_code == 200
    away = db.with_name("moved.db")
    db.rename(away)
    gone = httpx.get(f"{url}/readyz")
    assert gone.status_code == 503 and gone.headers["retry-after"]
    assert gone.json() == {"status": "unavailable", "reason": "database file missing"}
    assert httpx.get(f"{url}/healthz").status_code == 200  # alive all the same
    away.rename(db)
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
    assert stop(proc)[0] == 0


def test_refusals_come_before_the_body_is_read(
    serve: tuple[str, Path, subprocess.Popen[str]],
) -> None:
    url, _, proc = serve
    port = int(url.rsplit(":", 1)[1])
    wrong = CM_TOKEN[::-1]
    answer = headers_only(
        port,
        f"POST /webhooks/cm/{wrong}/status HTTP/1.1\r\nHost: tsuchi\r\n"
        "Content-Type: application/json\r\nContent-Length: 900000\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]
    unsigned = headers_only(
        port,
        b"POST /webhooks/status HTTP/1.1\r\nHost: tsuchi\r\n"
        b"Content-Type: application/json\r\nContent-Length: 900000\r\n\r\n",
    )
    assert unsigned.startswith(b"HTTP/1.1 401 "), unsigned[:200]
    malformed = headers_only(
        port,
        b"POST /webhooks/status HTTP/1.1\r\nHost: tsuchi\r\nX-Tsuchi-Signature: v1=zz\r\n"
        b"Content-Type: application/json\r\nContent-Length: 900000\r\n\r\n",
    )
    assert malformed.startswith(b"HTTP/1.1 401 "), malformed[:200]
    # The right token: the body is awaited, and read (a poison-free orphan report).
    right = httpx.post(
        f"{url}/webhooks/cm/{CM_TOKEN}/status",
        content=BODY,
        headers={"Content-Type": "application/json"},
    )
    assert right.status_code == 200
    text = httpx.get(f"{url}/metrics").text
    assert sample(text, "tsuchi_webhook_requests_total", route="cm_status", status="404") == 1
    assert sample(text, "tsuchi_webhook_requests_total", route="cm_status", status="200") == 1
    assert CM_TOKEN not in text and wrong not in text
    assert stop(proc)[0] == 0


def test_a_short_webhook_secret_is_refused_at_start_with_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*TSUCHI, "serve", "--db", f"sqlite:///{tmp_path / 't.db'}", "--port", str(free_port())],
        cwd=tmp_path,
        env=environment(TSUCHI_WEBHOOK_SECRET="short!"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "webhook_secret" in lines[0] and "32" in lines[0]
    assert "short!" not in proc.stderr


def test_several_server_processes_share_the_port_and_sum_their_metrics(
    tmp_path: Path,
) -> None:
    port = free_port()
    db = tmp_path / "tsuchi.db"
    proc = subprocess.Popen(
        [*TSUCHI, "serve", "--db", f"sqlite:///{db}", "--port", str(port), "--workers", "2"],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/healthz", proc)
        for _ in range(6):  # new connections: either process may answer each
            assert signed_post(url).status_code == 200
        text = httpx.get(f"{url}/metrics").text
        assert sample(text, "tsuchi_webhook_requests_total", route="status", status="200") == 6
        code, err = stop(proc)
        assert code == 0, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_worker_metrics_port_answers_with_the_families(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            *TSUCHI,
            "worker",
            "--db",
            f"sqlite:///{tmp_path / 'tsuchi.db'}",
            "--sweep-seconds",
            "0.2",
            "--metrics-port",
            str(port),
        ],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for(url, proc)
        deadline = time.monotonic() + 60
        text = httpx.get(url).text
        while 'tsuchi_worker_seconds_since_success{job="sweep"}' not in text:
            assert time.monotonic() < deadline, text[-2000:]
            time.sleep(0.2)
            text = httpx.get(url).text
        for family in (
            "tsuchi_notices_requested_total",
            "tsuchi_submissions_total",
            "tsuchi_outbox_depth",
            "tsuchi_timer_lag_seconds",
            "tsuchi_worker_seconds_since_success",
        ):
            assert f"# TYPE {family}" in text, family
        code, err = stop(proc)
        assert code == 0, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
