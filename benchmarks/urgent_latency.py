"""Figure ``urgent_latency``: a fraud alert's way to the gateway under broadcast load.

Set-up: a fresh database, synthetic accounts in bulk, and a broadcast to all
of them.  In the background, on the same engine and database, the load is
worked off (expanding the broadcast chunk by chunk and dispatching it).  In
the foreground, one fraud alert at a time: ``raise_fraud_alert`` for a random
account, then wait until the wrapped gateway records the submission of that
alert's message; latency is ``time.perf_counter`` from the call until that
submission.  Samples are taken while the broadcast is still being expanded or
dispatched (the load is checked after each sample), within a time box.

Two variants:

* ``urgent_latency.worker``: the background is :class:`tsuchi.worker.Worker`
  itself, as ``tsuchi worker`` runs it (the scheduled sweep, and its urgent
  dispatcher, woken when a request in its process commits an urgent notice);
* ``urgent_latency.sweep_only``: a thread runs ``sweep()`` in a loop and
  nothing else (no urgent dispatcher: what it buys; full mode only, to keep
  quick mode short).

Rows: p50 and p99 in milliseconds; target p99 < 100 ms (stated for SQLite;
reported for both).  ``ratio = 100 ms / p99`` (headroom, ``>= 1`` meets it);
p50 rows have no target.  With few samples (quick mode) p99 is the maximum.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from benchmarks.common import Ctx, Result, Rig, build_rig, percentile, under_limit
from tsuchi.domain.fraud import fraud_case_id
from tsuchi.domain.message import message_id
from tsuchi.worker import Worker

NAME = "urgent_latency"
P99_LIMIT_MS = 100.0


def _background(rig: Rig, variant: str) -> tuple[threading.Thread, Callable[[], None]]:
    """Start the load's worker; returns its thread and how to stop it."""
    engine = rig.engine
    if variant == "worker":
        worker = Worker(engine)
        thread = threading.Thread(target=worker.run, name="bench-worker", daemon=True)
        thread.start()
        return thread, worker.stop
    stop = threading.Event()

    def sweeper() -> None:
        while not stop.is_set():
            stats = engine.sweep(max_timers=1)
            if not (stats.submitted or stats.timers_fired or stats.reports):
                stop.wait(0.02)

    thread = threading.Thread(target=sweeper, name="bench-sweeper", daemon=True)
    thread.start()
    return thread, stop.set


def _sample(ctx: Ctx, rig: Rig, variant: str) -> tuple[list[float], int, bool]:
    """Latencies in ms, samples that timed out, and whether load lasted."""
    engine, gateway = rig.engine, rig.gateway
    rng = random.Random(7)  # noqa: S311 - picks accounts, not secrets
    engine.start_broadcast(rig.sender, f"bench-load-{variant}", "safety_check", rig.accounts)
    thread, stop = _background(rig, variant)
    latencies: list[float] = []
    timeouts = 0
    loaded = True
    deadline = time.perf_counter() + ctx.sizes.latency_timebox_s
    try:
        time.sleep(0.2)  # let the worker start on the broadcast
        for i in range(ctx.sizes.latency_samples):
            if time.perf_counter() > deadline:
                break
            account = rng.choice(rig.accounts)
            at = rig.clock.now() - timedelta(minutes=1)
            ref = f"{variant}-{i}"
            mid = message_id(rig.sender, f"fraud:{fraud_case_id(rig.sender, ref).hex}")
            gateway.watch(mid.hex)
            t0 = time.perf_counter()
            engine.raise_fraud_alert(rig.sender, account, "4242", "BENCH SHOP", 52000, at, ref)
            t_submit = gateway.wait_for(mid.hex, timeout=60.0)
            if t_submit is None:
                timeouts += 1
                continue
            latencies.append((t_submit - t0) * 1000)
            if engine.pending_dispatch() == 0 and gateway.submits >= len(rig.accounts):
                loaded = False  # the broadcast is done: no more load
                break
            time.sleep(rng.uniform(0.0, 0.05))
    finally:
        stop()
        thread.join(timeout=120)
    return latencies, timeouts, loaded


def run(ctx: Ctx) -> list[Result]:
    results: list[Result] = []
    b = ctx.backend.name
    for variant in ctx.sizes.latency_variants:
        rig = build_rig(ctx, ctx.sizes.latency_recipients, bulk_accounts=True)
        try:
            latencies, timeouts, loaded = _sample(ctx, rig, variant)
        finally:
            rig.close()
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        ctx.log(
            f"  {variant}: {len(latencies)} samples, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"max {max(latencies, default=float('nan')):.1f} ms, {timeouts} timeouts"
        )
        note = f"{len(latencies)} samples under a {len(rig.accounts):,}-recipient broadcast"
        if timeouts:
            note += f"; {timeouts} alerts not submitted within 60 s (excluded)"
        if not loaded:
            note += "; the broadcast finished before sampling did"
        results.append(Result(f"{NAME}.{variant}.p50", b, len(latencies), p50, "ms", note=note))
        results.append(
            under_limit(f"{NAME}.{variant}.p99", b, len(latencies), p99, "ms", P99_LIMIT_MS)
        )
    return results
