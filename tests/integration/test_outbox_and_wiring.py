"""Host transactions (outbox semantics), host-provided engines and sessions,
schema versioning and key checks at start-up, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, func, select, update
from sqlalchemy.orm import scoped_session, sessionmaker

from tsuchi import Engine, ManualClock, Settings, errors, init_keys
from tsuchi.infrastructure.tables import meta

from .world import build, count_events

host_metadata = MetaData()
orders = Table(
    "host_orders",
    host_metadata,
    Column("id", Integer, primary_key=True),
    Column("note", String(50)),
)


def _host_rows(engine: Engine) -> int:
    with engine.store.session(commit=False) as s:
        return int(s.execute(select(func.count()).select_from(orders)).scalar_one())


@pytest.mark.parametrize("commit", [False, True])
def test_notice_commits_or_rolls_back_with_the_host_transaction(
    engine: Engine, commit: bool
) -> None:
    w = build(engine)
    host_metadata.create_all(engine.store.engine)
    events = count_events(engine)

    class HostFailure(Exception):
        pass

    try:
        with engine.transaction() as session:
            session.execute(orders.insert().values(id=1, note="card blocked"))
            m = engine.request_notice(
                w.sender,
                w.accounts[0],
                "fraud_alert",
                {"name": "山田", "last4": "1234", "amount": 1},
                idempotency_key="outbox-1",
            )
            if not commit:
                raise HostFailure
    except HostFailure:
        pass
    if commit:
        assert _host_rows(engine) == 1
        assert engine.messages(correlation_id="outbox-1") == [m.id]
        assert count_events(engine) == events + 2  # Requested and Routed, one message
        assert engine.pending_dispatch() == 1
        assert engine.message(m.id).status.value == "routed"
    else:
        assert _host_rows(engine) == 0
        assert engine.messages(correlation_id="outbox-1") == []
        assert count_events(engine) == events
        assert engine.pending_dispatch() == 0


def test_engine_on_the_hosts_own_sqlalchemy_engine(db_url: str, tmp_path: Path) -> None:
    host = create_engine(db_url)
    with Engine(
        Settings(keys_dir=tmp_path / "k", create_keys=True),
        sqlalchemy_engine=host,
        clock=ManualClock(),
    ) as e:
        w = build(e)
        assert e.account(w.accounts[0]).name == "山田太郎"
    host.dispose()


def test_engine_inside_the_hosts_scoped_session(db_url: str, tmp_path: Path) -> None:
    host = create_engine(db_url)
    host_metadata.create_all(host)
    session = scoped_session(sessionmaker(bind=host))
    settings = Settings(keys_dir=tmp_path / "k", create_keys=True)
    with Engine(settings, session=session, clock=ManualClock()) as e:
        session.commit()
        s = e.register_sender("acme", "ACME", "card", "ACME", "0120")
        session.rollback()  # the host decides: nothing was committed
        with pytest.raises(errors.UnknownSender):
            e.sender(s)
        s = e.register_sender("acme", "ACME", "card", "ACME", "0120")
        session.execute(orders.insert().values(id=7, note="x"))
        session.commit()
        assert e.sender(s).display_name == "ACME"
    session.remove()
    host.dispose()


def test_database_from_a_newer_version_is_refused(settings: Settings) -> None:
    with Engine(settings) as e:
        with e.store.session() as s:
            s.execute(update(meta).where(meta.c.key == "schema_version").values(value="999"))
    with pytest.raises(errors.SchemaTooNew, match="999"):
        Engine(settings)


def test_missing_kek_on_a_database_with_encrypted_data_fails_clearly(settings: Settings) -> None:
    with Engine(settings, clock=ManualClock()) as e:
        build(e)
    keys = settings.resolved_keys_dir()
    shutil.rmtree(keys)
    with pytest.raises(errors.KeyMaterialError, match=r"never created"):
        Engine(settings)  # create_keys=True still never makes a new key here
    assert not keys.exists()


def test_wrong_kek_fails_at_start(settings: Settings, tmp_path: Path) -> None:
    with Engine(settings, clock=ManualClock()) as e:
        build(e)
    init_keys(tmp_path / "other-keys")
    other = settings.model_copy(update={"keys_dir": tmp_path / "other-keys"})
    with pytest.raises(errors.KeyMaterialError, match="not the one"):
        Engine(other)


def test_no_keys_and_no_create_flag(db_url: str, tmp_path: Path) -> None:
    with pytest.raises(errors.KeyMaterialError, match="tsuchi keys init"):
        Engine(Settings(database_url=db_url, keys_dir=tmp_path / "none"))


@pytest.mark.parametrize(
    "url", ["mysql://root@localhost/test", "oracle://x", "not a url", "redis://localhost"]
)
def test_unsupported_database_urls(url: str, tmp_path: Path) -> None:
    with pytest.raises(errors.UnsupportedDatabaseURL) as e:
        Engine(Settings(database_url=url, keys_dir=tmp_path / "k", create_keys=True))
    assert e.value.field == "database_url"
