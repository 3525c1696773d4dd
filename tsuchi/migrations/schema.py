"""The database's schema revision: read it, create it, upgrade it, refuse others.

Why this module exists: tsuchi's tables change between releases, and a
database must never be taken as current because it merely exists.  Every
table tsuchi's :class:`~tsuchi.Engine` needs (``tsuchi_meta`` …
``tsuchi_orphan_reports`` and the event store's ``tsuchi_events``) is created
and changed only by the Alembic revisions in ``tsuchi/migrations/versions``;
the revision a database is at is kept in ``tsuchi_alembic_version`` (not
``alembic_version``, which a host's own Alembic may use in the same database).

- :func:`ensure_current` runs when an engine opens: an empty database gets
  every revision (and so the head stamp); a database at the head passes; any
  other is refused with a typed error naming ``tsuchi db upgrade``
  (:class:`~tsuchi.errors.SchemaOutdated`) or saying it is newer than this
  code (:class:`~tsuchi.errors.SchemaTooNew`).
- :func:`upgrade` (``tsuchi db upgrade``) brings a database to the head.  A
  database of the previous release (today's ten tables, ``tsuchi_meta``
  saying schema version 1, no revision table) is recognised by its tables
  and columns, stamped with the baseline and upgraded; anything else without
  a revision is refused, never stamped (:class:`~tsuchi.errors.SchemaUnrecognised`).

The projections' tables (``tsuchi_audit_*``, ``tsuchi_projection_positions``,
``tsuchi_report_*``) are not revisioned here: each projection creates its own
tables on first use, under its own lock, and can rebuild them from the event
log.

Schema changes are serialised across processes: on PostgreSQL by an
advisory transaction lock, on SQLite by ``BEGIN IMMEDIATE``; on both the
DDL of an upgrade and its stamp commit together or not at all.
"""

from __future__ import annotations

import enum
import functools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, inspect, make_url, pool, text
from sqlalchemy import exc as sa_exc

from tsuchi.errors import SchemaOutdated, SchemaTooNew, SchemaUnrecognised, TransientError
from tsuchi.migrations.filters import VERSION_TABLE

log = logging.getLogger("tsuchi.schema")

SCRIPTS = Path(__file__).resolve().parent
BASELINE = "0001"
DDL_LOCK_KEY = 0x7473_7563_6869  # "tsuchi": serialises schema changes across processes
UPGRADE_HINT = "stop the workers, back up the database and run `tsuchi db upgrade`"

# The tables and columns of the previous release's schema (schema version 1),
# as that release created them: how a database without a revision table is
# recognised as one the baseline describes.
PREVIOUS_RELEASE_TABLES: dict[str, frozenset[str]] = {
    "tsuchi_meta": frozenset({"key", "value"}),
    "tsuchi_data_keys": frozenset(
        {"subject_id", "key_version", "wrapped", "kek_id", "created_at", "erased_at"}
    ),
    "tsuchi_lookup": frozenset({"kind", "tenant", "digest", "account_id"}),
    "tsuchi_outbox": frozenset(
        {
            "message_id",
            "attempt",
            "priority",
            "due_at",
            "claimed_by",
            "claimed_at",
            "submitting_at",
        }
    ),
    "tsuchi_message_view": frozenset(
        {
            "message_id",
            "tenant",
            "sender_id",
            "account_id",
            "template",
            "purpose",
            "urgency",
            "channel",
            "carrier",
            "status",
            "reason",
            "fallback",
            "correlation_id",
            "requested_at",
            "routed_at",
            "deferred_until",
            "updated_at",
        }
    ),
    "tsuchi_consent_view": frozenset(
        {"consent_id", "account_id", "sender_id", "purpose", "granted", "version", "updated_at"}
    ),
    "tsuchi_timers": frozenset(
        {"id", "kind", "due_at", "payload", "claimed_by", "claimed_at", "fired_at", "late"}
    ),
    "tsuchi_broadcast_recipients": frozenset(
        {"broadcast_id", "account_id", "seq", "message_id", "reply"}
    ),
    "tsuchi_orphan_reports": frozenset(
        {"id", "reference", "kind", "code", "reported_at", "received_at"}
    ),
    "tsuchi_events": frozenset({"id", "originator_id", "originator_version", "topic", "state"}),
}
REVISIONED_TABLES = frozenset(PREVIOUS_RELEASE_TABLES)


class State(enum.Enum):
    """Where a database stands relative to this code's head revision."""

    EMPTY = "empty"  # none of tsuchi's tables: first start creates them
    CURRENT = "current"  # at the head revision
    OUTDATED = "outdated"  # at an older revision: `tsuchi db upgrade`
    PREVIOUS_RELEASE = "previous release"  # schema version 1, no revision: `tsuchi db upgrade`
    NEWER = "newer"  # a revision this code does not know: written by a newer tsuchi
    UNRECOGNISED = "unrecognised"  # tsuchi tables that match no revision: refused


@dataclass(frozen=True)
class SchemaStatus:
    """A database's schema state, its revision (if any) and this code's head."""

    state: State
    revision: str | None
    head: str
    detail: str = ""

    @property
    def needs_upgrade(self) -> bool:
        """Whether ``tsuchi db upgrade`` would bring the database to the head."""
        return self.state in (State.EMPTY, State.OUTDATED, State.PREVIOUS_RELEASE)

    def describe(self) -> str:
        """One line for an operator (revisions and table names only)."""
        if self.state is State.CURRENT:
            return f"schema is current (revision {self.head})"
        if self.state is State.EMPTY:
            return (
                f"database holds no tsuchi schema; `tsuchi db upgrade` creates revision {self.head}"
            )
        if self.state is State.OUTDATED:
            return (
                f"schema is at revision {self.revision}, this tsuchi needs {self.head}: "
                f"run `tsuchi db upgrade`"
            )
        if self.state is State.PREVIOUS_RELEASE:
            return (
                "schema was created by an earlier tsuchi (schema version 1, no revision "
                f"recorded); this tsuchi needs revision {self.head}: run `tsuchi db upgrade`"
            )
        if self.state is State.NEWER:
            return (
                f"schema is at revision {self.revision}, written by a newer tsuchi; this one "
                f"knows revisions up to {self.head}"
            )
        return f"the database's tsuchi tables match no known schema ({self.detail})"

    def error(self) -> SchemaOutdated | SchemaTooNew | SchemaUnrecognised:
        """The typed error that refuses to run on this database."""
        if self.state is State.NEWER:
            return SchemaTooNew(self.describe())
        if self.state is State.UNRECOGNISED:
            return SchemaUnrecognised(
                f"{self.describe()}; refusing to adopt it (restore a backup, or upgrade "
                "with the tsuchi that wrote it)"
            )
        if self.state is State.OUTDATED:
            return SchemaOutdated(
                f"database schema is at revision {self.revision}, this tsuchi needs "
                f"{self.head}: {UPGRADE_HINT}"
            )
        return SchemaOutdated(
            "database schema was created by an earlier tsuchi (schema version 1, no revision "
            f"recorded), this tsuchi needs revision {self.head}: {UPGRADE_HINT}"
        )


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config(None))


def head() -> str:
    """The newest revision this code knows."""
    found = _script().get_current_head()
    assert found is not None
    return found


def revisions() -> list[str]:
    """Every revision this code knows, oldest first."""
    return [s.revision for s in reversed(list(_script().walk_revisions()))]


def _config(connection: Connection | None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.attributes["connection"] = connection
    return cfg


def _unavailable(e: Exception) -> TransientError:
    # Only the type: the driver's message names the host and the user.
    return TransientError(f"database unavailable: {type(e).__name__}")


def status(connection: Connection) -> SchemaStatus:
    """Read the schema state of the database ``connection`` is on (no writes)."""
    top = head()
    mc = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    heads = mc.get_current_heads()
    names = set(inspect(connection).get_table_names())
    if len(heads) > 1:
        return SchemaStatus(State.UNRECOGNISED, None, top, "several revisions recorded")
    if heads:
        rev = heads[0]
        if rev == top:
            return SchemaStatus(State.CURRENT, rev, top)
        try:
            known = _script().get_revision(rev)
        except CommandError:
            known = None
        if known is None:
            return SchemaStatus(State.NEWER, rev, top)
        return SchemaStatus(State.OUTDATED, rev, top)
    if VERSION_TABLE in names:
        return SchemaStatus(State.UNRECOGNISED, None, top, "an empty revision table")
    ours = names & REVISIONED_TABLES
    if not ours:
        return SchemaStatus(State.EMPTY, None, top)
    missing = sorted(REVISIONED_TABLES - ours)
    if missing:
        return SchemaStatus(State.UNRECOGNISED, None, top, f"missing {', '.join(missing)}")
    insp = inspect(connection)
    for table, columns in sorted(PREVIOUS_RELEASE_TABLES.items()):
        found = {c["name"] for c in insp.get_columns(table)}
        if found != columns:
            return SchemaStatus(
                State.UNRECOGNISED, None, top, f"{table} has other columns than schema version 1"
            )
    stamp = connection.execute(
        text("SELECT value FROM tsuchi_meta WHERE key = 'schema_version'")
    ).scalar()
    if stamp != "1":
        what = "no schema version" if stamp is None else "another schema version"
        return SchemaStatus(State.UNRECOGNISED, None, top, f"tsuchi_meta records {what}")
    return SchemaStatus(State.PREVIOUS_RELEASE, None, top)


def _lock(connection: Connection) -> None:
    """Serialise schema changes: the caller holds this until its transaction ends."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": DDL_LOCK_KEY})
    elif connection.dialect.name == "sqlite":
        # pysqlite opens no transaction before DDL on its own; this one takes
        # the write lock now, so the DDL and the stamp commit together.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


_ALEMBIC = threading.Lock()  # alembic's `context` and `op` are process-wide proxies


def _run_to_head(connection: Connection, st: SchemaStatus) -> None:
    cfg = _config(connection)
    with _ALEMBIC:
        if st.state is State.PREVIOUS_RELEASE:
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, "head")


def ensure_current(bind: Engine | Connection) -> None:
    """Open-time check: create the schema of an empty database, pass a current
    one, refuse any other with a typed error (never a silent stamp).

    ``bind`` is tsuchi's engine, or a host's connection whose transaction
    the host owns (then nothing here commits)."""
    try:
        if isinstance(bind, Connection):
            st = status(bind)
            if st.state is State.EMPTY:
                if bind.dialect.name == "postgresql":  # SQLite: the host's transaction is open
                    _lock(bind)
                    st = status(bind)
                if st.state is State.EMPTY:
                    _run_to_head(bind, st)
                elif st.state is not State.CURRENT:
                    raise st.error()
            elif st.state is not State.CURRENT:
                raise st.error()
            return
        with bind.connect() as conn:
            st = status(conn)
            conn.rollback()
        if st.state is State.CURRENT:
            return
        if st.state is not State.EMPTY:
            raise st.error()
        with bind.connect() as conn:
            _lock(conn)
            st = status(conn)  # another process may have created it meanwhile
            if st.state is State.EMPTY:
                _run_to_head(conn, st)
                log.info("created the schema of an empty database (revision %s)", st.head)
            elif st.state is not State.CURRENT:
                raise st.error()
            conn.commit()
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
        raise _unavailable(e) from None


def open_database(url: str) -> Engine:
    """An engine for the ``tsuchi db`` commands (one connection, no pool kept).

    A SQLite file that does not exist is not created here: :func:`current`
    reports it empty without touching the path."""
    args: dict[str, object] = {"timeout": 30} if url.startswith("sqlite") else {}
    return create_engine(url, poolclass=pool.NullPool, connect_args=args)


def _missing_sqlite_file(engine: Engine) -> bool:
    url = make_url(str(engine.url))
    db = url.database
    return (
        url.get_backend_name() == "sqlite"
        and bool(db)
        and db != ":memory:"
        and not str(db).startswith("file:")
        and not Path(str(db)).exists()
    )


def current(engine: Engine) -> SchemaStatus:
    """The schema state of ``engine``'s database (``tsuchi db current``/``check``)."""
    if _missing_sqlite_file(engine):
        return SchemaStatus(State.EMPTY, None, head(), "no database file")
    try:
        with engine.connect() as conn:
            return status(conn)
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
        raise _unavailable(e) from None


def upgrade(engine: Engine) -> tuple[SchemaStatus, SchemaStatus]:
    """Bring ``engine``'s database to the head revision (``tsuchi db upgrade``).

    Returns the state before and after.  A database of the previous release
    is stamped with the baseline first; a newer or unrecognised one is
    refused and left untouched."""
    try:
        with engine.connect() as conn:
            _lock(conn)
            before = status(conn)
            if before.state in (State.NEWER, State.UNRECOGNISED):
                raise before.error()
            if before.state is not State.CURRENT:
                _run_to_head(conn, before)
            after = status(conn)
            conn.commit()
        return before, after
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
        raise _unavailable(e) from None
