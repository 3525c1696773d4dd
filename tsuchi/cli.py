"""The ``tsuchi`` command line: demo, keys and reports.

Every command that opens a database takes ``--db URL`` (default
``sqlite:///tsuchi.db``) and finds its keys the documented way (``--keys DIR``,
``TSUCHI_KEYS_DIR``, or beside the SQLite file; see :mod:`tsuchi.settings`).
Exit codes: 0 success, 1 a tsuchi error (message on stderr), 2 usage error.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tsuchi.errors import TsuchiError

app = typer.Typer(
    help="tsuchi: event-sourced +Message / SMS notification engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
keys_app = typer.Typer(
    help="Key files: the KEK, the blind-index key, the audit signing key.", no_args_is_help=True
)
report_app = typer.Typer(help="Reports over the read models.", no_args_is_help=True)
accounts_app = typer.Typer(
    help="Customer accounts: subject access reports and erasure.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
app.add_typer(report_app, name="report")
app.add_typer(accounts_app, name="accounts")

console = Console()
err = Console(stderr=True)

DbOpt = Annotated[
    str,
    typer.Option(
        "--db", help="SQLAlchemy URL of the tsuchi database.", envvar="TSUCHI_DATABASE_URL"
    ),
]
KeysOpt = Annotated[
    Path | None,
    typer.Option("--keys", help="Directory of the key files.", envvar="TSUCHI_KEYS_DIR"),
]


def _fail(e: TsuchiError) -> typer.Exit:
    err.print(f"[bold red]error[/]: {type(e).__name__}: {e}")
    return typer.Exit(1)


def _settings(db: str, keys: Path | None, **extra: Any) -> Any:
    from tsuchi.settings import Settings

    return Settings(database_url=db, keys_dir=keys, **extra)


@app.command()
def demo(
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the scenario and the carrier simulator.")] = 7,
    customers: Annotated[int, typer.Option(min=10, max=100_000)] = 1000,
) -> None:
    """Run the card-issuer and insurer scenario on the embedded database."""
    from tsuchi.demo import demo_start, run_demo
    from tsuchi.engine import Engine
    from tsuchi.infrastructure.clock import ManualClock
    from tsuchi.infrastructure.simulator import SimulatedCarrierNetwork

    t0 = time.perf_counter()
    clock = ManualClock()
    try:
        settings = _settings(db, keys, create_keys=True)
        with Engine(
            settings, clock=clock, gateway=SimulatedCarrierNetwork(seed=seed, clock=clock)
        ) as engine:
            clock.set(demo_start(engine))
            with console.status("running the demo") as status:
                result = run_demo(
                    engine,
                    clock.advance,
                    seed=seed,
                    customers=customers,
                    progress=lambda m: status.update(m),
                )
    except TsuchiError as e:
        raise _fail(e) from None
    table = Table(
        title=f"Delivery summary ({result.started:%Y-%m-%d} simulated, "
        f"{result.requested} notices to {result.customers} customers)"
    )
    cols = ("tenant", "purpose", "channel", "status", "reason", "count", "fallback")
    for col in cols:
        table.add_column(col, justify="right" if col in ("count", "fallback") else "left")
    for row in result.summary:
        table.add_row(*(str(row[c]) for c in cols))
    console.print(table)
    console.print(f"database: [bold]{settings.database_url}[/]")
    console.print(f"keys:     [bold]{settings.resolved_keys_dir()}[/]")
    console.print(f"took {time.perf_counter() - t0:.1f} s")


@keys_app.command("init")
def keys_init(
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
) -> None:
    """Write new key files (mode 0600); never overwrites existing ones."""
    from tsuchi.infrastructure.crypto import init_keys

    settings = _settings(db, keys)
    try:
        written = init_keys(settings.resolved_keys_dir())
    except TsuchiError as e:
        raise _fail(e) from None
    for path in written:
        console.print(f"wrote {path}")


@keys_app.command("rotate")
def keys_rotate(
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
    destroy_old: Annotated[
        bool, typer.Option(help="Delete the previous KEK file at once.")
    ] = False,
) -> None:
    """Re-wrap every data key under a new KEK; events are not touched.

    The new KEK is staged as kek.key.next, the database re-wrapped in one
    transaction, then kek.key.next becomes kek.key and the previous KEK
    kek.key.old (delete it once no backup needs it, or use --destroy-old).
    """
    from tsuchi.engine import Engine
    from tsuchi.infrastructure.crypto import OLD_KEK_FILE, promote_staged_kek, stage_new_kek

    try:
        settings = _settings(db, keys)
        directory = settings.resolved_keys_dir()
        with Engine(settings) as engine:
            new = stage_new_kek(directory)
            n = engine.rewrap_data_keys(new)
        promote_staged_kek(directory)
    except TsuchiError as e:
        raise _fail(e) from None
    if destroy_old:
        (directory / OLD_KEK_FILE).unlink()
    console.print(f"re-wrapped {n} data keys under KEK {new.key_id}")
    if not destroy_old:
        console.print(
            f"previous KEK kept as {directory / OLD_KEK_FILE}; destroy it when no backup needs it"
        )


def _resolve_accounts(engine: Any, mobile: str | None, customer_ref: str | None) -> list[Any]:
    if (mobile is None) == (customer_ref is None):
        err.print("error: give exactly one of --mobile or --customer-ref")
        raise typer.Exit(2)
    found = engine.find_accounts(mobile=mobile, customer_ref=customer_ref)
    if not found:
        err.print("error: no account matches")
        raise typer.Exit(1)
    return list(found)


MobileOpt = Annotated[str | None, typer.Option("--mobile", help="Mobile number, any format.")]
RefOpt = Annotated[str | None, typer.Option("--customer-ref", help="The host's customer ref.")]


@accounts_app.command("report")
def accounts_report(
    mobile: MobileOpt = None,
    customer_ref: RefOpt = None,
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
    format: Annotated[str, typer.Option("--format", help="text or json")] = "text",
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
) -> None:
    """Subject access report: everything held about one customer."""
    from tsuchi.engine import Engine
    from tsuchi.projections.subject_access import render_text

    if format not in ("text", "json"):
        err.print("error: --format must be text or json")
        raise typer.Exit(2)
    try:
        with Engine(_settings(db, keys)) as engine:
            reports = [
                engine.subject_access_report(a)
                for a in _resolve_accounts(engine, mobile, customer_ref)
            ]
    except TsuchiError as e:
        raise _fail(e) from None
    if format == "json":
        body = (
            json.dumps(reports if len(reports) > 1 else reports[0], ensure_ascii=False, indent=2)
            + "\n"
        )
    else:
        body = "\n".join(render_text(r) for r in reports)
    if out:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
        console.print(f"wrote {out}")
    else:
        sys.stdout.write(body)


@accounts_app.command("erase")
def accounts_erase(
    requested_by: Annotated[str, typer.Option("--requested-by", help="Who asked (audit).")],
    mobile: MobileOpt = None,
    customer_ref: RefOpt = None,
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
) -> None:
    """Erase a customer by destroying their data keys; their events stay, unreadable."""
    from tsuchi.engine import Engine

    try:
        with Engine(_settings(db, keys)) as engine:
            for account in _resolve_accounts(engine, mobile, customer_ref):
                cancelled = engine.erase_account(account, requested_by)
                console.print(f"erased account {account}; {cancelled} pending messages cancelled")
    except TsuchiError as e:
        raise _fail(e) from None


consents_app = typer.Typer(help="The consent register.", no_args_is_help=True)
app.add_typer(consents_app, name="consents")


@consents_app.command("export")
def consents_export(
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
    format: Annotated[str, typer.Option("--format", help="csv or json")] = "csv",  # noqa: A002
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
) -> None:
    """Per account, sender and purpose: current status, evidence and history."""
    from tsuchi.engine import Engine

    if format not in ("csv", "json"):
        err.print("error: --format must be csv or json")
        raise typer.Exit(2)
    try:
        with Engine(_settings(db, keys)) as engine:
            entries = list(engine.consent_register())
    except TsuchiError as e:
        raise _fail(e) from None
    stream = out.open("w", encoding="utf-8", newline="") if out else sys.stdout
    try:
        if format == "json":
            json.dump(entries, stream, ensure_ascii=False, indent=2)
            stream.write("\n")
        else:
            w = csv.writer(stream)
            w.writerow(
                [
                    "consent_id",
                    "account_id",
                    "tenant",
                    "sender",
                    "purpose",
                    "status",
                    "version",
                    "change_version",
                    "action",
                    "at",
                    "source",
                    "wording",
                    "by",
                ]
            )
            for entry in entries:
                for h in entry["history"]:
                    w.writerow(
                        [
                            entry["consent_id"],
                            entry["account_id"],
                            entry["tenant"],
                            entry["sender"],
                            entry["purpose"],
                            entry["status"],
                            entry["version"],
                            h["version"],
                            h["action"],
                            h["at"],
                            h["source"],
                            h["wording"],
                            h["by"] or "",
                        ]
                    )
    finally:
        if out:
            stream.close()


@report_app.command("deliveries")
def report_deliveries(
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
    format: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
) -> None:
    """Messages by tenant, purpose, channel and status (blocked included)."""
    from tsuchi.engine import Engine

    if format not in ("table", "csv", "json"):
        err.print("error: --format must be table, csv or json")
        raise typer.Exit(2)
    try:
        with Engine(_settings(db, keys)) as engine:
            rows = engine.delivery_summary()
    except TsuchiError as e:
        raise _fail(e) from None
    stream = out.open("w", encoding="utf-8", newline="") if out else sys.stdout
    try:
        if format == "json":
            json.dump(rows, stream, ensure_ascii=False, indent=2)
            stream.write("\n")
        elif format == "csv":
            w = csv.DictWriter(stream, fieldnames=list(rows[0]) if rows else ["tenant"])
            w.writeheader()
            w.writerows(rows)
        else:
            table = Table(title="Deliveries")
            cols = ("tenant", "purpose", "channel", "status", "reason", "count", "fallback")
            for col in cols:
                table.add_column(col)
            for r in rows:
                table.add_row(*(str(r[c]) for c in cols))
            Console(file=stream).print(table)
    finally:
        if out:
            stream.close()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
