"""The ``tsuchi`` command line: demo, keys and reports.

Every command that opens a database takes ``--db URL`` (default
``sqlite:///tsuchi.db``) and finds its keys the documented way (``--keys DIR``,
``TSUCHI_KEYS_DIR``, or beside the SQLite file; see :mod:`tsuchi.settings`).
Exit codes: 0 success, 1 a tsuchi error (message on stderr), 2 usage error.

Why this package exists: it is the one place the engine meets a terminal.
This module builds the root :data:`app` and wires in the command groups, one
module each, so a group can be read and changed on its own:
:mod:`~tsuchi.cli.demo` (the demo scenario), :mod:`~tsuchi.cli.services`
(``worker`` and ``serve``), :mod:`~tsuchi.cli.keys`, :mod:`~tsuchi.cli.reports`
(``report`` and ``projections``), :mod:`~tsuchi.cli.privacy` (``accounts`` and
``consents``), :mod:`~tsuchi.cli.sms`, :mod:`~tsuchi.cli.audit` and
:mod:`~tsuchi.cli.db` (the schema revision); the options
and error handling they share live in :mod:`~tsuchi.cli.common`.  The order
of registration below is the order ``tsuchi --help`` lists the commands in.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from tsuchi.cli.audit import audit_app
from tsuchi.cli.common import console, err
from tsuchi.cli.db import db_app
from tsuchi.cli.demo import demo
from tsuchi.cli.keys import keys_app
from tsuchi.cli.privacy import accounts_app, consents_app
from tsuchi.cli.reports import projections_app, report_app
from tsuchi.cli.services import serve, worker
from tsuchi.cli.sms import sms_app

app = typer.Typer(
    help="tsuchi: event-sourced +Message / SMS notification engine.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_show_locals=False,
)

_debug = False


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"tsuchi {version('tsuchi')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an unexpected failure.")
    ] = False,
) -> None:
    """tsuchi: event-sourced +Message / SMS notification engine."""
    global _debug
    _debug = debug

app.command()(demo)
app.command()(worker)
app.command()(serve)
app.add_typer(keys_app, name="keys")
app.add_typer(report_app, name="report")
app.add_typer(accounts_app, name="accounts")
app.add_typer(consents_app, name="consents")
app.add_typer(projections_app, name="projections")
app.add_typer(sms_app, name="sms")
app.add_typer(audit_app, name="audit")
app.add_typer(db_app, name="db")


def main() -> None:
    """Run the command line.  An unexpected failure is one line on stderr and
    exit 1 (its traceback only with ``--debug``): a traceback can be long,
    and can quote settings such as a database URL with its password."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except Exception as e:
        if _debug:
            raise
        # Only the type: an unexpected error's message may quote a setting or
        # a customer's data, which must never reach a terminal or a log.
        err.print(f"error: {type(e).__name__} (run with --debug for the traceback)")
        raise SystemExit(1) from None


__all__ = ["app", "main"]
