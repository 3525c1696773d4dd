"""The event recorder: ``eventsourcing-sqlalchemy``'s, with plain SQL.

``eventsourcing-sqlalchemy`` reads an aggregate's events with an ORM query
and writes them by adding ORM objects and flushing; both build and compile
statements on every call, which costs more than the database work itself (a
notice reads and writes several aggregates).  This recorder keeps the same
table, the same transactions (the session's), the table lock and NOTIFY, and
the same error translation (SQLAlchemy wraps driver errors and the unit of
work maps them), but sends SQL text in the driver's own parameter style
through :meth:`~sqlalchemy.engine.Connection.exec_driver_sql`: a ``SELECT``
by aggregate id, ``IN`` look-ups of many aggregates or of their latest
versions, and one multi-row ``INSERT ... RETURNING id``.

SQLite (``pysqlite``) and PostgreSQL (``psycopg``) are spoken directly; with
any other driver the Core statements of the parent class are used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore
from eventsourcing_sqlalchemy.recorders import SQLAlchemyApplicationRecorder
from sqlalchemy.orm import Session

IN_CHUNK = 500
INSERT_CHUNK = 1000


def _uuid_from_bytes(value: Any) -> UUID:
    return UUID(bytes=bytes(value))


def _uuid_from_native(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


class CoreApplicationRecorder(SQLAlchemyApplicationRecorder):
    """Same storage as :class:`SQLAlchemyApplicationRecorder`; cheaper statements."""

    def __init__(
        self,
        datastore: SQLAlchemyDatastore,
        *,
        events_table_name: str,
        schema_name: str | None = None,
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name, schema_name=schema_name)
        engine = datastore.engine
        assert engine is not None
        dialect = engine.dialect
        self._direct = (dialect.name, dialect.driver) in (
            ("sqlite", "pysqlite"),
            ("postgresql", "psycopg"),
        )
        self._ph = "?" if dialect.paramstyle == "qmark" else "%s"
        if dialect.name == "sqlite":  # sqlalchemy-utils' UUIDType stores 16 bytes there
            self._uuid_in: Callable[[UUID], Any] = lambda u: u.bytes
            self._uuid_out: Callable[[Any], UUID] = _uuid_from_bytes
        else:  # a native uuid column
            self._uuid_in = lambda u: u
            self._uuid_out = _uuid_from_native
        table = self.events_table_name
        if self.schema_name is not None:
            table = f"{self.schema_name}.{table}"
        self._table = table
        p = self._ph
        # Only the table name (tsuchi's own configuration) is interpolated into
        # these statements; every value is a bound parameter.
        self._sql_all = (
            f"SELECT originator_version, topic, state FROM {table} "  # noqa: S608
            f"WHERE originator_id = {p} ORDER BY originator_version"
        )
        self._sql_after = (
            f"SELECT originator_version, topic, state FROM {table} "  # noqa: S608
            f"WHERE originator_id = {p} AND originator_version > {p} ORDER BY originator_version"
        )
        self._sql_in: dict[tuple[str, int], str] = {}

    def _in_sql(self, kind: str, n: int) -> str:
        sql = self._sql_in.get((kind, n))
        if sql is None:
            marks = ", ".join([self._ph] * n)
            if kind == "events":
                sql = (
                    f"SELECT originator_id, originator_version, topic, state FROM {self._table} "  # noqa: S608
                    f"WHERE originator_id IN ({marks}) ORDER BY originator_id, originator_version"
                )
            elif kind == "versions":
                sql = (
                    f"SELECT originator_id, max(originator_version) FROM {self._table} "  # noqa: S608
                    f"WHERE originator_id IN ({marks}) GROUP BY originator_id"
                )
            else:
                values = ", ".join([f"({self._ph}, {self._ph}, {self._ph}, {self._ph})"] * n)
                sql = (
                    f"INSERT INTO {self._table} "  # noqa: S608
                    f"(originator_id, originator_version, topic, state) VALUES {values} "
                    "RETURNING id"
                )
            self._sql_in[(kind, n)] = sql
        return sql

    @staticmethod
    def _state(value: Any) -> bytes:
        return value if isinstance(value, bytes) else bytes(value)

    def select_events(
        self,
        originator_id: UUID | str,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        if not self._direct or lte is not None or desc or limit is not None:
            return super().select_events(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)
        oid = originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
        with self.transaction(commit=False) as session:
            conn = session.connection()
            if gt is None:
                rows = conn.exec_driver_sql(self._sql_all, (self._uuid_in(oid),))
            else:
                rows = conn.exec_driver_sql(self._sql_after, (self._uuid_in(oid), gt))
            return [
                StoredEvent(
                    originator_id=oid,
                    originator_version=r[0],
                    topic=r[1],
                    state=self._state(r[2]),
                )
                for r in rows
            ]

    def select_events_of(self, originator_ids: Sequence[UUID]) -> dict[UUID, list[StoredEvent]]:
        """Every event of each of ``originator_ids``, one query per 500 ids."""
        found: dict[UUID, list[StoredEvent]] = {}
        if not self._direct:
            for oid in originator_ids:
                events = self.select_events(oid)
                if events:
                    found[oid] = events
            return found
        for r in self._rows_in("events", originator_ids):
            oid = self._uuid_out(r[0])
            found.setdefault(oid, []).append(
                StoredEvent(
                    originator_id=oid,
                    originator_version=r[1],
                    topic=r[2],
                    state=self._state(r[3]),
                )
            )
        return found

    def latest_versions(self, originator_ids: Sequence[UUID]) -> dict[UUID, int]:
        """The version of the last event of each of ``originator_ids`` that has
        any, one query per 500 ids (an index look-up each)."""
        found: dict[UUID, int] = {}
        if not self._direct:
            for oid in originator_ids:
                events = super().select_events(oid, desc=True, limit=1)
                if events:
                    found[oid] = events[0].originator_version
            return found
        for r in self._rows_in("versions", originator_ids):
            found[self._uuid_out(r[0])] = int(r[1])
        return found

    def _rows_in(self, kind: str, originator_ids: Sequence[UUID]) -> Iterator[Any]:
        """Rows of the ``kind`` look-up for ``originator_ids``, 500 ids a query."""
        with self.transaction(commit=False) as session:
            conn = session.connection()
            for start in range(0, len(originator_ids), IN_CHUNK):
                chunk = originator_ids[start : start + IN_CHUNK]
                params = tuple(self._uuid_in(u) for u in chunk)
                yield from conn.exec_driver_sql(self._in_sql(kind, len(chunk)), params)

    def _insert_stored_events(
        self, session: Session, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int]:
        if not self._direct:
            return super()._insert_stored_events(session, stored_events, **kwargs)
        if not stored_events:
            return []
        self._lock_table(session)  # PostgreSQL: notification ids in commit order
        conn = session.connection()
        ids: list[int] = []
        for start in range(0, len(stored_events), INSERT_CHUNK):
            chunk = stored_events[start : start + INSERT_CHUNK]
            params: list[Any] = []
            for e in chunk:
                oid = e.originator_id
                params += (
                    self._uuid_in(oid if isinstance(oid, UUID) else UUID(str(oid))),
                    e.originator_version,
                    e.topic,
                    e.state,
                )
            rows = conn.exec_driver_sql(self._in_sql("insert", len(chunk)), tuple(params))
            # One writer at a time (the table lock, or SQLite's): ids ascend in row order.
            ids += sorted(int(r[0]) for r in rows)
        self._notify_channel(session)
        return ids
