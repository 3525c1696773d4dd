"""Figure ``broadcast``: enqueueing a large broadcast, and time to first submit.

Set-up (not timed): a fresh database and N synthetic accounts saved in bulk
(:func:`benchmarks.common.bulk_register_accounts`).  Timed: ``start_broadcast``
of the ``safety_check`` template to all N accounts, then ``sweep(max_timers=1)``
in a loop (each sweep expands one chunk of recipients into messages and
dispatches what is due, as the worker would) until every recipient has a
message.  Rate: messages created per second.  ``broadcast.first_submit`` is
the time from calling ``start_broadcast`` until the gateway received the first
submission.

In quick mode the loop is time-boxed; the rate is then over the messages
created within the box (``n`` says how many; the note says so).

Baseline: the raw application storing the same events (the probe's record of
this run: messages, their routing and the submissions made meanwhile) with the
same grouping into transactions, expressed per created message.  Target
``ratio >= 0.5``.
"""

from __future__ import annotations

import time

from sqlalchemy import func, select

from benchmarks.baseline import replay
from benchmarks.common import Ctx, Result, TxProbe, build_rig, throughput
from tsuchi import Engine
from tsuchi.infrastructure.tables import broadcast_recipients

NAME = "broadcast"
TARGET = 0.5


def _created(engine: Engine, bid_hex: str) -> int:
    with engine.store.session(commit=False) as s:
        return int(
            s.execute(
                select(func.count())
                .select_from(broadcast_recipients)
                .where(
                    broadcast_recipients.c.broadcast_id == bid_hex,
                    broadcast_recipients.c.message_id.is_not(None),
                )
            ).scalar_one()
        )


def run(ctx: Ctx) -> list[Result]:
    n = ctx.sizes.broadcast
    box = ctx.sizes.broadcast_timebox_s
    rig = build_rig(ctx, n, bulk_accounts=True)
    engine, gateway = rig.engine, rig.gateway
    probe = TxProbe(engine)
    try:
        with probe.recording() as pattern:
            t0 = time.perf_counter()
            bid = engine.start_broadcast(
                rig.sender, "bench-broadcast", "safety_check", rig.accounts
            )
            started = time.perf_counter() - t0
            created = 0
            while True:
                engine.sweep(max_timers=1)
                created = _created(engine, bid.hex)
                if created >= n or time.perf_counter() - t0 > box:
                    break
            seconds = time.perf_counter() - t0
        first = (gateway.first_submit - t0) if gateway.first_submit is not None else float("nan")
        submitted = gateway.submits
    finally:
        probe.close()
        rig.close()
    ctx.log(
        f"  broadcast: {created}/{n} created in {seconds:.1f} s (start_broadcast "
        f"{started:.2f} s, {submitted} submitted); {pattern.summary()}"
    )
    base = replay(ctx.backend, pattern)
    ctx.log(f"  baseline: {base.events_per_s:.0f} events/s")
    partial = created < n
    note = (
        f"{n:,} recipients; start_broadcast {started:.2f} s; {submitted} submitted meanwhile; "
        f"{pattern.events} events in {len(pattern.transactions)} txs"
    )
    if partial:
        note = f"time-boxed at {box:g} s: {created:,} of {n:,} created; " + note
    b = ctx.backend.name
    return [
        throughput(
            f"{NAME}.messages",
            b,
            created,
            created / seconds,
            "messages/s",
            created / base.seconds,
            TARGET,
            note,
        ),
        Result(f"{NAME}.first_submit", b, n, first, "s"),
    ]
