"""The baseline: a plain ``eventsourcing`` application, no tsuchi code.

:func:`replay` stores the same number of events as a tsuchi run did, with the
same grouping into transactions (one ``Application.save`` per tsuchi
transaction), the same aggregate structure (one baseline aggregate per tsuchi
originator id, in the same order) and the same stored state sizes (each event
carries a padding string sized so its JSON state is as long as tsuchi's).  It
runs on the fastest built-in persistence module for the database:
``eventsourcing.sqlite`` (its own file, WAL) or ``eventsourcing.postgres``
(its own table in the same database), so a ratio against it also prices
tsuchi's choice of ``eventsourcing-sqlalchemy``.

Padding strings are built before the clock starts; what is timed is
triggering the events on the aggregates and one ``save`` per transaction
(mapping, serialising, inserting and committing).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID, uuid4

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from sqlalchemy import create_engine, text

from benchmarks.common import Backend, TxPattern, pg_env


class Item(Aggregate):
    """A simple aggregate whose events carry one padding string."""

    @event("Created")
    def __init__(self, payload: str) -> None:
        self.payload = payload

    @event("Changed")
    def change(self, payload: str) -> None:
        self.payload = payload


class RawBaseline(Application[UUID]):
    name = "rawbaseline"


def backend_env(backend: Backend, app_name: str) -> dict[str, str]:
    """Environment of a raw application on the fastest built-in persistence
    module for ``backend``: its own SQLite file (WAL), or its own table
    (``<app_name>_events``, dropped first) in the PostgreSQL database."""
    if backend.name == "sqlite":
        path = backend.workdir / f"{app_name}-{uuid4().hex[:8]}.db"
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    assert backend.pg_url is not None
    engine = create_engine(backend.pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {app_name}_events"))
    finally:
        engine.dispose()
    return {"PERSISTENCE_MODULE": "eventsourcing.postgres", **pg_env(backend.pg_url)}


@dataclass
class BaselineRun:
    events: int
    transactions: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


def _overheads(app: RawBaseline) -> tuple[int, int]:
    """Stored state length of a Created / Changed event with an empty payload."""
    probe = Item(payload="")
    probe.change(payload="")
    created, changed = (len(app.mapper.to_stored_event(e).state) for e in probe.collect_events())
    return created, changed


def replay(backend: Backend, pattern: TxPattern) -> BaselineRun:
    """Store ``pattern``'s events with the raw application; time the saves."""
    app = RawBaseline(env=backend_env(backend, RawBaseline.name))
    try:
        created_overhead, changed_overhead = _overheads(app)
        plan: list[list[tuple[str, str]]] = []
        seen: set[str] = set()
        for tx in pattern.transactions:
            ops = []
            for originator, size in tx:
                overhead = changed_overhead if originator in seen else created_overhead
                seen.add(originator)
                ops.append((originator, "x" * max(0, size - overhead)))
            plan.append(ops)
        items: dict[str, Item] = {}
        t0 = time.perf_counter()
        for ops in plan:
            touched: dict[str, Item] = {}
            for originator, payload in ops:
                item = items.get(originator)
                if item is None:
                    item = items[originator] = Item(payload=payload)
                else:
                    item.change(payload=payload)
                touched[originator] = item
            app.save(*touched.values())
        seconds = time.perf_counter() - t0
        return BaselineRun(pattern.events, len(pattern.transactions), seconds)
    finally:
        app.close()
        if backend.name == "sqlite":
            db = app.env.get("SQLITE_DBNAME")
            if db:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
