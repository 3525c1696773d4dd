"""The delivery report as one self-contained HTML file a non-engineer can read.

Why this module exists: the people who act on delivery figures (operations
managers, the compliance officer, the bank's business owner of a notice) read
a page, not JSON.  :func:`render_html` turns report rows (see
:mod:`tsuchi.projections.delivery_report`) into a single HTML file with
Japanese and English labels: summary figures, a delivery funnel, the split by
channel and by carrier, delivery and read latency per channel, the daily
trend, the reasons notices were held back, and the full table.

The file stands alone: the charts are inline SVG drawn here in Python, the
CSS is inline, there is no script, no font, no image and no URL to fetch, and
a Content-Security-Policy of ``default-src 'none'`` makes any browser refuse
to load anything else.  It can be mailed, archived with an audit file or
opened on a machine with no network.  Each chart is an ``<svg>`` carrying
``data-chart`` (``funnel``, ``channels``, ``carriers``, ``latency``,
``trend``) and ``data-points`` (how many bars or points it drew), so a test
can check that it drew with data.  Rows hold ids, codes, counts and times
only; nothing here adds personal data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from tsuchi.projections.delivery_report import ROW_FIELDS

JST = ZoneInfo("Asia/Tokyo")

CHANNEL_LABELS = {
    "plus_message": "+メッセージ (+Message)",
    "sms": "SMS",
    "-": "未送信 (not routed)",
}
CARRIER_LABELS = {
    "docomo": "NTTドコモ (docomo)",
    "au": "au (KDDI)",
    "softbank": "ソフトバンク (SoftBank)",
    "rakuten": "楽天モバイル (Rakuten)",
    "unknown": "不明 (unknown)",
    "-": "未送信 (not routed)",
}
PURPOSE_LABELS = {
    "security": "セキュリティ (security)",
    "transactional": "取引 (transactional)",
    "marketing": "広告・販促 (marketing)",
}
REASON_LABELS = {
    "marketing_no_consent": "広告の同意なし / no marketing opt-in",
    "marketing_withdrawn": "広告の同意撤回 / marketing opt-in withdrawn",
    "transactional_withdrawn": "取引通知の受信拒否 / transactional notices refused",
    "quiet_hours": "夜間の配信停止時間帯 / quiet hours",
    "frequency_cap_day": "1日の配信上限 / daily frequency cap",
    "frequency_cap_week": "1週間の配信上限 / weekly frequency cap",
    "frequency_cap_day_dropped": "1日の配信上限で破棄 / dropped: daily cap",
    "frequency_cap_week_dropped": "1週間の配信上限で破棄 / dropped: weekly cap",
}

COLUMN_LABELS = {
    "day": "日付 Day",
    "tenant": "組織 Tenant",
    "sender_id": "送信者 Sender",
    "template": "テンプレート Template",
    "purpose": "目的 Purpose",
    "channel": "チャネル Channel",
    "carrier": "キャリア Carrier",
    "requested": "依頼 Requested",
    "blocked": "ブロック Blocked",
    "deferred": "保留 Deferred",
    "submitted": "送信 Submitted",
    "delivered": "配達 Delivered",
    "read": "既読 Read",
    "failed": "失敗 Failed",
    "expired": "期限切れ Expired",
    "cancelled": "取消 Cancelled",
    "fallback": "SMS切替 Fallback",
    "pending": "処理中 Pending",
    "replied": "返信 Replied",
    "blocked_by_reason": "ブロック理由 Block reasons",
    "deferred_by_reason": "保留理由 Deferral reasons",
    "delivery_p50_s": "配達 p50 (秒 s)",
    "delivery_p95_s": "配達 p95 (秒 s)",
    "read_p50_s": "既読 p50 (秒 s)",
    "read_p95_s": "既読 p95 (秒 s)",
    "delivery_samples": "配達計測数 Delivery samples",
    "read_samples": "既読計測数 Read samples",
}

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


def _n(value: Any) -> str:
    return f"{int(value):,}"


def _pct(part: float, whole: float) -> str:
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


def _label(mapping: Mapping[str, str], code: str) -> str:
    return mapping.get(code, code)


def _cell(field: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, dict):
        return "<br>".join(
            f"{escape(_label(REASON_LABELS, str(k)))}: {_n(v)}" for k, v in value.items()
        )
    if isinstance(value, bool):
        return "✓" if value else ""
    if isinstance(value, int):
        return _n(value)
    if isinstance(value, float):
        return f"{value:,.3f}"
    if field == "sender_id" and len(str(value)) > 12:
        return f'<span title="{escape(str(value))}">{escape(str(value)[:8])}…</span>'
    if field == "channel":
        return escape(_label(CHANNEL_LABELS, str(value)))
    if field == "carrier":
        return escape(_label(CARRIER_LABELS, str(value)))
    if field == "purpose":
        return escape(_label(PURPOSE_LABELS, str(value)))
    return escape(str(value))


# -- totals ---------------------------------------------------------------------------------


COUNTS = (
    "requested",
    "blocked",
    "deferred",
    "submitted",
    "delivered",
    "read",
    "failed",
    "expired",
    "cancelled",
    "fallback",
    "pending",
    "replied",
)


def _sum(rows: Sequence[Mapping[str, Any]], field: str) -> int:
    return sum(int(r.get(field) or 0) for r in rows)


def _totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    return {f: _sum(rows, f) for f in COUNTS}


def _by(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(str(r.get(key, "-")), []).append(r)
    return dict(sorted(out.items()))


def _reasons(rows: Sequence[Mapping[str, Any]], field: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        for k, v in (r.get(field) or {}).items():
            out[str(k)] = out.get(str(k), 0) + int(v)
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


# -- SVG primitives ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bar:
    label: str
    segments: tuple[tuple[str, float, str], ...]  # (name, value, colour)
    text: str


def _empty(chart: str, aria: str) -> str:
    return (
        f'<svg class="chart" data-chart="{chart}" data-points="0" viewBox="0 0 900 60" '
        f'role="img" aria-label="{escape(aria)}">'
        '<text x="450" y="34" text-anchor="middle">データなし / no data</text></svg>'
    )


def _bars(chart: str, aria: str, bars: Sequence[_Bar], label_width: int = 240) -> str:
    """Horizontal (optionally stacked) bars, one per item; ``data-points`` = bars."""
    if not bars:
        return _empty(chart, aria)
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
                f"{_n(value) if float(value).is_integer() else value}</title></rect>"
            )
            x += w
        out.append(
            f'<text class="v" x="{x + 6:.1f}" y="{mid:.1f}" '
            f'dominant-baseline="middle">{escape(b.text)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="legend">'
        + "".join(f'<span><i style="background:{c}"></i>{escape(t)}</span>' for t, c in items)
        + "</div>"
    )


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp: float = 10.0 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if value <= m * exp:
            return m * exp
    return 10 * exp


# -- charts -------------------------------------------------------------------------------------


def _funnel(t: Mapping[str, int]) -> str:
    req = t["requested"]
    if not req:
        return _empty("funnel", "配信ファネル / delivery funnel")
    items = [
        ("依頼 Requested", "requested"),
        ("送信 Submitted", "submitted"),
        ("配達 Delivered", "delivered"),
        ("既読 Read", "read"),
        ("ブロック Blocked", "blocked"),
        ("保留あり Deferred", "deferred"),
        ("失敗 Failed", "failed"),
        ("期限切れ Expired", "expired"),
        ("取消 Cancelled", "cancelled"),
        ("SMS切替 Fallback", "fallback"),
        ("処理中 Pending", "pending"),
    ]
    bars = [
        _Bar(label, ((label, t[key], COLORS[key]),), f"{_n(t[key])} ({_pct(t[key], req)})")
        for label, key in items
    ]
    return _bars("funnel", "配信ファネル / delivery funnel", bars)


def _split(chart: str, aria: str, rows: Sequence[Mapping[str, Any]], key: str) -> str:
    labels = CHANNEL_LABELS if key == "channel" else CARRIER_LABELS
    bars = []
    for code, group in _by(rows, key).items():
        t = _totals(group)
        closed = t["blocked"] + t["cancelled"]
        lost = max(t["requested"] - t["delivered"] - t["pending"] - closed, 0)
        bars.append(
            _Bar(
                _label(labels, code),
                (
                    ("配達 delivered", t["delivered"], COLORS["delivered"]),
                    ("処理中 pending", t["pending"], COLORS["pending"]),
                    ("失敗・期限切れ failed/expired", lost, COLORS["failed"]),
                    ("ブロック・取消 blocked/cancelled", closed, COLORS["blocked"]),
                ),
                f"{_n(t['requested'])}件 · 配達 {_pct(t['delivered'], t['requested'])}",
            )
        )
    return _bars(chart, aria, bars)


def _channel_latency(
    rows: Sequence[Mapping[str, Any]], totals: Sequence[Mapping[str, Any]] | None
) -> tuple[dict[str, dict[str, float | None]], bool]:
    """Per channel p50/p95 of delivery and read, and whether they are exact."""
    fields = ("delivery_p50_s", "delivery_p95_s", "read_p50_s", "read_p95_s")
    if totals is not None:
        return (
            {str(r.get("channel", "-")): {f: r.get(f) for f in fields} for r in totals},
            True,
        )
    out: dict[str, dict[str, float | None]] = {}
    exact = True
    for code, group in _by(rows, "channel").items():
        entry: dict[str, float | None] = {}
        for f in fields:
            weight_field = "delivery_samples" if f.startswith("delivery") else "read_samples"
            pairs = [
                (float(r[f]), int(r.get(weight_field) or 1)) for r in group if r.get(f) is not None
            ]
            if len(pairs) > 1:
                exact = False
            weight = sum(w for _v, w in pairs)
            entry[f] = sum(v * w for v, w in pairs) / weight if weight else None
        out[code] = entry
    return out, exact


def _latency(
    rows: Sequence[Mapping[str, Any]], totals: Sequence[Mapping[str, Any]] | None
) -> tuple[str, bool]:
    per_channel, exact = _channel_latency(rows, totals)
    panels = [("配達まで / until delivered", "delivery"), ("既読まで / until read", "read")]
    label_w, bar_w, right, row_h = 240, 430, 150, 24
    blocks: list[tuple[str, list[tuple[str, str, float]]]] = []
    for title, prefix in panels:
        entries: list[tuple[str, str, float]] = []
        for code, values in sorted(per_channel.items()):
            if code == "-":
                continue
            for p in ("p50", "p95"):
                v = values.get(f"{prefix}_{p}_s")
                if v is not None:
                    entries.append((code, p, float(v)))
        blocks.append((title, entries))
    points = sum(len(e) for _t, e in blocks)
    if not points:
        return _empty("latency", "チャネル別の所要時間 / latency per channel"), exact
    height = sum(28 + max(len(e), 1) * row_h for _t, e in blocks) + 8
    width = label_w + bar_w + right
    out = [
        f'<svg class="chart" data-chart="latency" data-points="{points}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        'aria-label="チャネル別の所要時間 / latency per channel">'
    ]
    y = 4.0
    for title, entries in blocks:
        out.append(f'<text class="h" x="4" y="{y + 16:.1f}">{escape(title)}</text>')
        y += 28
        top = max((v for _c, _p, v in entries), default=0) or 1
        if not entries:
            out.append(f'<text x="{label_w}" y="{y + 16:.1f}">計測なし / no samples</text>')
            y += row_h
        for code, p, v in entries:
            w = max(bar_w * v / top, 1.5)
            label = f"{_label(CHANNEL_LABELS, code)} {p}"
            out.append(
                f'<text x="{label_w - 8}" y="{y + row_h / 2:.1f}" text-anchor="end" '
                f'dominant-baseline="middle">{escape(label)}</text>'
                f'<rect x="{label_w}" y="{y + 4:.1f}" width="{w:.1f}" height="{row_h - 8}" '
                f'fill="{COLORS[p]}" rx="2"><title>{escape(label)}: {escape(duration(v))}'
                f"</title></rect>"
                f'<text class="v" x="{label_w + w + 6:.1f}" y="{y + row_h / 2:.1f}" '
                f'dominant-baseline="middle">{escape(duration(v))}</text>'
            )
            y += row_h
    out.append("</svg>")
    return "".join(out), exact


TREND_SERIES = (
    ("依頼 Requested", "requested", COLORS["requested"]),
    ("配達 Delivered", "delivered", COLORS["delivered"]),
    ("既読 Read", "read", COLORS["read"]),
    ("ブロック・失敗 Blocked/failed", "lost", COLORS["failed"]),
)


def _trend(rows: Sequence[Mapping[str, Any]]) -> str:
    days = _by(rows, "day") if rows and "day" in rows[0] else {}
    if not days:
        return _empty("trend", "日別の推移 / daily trend")
    labels = list(days)
    values: dict[str, list[int]] = {key: [] for _l, key, _c in TREND_SERIES}
    for group in days.values():
        t = _totals(group)
        values["requested"].append(t["requested"])
        values["delivered"].append(t["delivered"])
        values["read"].append(t["read"])
        values["lost"].append(t["blocked"] + t["failed"] + t["expired"])
    width, height, left, right, top, bottom = 900, 300, 64, 20, 16, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    y_max = _nice_max(max(max(v) for v in values.values()))
    n = len(labels)

    def x(i: int) -> float:
        return left + (plot_w / 2 if n == 1 else plot_w * i / (n - 1))

    def y(v: float) -> float:
        return top + plot_h * (1 - v / y_max)

    points = 0
    out: list[str] = []
    for k in range(5):
        v = y_max * k / 4
        out.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y(v):.1f}" '
            f'y2="{y(v):.1f}"/><text x="{left - 6}" y="{y(v):.1f}" text-anchor="end" '
            f'dominant-baseline="middle">{_n(round(v))}</text>'
        )
    step = max(1, math.ceil(n / 12))
    for i, day in enumerate(labels):
        if i % step == 0 or i == n - 1:
            out.append(
                f'<text x="{x(i):.1f}" y="{height - bottom + 18}" '
                f'text-anchor="middle">{escape(day[5:] if len(day) == 10 else day)}</text>'
            )
    out.append(
        f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + plot_h}" '
        f'y2="{top + plot_h}"/>'
    )
    for name, key, colour in TREND_SERIES:
        series = values[key]
        coords = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(series))
        if n > 1:
            out.append(
                f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        for i, v in enumerate(series):
            out.append(
                f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3.5" fill="{colour}">'
                f"<title>{escape(labels[i])} {escape(name)}: {_n(v)}</title></circle>"
            )
            points += 1
    return (
        f'<svg class="chart" data-chart="trend" data-points="{points}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="日別の推移 / daily trend">'
        + "".join(out)
        + "</svg>"
    )


# -- page ----------------------------------------------------------------------------------------


def _cards(t: Mapping[str, int], rows: Sequence[Mapping[str, Any]]) -> str:
    plus = [r for r in rows if r.get("channel") == "plus_message"]
    plus_delivered = _sum(plus, "delivered")
    cards = [
        ("依頼 Requested", _n(t["requested"])),
        ("送信 Submitted", _n(t["submitted"])),
        ("配達率 Delivered / submitted", _pct(t["delivered"], t["submitted"])),
        ("既読率 (+メッセージ) Read rate", _pct(_sum(plus, "read"), plus_delivered)),
        ("ブロック Blocked", _n(t["blocked"])),
        ("失敗・期限切れ Failed/expired", _n(t["failed"] + t["expired"])),
        ("SMS切替 Fallback", _n(t["fallback"])),
        ("処理中 Pending", _n(t["pending"])),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{v}</div></div>'
            for k, v in cards
        )
        + "</div>"
    )


def _reason_table(title: str, reasons: Mapping[str, int]) -> str:
    if not reasons:
        return f"<h3>{escape(title)}</h3><p class='note'>なし / none</p>"
    body = "".join(
        f'<tr><td class="t">{escape(_label(REASON_LABELS, k))}</td>'
        f'<td class="t"><code>{escape(k)}</code></td><td>{_n(v)}</td></tr>'
        for k, v in reasons.items()
    )
    return (
        f"<h3>{escape(title)}</h3><table><thead><tr><th class='t'>理由 Reason</th>"
        f"<th class='t'>コード Code</th><th>件数 Count</th></tr></thead><tbody>{body}"
        "</tbody></table>"
    )


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "<p class='note'>データなし / no data</p>"
    fields = [f for f in ROW_FIELDS if f in rows[0]] + [f for f in rows[0] if f not in ROW_FIELDS]
    text_fields = {"day", "tenant", "sender_id", "template", "purpose", "channel", "carrier"}
    head = "".join(
        f'<th class="{"t" if f in text_fields else ""}">{escape(COLUMN_LABELS.get(f, f))}</th>'
        for f in fields
    )
    body = []
    for r in rows:
        cells = []
        for f in fields:
            cls = "t" if f in text_fields else ("r" if f.endswith("_by_reason") else "")
            cells.append(f'<td class="{cls}">{_cell(f, r.get(f))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _when(moment: datetime) -> str:
    m = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return (
        f"{m.astimezone(JST).strftime('%Y-%m-%d %H:%M')} JST "
        f"({m.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')})"
    )


def render_html(
    rows: Sequence[Mapping[str, Any]],
    title: str,
    generated_at: datetime,
    *,
    channel_totals: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """One self-contained HTML page of the report ``rows``.

    ``channel_totals``: optional rows of the same report grouped by channel
    only (``DeliveryReport.rows(..., by=("channel",))``); with them the
    latency chart shows exact per-channel percentiles, without them it
    combines the rows' own percentiles (weighted by samples) and says so.
    """
    t = _totals(rows)
    days = sorted({str(r["day"]) for r in rows if r.get("day")})
    period = f"{days[0]} 〜 {days[-1]}" if days else "–"
    latency_svg, exact = _latency(rows, channel_totals)
    latency_note = (
        "送信から最初の配達報告・既読報告までの時間 (中央値 p50 と 95 パーセンタイル p95)。"
        " Time from submission to the first delivery / read report."
    )
    if not exact:
        latency_note += (
            " 概算: 行ごとの値を計測数で加重平均 / approximate: per-row percentiles "
            "combined, weighted by samples."
        )
    split_legend = _legend(
        [
            ("配達 delivered", COLORS["delivered"]),
            ("処理中 pending", COLORS["pending"]),
            ("失敗・期限切れ failed/expired", COLORS["failed"]),
            ("ブロック・取消 blocked/cancelled", COLORS["blocked"]),
        ]
    )
    sections = [
        (
            "概要 / Summary",
            f"対象期間 (依頼日, 日本時間) / Period (request day, JST): {escape(period)}",
            _cards(t, rows),
        ),
        (
            "配信ファネル / Delivery funnel",
            "依頼から送信・配達・既読まで、および止まった通知 (割合は依頼数に対して)。"
            " From request to read, and notices held back (percent of requested).",
            _funnel(t),
        ),
        (
            "チャネル別 / By channel",
            "+メッセージで届かない場合はSMSに切り替えます。"
            " Channel that delivered the notice (else the last one tried).",
            split_legend + _split("channels", "チャネル別 / by channel", rows, "channel"),
        ),
        (
            "キャリア別 / By carrier",
            "楽天モバイルは常にSMS。 Rakuten Mobile is always SMS.",
            split_legend + _split("carriers", "キャリア別 / by carrier", rows, "carrier"),
        ),
        (
            "所要時間 / Latency per channel",
            latency_note,
            _legend([("p50 (中央値 median)", COLORS["p50"]), ("p95", COLORS["p95"])]) + latency_svg,
        ),
        (
            "日別の推移 / Daily trend",
            "依頼日 (日本時間) ごとの件数。 Counts per request day (JST).",
            _legend([(name, colour) for name, _k, colour in TREND_SERIES]) + _trend(rows),
        ),
        (
            "止まった理由 / Why notices were held back",
            "同意・夜間・配信上限などの規則による。 Consent, quiet hours and frequency caps.",
            _reason_table("ブロック / Blocked", _reasons(rows, "blocked_by_reason"))
            + _reason_table("保留 / Deferred", _reasons(rows, "deferred_by_reason")),
        ),
        (
            "明細 / Detail",
            "日付・送信者・テンプレート・目的・チャネル・キャリアごと。"
            " Per day, sender, template, purpose, channel and carrier.",
            _table(rows),
        ),
    ]
    body = "".join(
        f"<section><h2>{escape(h)}</h2><p class='note'>{escape(note)}</p>{content}</section>"
        for h, note, content in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="ja"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>作成 Generated: {escape(_when(generated_at))}"
        f" · 配信レポート / Delivery report</p></header>"
        f"<main>{body}</main>"
        "<footer>件数は通知ごと (1通知 = 1件)。個人情報は含みません (ID・コード・件数・時刻のみ)。"
        " Counts are per notice; no personal data (ids, codes, counts and times only)."
        "</footer></body></html>\n"
    )
