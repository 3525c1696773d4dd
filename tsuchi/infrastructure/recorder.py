"""The event recorder: ``eventsourcing-sqlalchemy``'s, with Core statements.

``eventsourcing-sqlalchemy`` reads an aggregate's events with an ORM query
and writes them by adding ORM objects and flushing; both build and compile
new statements on every call, which cost more than the database work itself
(a notice reads and writes a few aggregates).  This recorder keeps the same
table, transactions, table lock and NOTIFY, and the same error translation
(through the session's own transaction), but reads and writes with Core
statements built once: a ``SELECT`` with bound parameters and one
multi-row ``INSERT ... RETURNING id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore
from eventsourcing_sqlalchemy.recorders import SQLAlchemyApplicationRecorder
from sqlalchemy import Table, bindparam, func, insert, select
from sqlalchemy.orm import Session


class CoreApplicationRecorder(SQLAlchemyApplicationRecorder):
    """Same storage as :class:`SQLAlchemyApplicationRecorder`; faster statements."""

    def __init__(
        self,
        datastore: SQLAlchemyDatastore,
        *,
        events_table_name: str,
        schema_name: str | None = None,
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name, schema_name=schema_name)
        table: Table = self.events_record_cls.__table__
        c = table.c
        columns = (c.originator_version, c.topic, c.state)
        by_id = c.originator_id == bindparam("oid")
        self._select_all = select(*columns).where(by_id).order_by(c.originator_version)
        self._select_after = (
            select(*columns)
            .where(by_id, c.originator_version > bindparam("gt"))
            .order_by(c.originator_version)
        )
        self._select_many = (
            select(c.originator_id, *columns)
            .where(c.originator_id.in_(bindparam("oids", expanding=True)))
            .order_by(c.originator_id, c.originator_version)
        )
        self._versions = (
            select(c.originator_id, func.max(c.originator_version))
            .where(c.originator_id.in_(bindparam("oids", expanding=True)))
            .group_by(c.originator_id)
        )
        self._insert = insert(table).returning(c.id, sort_by_parameter_order=True)

    def select_events(
        self,
        originator_id: UUID | str,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        if lte is not None or desc or limit is not None:  # rare shapes: the ORM query
            return super().select_events(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)
        oid = originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
        with self.transaction(commit=False) as session:
            if gt is None:
                rows = session.execute(self._select_all, {"oid": oid})
            else:
                rows = session.execute(self._select_after, {"oid": oid, "gt": gt})
            return [
                StoredEvent(
                    originator_id=oid,
                    originator_version=r[0],
                    topic=r[1],
                    state=bytes(r[2]) if isinstance(r[2], memoryview) else r[2],
                )
                for r in rows
            ]

    def select_events_of(self, originator_ids: Sequence[UUID]) -> dict[UUID, list[StoredEvent]]:
        """Every event of each of ``originator_ids``, in one query per 500 ids."""
        found: dict[UUID, list[StoredEvent]] = {}
        with self.transaction(commit=False) as session:
            for start in range(0, len(originator_ids), 500):
                chunk = list(originator_ids[start : start + 500])
                for r in session.execute(self._select_many, {"oids": chunk}):
                    oid = r[0] if isinstance(r[0], UUID) else UUID(str(r[0]))
                    found.setdefault(oid, []).append(
                        StoredEvent(
                            originator_id=oid,
                            originator_version=r[1],
                            topic=r[2],
                            state=bytes(r[3]) if isinstance(r[3], memoryview) else r[3],
                        )
                    )
        return found

    def latest_versions(self, originator_ids: Sequence[UUID]) -> dict[UUID, int]:
        """The version of the last event of each of ``originator_ids`` that has
        any, in one query per 500 ids (an index look-up each)."""
        found: dict[UUID, int] = {}
        with self.transaction(commit=False) as session:
            for start in range(0, len(originator_ids), 500):
                chunk = list(originator_ids[start : start + 500])
                for r in session.execute(self._versions, {"oids": chunk}):
                    oid = r[0] if isinstance(r[0], UUID) else UUID(str(r[0]))
                    found[oid] = int(r[1])
        return found

    def _insert_stored_events(
        self, session: Session, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int]:
        if not stored_events:
            return []
        self._lock_table(session)  # PostgreSQL: notification ids in commit order
        rows = [
            {
                "originator_id": e.originator_id,
                "originator_version": e.originator_version,
                "topic": e.topic,
                "state": e.state,
            }
            for e in stored_events
        ]
        ids = [int(r[0]) for r in session.execute(self._insert, rows)]
        self._notify_channel(session)
        return ids
