"""PostgreSQL faults: dropped connections, a server that stops answering, lock
timeouts.  Operations retry or fail with a clear retryable error; nothing is
half-written; the engine recovers without a restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tsuchi import Engine, ManualClock, Settings, errors

from ..conftest import PG_URL, reset_postgres
from ..integration.world import build, count_events
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.skipif(not PG_URL, reason="PostgreSQL: set TSUCHI_TEST_DATABASE_URL")
FRAUD = {"name": "山田", "last4": "1234", "amount": 1}


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Engine, TcpProxy]]:
    assert PG_URL
    reset_postgres(PG_URL)
    url = make_url(PG_URL)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    via_proxy = url.set(port=proxy.port).render_as_string(hide_password=False)
    settings = Settings(
        database_url=via_proxy, keys_dir=tmp_path / "keys", create_keys=True, db_lock_timeout_ms=500
    )
    with Engine(settings, clock=ManualClock()) as e:
        yield e, proxy
    proxy.close()


def test_dropped_connections_heal_without_restart(proxied: tuple[Engine, TcpProxy]) -> None:
    e, proxy = proxied
    w = build(e)
    for i in range(3):
        proxy.cut()  # every pooled connection dies, as in a server restart
        m = e.request_notice(
            w.sender, w.accounts[0], "fraud_alert", FRAUD, idempotency_key=f"cut-{i}"
        )
        assert e.message(m.id).status.value == "routed"
    assert e.dispatch() == 3


def test_unreachable_database_gives_a_retryable_error_and_writes_nothing(
    proxied: tuple[Engine, TcpProxy],
) -> None:
    e, proxy = proxied
    w = build(e)
    before = count_events(e)
    proxy.accepting = False
    proxy.cut()
    t0 = time.monotonic()
    with pytest.raises(errors.TransientError, match="retry"):
        e.request_notice(w.sender, w.accounts[0], "fraud_alert", FRAUD, idempotency_key="down")
    assert time.monotonic() - t0 < 30
    proxy.accepting = True
    assert count_events(e) == before  # nothing half-written
    m = e.request_notice(w.sender, w.accounts[0], "fraud_alert", FRAUD, idempotency_key="down")
    assert count_events(e) == before + 2 and e.message(m.id).status.value == "routed"


def test_lock_timeout_is_a_retryable_error(proxied: tuple[Engine, TcpProxy]) -> None:
    e, _ = proxied
    w = build(e)
    assert PG_URL
    holder = create_engine(PG_URL)
    locked = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        with holder.begin() as conn:
            conn.execute(text("LOCK TABLE tsuchi_events IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            release.wait(30)

    t = threading.Thread(target=hold_lock)
    t.start()
    try:
        assert locked.wait(10)
        before_error = time.monotonic()
        with pytest.raises(errors.TransientError):
            e.request_notice(
                w.sender, w.accounts[0], "fraud_alert", FRAUD, idempotency_key="locked"
            )
        assert time.monotonic() - before_error < 20
    finally:
        release.set()
        t.join()
        holder.dispose()
    assert (
        e.request_notice(
            w.sender, w.accounts[0], "fraud_alert", FRAUD, idempotency_key="locked"
        ).status.value
        == "routed"
    )
