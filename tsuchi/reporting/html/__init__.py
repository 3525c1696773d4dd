"""The delivery report as one self-contained HTML file a non-engineer can read.

Why this package exists: the people who act on delivery figures (operations
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

The package is cut by what changes together: :mod:`.delivery` builds the
delivery report page, :mod:`.svg` draws the chart shapes, :mod:`.layout` is
the page shell, CSS and formatting every page shares, and :mod:`.labels`
names the codes in both languages.  This module re-exports their public
names so ``tsuchi.reporting.html`` stays the one import path.
"""

from __future__ import annotations

from tsuchi.reporting.html.delivery import COUNTS, TREND_SERIES, render_html
from tsuchi.reporting.html.labels import (
    CARRIER_LABELS,
    CHANNEL_LABELS,
    COLUMN_LABELS,
    PURPOSE_LABELS,
    REASON_LABELS,
)
from tsuchi.reporting.html.layout import COLORS, CSP, CSS, JST, duration

__all__ = [
    "CARRIER_LABELS",
    "CHANNEL_LABELS",
    "COLORS",
    "COLUMN_LABELS",
    "COUNTS",
    "CSP",
    "CSS",
    "JST",
    "PURPOSE_LABELS",
    "REASON_LABELS",
    "TREND_SERIES",
    "duration",
    "render_html",
]
