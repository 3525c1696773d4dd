"""Figure ``audit_export``: export and offline verification of the audit chain.

How the event log is made (documented shortcut): running 1,000,000 events
through the full engine would take hours, so after a normal set-up (sender,
templates, accounts) the log is filled by saving tsuchi's own ``Message``
aggregates directly through ``engine.store.save``, 500 messages (3,000 events)
per transaction.  Each message gets the events a delivered-and-read notice
has: ``Requested`` (with the ``name`` variable sealed under the account's data
key), ``Routed``, ``Submitted``, and ``Progressed`` to accepted, delivered and
read.  These are the same topics, state shapes and ciphertexts the engine
stores; only the engine's command overhead is skipped.

The log grows in three stages (10k, 100k, 1M events; quick 1k, 10k, 100k).
At each stage the parent extends the hash chain (``engine.audit.catch_up``;
timed for :mod:`benchmarks.projection`), then a fresh subprocess runs
``engine.audit.export`` into an empty directory and another runs
``verify_export`` on it.  Each child times its own work and reports its peak
RSS (``VmHWM`` from ``/proc/self/status``, else ``ru_maxrss``) and its RSS
before the work began, so the parent's memory does not pollute the figure.

Rows (largest stage): export and verify records/s (no baseline, no target),
and peak RSS of each step in MB against the 300 MB limit (``ratio = 300 /
value``).  Flatness in N is shown by :mod:`benchmarks.growth`.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from benchmarks.common import Ctx, Result, Rig, build_rig, count_events, under_limit
from tsuchi import Engine, Settings
from tsuchi.domain.message import Message, gateway_reference
from tsuchi.domain.personal import Personal
from tsuchi.domain.template import template_id
from tsuchi.domain.values import Carrier, Channel, Purpose, Urgency

NAME = "audit_export"
RSS_LIMIT_MB = 300.0
EVENTS_PER_MESSAGE = 6
MESSAGES_PER_TX = 500


# -- generating the log ------------------------------------------------------------------


def generate(rig: Rig, events: int, start: int) -> int:
    """Save messages until about ``events`` more events are stored; returns the
    next message number."""
    engine = rig.engine
    tid = template_id(rig.sender, "fraud_alert")
    messages = max(1, events // EVENTS_PER_MESSAGE)
    i = start
    end = start + messages
    while i < end:
        batch = []
        now = engine.now()
        for j in range(i, min(end, i + MESSAGES_PER_TX)):
            account = rig.accounts[j % len(rig.accounts)]
            m = Message(
                sender_id=rig.sender,
                idempotency_key=f"gen-{j}",
                tenant="bench",
                account_id=account,
                template_id=tid,
                template_name="fraud_alert",
                template_version=1,
                purpose=Purpose.SECURITY,
                urgency=Urgency.NORMAL,
                variables={
                    "name": Personal(account, "山田太郎"),
                    "last4": "4242",
                    "amount": "52,000円",
                },
                correlation_id=f"gen-{j}",
                requested_by="host",
                at=now,
            )
            m.route(
                Channel.PLUS_MESSAGE,
                Carrier.DOCOMO,
                {"rule": "security_always_allowed", "route": "plus_message_capable"},
                now,
            )
            m.mark_submitted(
                1, gateway_reference(m.id, 1), now, {"rule": "security_always_allowed"}
            )
            for kind in ("accepted", "delivered", "read"):
                m.record_report(1, kind, now)
            batch.append(m)
        with engine.transaction():
            engine.store.save(*batch)
        i += len(batch)
    return i


# -- the child processes ----------------------------------------------------------------


def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB."""
    cur = peak = 0.0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    except OSError:
        pass
    if not peak:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return cur, peak


def child_main(argv: list[str]) -> int:
    """``export URL KEYS_DIR OUT_DIR`` or ``verify OUT_DIR``: print one JSON line."""
    from datetime import UTC, datetime

    from tsuchi.projections.audit import verify_export

    what = argv[0]
    if what == "export":
        url, keys, out = argv[1], Path(argv[2]), Path(argv[3])
        engine = Engine(Settings(database_url=url, keys_dir=keys))
        try:
            before, _ = _rss_mb()
            t0 = time.perf_counter()
            manifest = engine.audit.export(out, datetime.now(UTC))
            seconds = time.perf_counter() - t0
            records = int(manifest["record_count"])
            ok = True
        finally:
            engine.close()
    else:
        out = Path(argv[1])
        before, _ = _rss_mb()
        t0 = time.perf_counter()
        result = verify_export(out, trust_embedded_key=True)  # the same checks, timed
        seconds = time.perf_counter() - t0
        records, ok = result.records, bool(result.ok)
    _, peak = _rss_mb()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "records": records,
                "ok": ok,
                "rss_before_mb": before,
                "peak_mb": peak,
            }
        )
    )
    return 0


@dataclass
class Step:
    seconds: float
    records: int
    ok: bool
    rss_before_mb: float
    peak_mb: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("nan")


def _child(args: list[str]) -> Step:
    proc = subprocess.run(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "benchmarks.audit_export", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"audit child {args[0]} failed: {proc.stderr.strip()[-2000:]}")
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return Step(**data)


# -- the staged measurement ----------------------------------------------------------------


@dataclass
class Stage:
    events: int  # events in the log (and records exported)
    catch_up_events: int
    catch_up_seconds: float
    raw_read_seconds: float
    export: Step
    verify: Step


def _raw_read(engine: Engine, start_id: int, stop_id: int, batch: int = 1000) -> float:
    """Seconds to page the notification log from ``start_id`` (exclusive) to
    ``stop_id`` with the recorder's ``select_notifications``."""
    recorder: Any = engine.store.recorder
    t0 = time.perf_counter()
    cur = start_id
    while cur < stop_id:
        notes = recorder.select_notifications(start=cur, limit=batch, inclusive_of_start=False)
        if not notes:
            break
        cur = int(notes[-1].id)
    return time.perf_counter() - t0


def _max_id(engine: Engine) -> int:
    record_cls: Any = getattr(engine.store.recorder, "events_record_cls")  # noqa: B009
    with engine.store.session(commit=False) as s:
        return int(s.execute(select(func.coalesce(func.max(record_cls.id), 0))).scalar_one())


def stages(ctx: Ctx) -> list[Stage]:
    """Grow one log through the three sizes; measure each stage (cached)."""
    if "audit_stages" in ctx.cache:
        cached: list[Stage] = ctx.cache["audit_stages"]
        return cached
    rig = build_rig(ctx, 200, bulk_accounts=True)
    out: list[Stage] = []
    try:
        engine = rig.engine
        next_msg = 0
        chained_to = 0
        for size in ctx.sizes.export:
            have = count_events(engine)
            if size > have:
                t0 = time.perf_counter()
                next_msg = generate(rig, size - have, next_msg)
                ctx.log(
                    f"  generated {count_events(engine) - have} events in "
                    f"{time.perf_counter() - t0:.1f} s"
                )
            total = count_events(engine)
            top = _max_id(engine)
            t0 = time.perf_counter()
            chained = engine.audit.catch_up()
            catch_up_s = time.perf_counter() - t0
            raw_s = _raw_read(engine, chained_to, top)
            chained_to = top
            export_dir = ctx.backend.fresh_dir("export")
            export = _child(["export", rig.url, str(rig.keys_dir), str(export_dir)])
            verify = _child(["verify", str(export_dir)])
            if not verify.ok:
                ctx.log("  warning: the export did not verify")
            for f in export_dir.iterdir():
                f.unlink()
            ctx.log(
                f"  stage {total}: catch-up {chained / catch_up_s:.0f}/s, export "
                f"{export.rate:.0f}/s ({export.peak_mb:.0f} MB), verify {verify.rate:.0f}/s "
                f"({verify.peak_mb:.0f} MB)"
            )
            out.append(Stage(total, chained, catch_up_s, raw_s, export, verify))
    finally:
        rig.close()
    ctx.cache["audit_stages"] = out
    return out


def run(ctx: Ctx) -> list[Result]:
    st = stages(ctx)[-1]
    b = ctx.backend.name
    method = "log made by saving Message aggregates via engine.store.save (see module doc)"
    return [
        Result(
            f"{NAME}.export",
            b,
            st.export.records,
            st.export.rate,
            "records/s",
            note=f"{method}; re-verifies each record against its stored event",
        ),
        Result(f"{NAME}.verify", b, st.verify.records, st.verify.rate, "records/s"),
        under_limit(
            f"{NAME}.export.peak_rss",
            b,
            st.export.records,
            st.export.peak_mb,
            "MB",
            RSS_LIMIT_MB,
            note=f"RSS before export {st.export.rss_before_mb:.0f} MB (interpreter + engine)",
        ),
        under_limit(
            f"{NAME}.verify.peak_rss",
            b,
            st.verify.records,
            st.verify.peak_mb,
            "MB",
            RSS_LIMIT_MB,
            note=f"RSS before verify {st.verify.rss_before_mb:.0f} MB",
        ),
    ]


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1:]))
