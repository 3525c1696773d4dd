"""Key custody: an injected KEK stands alone, a key directory open to others
is refused, and erasure on SQLite reports honestly whether the WAL that held
the destroyed key could be truncated."""

from __future__ import annotations

import base64
import os
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select

from tsuchi import Engine, ManualClock, Settings, SimulatedCarrierNetwork, errors
from tsuchi.infrastructure.tables import data_keys

from .world import NAMES, build

KEK = base64.b64encode(os.urandom(32)).decode()


def test_an_injected_kek_needs_no_kek_file_and_writes_none(db_url: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    injected = Settings(database_url=db_url, keys_dir=keys, kek=KEK, create_keys=True)
    with Engine(injected, clock=ManualClock()) as engine:
        account = build(engine).accounts[0]
    assert sorted(p.name for p in keys.iterdir()) == ["audit-signing.key", "index.key"]
    # The next start, with the same injected KEK and still no kek.key, reads it all.
    again = Settings(database_url=db_url, keys_dir=keys, kek=KEK)
    with Engine(again, clock=ManualClock()) as engine:
        assert engine.account(account).name == NAMES[0]
    other = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(errors.KeyMaterialError):
        Engine(Settings(database_url=db_url, keys_dir=keys, kek=other), clock=ManualClock())


def test_a_key_directory_open_to_others_is_refused(db_url: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    settings = Settings(database_url=db_url, keys_dir=keys, create_keys=True)
    Engine(settings, clock=ManualClock()).close()
    keys.chmod(0o777)
    with pytest.raises(errors.KeyMaterialError) as info:
        Engine(settings, clock=ManualClock())
    assert "chmod 700" in str(info.value)
    keys.chmod(0o700)
    Engine(settings, clock=ManualClock()).close()


def test_erasure_reports_a_wal_it_could_not_truncate_and_finishes_later(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tsuchi.db"
    settings = Settings(database_url=f"sqlite:///{path}", keys_dir=tmp_path / "k", create_keys=True)
    clock = ManualClock()
    with Engine(settings, clock=clock, gateway=SimulatedCarrierNetwork(clock=clock)) as engine:
        victim = build(engine).accounts[0]
        with engine.store.session(commit=False) as s:
            (wrapped,) = [
                bytes(r[0])
                for r in s.execute(
                    select(data_keys.c.wrapped).where(data_keys.c.subject_id == victim.hex)
                )
            ]
        reader = sqlite3.connect(path)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM tsuchi_data_keys").fetchone()  # an old snapshot
        engine.erase_account(victim, requested_by="dpo")
        assert engine.compact_storage() is False  # said, not assumed
        reader.rollback()
        reader.close()
        assert engine.compact_storage() is True
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("tsuchi.db*"))
        assert wrapped not in raw
