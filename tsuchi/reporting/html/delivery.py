"""The delivery report page: what happened to the notices, for people who act on it.

Why this module exists: operations managers, the compliance officer and the
bank's business owner of a notice read the delivery figures as a page.
:func:`render_html` turns delivery report rows (see
:mod:`tsuchi.projections.delivery_report`) into one with summary figures, a
delivery funnel, the split by channel and by carrier, delivery and read
latency per channel, the daily trend, the reasons notices were held back and
the full table.  The charts are named ``funnel``, ``channels``, ``carriers``,
``latency`` and ``trend``.  Rows hold ids, codes, counts and times only;
nothing here adds personal data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any

from tsuchi.projections.delivery_report import ROW_FIELDS
from tsuchi.reporting.html.labels import (
    CARRIER_LABELS,
    CHANNEL_LABELS,
    COLUMN_LABELS,
    PURPOSE_LABELS,
    REASON_LABELS,
    label,
)
from tsuchi.reporting.html.layout import COLORS, duration, legend, number, page, percent, section
from tsuchi.reporting.html.svg import Bar, bar_chart, empty_chart, nice_max

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


# -- charts -------------------------------------------------------------------------------------


def _funnel(t: Mapping[str, int]) -> str:
    req = t["requested"]
    if not req:
        return empty_chart("funnel", "配信ファネル / delivery funnel")
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
        Bar(name, ((name, t[key], COLORS[key]),), f"{number(t[key])} ({percent(t[key], req)})")
        for name, key in items
    ]
    return bar_chart("funnel", "配信ファネル / delivery funnel", bars)


def _split(chart: str, aria: str, rows: Sequence[Mapping[str, Any]], key: str) -> str:
    labels = CHANNEL_LABELS if key == "channel" else CARRIER_LABELS
    bars = []
    for code, group in _by(rows, key).items():
        t = _totals(group)
        closed = t["blocked"] + t["cancelled"]
        lost = max(t["requested"] - t["delivered"] - t["pending"] - closed, 0)
        bars.append(
            Bar(
                label(labels, code),
                (
                    ("配達 delivered", t["delivered"], COLORS["delivered"]),
                    ("処理中 pending", t["pending"], COLORS["pending"]),
                    ("失敗・期限切れ failed/expired", lost, COLORS["failed"]),
                    ("ブロック・取消 blocked/cancelled", closed, COLORS["blocked"]),
                ),
                f"{number(t['requested'])}件 · 配達 {percent(t['delivered'], t['requested'])}",
            )
        )
    return bar_chart(chart, aria, bars)


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
        return empty_chart("latency", "チャネル別の所要時間 / latency per channel"), exact
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
            name = f"{label(CHANNEL_LABELS, code)} {p}"
            out.append(
                f'<text x="{label_w - 8}" y="{y + row_h / 2:.1f}" text-anchor="end" '
                f'dominant-baseline="middle">{escape(name)}</text>'
                f'<rect x="{label_w}" y="{y + 4:.1f}" width="{w:.1f}" height="{row_h - 8}" '
                f'fill="{COLORS[p]}" rx="2"><title>{escape(name)}: {escape(duration(v))}'
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
        return empty_chart("trend", "日別の推移 / daily trend")
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
    y_max = nice_max(max(max(v) for v in values.values()))
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
            f'dominant-baseline="middle">{number(round(v))}</text>'
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
                f"<title>{escape(labels[i])} {escape(name)}: {number(v)}</title></circle>"
            )
            points += 1
    return (
        f'<svg class="chart" data-chart="trend" data-points="{points}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="日別の推移 / daily trend">'
        + "".join(out)
        + "</svg>"
    )


# -- figures and tables ------------------------------------------------------------------------


def _cards(t: Mapping[str, int], rows: Sequence[Mapping[str, Any]]) -> str:
    plus = [r for r in rows if r.get("channel") == "plus_message"]
    plus_delivered = _sum(plus, "delivered")
    cards = [
        ("依頼 Requested", number(t["requested"])),
        ("送信 Submitted", number(t["submitted"])),
        ("配達率 Delivered / submitted", percent(t["delivered"], t["submitted"])),
        ("既読率 (+メッセージ) Read rate", percent(_sum(plus, "read"), plus_delivered)),
        ("ブロック Blocked", number(t["blocked"])),
        ("失敗・期限切れ Failed/expired", number(t["failed"] + t["expired"])),
        ("SMS切替 Fallback", number(t["fallback"])),
        ("処理中 Pending", number(t["pending"])),
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
        f'<tr><td class="t">{escape(label(REASON_LABELS, k))}</td>'
        f'<td class="t"><code>{escape(k)}</code></td><td>{number(v)}</td></tr>'
        for k, v in reasons.items()
    )
    return (
        f"<h3>{escape(title)}</h3><table><thead><tr><th class='t'>理由 Reason</th>"
        f"<th class='t'>コード Code</th><th>件数 Count</th></tr></thead><tbody>{body}"
        "</tbody></table>"
    )


def _cell(field: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, dict):
        return "<br>".join(
            f"{escape(label(REASON_LABELS, str(k)))}: {number(v)}" for k, v in value.items()
        )
    if isinstance(value, bool):
        return "✓" if value else ""
    if isinstance(value, int):
        return number(value)
    if isinstance(value, float):
        return f"{value:,.3f}"
    if field == "sender_id" and len(str(value)) > 12:
        return f'<span title="{escape(str(value))}">{escape(str(value)[:8])}…</span>'
    if field == "channel":
        return escape(label(CHANNEL_LABELS, str(value)))
    if field == "carrier":
        return escape(label(CARRIER_LABELS, str(value)))
    if field == "purpose":
        return escape(label(PURPOSE_LABELS, str(value)))
    return escape(str(value))


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


# -- page ----------------------------------------------------------------------------------------


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
    split_legend = legend(
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
            legend([("p50 (中央値 median)", COLORS["p50"]), ("p95", COLORS["p95"])]) + latency_svg,
        ),
        (
            "日別の推移 / Daily trend",
            "依頼日 (日本時間) ごとの件数。 Counts per request day (JST).",
            legend([(name, colour) for name, _k, colour in TREND_SERIES]) + _trend(rows),
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
    return page(
        title,
        generated_at,
        "配信レポート / Delivery report",
        "".join(section(h, note, content) for h, note, content in sections),
        "件数は通知ごと (1通知 = 1件)。個人情報は含みません (ID・コード・件数・時刻のみ)。"
        " Counts are per notice; no personal data (ids, codes, counts and times only).",
    )
