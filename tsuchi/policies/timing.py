"""When a notice may go out: quiet hours and marketing frequency caps.

* Quiet hours are a sending window in the recipient's time zone (default
  08:00 to 21:00); a non-urgent, non-security notice outside it is deferred to
  the window's next opening.  Urgent and security notices go at once.
* Marketing frequency caps count a sender's marketing notices to one account
  in rolling windows (e.g. 1 a day, 3 a week); over the cap a notice is
  deferred until the window allows it, or dropped, per the sender's policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from tsuchi.domain.values import Purpose, Urgency

DEFAULT_WINDOW = ("08:00", "21:00")


def _hm(value: str) -> time:
    h, m = value.split(":")
    return time(int(h), int(m))


def next_window_opening(
    now: datetime, tz: str, window: tuple[str, str] = DEFAULT_WINDOW
) -> datetime | None:
    """None when ``now`` is inside the window; otherwise the (UTC) time it next opens."""
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    start, end = _hm(window[0]), _hm(window[1])
    t = local.time()
    inside = start <= t < end if start < end else (t >= start or t < end)
    if inside:
        return None
    opening = datetime.combine(local.date(), start, tzinfo=zone)
    if opening <= local:
        opening = datetime.combine(local.date() + timedelta(days=1), start, tzinfo=zone)
    return opening.astimezone(now.tzinfo)


def quiet_hours_apply(purpose: Purpose, urgency: Urgency) -> bool:
    return purpose is not Purpose.SECURITY and urgency is not Urgency.URGENT


@dataclass(frozen=True)
class CapDecision:
    allowed: bool
    until: datetime | None = None  # when a deferred notice fits under the cap
    reason: str = ""


def frequency_cap(
    now: datetime, sent_at: list[datetime], per_day: int, per_week: int
) -> CapDecision:
    """Decide against the times earlier marketing notices were sent (routed)."""
    windows = ((timedelta(days=1), per_day, "day"), (timedelta(days=7), per_week, "week"))
    until: datetime | None = None
    reason = ""
    for span, cap, name in windows:
        recent = sorted(t for t in sent_at if now - span < t <= now)
        if len(recent) >= cap:
            frees = recent[len(recent) - cap] + span
            if until is None or frees > until:
                until, reason = frees, f"frequency_cap_{name}"
    if until is None:
        return CapDecision(True)
    return CapDecision(False, until, reason)
