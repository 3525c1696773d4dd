"""The benchmark runner: ``python -m benchmarks [--quick] [--only NAME] [--out FILE]``.

Runs every figure (or the one ``--only`` names) on SQLite (a temporary file
database in WAL mode) and, when ``TSUCHI_BENCH_DATABASE_URL`` is set, on that
PostgreSQL database too (its ``public`` schema is dropped and recreated before
each measurement: never point it at a database that holds anything else).
Prints a table and writes the results with a description of the machine to
``bench-results.json``.  ``--quick`` uses small sizes and time boxes so that
both backends finish in under five minutes on a two-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

from benchmarks import (
    audit_export,
    broadcast,
    e2e,
    growth,
    pii,
    projection,
    timers,
    urgent_latency,
)
from benchmarks.common import FULL, QUICK, Backend, Ctx, Result

FIGURES: dict[str, ModuleType] = {
    "e2e": e2e,
    "broadcast": broadcast,
    "urgent_latency": urgent_latency,
    "projection": projection,
    "audit_export": audit_export,
    "timers": timers,
    "pii": pii,
    "growth": growth,
}
"""Figure name -> module with ``run(ctx) -> list[Result]``, in running order.
``growth`` and ``projection`` reuse the measurements of ``e2e`` and
``audit_export`` from the same run (a per-backend cache)."""

ENV_URL = "TSUCHI_BENCH_DATABASE_URL"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _pkg(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _postgres_version(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()


def machine_info(pg_url: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "sqlite_version": sqlite3.sqlite_version,
        "packages": {
            p: _pkg(p)
            for p in (
                "tsuchi",
                "eventsourcing",
                "eventsourcing-sqlalchemy",
                "sqlalchemy",
                "psycopg",
            )
        },
    }
    try:
        info["memory_mb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20)
    except (ValueError, OSError, AttributeError):
        pass
    if pg_url:
        info["postgres_version"] = _postgres_version(pg_url)
    return info


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.4f}"


def render(results: Sequence[Result], console: Console) -> None:
    table = Table(title="tsuchi benchmarks", show_lines=False)
    for col, justify in (
        ("figure", "left"),
        ("backend", "left"),
        ("n", "right"),
        ("value", "right"),
        ("unit", "left"),
        ("baseline", "right"),
        ("ratio", "right"),
        ("target", "left"),
        ("ok", "center"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in results:
        ok = "-" if r.meets_target is None else ("yes" if r.meets_target else "NO")
        table.add_row(
            r.name,
            r.backend,
            f"{r.n:,}",
            _fmt(r.value),
            r.unit,
            _fmt(r.baseline),
            "-" if r.ratio is None else f"{r.ratio:.2f}",
            r.target or "-",
            ok,
        )
    console.print(table)
    notes = [r for r in results if r.note]
    for r in notes:
        console.print(f"[dim]{r.name} ({r.backend}): {r.note}[/dim]")


def _selected(only: str | None) -> list[tuple[str, ModuleType]]:
    if only is None:
        return list(FIGURES.items())
    return [(only, FIGURES[only])]


def run_backend(
    backend: Backend,
    quick: bool,
    only: str | None,
    log: Callable[[str], None],
) -> list[Result]:
    ctx = Ctx(backend=backend, quick=quick, sizes=QUICK if quick else FULL, log=log)
    results: list[Result] = []
    for name, module in _selected(only):
        log(f"[{backend.name}] {name} ...")
        started = time.perf_counter()
        try:
            results.extend(module.run(ctx))
        except Exception as e:  # a broken figure must not hide the others
            log(f"[{backend.name}] {name} FAILED: {type(e).__name__}")
            traceback.print_exc()
            results.append(
                Result(name, backend.name, 0, float("nan"), "error", note=type(e).__name__)
            )
        log(f"[{backend.name}] {name} took {time.perf_counter() - started:.1f} s")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, under 5 minutes")
    parser.add_argument("--only", choices=sorted(FIGURES), help="run one figure")
    parser.add_argument("--out", default="bench-results.json", help="results file")
    args = parser.parse_args(argv)

    console = Console(width=160)

    def log(msg: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg}", highlight=False)

    pg_url = os.environ.get(ENV_URL) or None
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="tsuchi-bench-"))
    results: list[Result] = []
    try:
        backends = [Backend("sqlite", workdir / "sqlite")]
        if pg_url:
            backends.append(Backend("postgres", workdir / "postgres", pg_url=pg_url))
        else:
            log(f"PostgreSQL skipped: set {ENV_URL} to include it")
        for b in backends:
            b.workdir.mkdir(parents=True, exist_ok=True)
            results.extend(run_backend(b, args.quick, args.only, log))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    total = time.perf_counter() - started
    render(results, console)
    doc = {
        "machine": machine_info(pg_url),
        "mode": "quick" if args.quick else "full",
        "seconds": round(total, 1),
        "results": [r.as_dict() for r in results],
    }
    Path(args.out).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    log(f"wrote {args.out} ({len(results)} rows) in {total:.0f} s")
    return 0
