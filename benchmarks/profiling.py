"""Profiles of the hot paths: ``python -m benchmarks.profiling [--out FILE]``.

Runs a small ``e2e`` load (request, dispatch, reports) and a broadcast
expansion (``start_broadcast`` and sweeps) on a SQLite file database (and on
PostgreSQL when ``TSUCHI_BENCH_DATABASE_URL`` is set) under pyinstrument, and
writes ``benchmarks/PROFILE.md``: per run the top functions by cumulative
time and by self time (``file:line``), with the share of the run's wall time.
Cumulative time counts a function once per stack (recursion is not double
counted); the benchmark harness's own frames are left out of the tables.
pyinstrument is a dev dependency.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pyinstrument import Profiler

from benchmarks.common import QUICK, Backend, Ctx, Rig, alert_variables, build_rig

TOP_CUMULATIVE = 10
TOP_SELF = 15
HARNESS = ("benchmarks/", "pyinstrument/", "<string>")


TSUCHI = "/tsuchi/"
SUMMARY_START = "<!-- summary -->"
SUMMARY_END = "<!-- /summary -->"


@dataclass
class FnStat:
    where: str
    cumulative: float = 0.0
    self_time: float = 0.0


def _key(frame: Any) -> str:
    path = str(frame.file_path or "")
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{frame.function} ({path}:{frame.line_no})"


def _walk(
    frame: Any,
    stack: set[str],
    stats: dict[str, FnStat],
    sites: dict[str, FnStat],
    site: str,
) -> None:
    key = _key(frame)
    path = str(frame.file_path or "")
    harness = any(h in path for h in HARNESS) or frame.is_synthetic
    if TSUCHI in path and "site-packages" not in path:
        site = key
    if not harness:
        st = stats.setdefault(key, FnStat(key))
        if key not in stack:
            st.cumulative += frame.time
        st.self_time += frame.total_self_time
        if site:
            sites.setdefault(site, FnStat(site)).self_time += frame.total_self_time
    pushed = key not in stack
    if pushed:
        stack.add(key)
    for child in frame.children:
        _walk(child, stack, stats, sites, site)
    if pushed:
        stack.discard(key)


def _table(title: str, rows: Sequence[FnStat], total: float, attr: str) -> list[str]:
    out = [
        f"#### {title}",
        "",
        "| # | function (file:line) | seconds | share |",
        "|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        v = float(getattr(r, attr))
        out.append(f"| {i} | `{r.where}` | {v:.2f} | {100 * v / total:.0f} % |")
    return [*out, ""]


def profile(title: str, fn: Callable[[], str]) -> list[str]:
    profiler = Profiler(interval=0.0005)
    t0 = time.perf_counter()
    profiler.start()
    detail = fn()
    profiler.stop()
    wall = time.perf_counter() - t0
    session = profiler.last_session
    assert session is not None
    root = session.root_frame()
    stats: dict[str, FnStat] = {}
    sites: dict[str, FnStat] = {}
    if root is not None:
        _walk(root, set(), stats, sites, "")
    cumulative = sorted(stats.values(), key=lambda s: s.cumulative, reverse=True)
    selfish = sorted(stats.values(), key=lambda s: s.self_time, reverse=True)
    lines = [f"### {title}", "", f"{detail}; wall time {wall:.1f} s under the profiler.", ""]
    lines += _table("Top by cumulative time", cumulative[:TOP_CUMULATIVE], wall, "cumulative")
    lines += _table("Top by self time", selfish[:TOP_SELF], wall, "self_time")
    by_site = sorted(sites.values(), key=lambda s: s.self_time, reverse=True)
    lines += _table(
        "Top tsuchi functions by time spent in them and in library code they call directly "
        "(each sample is charged to the innermost tsuchi frame on its stack)",
        by_site[:TOP_SELF],
        wall,
        "self_time",
    )
    return lines


def _count_loads(rig: Rig) -> Counter[str]:
    """Count how aggregates are read, by wrapping instance methods (tsuchi is
    not changed): queries for one aggregate's events (``select_events``),
    bulk event reads and version checks (one query each, many aggregates),
    and copies taken from the committed-state cache."""
    counts: Counter[str] = Counter()
    recorder: Any = rig.engine.store.recorder
    cache: Any = getattr(rig.engine, "_cache")  # noqa: B009

    def wrap(obj: Any, name: str, label: str) -> None:
        inner = getattr(obj, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            out = inner(*args, **kwargs)
            if name != "get" or out is not None:
                counts[label] += 1
            return out

        setattr(obj, name, counted)

    wrap(recorder, "select_events", "single-aggregate event queries")
    wrap(recorder, "select_events_of", "bulk event queries")
    wrap(recorder, "latest_versions", "bulk version queries")
    wrap(cache, "get", "cached states copied")
    return counts


def _loads(counts: Counter[str], per: int, what: str) -> str:
    parts = ", ".join(f"{k} {v / per:.2f}" for k, v in sorted(counts.items()))
    return f"aggregate reads per {what}: {parts}"


def _e2e_load(rig: Rig, n: int) -> Callable[[], str]:
    counts = _count_loads(rig)

    def go() -> str:
        engine = rig.engine
        for i in range(n):
            engine.request_notice(
                rig.sender,
                rig.accounts[i % len(rig.accounts)],
                "fraud_alert",
                alert_variables(),
                idempotency_key=f"prof-{i}",
            )
            if i % 100 == 99:
                while engine.dispatch():
                    pass
                rig.clock.advance(timedelta(minutes=1))
                engine.process_reports()
        for _ in range(100):
            while engine.dispatch():
                pass
            if rig.gateway.pending_reports == 0 and engine.pending_dispatch() == 0:
                break
            rig.clock.advance(timedelta(minutes=10))
            engine.process_reports()
        return f"e2e: {n} notices requested, dispatched and reported; " + _loads(
            counts, n, "notice"
        )

    return go


def _broadcast_load(rig: Rig, chunks: int) -> Callable[[], str]:
    counts = _count_loads(rig)

    def go() -> str:
        engine = rig.engine
        bid = engine.start_broadcast(rig.sender, "profile", "safety_check", rig.accounts)
        for _ in range(chunks):
            engine.sweep(max_timers=1)
        created = int(engine.broadcast_report(bid)["messages_created"])
        return (
            f"broadcast to {len(rig.accounts):,} accounts: start_broadcast and {chunks} sweeps "
            f"({created} messages created, {rig.gateway.submits} submitted); "
            + _loads(counts, max(1, created), "created message")
        )

    return go


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiling", description=__doc__)
    parser.add_argument("--out", default=str(Path(__file__).with_name("PROFILE.md")))
    parser.add_argument("--notices", type=int, default=400)
    parser.add_argument("--chunks", type=int, default=3)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="tsuchi-profile-"))
    pg_url = os.environ.get("TSUCHI_BENCH_DATABASE_URL") or None
    backends = [Backend("sqlite", workdir / "sqlite")]
    if pg_url:
        backends.append(Backend("postgres", workdir / "postgres", pg_url=pg_url))
    lines = [
        "# Profile of tsuchi's hot paths",
        "",
        "Written by `python -m benchmarks.profiling` (pyinstrument, 0.5 ms sampling).",
        "Shares are of the profiled run's wall time; set-up is not profiled.",
        "",
    ]
    try:
        for b in backends:
            b.workdir.mkdir(parents=True)
            ctx = Ctx(backend=b, quick=True, sizes=QUICK, log=print)
            lines += [f"## {b.name}", ""]
            rig = build_rig(ctx, 500)
            try:
                lines += profile("e2e", _e2e_load(rig, args.notices))
            finally:
                rig.close()
            rig = build_rig(ctx, 5_000, bulk_accounts=True)
            try:
                lines += profile("broadcast", _broadcast_load(rig, args.chunks))
            finally:
                rig.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out = Path(args.out)
    summary = ""
    if out.exists():  # keep the hand-written summary between the markers
        old = out.read_text()
        if SUMMARY_START in old and SUMMARY_END in old:
            start = old.index(SUMMARY_START)
            summary = old[start : old.index(SUMMARY_END) + len(SUMMARY_END)] + "\n\n"
    if summary:
        lines.insert(5, summary)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
