"""Settings reach what they configure: the PostgreSQL pool, and the CLI's exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from tsuchi import Engine, ManualClock, Settings

from ..conftest import PG_URL, reset_postgres


def test_pool_settings_size_the_postgresql_pool(tmp_path: Path) -> None:
    if not PG_URL:
        pytest.skip("PostgreSQL: set TSUCHI_TEST_DATABASE_URL to run")
    reset_postgres(PG_URL)
    settings = Settings(
        database_url=PG_URL,
        keys_dir=tmp_path / "keys",
        create_keys=True,
        pool_size=2,
        max_overflow=1,
        pool_timeout=timedelta(seconds=3),
    )
    with Engine(settings, clock=ManualClock()) as e:
        pool = e.store.engine.pool
        assert pool.size() == 2  # type: ignore[attr-defined]
        assert pool._max_overflow == 1  # type: ignore[attr-defined]
        assert pool.timeout() == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("TSUCHI_QUIET_HOURS_WINDOW", '["8:00", "21:00"]', "setting quiet_hours_window"),
        ("TSUCHI_GATWAY", "cm", "environment variable TSUCHI_GATWAY"),
    ],
)
def test_the_cli_exits_2_naming_a_bad_setting(
    tmp_path: Path, variable: str, value: str, named: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSUCHI_")}
    env[variable] = value
    proc = subprocess.run(
        [sys.executable, "-m", "tsuchi.cli", "db", "check", "--db", "sqlite:///t.db"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert named in proc.stderr
    assert value not in proc.stderr
    assert not (tmp_path / "t.db").exists()
