"""``tsuchi report`` and ``tsuchi projections``: the read models.

Why this module exists: both groups work on the projections built from the
event log: ``report deliveries`` brings the delivery report up to date and
prints it in one of the formats of :mod:`tsuchi.reporting`, and
``projections rebuild`` replays a projection from the first event.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from tsuchi.cli.common import DbOpt, KeysOpt, console, err, fail, load_settings
from tsuchi.errors import TsuchiError
from tsuchi.infrastructure.private_files import write_private

report_app = typer.Typer(help="Reports over the read models.", no_args_is_help=True)
projections_app = typer.Typer(help="Read models built from the event log.", no_args_is_help=True)


@report_app.command("deliveries")
def report_deliveries(
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
    format: Annotated[str, typer.Option("--format", help="table, csv, json or html")] = "table",
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
    since: Annotated[
        str | None, typer.Option(help="First day, included (YYYY-MM-DD, Japan).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Day after the last, excluded (YYYY-MM-DD, Japan).")
    ] = None,
) -> None:
    """Deliveries per day, sender, template, purpose, channel and carrier:
    requested, blocked and deferred (by reason), submitted, delivered, read,
    failed, fallback, expired, and delivery/read latency p50/p95.  The
    projection catches up with the event log first.  Days run from --since
    (included) to --until (excluded)."""
    from datetime import date, timedelta

    from tsuchi.engine import Engine
    from tsuchi.reporting import render_csv, render_json, render_table
    from tsuchi.reporting.html import render_html

    if format not in ("table", "csv", "json", "html"):
        err.print("error: --format must be table, csv, json or html")
        raise typer.Exit(2)
    try:
        first = date.fromisoformat(since) if since else None
        # Half-open like every range in the CLI: --until is the first day left out.
        last = date.fromisoformat(until) - timedelta(days=1) if until else None
    except ValueError:
        err.print("error: --since/--until must be YYYY-MM-DD")
        raise typer.Exit(2) from None
    if first is not None and last is not None and last < first:
        err.print(f"error: --until is excluded: the range from {since} to {until} holds no day")
        raise typer.Exit(2)
    try:
        with Engine(load_settings(db, keys)) as engine:
            report = engine.delivery_report
            report.catch_up()
            rows = report.rows(first, last)
            if format == "html":
                body = render_html(
                    rows,
                    "tsuchi 配信レポート / Delivery report",
                    engine.now(),
                    channel_totals=report.rows(first, last, by=("channel",)),
                )
            elif format == "json":
                body = render_json(rows)
            elif format == "csv":
                body = render_csv(rows)
            else:
                body = render_table(rows)
    except TsuchiError as e:
        raise fail(e) from None
    if out:
        try:
            write_private(out, body)
        except TsuchiError as e:
            raise fail(e) from None
        console.print(f"wrote {out}")
    else:
        sys.stdout.write(body)


@projections_app.command("rebuild")
def projections_rebuild(
    name: Annotated[str, typer.Argument(help="delivery_report or audit_chain")],
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
) -> None:
    """Rebuild a projection from the first event (identical results)."""
    from tsuchi.engine import Engine

    try:
        with Engine(load_settings(db, keys)) as engine:
            if name == "delivery_report":
                n = engine.delivery_report.rebuild()
            elif name == "audit_chain":
                n = engine.audit.catch_up()  # the chain only grows; it is verified, not redone
            else:
                err.print("error: NAME must be delivery_report or audit_chain")
                raise typer.Exit(2)
    except TsuchiError as e:
        raise fail(e) from None
    console.print(f"{name}: {n} events processed")
