"""The HTML delivery report as a reader opens it: a real headless Chromium.

The page is rendered from a real event log (SQLite, simulated carriers, three
days), written to a file and opened with ``chromium --dump-dom``, which prints
the DOM after the page has loaded (and after any script would have run).
Every chart must be there and must have drawn data points.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tsuchi import Engine, ManualClock, Settings, SimulatedCarrierNetwork
from tsuchi.infrastructure.delivery_report import DeliveryReport
from tsuchi.reporting import render_html

from ..integration.world import NAMES, build

CHARTS = ("funnel", "channels", "carriers", "latency", "trend")
FRAUD = {"name": "山田太郎", "last4": "1234", "amount": 52000}


class _Charts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, int] = {}
        self.scripts = 0
        self.table_rows = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("data-chart"):
            self.charts[str(a["data-chart"])] = int(a.get("data-points") or 0)
        if tag == "script":
            self.scripts += 1
        if tag == "tr":
            self.table_rows += 1


def parse(html: str) -> _Charts:
    p = _Charts()
    p.feed(html)
    return p


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def report_html(tmp_path: Path) -> str:
    clock = ManualClock(datetime(2026, 4, 1, 1, 0, tzinfo=UTC))  # 10:00 in Tokyo
    network = SimulatedCarrierNetwork(seed=5, clock=clock)
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'tsuchi.db'}",
        keys_dir=tmp_path / "keys",
        create_keys=True,
    )
    with Engine(settings, clock=clock, gateway=network) as engine:
        w = build(engine)
        network.capability["+819011112222"] = True
        network.capability["+818033334444"] = False  # falls back to SMS
        for day in range(3):
            clock.set(datetime(2026, 4, 1 + day, 1, 0, tzinfo=UTC))
            for i, account in enumerate(w.accounts):
                engine.request_notice(
                    w.sender,
                    account,
                    "fraud_alert",
                    FRAUD,
                    idempotency_key=f"fa-{day}-{i}",
                    urgency="urgent",
                )
            engine.request_notice(w.sender, w.accounts[0], "campaign", idempotency_key=f"c{day}")
            for _ in range(30):
                engine.sweep()
                clock.advance(timedelta(minutes=5))
        report = DeliveryReport(engine.store)
        report.catch_up()
        rows = report.rows()
        return render_html(
            rows,
            "ACMEカード 配信レポート",
            clock.now(),
            channel_totals=report.rows(by=("channel",)),
        )


def test_html_is_self_contained_and_every_chart_has_data(tmp_path: Path) -> None:
    html = report_html(tmp_path)
    assert "http://" not in html and "https://" not in html
    assert " src=" not in html and " href=" not in html and "url(" not in html
    assert "default-src 'none'" in html
    page = parse(html)
    assert page.scripts == 0
    assert set(page.charts) == set(CHARTS)
    assert all(page.charts[c] > 0 for c in CHARTS), page.charts
    assert page.charts["trend"] == 3 * 4  # three days, four series
    for name in NAMES:
        assert name not in html


def test_empty_report_draws_empty_charts() -> None:
    page = parse(render_html([], "empty", datetime(2026, 4, 1, tzinfo=UTC)))
    assert page.charts == dict.fromkeys(CHARTS, 0)


def test_chromium_renders_every_chart_with_data(tmp_path: Path) -> None:
    browser = chromium()
    if browser is None:
        pytest.skip("Chromium not installed: apt-get install chromium")
    out = tmp_path / "report.html"
    out.write_text(report_html(tmp_path), encoding="utf-8")
    profile = tmp_path / "profile"
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--dump-dom",
            out.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = parse(proc.stdout)
    assert set(dom.charts) == set(CHARTS), proc.stdout[:2000]
    for chart in CHARTS:
        assert dom.charts[chart] > 0, f"chart {chart} drew no data points"
    assert dom.table_rows > 1
    assert "ACMEカード 配信レポート" in proc.stdout
