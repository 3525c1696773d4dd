"""Schema revisions on SQLite and PostgreSQL: first start, the previous release's
database, outdated, newer and unrecognised schemas, and a host's autogenerate.

The previous release's database is built from ``tests/fixtures/previous_release``
(its DDL and the rows and key files it wrote); ``tsuchi db`` runs as a real
subprocess, like an operator runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    inspect,
    text,
)
from sqlalchemy_utils.types.uuid import UUIDType

from tsuchi import Engine, ManualClock, Settings, SimulatedCarrierNetwork, errors
from tsuchi.infrastructure.crypto import init_keys
from tsuchi.infrastructure.tables import metadata as tsuchi_metadata
from tsuchi.migrations import include_name, include_object
from tsuchi.migrations import schema as tsuchi_schema

FIXTURE = Path(__file__).parent.parent / "fixtures" / "previous_release"
TSUCHI = [sys.executable, "-m", "tsuchi.cli"]
HEAD = tsuchi_schema.head()


def tsuchi(*args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSUCHI_")}
    env["TSUCHI_GATEWAY"] = "simulator"
    env.update(extra)
    return subprocess.run(
        [*TSUCHI, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300
    )


def fixture_keys(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    shutil.copytree(FIXTURE / "keys", keys)
    keys.chmod(0o700)
    for f in keys.iterdir():
        f.chmod(0o600)
    return keys


def _value(v: Any, column: str) -> Any:
    if isinstance(v, dict) and "hex" in v:
        raw = bytes.fromhex(v["hex"])
        return UUID(bytes=raw) if column == "originator_id" else raw
    if isinstance(v, dict) and "utc" in v:
        return datetime.fromisoformat(v["utc"]).replace(tzinfo=UTC)
    return v


def make_previous_release_database(url: str) -> dict[str, Any]:
    """The previous release's DDL, then every row it wrote (as a dump restores them)."""
    engine = create_engine(url)
    dialect = engine.dialect.name
    rows = json.loads((FIXTURE / "rows.json").read_text())
    ddl = (FIXTURE / f"schema.{dialect}.sql").read_text()
    with engine.begin() as conn:
        for statement in ddl.split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)
        # The rows go in through the column types the release wrote them with
        # (unchanged since: revision 0002 only adds indexes).
        typed = {t.name: t for t in tsuchi_metadata.sorted_tables}
        typed["tsuchi_events"] = Table(
            "tsuchi_events",
            MetaData(),
            Column("id", BigInteger, primary_key=True),
            Column("originator_id", UUIDType()),
            Column("originator_version", BigInteger),
            Column("topic", Text),
            Column("state", LargeBinary),
        )
        for name, table_rows in rows["tables"].items():
            if table_rows:
                conn.execute(
                    typed[name].insert(),
                    [{k: _value(v, k) for k, v in r.items()} for r in table_rows],
                )
        if dialect == "postgresql":
            conn.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('tsuchi_events', 'id'), max(id)) "
                    "FROM tsuchi_events"
                )
            )
    engine.dispose()
    return rows


def schema_status(url: str) -> tsuchi_schema.SchemaStatus:
    engine = create_engine(url)
    try:
        return tsuchi_schema.current(engine)
    finally:
        engine.dispose()


def open_engine(url: str, keys: Path, **kw: Any) -> Engine:
    clock = ManualClock()
    return Engine(
        Settings(database_url=url, keys_dir=keys, **kw),
        clock=clock,
        gateway=SimulatedCarrierNetwork(seed=1, clock=clock),
    )


def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_first_start_creates_every_revision_and_stamps_the_head(
    db_url: str, tmp_path: Path
) -> None:
    with open_engine(db_url, tmp_path / "keys", create_keys=True):
        pass
    st = schema_status(db_url)
    assert st.state is tsuchi_schema.State.CURRENT and st.revision == HEAD
    assert "alembic_version" not in table_names(db_url)  # the host's name stays free
    out = tsuchi("db", "current", "--db", db_url, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"{HEAD} (head)"
    check = tsuchi("db", "check", "--db", db_url, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    again = tsuchi("db", "upgrade", "--db", db_url, cwd=tmp_path)
    assert again.returncode == 0 and f"already at revision {HEAD}" in again.stdout


def _sqlite_uuid_column(ctx: Any, inspected: Any, column: Any, *_: Any) -> bool | None:
    """SQLite reflects the event table's BINARY(16) by its affinity (NUMERIC):
    that column is compared by its declared DDL instead (below)."""
    if ctx.dialect.name == "sqlite" and column.name == "originator_id":
        return False
    return None  # Alembic's own comparison


def test_the_revisions_build_exactly_the_tables_the_code_uses(db_url: str, tmp_path: Path) -> None:
    with open_engine(db_url, tmp_path / "keys", create_keys=True) as e:
        target = MetaData()
        for table in tsuchi_metadata.sorted_tables:
            table.to_metadata(target)
        e.store.recorder.events_record_cls.__table__.to_metadata(target)  # type: ignore[attr-defined]
        with e.store.engine.connect() as conn:
            mc = MigrationContext.configure(
                conn,
                opts={
                    "include_name": lambda name, type_, parents: (
                        type_ != "table" or name in target.tables
                    ),
                    "compare_type": _sqlite_uuid_column,
                },
            )
            diffs = compare_metadata(mc, target)
            if conn.dialect.name == "sqlite":
                ddl = conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE name = 'tsuchi_events'"
                ).scalar()
                assert "originator_id BINARY(16) NOT NULL" in ddl
    assert diffs == []


def test_previous_release_database_is_refused_until_upgraded_and_keeps_its_data(
    db_url: str, tmp_path: Path
) -> None:
    rows = make_previous_release_database(db_url)
    keys = fixture_keys(tmp_path)
    assert schema_status(db_url).state is tsuchi_schema.State.PREVIOUS_RELEASE

    with pytest.raises(errors.SchemaOutdated, match="tsuchi db upgrade"):
        open_engine(db_url, keys)
    assert "tsuchi_alembic_version" not in table_names(db_url)  # never stamped silently
    worker = tsuchi(
        "worker", "--db", db_url, "--keys", str(keys), "--max-seconds", "5", cwd=tmp_path
    )
    assert worker.returncode == 1 and "tsuchi db upgrade" in worker.stderr.replace("\n", " ")
    serve = tsuchi(
        "serve",
        "--db",
        db_url,
        "--keys",
        str(keys),
        "--port",
        "1",
        cwd=tmp_path,
        TSUCHI_WEBHOOK_SECRET="s" * 40,
    )
    assert serve.returncode == 1 and "SchemaOutdated" in serve.stderr
    check = tsuchi("db", "check", "--db", db_url, cwd=tmp_path)
    assert check.returncode == 1
    assert len(check.stderr.strip().splitlines()) == 1 and "tsuchi db upgrade" in check.stderr
    assert tsuchi("db", "current", "--db", db_url, cwd=tmp_path).stdout.startswith("none (")

    up = tsuchi("db", "upgrade", "--db", db_url, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert f"upgraded from previous release to revision {HEAD}" in up.stdout
    assert tsuchi("db", "check", "--db", db_url, cwd=tmp_path).returncode == 0
    engine = create_engine(db_url)
    with engine.connect() as conn:
        stamp = conn.execute(text("SELECT value FROM tsuchi_meta WHERE key = 'schema_version'"))
        assert stamp.scalar() == "2"
    indexes = {i["name"] for i in inspect(engine).get_indexes("tsuchi_lookup")}
    assert "tsuchi_lookup_account" in indexes  # revision 0002 ran
    engine.dispose()

    with open_engine(db_url, keys) as e:
        account = UUID(rows["account_id"])
        assert e.find_accounts("sakura-card", mobile=rows["mobile"]) == [account]
        assert e.find_accounts("sakura-card", customer_ref=rows["customer_ref"]) == [account]
        assert e.account(account).mobile == "+819012345678"
        message = e.message(UUID(rows["message_id"]))
        assert message.status.value == rows["message_status"]
        assert message.account_id == account
        # And it still works: a new notice on the upgraded database.
        sender = UUID(rows["sender_id"])
        new = e.request_notice(
            sender,
            account,
            "statement_ready",
            {"name": "山田 太郎", "month": "12月"},
            idempotency_key="stmt-2026-12",
            urgency="urgent",
        )
        assert new.status.value == "routed"


def test_an_older_revision_is_refused_and_upgraded(db_url: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    with open_engine(db_url, keys, create_keys=True):
        pass
    engine = create_engine(db_url)
    with engine.begin() as conn:
        cfg = tsuchi_schema._config(conn)
        command.downgrade(cfg, tsuchi_schema.BASELINE)
    engine.dispose()
    st = schema_status(db_url)
    assert st.state is tsuchi_schema.State.OUTDATED and st.revision == tsuchi_schema.BASELINE
    with pytest.raises(errors.SchemaOutdated, match=r"revision 0001.*tsuchi db upgrade"):
        open_engine(db_url, keys)
    check = tsuchi("db", "check", "--db", db_url, cwd=tmp_path)
    assert check.returncode == 1 and "tsuchi db upgrade" in check.stderr
    current = tsuchi("db", "current", "--db", db_url, cwd=tmp_path)
    assert current.stdout.startswith("0001 (")
    up = tsuchi("db", "upgrade", "--db", db_url, cwd=tmp_path)
    assert up.returncode == 0 and f"from 0001 to revision {HEAD}" in up.stdout
    with open_engine(db_url, keys):
        pass


def test_a_newer_revision_is_refused_and_left_alone(db_url: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    with open_engine(db_url, keys, create_keys=True):
        pass
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE tsuchi_alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(errors.SchemaTooNew, match="9999"):
        open_engine(db_url, keys)
    assert tsuchi("db", "check", "--db", db_url, cwd=tmp_path).returncode == 1
    up = tsuchi("db", "upgrade", "--db", db_url, cwd=tmp_path)
    assert up.returncode == 1 and "SchemaTooNew" in up.stderr
    assert schema_status(db_url).revision == "9999"


@pytest.mark.parametrize(
    "damage", ["a missing column", "an older schema version", "a missing table"]
)
def test_an_unrecognised_schema_is_never_stamped(db_url: str, tmp_path: Path, damage: str) -> None:
    make_previous_release_database(db_url)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        if damage == "a missing column":
            conn.execute(text("DROP INDEX tsuchi_outbox_due"))
            conn.execute(text("ALTER TABLE tsuchi_outbox DROP COLUMN submitting_at"))
        elif damage == "an older schema version":
            conn.execute(text("UPDATE tsuchi_meta SET value = '0' WHERE key = 'schema_version'"))
        else:
            conn.execute(text("DROP TABLE tsuchi_orphan_reports"))
    engine.dispose()
    keys = fixture_keys(tmp_path)
    with pytest.raises(errors.SchemaUnrecognised):
        open_engine(db_url, keys)
    up = tsuchi("db", "upgrade", "--db", db_url, cwd=tmp_path)
    assert up.returncode == 1 and "SchemaUnrecognised" in up.stderr
    assert "tsuchi_alembic_version" not in table_names(db_url)


def test_host_autogenerate_leaves_tsuchi_tables_alone(db_url: str, tmp_path: Path) -> None:
    host = MetaData()
    Table("card_blocks", host, Column("card_ref", String(8), primary_key=True))
    Table("alembic_version", host, Column("version_num", String(32), primary_key=True))
    with open_engine(db_url, tmp_path / "keys", create_keys=True) as e:
        with e.store.engine.begin() as conn:
            host.create_all(conn)
        with e.store.engine.connect() as conn:
            bare = compare_metadata(MigrationContext.configure(conn), host)
            filtered = compare_metadata(
                MigrationContext.configure(
                    conn, opts={"include_name": include_name, "include_object": include_object}
                ),
                host,
            )
            only_object = compare_metadata(
                MigrationContext.configure(conn, opts={"include_object": include_object}), host
            )
    dropped = {d[1].name for d in bare if d[0] == "remove_table"}
    assert {"tsuchi_events", "tsuchi_outbox", "tsuchi_alembic_version"} <= dropped
    assert filtered == []
    assert only_object == []


def test_a_host_table_in_the_database_is_no_tsuchi_schema(db_url: str, tmp_path: Path) -> None:
    engine = create_engine(db_url)
    with engine.begin() as conn:
        Table("orders", MetaData(), Column("id", Integer, primary_key=True)).create(conn)
    engine.dispose()
    assert schema_status(db_url).state is tsuchi_schema.State.EMPTY
    with open_engine(db_url, tmp_path / "keys", create_keys=True):
        pass
    assert schema_status(db_url).state is tsuchi_schema.State.CURRENT


def test_db_commands_never_print_the_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg://tsuchi:pw-0f9e8d7c@127.0.0.1:1/nowhere"
    for sub in ("check", "current", "upgrade"):
        proc = tsuchi("db", sub, "--db", url, cwd=tmp_path)
        assert proc.returncode == 1 and "TransientError" in proc.stderr
        assert "pw-0f9e8d7c" not in proc.stdout + proc.stderr


def test_engines_starting_together_on_an_empty_database_create_it_once(
    db_url: str, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    init_keys(keys)
    if db_url.startswith("sqlite"):
        # The event store switches a new SQLite file to WAL on its first
        # transaction, outside the schema lock, and engines doing that at the
        # same moment can find the file busy: the file starts in WAL here, so
        # what runs together is the schema creation alone.
        wal = create_engine(db_url)
        with wal.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode=WAL").scalar() == "wal"
        wal.dispose()
    results: list[object] = []
    start = threading.Barrier(4)

    def first_start() -> None:
        start.wait()
        try:
            with open_engine(db_url, keys):
                results.append("ok")
        except Exception as e:  # the test reports which
            results.append(e)

    threads = [threading.Thread(target=first_start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["ok"] * 4
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM tsuchi_alembic_version")).all() == [
            (HEAD,)
        ]
        stamps = conn.execute(text("SELECT value FROM tsuchi_meta WHERE key = 'schema_version'"))
        assert stamps.all() == [("2",)]
    engine.dispose()


def test_an_interrupted_upgrade_leaves_the_database_as_it_was(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_previous_release_database(db_url)
    real_upgrade = tsuchi_schema.command.upgrade

    def upgrade_then_fail(cfg: Any, revision: str) -> None:
        real_upgrade(cfg, revision)  # every revision ran and was stamped ...
        raise RuntimeError("the process died before its commit")  # ... then this

    monkeypatch.setattr(tsuchi_schema.command, "upgrade", upgrade_then_fail)
    engine = create_engine(db_url)
    with pytest.raises(RuntimeError):
        tsuchi_schema.upgrade(engine)
    engine.dispose()
    assert schema_status(db_url).state is tsuchi_schema.State.PREVIOUS_RELEASE
    assert "tsuchi_alembic_version" not in table_names(db_url)
    monkeypatch.undo()
    engine = create_engine(db_url)
    before, after = tsuchi_schema.upgrade(engine)
    engine.dispose()
    assert before.state is tsuchi_schema.State.PREVIOUS_RELEASE
    assert after.state is tsuchi_schema.State.CURRENT
