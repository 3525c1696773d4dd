"""Figure ``projection``: audit chain catch-up against the raw notification-log read.

Uses the log of :mod:`benchmarks.audit_export` (same run, shared cache): at
its largest stage, ``engine.audit.catch_up()`` chains the events added since
the previous stage (default batches of 1,000: read notifications, derive each
record's facts, hash, insert chain rows, move the position).  The baseline is
the raw read of the same notification-id range with the recorder's
``select_notifications`` in pages of 1,000, on the same database.  ``ratio =
catch-up rate / raw read rate`` (no target was set; it shows how much of the
catch-up is reading).
"""

from __future__ import annotations

from benchmarks.audit_export import stages
from benchmarks.common import Ctx, Result, throughput

NAME = "projection"


def run(ctx: Ctx) -> list[Result]:
    st = stages(ctx)[-1]
    n = st.catch_up_events
    return [
        throughput(
            f"{NAME}.catch_up",
            ctx.backend.name,
            n,
            n / st.catch_up_seconds,
            "records/s",
            n / st.raw_read_seconds,
            note=f"events {st.events - n:,}..{st.events:,} of the audit_export log",
        )
    ]
