"""Property: no marketing message is ever submitted without a consent granted
before, and not withdrawn before, that submit; whatever the interleaving of
grants, withdrawals, requests, dispatches and time."""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tsuchi import Engine, ManualClock, Settings, SimulatedCarrierNetwork
from tsuchi.domain.message import parse_gateway_reference

from ..conftest import PG_URL, reset_postgres
from .world import build

OPS = st.lists(
    st.tuples(
        st.sampled_from(["grant", "withdraw", "request", "dispatch", "wait_hour", "wait_day"]),
        st.integers(0, 1),
    ),
    min_size=1,
    max_size=25,
)


def check_sequence(url: str, keys: Path, ops: list[tuple[str, int]]) -> None:
    clock = ManualClock()
    network = SimulatedCarrierNetwork(seed=1, clock=clock)
    with Engine(
        Settings(database_url=url, keys_dir=keys, create_keys=True), clock=clock, gateway=network
    ) as e:
        w = build(e)
        e.set_frequency_cap(w.sender, per_day=5, per_week=20)
        submitted_at: dict[str, datetime] = {}
        for n, (op, who) in enumerate(ops):
            account = w.accounts[who]
            clock.advance(timedelta(seconds=1))
            if op == "grant":
                e.grant_consent(account, w.sender, "marketing", source="web", wording="v1", by="x")
            elif op == "withdraw":
                e.withdraw_consent(account, w.sender, "marketing", source="app")
            elif op == "request":
                e.request_notice(w.sender, account, "campaign", idempotency_key=f"k{n}")
            elif op == "dispatch":
                before = len(network.submitted)
                e.dispatch()
                for sub in network.submitted[before:]:
                    submitted_at[sub.reference] = clock.now()
            elif op == "wait_hour":
                clock.advance(timedelta(hours=1))
            else:
                clock.advance(timedelta(days=1))
        e.dispatch()
        for sub in network.submitted:
            submitted_at.setdefault(sub.reference, clock.now())
        for sub in network.submitted:
            msg = e.message(parse_gateway_reference(sub.reference)[0])
            if msg.purpose.value != "marketing":
                continue
            with e.store.session(commit=False):
                c = e.services.consents.find(msg.account_id, msg.sender_id, msg.purpose)
            assert c is not None, "marketing submitted without any consent record"
            state = c.state_at(submitted_at[sub.reference])
            assert state is not None and state.action == "granted"


WITHDRAW_BETWEEN_REQUEST_AND_SEND = [("grant", 0), ("request", 0), ("withdraw", 0), ("dispatch", 0)]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=OPS)
@example(ops=WITHDRAW_BETWEEN_REQUEST_AND_SEND)
def test_no_marketing_without_prior_consent_sqlite(ops: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        check_sequence(f"sqlite:///{d}/t.db", Path(d) / "keys", ops)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=OPS)
def test_no_marketing_without_prior_consent_postgres(ops: list[tuple[str, int]]) -> None:
    if not PG_URL:
        pytest.skip("PostgreSQL: set TSUCHI_TEST_DATABASE_URL to run")
    reset_postgres(PG_URL)
    with tempfile.TemporaryDirectory() as d:
        check_sequence(PG_URL, Path(d) / "keys", ops)
