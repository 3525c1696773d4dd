"""Output formats of the delivery report: HTML, CSV, JSON and a plain text table.

Why this package exists: report rows (see
:mod:`tsuchi.projections.delivery_report`) are data; people and other systems
need them as a page (:func:`render_html`), a spreadsheet (:func:`render_csv`),
a feed (:func:`render_json`) or a terminal table (:func:`render_table`).
These are pure functions of the rows: no database, no clock.  The CLI wires
them to ``tsuchi report deliveries --format``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tsuchi.projections.delivery_report import ROW_FIELDS
from tsuchi.reporting.html import render_html


def _fields(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    if not rows:
        return list(ROW_FIELDS)
    first = rows[0]
    return [f for f in ROW_FIELDS if f in first] + [f for f in first if f not in ROW_FIELDS]


def _flat(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ";".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV with a header line; reason breakdowns as ``reason=count;...``,
    missing latencies empty."""
    buf = io.StringIO()
    fields = _fields(rows)
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(fields)
    for r in rows:
        writer.writerow([_flat(r.get(f)) for f in fields])
    return buf.getvalue()


def render_json(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a JSON array (UTF-8 text, stable key order)."""
    return json.dumps([dict(r) for r in rows], ensure_ascii=False, indent=2) + "\n"


TABLE_FIELDS = (
    "day",
    "template",
    "purpose",
    "channel",
    "carrier",
    "requested",
    "blocked",
    "deferred",
    "submitted",
    "delivered",
    "read",
    "failed",
    "expired",
    "fallback",
    "delivery_p50_s",
    "delivery_p95_s",
)


def render_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width text table of the main columns (for a terminal)."""
    present = set(rows[0]) if rows else set(TABLE_FIELDS)
    fields = [f for f in TABLE_FIELDS if f in present]
    cells = [
        [
            ("" if r.get(f) is None else f"{r[f]:.1f}" if isinstance(r[f], float) else str(r[f]))
            for f in fields
        ]
        for r in rows
    ]
    widths = [max([len(f), *(len(c[i]) for c in cells)]) for i, f in enumerate(fields)]
    lines = ["  ".join(f.ljust(w) for f, w in zip(fields, widths, strict=True)).rstrip()]
    for c in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"


__all__ = ["render_csv", "render_html", "render_json", "render_table"]
