"""``tsuchi audit``: export the tamper-evident audit trail and verify an export.

Why this module exists: the audit commands are the ones an auditor relies
on, with outcomes of their own: ``export`` refuses (exit 1, naming the first
bad seq) when the event store no longer matches the chain or the chain does
not extend the checkpoints anchored outside the database, ``verify`` works
offline on an export directory with no database (exit 0 intact, 1 failed, 2
nothing to verify against or an unreadable key or anchor log), and
``public-key`` prints the key to publish.  Dates given without an offset are
Japan time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tsuchi.cli.common import DbOpt, KeysOpt, console, err, fail, load_settings
from tsuchi.errors import TsuchiError

audit_app = typer.Typer(
    help="The tamper-evident audit trail: export and offline verification.", no_args_is_help=True
)


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
    bad seq is named.  So is a chain that does not extend the last checkpoint
    anchored outside the database (TSUCHI_AUDIT_ANCHOR).  The export ends
    with a signed checkpoint, anchored, and a signed manifest."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from tsuchi.engine import Engine
    from tsuchi.errors import AuditAnchorMismatch, AuditMismatch

    since_m, until_m = _moment(since, "since"), _moment(until, "until")
    try:
        with (
            Engine(load_settings(db, keys)) as engine,
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
    except AuditAnchorMismatch as e:
        where = f" at seq {e.seq}" if e.seq else ""
        err.print(
            f"[bold red]refused[/]: the audit chain does not extend the anchored "
            f"checkpoints{where}: {e.reason}"
        )
        raise typer.Exit(1) from None
    except AuditMismatch as e:
        err.print(
            f"[bold red]refused[/]: the event store does not match the audit chain at "
            f"seq {e.seq}: {e.reason}"
        )
        raise typer.Exit(1) from None
    except TsuchiError as e:
        raise fail(e) from None
    console.print(
        f"exported seq {manifest['first_seq']}..{manifest['last_seq']} "
        f"({manifest['record_count']} records) to {out}"
    )
    console.print(f"public key {manifest['public_key']} (key id {manifest['key_id']})")
    if manifest["malformed_count"]:
        seqs = ", ".join(str(x) for x in manifest["malformed_seqs"][:20])
        more = " ..." if manifest["malformed_count"] > 20 else ""
        err.print(
            f"warning: {manifest['malformed_count']} malformed stored events, chained by "
            f"their digest: seq {seqs}{more}"
        )


@audit_app.command("verify")
def audit_verify(
    directory: Annotated[Path, typer.Argument(help="An export directory.")],
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", help="The published key (raw, base64 or PEM)."),
    ] = None,
    anchor: Annotated[
        Path | None,
        typer.Option(
            "--anchor", help="The anchor log (file or directory): the export must extend it."
        ),
    ] = None,
    trust_embedded_key: Annotated[
        bool,
        typer.Option(
            "--trust-embedded-key",
            help="Accept the export's own key (proves integrity, not who signed).",
        ),
    ] = False,
) -> None:
    """Verify an export offline: exit 0 if intact, 1 naming the first bad seq,
    2 if there is nothing to verify against (give --public-key or --anchor)."""
    from tsuchi.errors import AuditAnchorCorrupt
    from tsuchi.projections.audit import parse_public_key, verify_export

    if public_key is None and anchor is None and not trust_embedded_key:
        err.print(
            "error: nothing to verify against: give --public-key FILE (the published key) "
            "or --anchor FILE (the anchor log); --trust-embedded-key accepts the export's "
            "own key, which anyone can replace"
        )
        raise typer.Exit(2)
    key = None
    if public_key is not None:
        try:
            key = parse_public_key(public_key.read_bytes())
        except (OSError, ValueError) as e:
            err.print(f"error: --public-key: {type(e).__name__}")
            raise typer.Exit(2) from None
    if anchor is not None and not anchor.exists():
        err.print("error: --anchor: the anchor log does not exist")
        raise typer.Exit(2)
    try:
        result = verify_export(directory, key, anchor=anchor, trust_embedded_key=trust_embedded_key)
    except AuditAnchorCorrupt as e:
        err.print(f"error: --anchor: {e}")
        raise typer.Exit(2) from None
    if not result.ok:
        err.print(f"[bold red]{result}[/]")
        raise typer.Exit(1)
    console.print(str(result))
    if key is None and not result.anchored:
        err.print(
            "warning: --trust-embedded-key: integrity checked against the export's own "
            "key only; anyone can re-sign an export with a key of their own"
        )


@audit_app.command("public-key")
def audit_public_key(db: DbOpt = "sqlite:///tsuchi.db", keys: KeysOpt = None) -> None:
    """Print the audit signing public key to publish to auditors."""
    from tsuchi.engine import Engine

    try:
        with Engine(load_settings(db, keys)) as engine:
            console.print(engine.audit.public_key_text())
    except TsuchiError as e:
        raise fail(e) from None
