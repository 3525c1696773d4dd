"""A small runner that keeps read models (projections) in step with the event log.

Why this module exists: read models such as the delivery report are built from
the notification log after the fact, may be added to a database that already
holds years of events, and must be rebuildable from zero when their code
changes.  Each needs the same machinery: a durable position, exactly-once
application of events, catch-up in batches, rebuild, and a loop that follows
new events.  That machinery lives here, once; a projection only says how to
apply a batch of events to its own tables and how to clear them.

Exactly once: each projection has one row in ``tsuchi_projection_positions``
(``name``, ``position`` = the last notification id applied).  A batch reads
the position (``FOR UPDATE`` on PostgreSQL), reads the next events
(``WHERE id > position ORDER BY id LIMIT batch``), lets the projection write
its rows, and moves the position with a compare-and-set, all in one
transaction: the view rows and the position commit together or not at all,
and two runners racing on one projection cannot both apply a batch (the loser
rolls back and retries from the new position).  Polling by id is safe because
the event store commits notification ids in order (``eventsourcing-sqlalchemy``
locks the events table while inserting on PostgreSQL; SQLite has one writer).

Following: :class:`Follower` catches up, then waits.  On PostgreSQL it also
LISTENs on the channel the event store NOTIFYs on each commit, so it wakes at
once; polling every ``poll_interval`` seconds stays on as a watchdog (a
notification can be lost while the listening connection reconnects).  SQLite
has no push notifications: there it polls only.

Events are decoded with the store's transcoder *without* opening sealed
personal fields: projections see ciphertext placeholders, never plaintext.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast
from uuid import UUID

from eventsourcing.persistence import IntegrityError as ESIntegrityError
from eventsourcing.persistence import OperationalError as ESOperationalError
from sqlalchemy import (
    BigInteger,
    Column,
    CursorResult,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from tsuchi.errors import (
    ConcurrencyConflict,
    InvalidInput,
    ProjectionError,
    TransientError,
)
from tsuchi.infrastructure.store import AggregateStore

log = logging.getLogger("tsuchi.projections")

positions_metadata = MetaData()

positions = Table(
    "tsuchi_projection_positions",
    positions_metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

_SCHEMA_LOCK = threading.Lock()
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CHANNEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class StoredNotification:
    """One stored event in notification order, its state decoded but sealed."""

    id: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: dict[str, Any]


class Projection(Protocol):
    """What the runner needs from a projection."""

    @property
    def name(self) -> str:
        """Its key in ``tsuchi_projection_positions`` (lower case, digits, ``_``)."""
        ...

    @property
    def metadata(self) -> MetaData:
        """Its own tables, created on first use."""
        ...

    def apply(self, s: Session, notifications: Sequence[StoredNotification]) -> None:
        """Write the view rows for these events (ascending ids) in ``s``; the
        runner moves the position in the same transaction."""
        ...

    def clear(self, s: Session) -> None:
        """Delete every view row (before a rebuild), in ``s``."""
        ...


class _PositionMoved(Exception):
    """Another runner applied this batch first."""


def _uuid(value: Any) -> UUID:
    if isinstance(value, UUID):
        return value
    if isinstance(value, bytes | bytearray | memoryview) and len(bytes(value)) == 16:
        return UUID(bytes=bytes(value))
    return UUID(str(value))


class ProjectionRunner:
    """Catch-up, rebuild and status of projections over one :class:`AggregateStore`."""

    def __init__(self, store: AggregateStore) -> None:
        self.store = store
        self._ready: set[str] = set()

    # -- set-up ------------------------------------------------------------------------------
    @property
    def events(self) -> Table:
        record_cls: Any = getattr(self.store.recorder, "events_record_cls")  # noqa: B009
        return cast(Table, record_cls.__table__)

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel the event store notifies on (PostgreSQL)."""
        return str(getattr(self.store.recorder, "channel_name", self.events.name))

    def ensure(self, projection: Projection) -> None:
        """Create the position table, the projection's tables and its position
        row (0) if missing.  Safe to race with other processes."""
        name = projection.name
        if name in self._ready:
            return
        if not _NAME_RE.match(name):
            raise InvalidInput("projection.name", "lower-case letters, digits and _ (max 64)")
        engine = self.store.engine
        with _SCHEMA_LOCK:
            for attempt in range(3):
                try:
                    positions_metadata.create_all(engine, checkfirst=True)
                    projection.metadata.create_all(engine, checkfirst=True)
                    break
                except sa_exc.DBAPIError:
                    # Another process created a table between the check and the create.
                    if attempt == 2:
                        raise
        for attempt in range(3):
            try:
                with engine.begin() as conn:
                    found = conn.execute(
                        select(positions.c.position).where(positions.c.name == name)
                    ).first()
                    if found is None:
                        conn.execute(insert(positions).values(name=name, position=0))
                break
            except (sa_exc.IntegrityError, sa_exc.OperationalError):
                # Another process inserted the row first (or held the lock doing so).
                if attempt == 2:
                    raise
        self._ready.add(name)

    # -- status ------------------------------------------------------------------------------
    def position(self, projection: Projection) -> int:
        """The last notification id the projection has applied (0: none)."""
        self.ensure(projection)
        with self.store.session(commit=False) as s:
            return int(
                s.execute(
                    select(positions.c.position).where(positions.c.name == projection.name)
                ).scalar_one()
            )

    def head(self) -> int:
        """The highest notification id in the event log (0 when empty)."""
        with self.store.session(commit=False) as s:
            return int(s.execute(select(func.coalesce(func.max(self.events.c.id), 0))).scalar_one())

    def status(self, projection: Projection) -> dict[str, Any]:
        position = self.position(projection)
        head = self.head()
        return {
            "name": projection.name,
            "position": position,
            "head": head,
            "lag": max(head - position, 0),
        }

    # -- catch-up and rebuild ------------------------------------------------------------------
    def catch_up(
        self, projection: Projection, batch: int = 1000, max_events: int | None = None
    ) -> int:
        """Apply every event after the projection's position (or about
        ``max_events`` of them), ``batch`` at a time, each batch in one
        transaction with its new position.  Returns how many were applied."""
        if not isinstance(batch, int) or batch < 1:
            raise InvalidInput("batch", "must be at least 1")
        self.ensure(projection)
        total = 0
        conflicts = 0
        while True:
            try:
                n = self._batch(projection, batch)
            except _PositionMoved:
                conflicts += 1
                if conflicts > 10:
                    raise ConcurrencyConflict(
                        f"projection {projection.name} is being advanced concurrently; retry"
                    ) from None
                continue
            except (sa_exc.IntegrityError, ESIntegrityError):
                raise ConcurrencyConflict(
                    f"projection {projection.name} was written concurrently; retry"
                ) from None
            except (sa_exc.OperationalError, ESOperationalError) as e:
                raise TransientError(
                    f"projection {projection.name} catch-up failed: {type(e).__name__}"
                ) from None
            total += n
            if n < batch or (max_events is not None and total >= max_events):
                return total

    def _batch(self, projection: Projection, batch: int) -> int:
        ev = self.events
        with self.store.session(commit=True) as s:
            pos = int(
                s.execute(
                    select(positions.c.position)
                    .where(positions.c.name == projection.name)
                    .with_for_update()
                ).scalar_one()
            )
            rows = s.execute(
                select(ev.c.id, ev.c.originator_id, ev.c.originator_version, ev.c.topic, ev.c.state)
                .where(ev.c.id > pos)
                .order_by(ev.c.id)
                .limit(batch)
            ).all()
            if not rows:
                return 0
            notes = [self._decode(r) for r in rows]
            projection.apply(s, notes)
            result = s.execute(
                update(positions)
                .where(positions.c.name == projection.name, positions.c.position == pos)
                .values(position=notes[-1].id)
            )
            if cast("CursorResult[Any]", result).rowcount != 1:
                raise _PositionMoved()
            return len(notes)

    def _decode(self, row: Any) -> StoredNotification:
        nid = int(row.id)
        try:
            state = self.store.mapper.transcoder.decode(bytes(row.state))
        except (ValueError, TypeError, KeyError) as e:
            raise ProjectionError(nid, f"state cannot be decoded ({type(e).__name__})") from None
        if not isinstance(state, dict):
            raise ProjectionError(nid, "state is not a JSON object")
        return StoredNotification(
            id=nid,
            originator_id=_uuid(row.originator_id),
            originator_version=int(row.originator_version),
            topic=str(row.topic),
            state=state,
        )

    def rebuild(self, projection: Projection, batch: int = 1000) -> int:
        """Drop the projection's rows and position and replay from zero.

        Clearing and resetting the position commit together, so the view is
        never both cleared and ahead; replay then runs batch by batch, like
        catch-up, so the view is incomplete until this returns (check
        :meth:`status`).  Returns how many events were replayed."""
        self.ensure(projection)
        try:
            with self.store.session(commit=True) as s:
                s.execute(
                    select(positions.c.position)
                    .where(positions.c.name == projection.name)
                    .with_for_update()
                ).scalar_one()
                projection.clear(s)
                s.execute(
                    update(positions).where(positions.c.name == projection.name).values(position=0)
                )
        except (sa_exc.OperationalError, ESOperationalError) as e:
            raise TransientError(
                f"projection {projection.name} rebuild failed: {type(e).__name__}"
            ) from None
        log.info("projection %s cleared; replaying from zero", projection.name)
        return self.catch_up(projection, batch)

    def follower(
        self,
        projections: Sequence[Projection],
        *,
        poll_interval: float = 5.0,
        batch: int = 1000,
        listen: bool = True,
    ) -> Follower:
        return Follower(self, projections, poll_interval=poll_interval, batch=batch, listen=listen)


class Follower:
    """Keeps projections caught up until :meth:`stop`.

    :meth:`run` blocks (run it in a thread or a worker process): catch up,
    then wait for a NOTIFY (PostgreSQL with psycopg, when ``listen``) or at
    most ``poll_interval`` seconds (the polling watchdog), and again.  Errors
    of one round are logged and retried at the next: a follower does not die
    on a transient database error.
    """

    def __init__(
        self,
        runner: ProjectionRunner,
        projections: Sequence[Projection],
        *,
        poll_interval: float = 5.0,
        batch: int = 1000,
        listen: bool = True,
    ) -> None:
        if poll_interval <= 0:
            raise InvalidInput("poll_interval", "must be positive")
        self.runner = runner
        self.projections = tuple(projections)
        self.poll_interval = poll_interval
        self.batch = batch
        engine = runner.store.engine
        self.listen = (
            listen
            and engine.dialect.name == "postgresql"
            and engine.dialect.driver == "psycopg"
            and _CHANNEL_RE.match(runner.channel) is not None
        )
        self.rounds = 0
        self.listening = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None

    def run(self) -> None:
        if self.listen:
            self._listener = threading.Thread(
                target=self._listen, name="tsuchi-projection-listener", daemon=True
            )
            self._listener.start()
        try:
            while not self._stop.is_set():
                self._wake.clear()
                for p in self.projections:
                    try:
                        self.runner.catch_up(p, self.batch)
                    except Exception:
                        log.exception("projection %s: catch-up failed; retrying", p.name)
                self.rounds += 1
                self._wake.wait(self.poll_interval)
        finally:
            self._stop.set()
            if self._listener is not None:
                self._listener.join(timeout=5)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _listen(self) -> None:
        engine = self.runner.store.engine
        channel = self.runner.channel
        while not self._stop.is_set():
            try:
                with engine.connect() as conn:
                    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                    conn.exec_driver_sql(f"LISTEN {channel}")
                    raw: Any = conn.connection.driver_connection
                    self.listening.set()
                    self._wake.set()  # catch up once: events may have come while not listening
                    while not self._stop.is_set():
                        for _notify in raw.notifies(timeout=0.5):
                            self._wake.set()
            except Exception as e:
                log.warning(
                    "projection listener lost its connection (%s); polling until it is back",
                    type(e).__name__,
                )
            finally:
                self.listening.clear()
            self._stop.wait(self.poll_interval)
