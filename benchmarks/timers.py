"""Figure ``timers``: bulk deadline registration, then the sweep firing reminders.

Registration (timed): ``engine.register_deadlines`` of N card-expiry
:class:`~tsuchi.flows.DeadlineSpec` (offsets 60, 30 and 7 days: up to three
reminder timers each; due dates spread over a year) in tsuchi's default chunks
of 2,000 per transaction.  Rate: deadlines/s, against the raw application
storing the same events with the same grouping (``ratio >= `` nothing: no
target was set; the ratio is informative).

Sweep (timed): the clock moves 90 days so that a large share of the
reminders is due, then ``sweep()`` runs in a loop for a fixed time box; each
fired reminder requests a ``card_expiry`` notice (a transactional message
with a date variable) and records ``Reminded`` on the deadline.  Rate: timers
fired per second (no baseline).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date, timedelta

from benchmarks.baseline import replay
from benchmarks.common import Ctx, Result, Rig, TxProbe, build_rig, throughput
from tsuchi.flows import DeadlineSpec

NAME = "timers"


def _specs(rig: Rig, n: int) -> Iterator[DeadlineSpec]:
    first_due = date(2026, 4, 20)
    for i in range(n):
        yield DeadlineSpec(
            sender_id=rig.sender,
            account_id=rig.accounts[i % len(rig.accounts)],
            kind="card_expiry",
            reference=f"card-{i}",
            due=first_due + timedelta(days=i % 365),
            template="card_expiry",
            variables={"last4": f"{i % 10_000:04d}"},
        )


def run(ctx: Ctx) -> list[Result]:
    n = ctx.sizes.timers
    rig = build_rig(ctx, 500, bulk_accounts=True)
    engine = rig.engine
    probe = TxProbe(engine)
    try:
        with probe.recording() as pattern:
            t0 = time.perf_counter()
            registered = engine.register_deadlines(_specs(rig, n))
            reg_s = time.perf_counter() - t0
        ctx.log(f"  registered {registered} deadlines in {reg_s:.1f} s; {pattern.summary()}")
        rig.clock.advance(timedelta(days=90))
        fired = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < ctx.sizes.timer_sweep_s:
            stats = engine.sweep(max_timers=50)
            fired += stats.timers_fired
            if not stats.timers_fired:
                break
        sweep_s = time.perf_counter() - t0
        ctx.log(f"  sweep fired {fired} timers in {sweep_s:.1f} s")
    finally:
        probe.close()
        rig.close()
    base = replay(ctx.backend, pattern)
    b = ctx.backend.name
    return [
        throughput(
            f"{NAME}.register",
            b,
            registered,
            registered / reg_s,
            "deadlines/s",
            registered / base.seconds,
            note=f"{pattern.events} events in {len(pattern.transactions)} txs, plus timer rows",
        ),
        Result(
            f"{NAME}.sweep",
            b,
            fired,
            fired / sweep_s,
            "timers/s",
            note=(
                f"time-boxed at {ctx.sizes.timer_sweep_s:g} s; "
                "each fired reminder requests a notice"
            ),
        ),
    ]
