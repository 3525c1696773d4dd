"""``tsuchi db``: the database schema's revision — upgrade, current, check.

Why this module exists: an operator upgrades tsuchi's schema as a step of its
own (stop the workers, back up, ``tsuchi db upgrade``, start them again);
tsuchi itself never runs on a schema older or newer than it needs.  These
commands need no key files: they read and change tables, never encrypted
data.  Exit codes: ``check`` 0 when the schema is current, 1 otherwise (an
upgrade is needed, or the database is newer or unrecognised); ``upgrade`` and
``current`` 0, or 1 on a tsuchi error.  Printed URLs have their password
masked.
"""

from __future__ import annotations

from typing import Any

import typer

from tsuchi.cli.common import DbOpt, fail, load_settings
from tsuchi.errors import TsuchiError

db_app = typer.Typer(
    help="The database schema: upgrade it, show or check its revision.", no_args_is_help=True
)


def _masked(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


def _url(db: str) -> str:
    from tsuchi.settings import normalise_database_url

    settings = load_settings(db, None)
    return normalise_database_url(settings.database_url)


@db_app.command("upgrade")
def db_upgrade(db: DbOpt = "sqlite:///tsuchi.db") -> None:
    """Bring the schema to this tsuchi's revision (a database of the previous
    release included); stop the workers and back up the database first."""
    from tsuchi.migrations import schema

    url = _url(db)
    engine = schema.open_database(url)
    try:
        before, after = schema.upgrade(engine)
    except TsuchiError as e:
        raise fail(e) from None
    finally:
        engine.dispose()
    where = _masked(url)
    if before.state is schema.State.CURRENT:
        typer.echo(f"{where}: already at revision {after.revision}")
    else:
        was = before.revision or before.state.value
        typer.echo(f"{where}: upgraded from {was} to revision {after.revision}")


def _status(db: str) -> Any:
    """The schema status of the database at ``db`` (exit 1 if it cannot be read)."""
    from tsuchi.migrations import schema

    engine = schema.open_database(_url(db))
    try:
        return schema.current(engine)
    except TsuchiError as e:
        raise fail(e) from None
    finally:
        engine.dispose()


@db_app.command("current")
def db_current(db: DbOpt = "sqlite:///tsuchi.db") -> None:
    """Print the database's schema revision (and whether it is this tsuchi's)."""
    from tsuchi.migrations import schema

    st = _status(db)
    if st.state is schema.State.CURRENT:
        typer.echo(f"{st.revision} (head)")
    elif st.revision is not None:
        typer.echo(f"{st.revision} ({st.describe()})")
    else:
        typer.echo(f"none ({st.describe()})")


@db_app.command("check")
def db_check(db: DbOpt = "sqlite:///tsuchi.db") -> None:
    """Exit 0 if the schema is at this tsuchi's revision, else 1 with one line saying why."""
    from tsuchi.migrations import schema

    st = _status(db)
    if st.state is schema.State.CURRENT:
        typer.echo(st.describe())
        return
    typer.echo(f"error: {st.describe()}", err=True)
    raise typer.Exit(1)
