"""Shared fixtures: every integration test runs on SQLite and on PostgreSQL.

PostgreSQL tests need ``TSUCHI_TEST_DATABASE_URL``; without it they skip with
a clear reason (CI sets it and fails on any skip).  Each PostgreSQL test gets
an empty ``public`` schema.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tsuchi import Engine, ManualClock, Settings, SimulatedCarrierNetwork

PG_URL = os.environ.get("TSUCHI_TEST_DATABASE_URL")


def reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tsuchi.db'}"
        return
    if not PG_URL:
        pytest.skip("PostgreSQL: set TSUCHI_TEST_DATABASE_URL to run")
    reset_postgres(PG_URL)
    yield PG_URL


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, keys_dir=tmp_path / "keys", create_keys=True)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def network(clock: ManualClock) -> SimulatedCarrierNetwork:
    return SimulatedCarrierNetwork(seed=3, clock=clock)


@pytest.fixture
def engine(
    settings: Settings, clock: ManualClock, network: SimulatedCarrierNetwork
) -> Iterator[Engine]:
    with Engine(settings, clock=clock, gateway=network) as e:
        yield e
