"""Metrics follow what committed, carry no personal data and stay per engine;
readiness fails on a database that is gone, a schema or key mismatch, and
passes again when the cause is gone."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import update
from sqlalchemy.engine import make_url

from tsuchi import Engine, ManualClock, Settings, SimulatedCarrierNetwork
from tsuchi.application.flows.fallbacks import fallback_code
from tsuchi.errors import GatewayUnavailable
from tsuchi.infrastructure.metrics import Metrics
from tsuchi.infrastructure.tables import meta
from tsuchi.ports import StatusReport, Submission, SubmitResult

from ..conftest import PG_URL, reset_postgres
from ..reliability.tcp_proxy import TcpProxy
from .world import NAMES, NUMBERS, build

T0 = datetime(2026, 4, 1, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo


def value(engine: Engine, name: str, **labels: str) -> float:
    for family in engine.metrics.registry.collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_metrics_follow_notices_submissions_reports_and_timers(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    clock.set(T0)
    network.capability["+818033334444"] = False  # the second customer (au): SMS only
    w = build(engine)
    for i, account in enumerate(w.accounts):
        memo = {"memo": f"{NAMES[i]}様 {NUMBERS[i]}"}
        engine.request_notice(w.sender, account, "note", memo, idempotency_key=f"n{i}")
        engine.request_notice(w.sender, account, "campaign", {}, idempotency_key=f"c{i}")
    engine.request_notice(  # the same request again: not a new notice
        w.sender,
        w.accounts[0],
        "note",
        {"memo": f"{NAMES[0]}様 {NUMBERS[0]}"},
        idempotency_key="n0",
    )
    notices = "tsuchi_notices_requested_total"
    assert value(engine, notices, outcome="routed", purpose="transactional", tenant="acme") == 3
    assert value(engine, notices, outcome="blocked", purpose="marketing", tenant="acme") == 3
    assert value(engine, "tsuchi_outbox_depth", priority="normal") == 3
    engine.dispatch()
    submissions = "tsuchi_submissions_total"
    accepted = sum(
        value(engine, submissions, carrier=c, outcome="accepted", channel="plus_message")
        for c in ("docomo", "au", "softbank")
    )
    assert accepted == 2
    assert value(engine, submissions, carrier="au", outcome="rejected", tenant="acme") == 1
    assert value(engine, "tsuchi_fallbacks_total", reason="not_capable", carrier="au") == 1
    assert value(engine, "tsuchi_outbox_depth", priority="normal") == 1  # the SMS attempt
    engine.dispatch()
    assert value(engine, submissions, channel="sms", outcome="accepted", carrier="au") == 1
    assert value(engine, "tsuchi_outbox_depth", priority="normal") == 0
    clock.advance(timedelta(minutes=30))
    engine.sweep()  # the simulator's reports arrive
    assert value(engine, "tsuchi_delivery_seconds_count", channel="plus_message") == 2
    assert value(engine, "tsuchi_delivery_seconds_count", channel="sms") == 1
    clock.advance(timedelta(days=2))
    engine.sweep()  # delivery TTL timers fire, late
    assert value(engine, "tsuchi_timer_fire_lag_seconds_count", kind="ttl") == 2
    engine.catch_up_projections()
    text = engine.metrics.exposition().decode()
    assert "tsuchi_audit_chain_lag_events 0.0" in text
    assert 'tsuchi_projection_lag_events{projection="delivery_report"} 0.0' in text
    engine.cancel_notice(  # new events: the projections are behind until the next run
        engine.request_notice(
            w.sender, w.accounts[1], "note", {"memo": "m"}, idempotency_key="x"
        ).id,
        "host_request",
    )
    assert value(engine, "tsuchi_audit_chain_lag_events") >= 2
    assert value(engine, "tsuchi_projection_lag_events", projection="delivery_report") >= 2
    personal = [*NUMBERS, *NAMES, "C0", "C1", "+8190", "09011112222"]
    personal += [m.hex for a in w.accounts for m in engine.messages(account_id=a)]
    personal += [str(a) for a in w.accounts]
    assert [p for p in personal if p in text] == []


class Failing:
    """A gateway that is down, with a circuit breaker that says so."""

    breaker = SimpleNamespace(state="open")

    def submit(self, submissions: Sequence[Submission]) -> list[SubmitResult]:
        raise GatewayUnavailable("circuit_open", retry_after=30)

    def poll_reports(self, until: datetime, limit: int = 1000) -> list[StatusReport]:
        return []


def test_gateway_errors_and_circuit_state(settings: Settings, clock: ManualClock) -> None:
    clock.set(T0)
    with Engine(settings, clock=clock, gateway=Failing()) as e:
        w = build(e)
        e.request_notice(w.sender, w.accounts[0], "note", {"memo": "x"}, idempotency_key="g")
        with pytest.raises(GatewayUnavailable):
            e.dispatch()
        assert value(e, "tsuchi_gateway_errors_total", error="circuit_open") == 1
        assert value(e, "tsuchi_gateway_circuit_state", state="open") == 1
        assert value(e, "tsuchi_gateway_circuit_state", state="closed") == 0
        assert value(e, "tsuchi_outbox_depth", priority="normal") == 1  # handed back


def test_two_engines_in_one_process_and_a_host_registry(
    engine: Engine, clock: ManualClock, tmp_path: Path
) -> None:
    clock.set(T0)
    host = CollectorRegistry()
    other = Settings(
        database_url=f"sqlite:///{tmp_path / 'other.db'}",
        keys_dir=tmp_path / "other-keys",
        create_keys=True,
    )
    with Engine(other, clock=clock, metrics=Metrics(host)) as second:
        for e, n in ((engine, 2), (second, 1)):
            w = build(e)
            for i in range(n):
                e.request_notice(
                    w.sender, w.accounts[i], "note", {"memo": "x"}, idempotency_key=f"{i}"
                )
        labels = {"outcome": "routed", "purpose": "transactional", "tenant": "acme"}
        assert value(engine, "tsuchi_notices_requested_total", **labels) == 2
        assert value(second, "tsuchi_notices_requested_total", **labels) == 1
        assert second.metrics.registry is host
        assert b"tsuchi_notices_requested_total" in generate_latest(host)


def test_readiness_names_a_schema_or_key_mismatch(engine: Engine) -> None:
    assert engine.readiness() is None
    with engine.store.session() as s:
        s.execute(update(meta).where(meta.c.key == "kek_id").values(value="another-kek"))
    assert engine.readiness() == "keys do not match"
    with engine.store.session() as s:
        s.execute(
            update(meta).where(meta.c.key == "kek_id").values(value=engine.keyring.kek.key_id)
        )
        s.execute(update(meta).where(meta.c.key == "schema_version").values(value="999"))
    assert engine.readiness() == "schema not current"


def test_fallback_reasons_are_short_codes() -> None:
    assert fallback_code("not_capable") == "not_capable"
    assert fallback_code("failed 301") == "failed"
    assert fallback_code("expired TTL") == "expired"
    assert fallback_code("no delivery within TTL") == "ttl"
    assert fallback_code("urgent notice not read in time: SMS as well") == "read_window"
    assert fallback_code("山田 +819012345678") == "other"


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Engine, TcpProxy]]:
    if not PG_URL:
        pytest.skip("PostgreSQL: set TSUCHI_TEST_DATABASE_URL to run")
    reset_postgres(PG_URL)
    url = make_url(PG_URL)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    via_proxy = url.set(port=proxy.port).render_as_string(hide_password=False)
    settings = Settings(database_url=via_proxy, keys_dir=tmp_path / "keys", create_keys=True)
    with Engine(settings, clock=ManualClock()) as e:
        yield e, proxy
    proxy.close()


@pytest.mark.postgres
def test_readiness_fails_while_postgres_is_unreachable_and_passes_when_it_returns(
    proxied: tuple[Engine, TcpProxy],
) -> None:
    e, proxy = proxied
    assert e.readiness() is None
    proxy.accepting = False
    proxy.cut()
    assert e.readiness() == "database unreachable"
    assert value(e, "tsuchi_backlog_readable") == 0  # a scrape still answers
    proxy.accepting = True
    assert e.readiness() is None
    assert value(e, "tsuchi_backlog_readable") == 1


def test_after_commit_calls_once_per_committed_unit_never_for_a_failed_one(
    engine: Engine,
) -> None:
    from eventsourcing.persistence import IntegrityError

    uow = engine.services.uow
    calls: list[str] = []
    attempts: list[int] = []

    def conflicted_once(s: object) -> None:
        attempts.append(1)
        uow.after_commit(lambda: calls.append(f"attempt {len(attempts)}"))
        if len(attempts) == 1:
            raise IntegrityError("a concurrent writer won")  # retried by the unit

    uow.run(conflicted_once)
    assert calls == ["attempt 2"]

    def fails(s: object) -> None:
        uow.after_commit(lambda: calls.append("never"))
        raise RuntimeError("the command fails")

    with pytest.raises(RuntimeError):
        uow.run(fails)

    def observer_breaks(s: object) -> None:
        uow.after_commit(lambda: 1 / 0)  # logged and dropped: the unit committed
        uow.after_commit(lambda: calls.append("still told"))

    uow.run(observer_breaks)
    assert calls == ["attempt 2", "still told"]
