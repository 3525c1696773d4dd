"""``tsuchi accounts`` and ``tsuchi consents``: what is held about customers.

Why this module exists: these are the commands a data-protection officer
runs: a subject access report for one customer, the erasure of a customer
(crypto-shredding their data keys) and the export of the consent register.
They share the way a customer is named (``--mobile`` or ``--customer-ref``)
and the care their output needs: the subject access file is written mode
0600, and CSV cells are neutralised against spreadsheet formula injection.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tsuchi.cli.common import DbOpt, KeysOpt, console, err, fail, load_settings
from tsuchi.errors import TsuchiError
from tsuchi.infrastructure.private_files import open_private, write_private

accounts_app = typer.Typer(
    help="Customer accounts: subject access reports and erasure.", no_args_is_help=True
)
consents_app = typer.Typer(help="The consent register.", no_args_is_help=True)

MobileOpt = Annotated[str | None, typer.Option("--mobile", help="Mobile number, any format.")]
RefOpt = Annotated[str | None, typer.Option("--customer-ref", help="The host's customer ref.")]
TenantOpt = Annotated[
    str | None, typer.Option("--tenant", help="The tenant the account belongs to.")
]


def _csv_cell(value: Any) -> Any:
    """Neutralise spreadsheet formula injection in CSV exports (OWASP)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _resolve_accounts(
    engine: Any, mobile: str | None, customer_ref: str | None, tenant: str | None = None
) -> list[Any]:
    if (mobile is None) == (customer_ref is None):
        err.print("error: give exactly one of --mobile or --customer-ref")
        raise typer.Exit(2)
    found = engine.find_accounts(tenant, mobile=mobile, customer_ref=customer_ref)
    if not found:
        err.print("error: no account matches")
        raise typer.Exit(1)
    return list(found)


@accounts_app.command("report")
def accounts_report(
    mobile: MobileOpt = None,
    customer_ref: RefOpt = None,
    tenant: TenantOpt = None,
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
    format: Annotated[str, typer.Option("--format", help="text or json")] = "text",
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
) -> None:
    """Subject access report: everything held about one customer."""
    from tsuchi.engine import Engine
    from tsuchi.reporting.subject_access import render_text

    if format not in ("text", "json"):
        err.print("error: --format must be text or json")
        raise typer.Exit(2)
    try:
        with Engine(load_settings(db, keys)) as engine:
            reports = [
                engine.subject_access_report(a)
                for a in _resolve_accounts(engine, mobile, customer_ref, tenant)
            ]
    except TsuchiError as e:
        raise fail(e) from None
    if format == "json":
        body = (
            json.dumps(reports if len(reports) > 1 else reports[0], ensure_ascii=False, indent=2)
            + "\n"
        )
    else:
        body = "\n".join(render_text(r) for r in reports)
    if out:
        try:
            write_private(out, body)
        except TsuchiError as e:
            raise fail(e) from None
        console.print(f"wrote {out}")
    else:
        sys.stdout.write(body)


@accounts_app.command("erase")
def accounts_erase(
    requested_by: Annotated[str, typer.Option("--requested-by", help="Who asked (audit).")],
    mobile: MobileOpt = None,
    customer_ref: RefOpt = None,
    tenant: TenantOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be erased; change nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
) -> None:
    """Erase one customer by destroying their data keys; their events stay, unreadable.

    Exactly one account must match: a customer ref or number known at several
    tenants needs ``--tenant``.  On a terminal it asks before erasing (``--yes``
    skips the question); scripts without a terminal are not asked."""
    from tsuchi.engine import Engine

    try:
        with Engine(load_settings(db, keys)) as engine:
            found = _resolve_accounts(engine, mobile, customer_ref, tenant)
            views = [engine.account(a) for a in found]
            if len(found) > 1:
                tenants = ", ".join(sorted({v.tenant for v in views}))
                err.print(
                    f"error: {len(found)} accounts match (tenants: {tenants}); "
                    "name one with --tenant. Nothing was erased."
                )
                raise typer.Exit(1)
            (account,), (view,) = found, views
            messages = len(engine.messages(account_id=account))
            what = (
                f"account {account} (tenant {view.tenant}): its data keys are destroyed; "
                f"its {messages} messages stay, their personal data unreadable"
            )
            if dry_run:
                console.print(f"would erase {what}")
                return
            if not yes and sys.stdin.isatty():
                typer.confirm(f"Erase {what}? This cannot be undone", abort=True)
            cancelled = engine.erase_account(account, requested_by)
            console.print(f"erased account {account}; {cancelled} pending messages cancelled")
            if not engine.compact_storage():
                err.print(
                    "warning: the database could not yet drop the old pages that held the "
                    "destroyed key (another connection is reading); run the command "
                    "`tsuchi accounts compact` once it is idle"
                )
    except TsuchiError as e:
        raise fail(e) from None


@accounts_app.command("compact")
def accounts_compact(db: DbOpt = "sqlite:///tsuchi.db", keys: KeysOpt = None) -> None:
    """Push erased key material out of the database's old page images (SQLite
    WAL, PostgreSQL dead tuples); exit 1 if another connection prevented it."""
    from tsuchi.engine import Engine

    try:
        with Engine(load_settings(db, keys)) as engine:
            if not engine.compact_storage():
                err.print("error: compaction could not complete (another connection is reading)")
                raise typer.Exit(1)
            console.print("compacted")
    except TsuchiError as e:
        raise fail(e) from None


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
        with Engine(load_settings(db, keys)) as engine:
            entries = list(engine.consent_register())
    except TsuchiError as e:
        raise fail(e) from None
    try:
        stream = open_private(out) if out else sys.stdout
    except TsuchiError as e:
        raise fail(e) from None
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
