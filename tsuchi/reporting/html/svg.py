"""The chart shapes of the HTML reports, drawn as inline SVG in Python.

Why this module exists: a report page may load nothing (no script, no chart
library), so its charts are ``<svg>`` elements written here.  Every chart
carries ``data-chart`` (its name) and ``data-points`` (how many bars or points
it drew, 0 for the "no data" placeholder) so a test can check that it drew
with data.  This module has the shapes any report can use: horizontal
(stacked) bars, the empty chart, and a round axis maximum; what the bars mean
is up to the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from tsuchi.reporting.html.layout import number


@dataclass(frozen=True)
class Bar:
    """One bar: its label, its segments ``(name, value, colour)`` and the text after it."""

    label: str
    segments: tuple[tuple[str, float, str], ...]  # (name, value, colour)
    text: str


def empty_chart(chart: str, aria: str) -> str:
    """The placeholder of a chart with nothing to draw (``data-points="0"``)."""
    return (
        f'<svg class="chart" data-chart="{chart}" data-points="0" viewBox="0 0 900 60" '
        f'role="img" aria-label="{escape(aria)}">'
        '<text x="450" y="34" text-anchor="middle">データなし / no data</text></svg>'
    )


def bar_chart(chart: str, aria: str, bars: Sequence[Bar], label_width: int = 240) -> str:
    """Horizontal (optionally stacked) bars, one per item; ``data-points`` = bars."""
    if not bars:
        return empty_chart(chart, aria)
    row_h, bar_w, right = 32, 480, 180
    width = label_width + bar_w + right
    height = row_h * len(bars) + 8
    top = max((sum(v for _n, v, _c in b.segments) for b in bars), default=0) or 1
    out = [
        f'<svg class="chart" data-chart="{chart}" data-points="{len(bars)}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(aria)}">'
    ]
    for i, b in enumerate(bars):
        y = 4 + i * row_h
        mid = y + row_h / 2
        out.append(
            f'<text x="{label_width - 8}" y="{mid:.1f}" text-anchor="end" '
            f'dominant-baseline="middle">{escape(b.label)}</text>'
        )
        x = float(label_width)
        for name, value, colour in b.segments:
            if value <= 0:
                continue
            w = max(bar_w * value / top, 1.5)
            out.append(
                f'<rect x="{x:.1f}" y="{y + 5}" width="{w:.1f}" height="{row_h - 10}" '
                f'fill="{colour}" rx="2"><title>{escape(b.label)} — {escape(name)}: '
                f"{number(value) if float(value).is_integer() else value}</title></rect>"
            )
            x += w
        out.append(
            f'<text class="v" x="{x + 6:.1f}" y="{mid:.1f}" '
            f'dominant-baseline="middle">{escape(b.text)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def nice_max(value: float) -> float:
    """The round number (1, 2, 2.5 or 5 times a power of ten) at or above ``value``."""
    if value <= 0:
        return 1.0
    exp: float = 10.0 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if value <= m * exp:
            return m * exp
    return 10 * exp
