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
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tsuchi.cli.common import DbOpt, KeysOpt, console, err, fail, load_settings
from tsuchi.errors import TsuchiError

accounts_app = typer.Typer(
    help="Customer accounts: subject access reports and erasure.", no_args_is_help=True
)
consents_app = typer.Typer(help="The consent register.", no_args_is_help=True)

MobileOpt = Annotated[str | None, typer.Option("--mobile", help="Mobile number, any format.")]
RefOpt = Annotated[str | None, typer.Option("--customer-ref", help="The host's customer ref.")]


def _csv_cell(value: Any) -> Any:
    """Neutralise spreadsheet formula injection in CSV exports (OWASP)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _resolve_accounts(engine: Any, mobile: str | None, customer_ref: str | None) -> list[Any]:
    if (mobile is None) == (customer_ref is None):
        err.print("error: give exactly one of --mobile or --customer-ref")
        raise typer.Exit(2)
    found = engine.find_accounts(mobile=mobile, customer_ref=customer_ref)
    if not found:
        err.print("error: no account matches")
        raise typer.Exit(1)
    return list(found)


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
    from tsuchi.reporting.subject_access import render_text

    if format not in ("text", "json"):
        err.print("error: --format must be text or json")
        raise typer.Exit(2)
    try:
        with Engine(load_settings(db, keys)) as engine:
            reports = [
                engine.subject_access_report(a)
                for a in _resolve_accounts(engine, mobile, customer_ref)
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
        with Engine(load_settings(db, keys)) as engine:
            for account in _resolve_accounts(engine, mobile, customer_ref):
                cancelled = engine.erase_account(account, requested_by)
                console.print(f"erased account {account}; {cancelled} pending messages cancelled")
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
