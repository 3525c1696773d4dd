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

import typer

from tsuchi.cli.audit import audit_app
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
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

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
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


__all__ = ["app", "main"]
