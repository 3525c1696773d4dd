"""Wiring of the ``eventsourcing`` event store onto one SQLAlchemy database.

Events (``tsuchi_events``), data keys, read models and the schema record live
in the database one URL names, or on the host's own SQLAlchemy engine or
scoped session.  The tables are created and checked by
:func:`tsuchi.migrations.schema.ensure_current` before anything else runs: a
database whose schema is not at this code's revision is refused.
``eventsourcing-sqlalchemy`` keeps a unit of work per context, so everything
written inside :meth:`AggregateStore.session` commits or rolls back together,
including the host's own rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import (
    InfrastructureFactory,
    InterfaceError,
    JSONTranscoder,
    Mapper,
    OperationalError,
)
from eventsourcing.utils import Environment, EnvType
from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore, transactions
from eventsourcing_sqlalchemy.factory import SQLAlchemyFactory
from sqlalchemy import Connection, Engine, create_engine, event, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from tsuchi.errors import KeyMaterialError, SchemaTooNew
from tsuchi.infrastructure.crypto import DataKeyStore, KeyRing
from tsuchi.infrastructure.mapper import DateAsISO, PersonalDataMapper, SealedAsDict
from tsuchi.infrastructure.recorder import CoreApplicationRecorder
from tsuchi.infrastructure.tables import SCHEMA_VERSION, data_keys, lookup, meta, outbox
from tsuchi.migrations.schema import ensure_current

log = logging.getLogger("tsuchi.store")

# What a retry may cure: a dropped connection, a restarted server, a lock
# timeout, a busy SQLite file.
TRANSIENT_DB_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,  # eventsourcing's
    InterfaceError,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
)


def _sqlite_pragmas(synchronous: str) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA secure_delete=ON")  # erased key bytes are overwritten
        # FULL (the default): a committed unit of work survives a power loss.
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.close()

    return on_connect


# Tables an erasure deletes rows from; their dead tuples are vacuumed after it.
ERASURE_TABLES = (data_keys.name, lookup.name, outbox.name)


def _insert_absent(s: Session, key: str, value: str) -> Any:
    """``INSERT`` of a ``tsuchi_meta`` row that does nothing if the key exists."""
    name = s.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(meta).values(key=key, value=value).on_conflict_do_nothing()
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(meta).values(key=key, value=value).on_conflict_do_nothing()
    return insert(meta).values(key=key, value=value)


class FairLock:
    """A first-come, first-served lock with ``Semaphore``'s acquire/release.

    ``eventsourcing-sqlalchemy`` serialises a process's writing transactions
    on a SQLite file with a ``threading.Semaphore``, which is not fair: a
    thread that releases it and asks again at once (a worker going from one
    unit of work to the next) usually wins, and another thread (a request
    raising a fraud alert) can wait for seconds.  Here waiters are served in
    arrival order, so a writer waits for at most the transactions already
    queued before it."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        with self._mutex:
            if not self._held and not self._waiters:
                self._held = True
                return True
            if not blocking:
                return False
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append(gate)
        if gate.acquire(timeout=-1 if timeout is None else timeout):
            return True  # handed over by release(): we hold the lock now
        with self._mutex:
            try:
                self._waiters.remove(gate)
            except ValueError:  # handed over just as the wait timed out: keep it
                return True
        return False

    @property
    def contended(self) -> bool:
        """Whether another writer is waiting: long units can end early."""
        return bool(self._waiters)

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()  # ownership passes directly
            else:
                self._held = False


class AggregateStore(Application[UUID]):
    """The ``eventsourcing`` application that stores every tsuchi aggregate."""

    name = "tsuchi"

    def __init__(
        self,
        *,
        keyring: KeyRing,
        url: str | None = None,
        host_engine: Engine | None = None,
        host_session: scoped_session[Session] | None = None,
        lock_timeout_ms: int = 10_000,
        sqlite_synchronous: str = "FULL",
        cache_ttl: float | None = None,
        pool_size: int = 5,
        max_overflow: int = 10,
        pool_timeout: float = 30.0,
    ) -> None:
        self._url = url
        self._lock_timeout_ms = lock_timeout_ms
        if sqlite_synchronous not in ("FULL", "NORMAL"):
            raise ValueError("sqlite_synchronous must be FULL or NORMAL")
        self._sqlite_synchronous = sqlite_synchronous
        self._pool = (pool_size, max_overflow, pool_timeout)
        self._host_engine = host_engine
        self._host_session = host_session
        self.keys = DataKeyStore(keyring.kek, self.session, ttl=cache_ttl)
        self.saved_hook: Callable[[tuple[Any, ...]], None] | None = None
        # CREATE_TABLE off: the event table is created by tsuchi's baseline
        # revision, like every other table, never behind the schema check.
        env: dict[str, str] = {
            "PERSISTENCE_MODULE": "eventsourcing_sqlalchemy",
            "CREATE_TABLE": "no",
        }
        if url is not None:
            env["SQLALCHEMY_URL"] = url
        super().__init__(env=env)

    # -- construction ------------------------------------------------------------
    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        # Explicit wiring: never read the process environment behind the host's back.
        return Environment(name, dict(env or {}))

    def construct_factory(self, env: Environment) -> InfrastructureFactory[Any]:
        factory = SQLAlchemyFactory(env)
        factory.application_recorder_class = CoreApplicationRecorder
        if self._url is not None and self._url.startswith("postgresql"):
            # Our own engine for PostgreSQL: connections are checked before use
            # (a restarted server or dropped connection heals without a restart)
            # and lock waits are bounded, so they fail as retryable errors.
            pg = create_engine(
                self._url,
                pool_pre_ping=True,
                pool_size=self._pool[0],
                max_overflow=self._pool[1],
                pool_timeout=self._pool[2],
                connect_args={"options": f"-c lock_timeout={int(self._lock_timeout_ms)}"},
            )
            factory.datastore = SQLAlchemyDatastore(session_maker=sessionmaker(bind=pg))
        if self._host_session is not None:
            factory.datastore = SQLAlchemyDatastore(session=self._host_session)
        elif self._host_engine is not None:
            factory.datastore = SQLAlchemyDatastore(
                session_maker=sessionmaker(bind=self._host_engine)
            )
        if factory.datastore.write_lock is not None:
            factory.datastore.write_lock = FairLock()  # type: ignore[assignment]
        bind = factory.datastore.engine
        if isinstance(bind, Engine):
            if bind.dialect.name == "sqlite":
                event.listen(bind, "connect", _sqlite_pragmas(self._sqlite_synchronous))
            try:
                ensure_current(bind)
            except BaseException:
                if self._host_engine is None:  # our own engine: close its connections
                    bind.dispose()
                raise
        else:  # a host session bound to one connection: the host owns its transaction
            assert isinstance(bind, Connection)
            ensure_current(bind)
        return factory

    def construct_mapper(self) -> Mapper[UUID]:
        return PersonalDataMapper(self.construct_transcoder(), self.keys)

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(SealedAsDict())
        transcoder.register(DateAsISO())

    # -- units of work -------------------------------------------------------------
    @property
    def datastore(self) -> SQLAlchemyDatastore:
        ds = self.factory.datastore  # type: ignore[attr-defined]
        assert isinstance(ds, SQLAlchemyDatastore)
        return ds

    @property
    def engine(self) -> Engine:
        engine = self.datastore.engine
        assert isinstance(engine, Engine)
        return engine

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        recordings = super().save(*objs, **kwargs)
        if self.saved_hook is not None:
            self.saved_hook(objs)
        return recordings

    def writers_waiting(self) -> bool:
        """Whether a writer of this process waits for the SQLite write lock
        (always False on PostgreSQL, whose writers do not queue here)."""
        lock = self.datastore.write_lock
        return isinstance(lock, FairLock) and lock.contended

    @contextmanager
    def session(self, commit: bool = True) -> Iterator[Session]:
        """The current unit of work's session (joined if one is open)."""
        with self.datastore.transaction(commit=commit) as s:
            yield s

    def in_outer_transaction(self) -> bool:
        """Whether a transaction is open around the caller (a host's session, or
        a unit of work of this thread): then nothing here commits on its own."""
        return transactions.get(None) is not None or self.datastore.scoped_session is not None

    def check_schema_and_keys(self, kek_id: str, allow_new: bool) -> None:
        """Check the schema version record (written by the revisions, never
        here) and record or check the KEK fingerprint."""
        with self.session() as s:
            rows: dict[str, str] = {k: v for k, v in s.execute(select(meta.c.key, meta.c.value))}
            stored = rows.get("schema_version")
            if stored is not None and int(stored) > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"database schema version {stored} was written by a newer tsuchi; "
                    f"this one understands up to {SCHEMA_VERSION}"
                )
            known = rows.get("kek_id")
            if known is None:
                has_keys = s.execute(select(data_keys.c.subject_id).limit(1)).first()
                if has_keys is not None and not allow_new:
                    raise KeyMaterialError("database holds data keys but records no KEK id")
                # Engines starting together on a new database race here: the
                # first record wins, and the others are checked against it.
                s.execute(_insert_absent(s, "kek_id", kek_id))
                known = s.execute(select(meta.c.value).where(meta.c.key == "kek_id")).scalar()
            if known != kek_id:
                raise KeyMaterialError(
                    f"the KEK (id {kek_id}) is not the one this database's data keys are "
                    f"wrapped with (id {known}); refusing to start"
                )

    def set_kek_id(self, kek_id: str) -> None:
        with self.session() as s:
            s.execute(update(meta).where(meta.c.key == "kek_id").values(value=kek_id))

    def existing_ids(self, ids: list[UUID]) -> set[UUID]:
        """Which of ``ids`` already have an aggregate (one query per thousand)."""
        record = self.recorder.events_record_cls  # type: ignore[attr-defined]
        found: set[UUID] = set()
        with self.session(commit=False) as s:
            for start in range(0, len(ids), 1000):
                found.update(
                    UUID(str(r[0]))
                    for r in s.execute(
                        select(record.originator_id).where(
                            record.originator_id.in_(ids[start : start + 1000]),
                            record.originator_version == 1,
                        )
                    )
                )
        return found

    def compact_after_erasure(self, attempts: int = 5) -> bool:
        """Push destroyed key material out of places the database keeps old
        page images: SQLite's WAL (checkpoint and truncate; ``secure_delete``
        zeroes the freed bytes in the main file) and PostgreSQL's dead tuples
        (VACUUM of every table an erasure writes: data keys, blind index,
        outbox).  Returns whether it completed: a SQLite checkpoint cannot
        finish while another connection reads an older snapshot, so it is
        retried ``attempts`` times (0.2 s apart) and then reported, never
        assumed.  PostgreSQL's WAL segments are outside any SQL command's
        reach; docs/compliance.md states that remnant window."""
        if self.datastore.scoped_session is not None:
            return False  # the host owns the session; it may not be committed yet
        engine = self.engine
        try:
            if engine.dialect.name == "sqlite":
                for attempt in range(attempts):
                    with engine.connect() as conn:
                        # The checkpoint waits on the busy handler; not for 10 s here.
                        conn.exec_driver_sql("PRAGMA busy_timeout=200")
                        try:
                            busy, _, _ = conn.exec_driver_sql(
                                "PRAGMA wal_checkpoint(TRUNCATE)"
                            ).one()
                        finally:
                            conn.exec_driver_sql("PRAGMA busy_timeout=10000")
                    if not busy:
                        return True
                    if attempt + 1 < attempts:
                        time.sleep(0.2)
                log.warning("post-erasure checkpoint blocked by a reader; WAL not truncated")
                return False
            if engine.dialect.name == "postgresql":
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    for table in ERASURE_TABLES:
                        conn.exec_driver_sql(f"VACUUM {table}")
                return True
        except Exception as e:  # compaction is best effort; the keys are already gone
            log.warning("post-erasure compaction failed: %s", type(e).__name__)
        return False
