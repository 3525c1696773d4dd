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
import signal
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


def _csv_cell(value: Any) -> Any:
    """Neutralise spreadsheet formula injection in CSV exports (OWASP)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _settings(db: str, keys: Path | None, **extra: Any) -> Any:
    from pydantic import ValidationError

    from tsuchi.settings import Settings

    try:
        return Settings(database_url=db, keys_dir=keys, **extra)
    except ValidationError as e:
        # Name the setting and the rule; never echo the value (it may be a secret).
        for problem in e.errors():
            where = ".".join(str(x) for x in problem["loc"])
            err.print(f"error: setting {where} (TSUCHI_{where.upper()}): {problem['msg']}")
        raise typer.Exit(2) from None


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
    format: Annotated[str, typer.Option("--format", help="csv or json")] = "csv",
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
                        _csv_cell(v)
                        for v in [
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
    format: Annotated[str, typer.Option("--format", help="table, csv, json or html")] = "table",
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
    since: Annotated[str | None, typer.Option(help="First day (YYYY-MM-DD, Japan).")] = None,
    until: Annotated[str | None, typer.Option(help="Last day (YYYY-MM-DD, Japan).")] = None,
) -> None:
    """Deliveries per day, sender, template, purpose, channel and carrier:
    requested, blocked and deferred (by reason), submitted, delivered, read,
    failed, fallback, expired, and delivery/read latency p50/p95.  The
    projection catches up with the event log first."""
    from datetime import date

    from tsuchi.engine import Engine
    from tsuchi.reporting import render_csv, render_json, render_table
    from tsuchi.reporting.html import render_html

    if format not in ("table", "csv", "json", "html"):
        err.print("error: --format must be table, csv, json or html")
        raise typer.Exit(2)
    try:
        first = date.fromisoformat(since) if since else None
        last = date.fromisoformat(until) if until else None
    except ValueError:
        err.print("error: --since/--until must be YYYY-MM-DD")
        raise typer.Exit(2) from None
    try:
        with Engine(_settings(db, keys)) as engine:
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
        raise _fail(e) from None
    if out:
        out.write_text(body, encoding="utf-8")
        console.print(f"wrote {out}")
    else:
        sys.stdout.write(body)


projections_app = typer.Typer(help="Read models built from the event log.", no_args_is_help=True)
app.add_typer(projections_app, name="projections")


@projections_app.command("rebuild")
def projections_rebuild(
    name: Annotated[str, typer.Argument(help="delivery_report or audit_chain")],
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
) -> None:
    """Rebuild a projection from the first event (identical results)."""
    from tsuchi.engine import Engine

    try:
        with Engine(_settings(db, keys)) as engine:
            if name == "delivery_report":
                n = engine.delivery_report.rebuild()
            elif name == "audit_chain":
                n = engine.audit.catch_up()  # the chain only grows; it is verified, not redone
            else:
                err.print("error: NAME must be delivery_report or audit_chain")
                raise typer.Exit(2)
    except TsuchiError as e:
        raise _fail(e) from None
    console.print(f"{name}: {n} events processed")


@app.command()
def worker(
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
    worker_id: Annotated[str, typer.Option("--id", help="Name of this worker.")] = "worker-1",
    sweep_seconds: Annotated[float, typer.Option(min=0.05, help="Sweep interval.")] = 1.0,
    max_seconds: Annotated[
        float | None, typer.Option(help="Stop after this long (default: until a signal).")
    ] = None,
) -> None:
    """Run the scheduler, sweeps, dispatch and projections until SIGTERM/SIGINT."""
    from datetime import timedelta

    from tsuchi.engine import Engine
    from tsuchi.worker import Worker

    logging.getLogger("tsuchi").setLevel(logging.INFO)
    # A stop request that arrives while the engine opens is kept, not fatal.
    early_stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early_stop.append(signum))
    try:
        with Engine(_settings(db, keys, worker_id=worker_id)) as engine:
            w = Worker(engine, sweep_every=timedelta(seconds=sweep_seconds))
            w.install_signal_handlers()
            if early_stop:
                w.stop()
            w.run(max_seconds=max_seconds)
    except TsuchiError as e:
        raise _fail(e) from None


@app.command()
def serve(
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
) -> None:
    """Receive aggregator webhooks (POST /webhooks/status) and answer GET /healthz.

    Webhooks must be signed with TSUCHI_WEBHOOK_SECRET (X-Tsuchi-Signature:
    t=<unix>,v1=<hex HMAC-SHA256 of "t.body">, or X-Tsuchi-Token)."""
    from tsuchi.engine import Engine
    from tsuchi.serve import create_app, run

    logging.getLogger("tsuchi").setLevel(logging.INFO)
    try:
        with Engine(_settings(db, keys)) as engine:
            if not engine.settings.webhook_secret:
                err.print("error: set TSUCHI_WEBHOOK_SECRET")
                raise typer.Exit(1)
            run(create_app(engine.handle_webhook, engine.settings.webhook_max_body), host, port)
    except TsuchiError as e:
        raise _fail(e) from None


sms_app = typer.Typer(help="SMS tools for template authors.", no_args_is_help=True)
app.add_typer(sms_app, name="sms")


@sms_app.command("segments")
def sms_segments(
    text: Annotated[str | None, typer.Argument(help="The text to measure.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="Measure each line of this file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per text.")] = False,
) -> None:
    """Encoding (gsm7 or ucs2) and number of parts an SMS text costs."""
    from tsuchi.domain.channels import sms_cost

    if (text is None) == (file is None):
        err.print("error: give a TEXT or --file")
        raise typer.Exit(2)
    if text is not None:
        texts = [text]
    else:
        assert file is not None
        texts = file.read_text(encoding="utf-8").splitlines()
    for t in texts:
        cost = sms_cost(t)
        if as_json:
            sys.stdout.write(
                json.dumps(
                    {
                        "encoding": cost.encoding,
                        "parts": cost.parts,
                        "units": cost.units,
                        "characters": cost.characters,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
        else:
            console.print(
                f"{cost.encoding}  {cost.parts} part(s)  {cost.units} units  "
                f"{cost.characters} characters"
            )


audit_app = typer.Typer(
    help="The tamper-evident audit trail: export and offline verification.", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")


def _moment(value: str | None, name: str) -> Any:
    """ISO date or datetime; without an offset it is Japan time (Asia/Tokyo)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        err.print(f"error: --{name} must be an ISO date or datetime")
        raise typer.Exit(2) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo("Asia/Tokyo"))


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option("--out", help="Directory to write (new or empty).")],
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's records in full.")] = None,
    since: Annotated[
        str | None, typer.Option(help="From this date/time (JST if no offset).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Before this date/time (JST if no offset).")
    ] = None,
) -> None:
    """Export the audit chain (records.jsonl, checkpoints.jsonl, manifest.json).

    Every record is checked against the stored event behind it first; if the
    event store no longer matches the chain, nothing is exported and the first
    bad seq is named.  The export ends with a freshly signed checkpoint."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from tsuchi.engine import Engine
    from tsuchi.infrastructure.audit import AuditMismatch

    since_m, until_m = _moment(since, "since"), _moment(until, "until")
    try:
        with (
            Engine(_settings(db, keys)) as engine,
            Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=False,
            ) as bar,
        ):
            task = bar.add_task("exporting", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            manifest = engine.audit.export(
                out, engine.now(), tenant=tenant, since=since_m, until=until_m, progress=progress
            )
    except AuditMismatch as e:
        err.print(
            f"[bold red]refused[/]: the event store does not match the audit chain at "
            f"seq {e.seq}: {e.reason}"
        )
        raise typer.Exit(1) from None
    except TsuchiError as e:
        raise _fail(e) from None
    console.print(
        f"exported seq {manifest['first_seq']}..{manifest['last_seq']} "
        f"({manifest['record_count']} records) to {out}"
    )
    console.print(f"public key {manifest['public_key']} (key id {manifest['key_id']})")


@audit_app.command("verify")
def audit_verify(
    directory: Annotated[Path, typer.Argument(help="An export directory.")],
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", help="The published key (raw, base64 or PEM)."),
    ] = None,
) -> None:
    """Verify an export offline; exit 0 if intact, 1 naming the first bad seq."""
    from tsuchi.projections.audit_format import parse_public_key, verify_export

    key = None
    if public_key is not None:
        try:
            key = parse_public_key(public_key.read_bytes())
        except (OSError, ValueError) as e:
            err.print(f"error: --public-key: {type(e).__name__}")
            raise typer.Exit(2) from None
    result = verify_export(directory, key)
    if not result.ok:
        err.print(f"[bold red]{result}[/]")
        raise typer.Exit(1)
    console.print(str(result))
    if key is None:
        err.print(
            "warning: no --public-key given: integrity checked against the export's own "
            "key; pass the published key to check who signed it"
        )


@audit_app.command("public-key")
def audit_public_key(db: DbOpt = "sqlite:///tsuchi.db", keys: KeysOpt = None) -> None:
    """Print the audit signing public key to publish to auditors."""
    from tsuchi.engine import Engine

    try:
        with Engine(_settings(db, keys)) as engine:
            console.print(engine.audit.public_key_text())
    except TsuchiError as e:
        raise _fail(e) from None


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
