"""The page every HTML report is drawn on: shell, CSS, colours and formatting.

Why this module exists: a report page must stand alone (inline CSS, no
script, no font, no image, no URL, and a Content-Security-Policy of
``default-src 'none'`` so a browser loads nothing else) and must print
numbers, percentages, durations and times the same way in every chart and
table.  This module holds that shared part: :func:`page` wraps the sections
in the document, :func:`section` draws one, and :func:`number`,
:func:`percent`, :func:`duration` and :func:`when` format values.  Every text
that comes from data goes through :func:`html.escape` on its way in.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

JST = ZoneInfo("Asia/Tokyo")

COLORS = {
    "requested": "#4263eb",
    "submitted": "#1098ad",
    "delivered": "#2f9e44",
    "read": "#087f5b",
    "blocked": "#e8590c",
    "deferred": "#f59f00",
    "failed": "#e03131",
    "expired": "#c2255c",
    "cancelled": "#868e96",
    "fallback": "#7048e8",
    "pending": "#adb5bd",
    "p50": "#4dabf7",
    "p95": "#1864ab",
}

CSS = """
:root { color-scheme: light; }
body { font-family: "Hiragino Sans", "Noto Sans CJK JP", "Yu Gothic", Meiryo, sans-serif;
  margin: 0; background: #f8f9fa; color: #212529; line-height: 1.5; }
header { background: #1c3d5a; color: #fff; padding: 20px 32px; }
header h1 { margin: 0 0 4px; font-size: 1.6rem; }
header p { margin: 0; opacity: .85; }
main { padding: 16px 32px 40px; max-width: 1200px; }
section { background: #fff; border: 1px solid #dee2e6; border-radius: 8px;
  padding: 16px 20px; margin: 16px 0; }
h2 { font-size: 1.15rem; margin: 0 0 4px; }
p.note { color: #495057; font-size: .85rem; margin: 4px 0 8px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid #dee2e6; border-radius: 8px; padding: 12px 14px; }
.card .k { font-size: .8rem; color: #495057; }
.card .v { font-size: 1.6rem; font-weight: 600; }
svg.chart { width: 100%; height: auto; display: block; }
svg text { font-size: 12px; fill: #343a40; }
svg text.v { fill: #212529; font-weight: 600; }
svg text.h { font-weight: 600; font-size: 13px; }
svg .grid { stroke: #e9ecef; }
svg .axis { stroke: #adb5bd; }
.legend span { display: inline-block; margin-right: 14px; font-size: .85rem; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
  margin-right: 4px; vertical-align: -1px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: .8rem; width: 100%; }
th, td { border: 1px solid #dee2e6; padding: 4px 6px; text-align: right; white-space: nowrap; }
th { background: #f1f3f5; position: sticky; top: 0; }
td.t, th.t { text-align: left; }
td.r { white-space: normal; text-align: left; min-width: 160px; }
footer { color: #6c757d; font-size: .8rem; padding: 0 32px 24px; }
@media print { section { break-inside: avoid; } header { background: #fff; color: #000; } }
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


# -- formatting ------------------------------------------------------------------------------


def number(value: Any) -> str:
    """A count with thousands separators: ``12,345``."""
    return f"{int(value):,}"


def percent(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole`` (one decimal), ``–`` if ``whole`` is 0."""
    return "–" if not whole else f"{100 * part / whole:.1f}%"


def duration(seconds: float | None) -> str:
    """A latency as people read it: ``2.7 s``, ``8 min 46 s``, ``1 h 05 min``."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    if whole < 86_400:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
    return f"{whole // 86_400} d {whole % 86_400 // 3600:02d} h"


def when(moment: datetime) -> str:
    """A moment in Japan time and in UTC (a naive moment is taken as UTC)."""
    m = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return (
        f"{m.astimezone(JST).strftime('%Y-%m-%d %H:%M')} JST "
        f"({m.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')})"
    )


# -- page ------------------------------------------------------------------------------------


def legend(items: Sequence[tuple[str, str]]) -> str:
    """A colour key: one swatch per ``(text, colour)``."""
    return (
        '<div class="legend">'
        + "".join(f'<span><i style="background:{c}"></i>{escape(t)}</span>' for t, c in items)
        + "</div>"
    )


def section(heading: str, note: str, content: str) -> str:
    """One panel of a page: a heading, a note saying what it shows, then ``content`` (HTML)."""
    return (
        f"<section><h2>{escape(heading)}</h2><p class='note'>{escape(note)}</p>{content}</section>"
    )


def page(title: str, generated_at: datetime, kind: str, body: str, footer: str) -> str:
    """The whole document: ``body`` (HTML sections) under a header naming the
    ``title``, when the page was generated and the ``kind`` of report, and a
    ``footer`` note (plain text)."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="ja"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>作成 Generated: {escape(when(generated_at))}"
        f" · {escape(kind)}</p></header>"
        f"<main>{body}</main>"
        f"<footer>{escape(footer)}</footer></body></html>\n"
    )
