"""Figure ``growth``: does cost grow linearly with size?

Reports the value per size for ``e2e`` (notices/s at three sizes, each on a
fresh database) and for the audit export (export and verify records/s and
peak RSS at the three stages of one growing log, see
:mod:`benchmarks.audit_export`).  Sizes: e2e 10k/100k/1M and export
10k/100k/1M in full mode; quick mode uses the smaller sizes in
:data:`benchmarks.common.QUICK`.  Measurements are shared with the ``e2e`` and
``audit_export`` figures of the same run.

Ratios compare each size with the smallest one: for rates ``value /
value(smallest)`` (1.0 = linear cost; target ``>= 0.8``), for memory
``value(smallest) / value`` (1.0 = flat; target ``>= 0.8`` besides the 300 MB
limit).
"""

from __future__ import annotations

from benchmarks import audit_export, e2e
from benchmarks.common import Ctx, Result

NAME = "growth"
MIN_RATIO = 0.8


def _rate_row(name: str, backend: str, n: int, value: float, unit: str, base: float) -> Result:
    ratio = value / base if base else None
    return Result(
        name,
        backend,
        n,
        value,
        unit,
        base,
        ratio,
        f"ratio >= {MIN_RATIO:g}",
        None if ratio is None else ratio >= MIN_RATIO,
    )


def _memory_row(name: str, backend: str, n: int, value: float, base: float) -> Result:
    ratio = base / value if value else None
    ok = ratio is not None and ratio >= MIN_RATIO and value < audit_export.RSS_LIMIT_MB
    target = f"ratio >= {MIN_RATIO:g}, < {audit_export.RSS_LIMIT_MB:g} MB"
    return Result(name, backend, n, value, "MB", base, ratio, target, ok)


def run(ctx: Ctx) -> list[Result]:
    b = ctx.backend.name
    rows: list[Result] = []
    outs = [e2e.measure(ctx, n) for n in ctx.sizes.e2e]
    for o in outs:
        rows.append(
            _rate_row(
                f"{NAME}.e2e", b, o.notices, o.notices_per_s, "notices/s", outs[0].notices_per_s
            )
        )
    sts = audit_export.stages(ctx)
    first = sts[0]
    for st in sts:
        rows.append(
            _rate_row(
                f"{NAME}.export", b, st.events, st.export.rate, "records/s", first.export.rate
            )
        )
    for st in sts:
        rows.append(
            _rate_row(
                f"{NAME}.verify", b, st.events, st.verify.rate, "records/s", first.verify.rate
            )
        )
    for st in sts:
        rows.append(
            _memory_row(
                f"{NAME}.export.peak_rss", b, st.events, st.export.peak_mb, first.export.peak_mb
            )
        )
    for st in sts:
        rows.append(
            _memory_row(
                f"{NAME}.verify.peak_rss", b, st.events, st.verify.peak_mb, first.verify.peak_mb
            )
        )
    return rows
