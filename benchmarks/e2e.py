"""Figure ``e2e``: notices end to end against the raw ``eventsourcing`` baseline.

Each notice is a ``request_notice`` of the ``fraud_alert`` template (security
purpose, a personal ``name`` variable that is sealed in the event, reply
suggestions) to one of a pool of synthetic accounts (mobile number, name and
customer reference sealed).  Notices are requested in chunks of 100; after
each chunk ``dispatch`` runs until nothing is due, the clock moves a minute and
``process_reports`` applies what the simulated carriers reported (accepted,
delivered, read, replies, failures, +Message -> SMS fallbacks).  After the last
chunk the clock moves on until every report is applied and every fallback is
submitted.  Every event is stored; the probe records each committed
transaction's events, and the count is checked against ``tsuchi_events``.

The baseline replays exactly those events (same count, grouping into
transactions, aggregates and state sizes) on the raw application: see
:mod:`benchmarks.baseline`.  ``ratio = tsuchi rate / baseline rate``, target
``>= 0.7``.

``e2e.floor`` (no target) stores the run's own events again through
tsuchi's mapper with no tsuchi logic (:mod:`benchmarks.floor`): what storing
them costs, against the same baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from eventsourcing.persistence import ApplicationRecorder

from benchmarks.baseline import BaselineRun, replay
from benchmarks.common import (
    Ctx,
    Result,
    Stopwatch,
    TxPattern,
    TxProbe,
    alert_variables,
    build_rig,
    count_events,
    throughput,
)
from benchmarks.floor import FloorRun, replay_own_events

NAME = "e2e"
TARGET = 0.7
CHUNK = 100
ACCOUNT_POOL = 500


@dataclass
class E2EOutcome:
    notices: int
    seconds: float
    pattern: TxPattern
    baseline: BaselineRun
    submits: int
    floor: FloorRun

    @property
    def notices_per_s(self) -> float:
        return self.notices / self.seconds

    @property
    def events_per_s(self) -> float:
        return self.pattern.events / self.seconds

    @property
    def baseline_notices_per_s(self) -> float:
        return self.notices / self.baseline.seconds

    @property
    def floor_notices_per_s(self) -> float:
        return self.notices / self.floor.seconds


def measure(ctx: Ctx, n: int) -> E2EOutcome:
    """Run ``n`` notices end to end on a fresh database (cached per size)."""
    key = f"e2e:{n}"
    if key in ctx.cache:
        cached: E2EOutcome = ctx.cache[key]
        return cached
    rig = build_rig(ctx, min(n, ACCOUNT_POOL))
    engine, clock, gateway = rig.engine, rig.clock, rig.gateway
    probe = TxProbe(engine)
    before = count_events(engine)
    recorder = engine.store.recorder
    assert isinstance(recorder, ApplicationRecorder)
    last_id = recorder.max_notification_id() or 0
    variables = alert_variables()
    try:
        with probe.recording() as pattern:
            watch = Stopwatch()
            for start in range(0, n, CHUNK):
                for i in range(start, min(n, start + CHUNK)):
                    engine.request_notice(
                        rig.sender,
                        rig.accounts[i % len(rig.accounts)],
                        "fraud_alert",
                        variables,
                        idempotency_key=f"e2e-{i}",
                    )
                while engine.dispatch():
                    pass
                clock.advance(timedelta(minutes=1))
                engine.process_reports()
            for _ in range(1000):  # until every report is in and every fallback sent
                while engine.dispatch():
                    pass
                if gateway.pending_reports == 0 and engine.pending_dispatch() == 0:
                    break
                clock.advance(timedelta(minutes=10))
                engine.process_reports()
            seconds = watch.elapsed
        stored = count_events(engine) - before
        if stored != pattern.events:
            ctx.log(f"  warning: probe saw {pattern.events} events, tsuchi_events grew {stored}")
        submits = gateway.submits
        floor = replay_own_events(ctx.backend, engine, pattern, last_id)
    finally:
        probe.close()
        rig.close()
    ctx.log(f"  e2e n={n}: {n / seconds:.1f} notices/s; {pattern.summary()}")
    base = replay(ctx.backend, pattern)
    ctx.log(f"  baseline: {base.events_per_s:.0f} events/s")
    ctx.log(f"  floor (own events, no logic): {n / floor.seconds:.1f} notices/s")
    out = E2EOutcome(n, seconds, pattern, base, submits, floor)
    ctx.cache[key] = out
    return out


def rows(ctx: Ctx, out: E2EOutcome) -> list[Result]:
    b = ctx.backend.name
    per_notice = out.pattern.events / out.notices
    per_tx = out.pattern.events / max(1, len(out.pattern.transactions))
    note = (
        f"{per_notice:.2f} events/notice, {per_tx:.2f} events/tx, "
        f"{out.submits} submissions; {ctx.backend.name} baseline module"
    )
    return [
        throughput(
            f"{NAME}.notices",
            b,
            out.notices,
            out.notices_per_s,
            "notices/s",
            out.baseline_notices_per_s,
            TARGET,
            note,
        ),
        throughput(
            f"{NAME}.events",
            b,
            out.pattern.events,
            out.events_per_s,
            "events/s",
            out.baseline.events_per_s,
            TARGET,
        ),
        throughput(
            f"{NAME}.floor",
            b,
            out.notices,
            out.floor_notices_per_s,
            "notices/s",
            out.baseline_notices_per_s,
            None,
            "tsuchi's own events mapped (sealed) and stored again in the same transactions, "
            "no tsuchi logic: what storing them costs",
        ),
    ]


def run(ctx: Ctx) -> list[Result]:
    return rows(ctx, measure(ctx, ctx.sizes.e2e[-1]))
