"""The sweep: one pass of a worker over everything that is due.

Dispatch first (urgent before anything else), then status reports, then due
timers (claimed in small batches, each fired in its own unit of work), with
dispatch again between batches so urgent work never waits behind timers.
A timer is fired by the flow its kind names; a business refusal (closed
account, retired template) ends it, recorded as fired so it does not fire
forever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from tsuchi.application import validation as v
from tsuchi.application.context import Context
from tsuchi.application.dispatch import Dispatch
from tsuchi.application.flows import broadcasts as broadcasts_flow
from tsuchi.application.flows import deadlines as deadlines_flow
from tsuchi.application.flows import fallbacks as fallbacks_flow
from tsuchi.application.flows import fraud as fraud_flow
from tsuchi.application.flows.broadcasts import Broadcasts
from tsuchi.application.flows.deadlines import Deadlines
from tsuchi.application.flows.fallbacks import Fallbacks
from tsuchi.application.flows.fraud import Fraud
from tsuchi.application.inbound import Inbound
from tsuchi.application.unit_of_work import UnitOfWork
from tsuchi.errors import TsuchiError
from tsuchi.infrastructure.sql import Session
from tsuchi.infrastructure.sql import timers as timers_table
from tsuchi.infrastructure.sql.timers import Timer

log = logging.getLogger("tsuchi.flows")

TIMER_BATCH = 50
Handler = Callable[[Session, Timer], None]


@dataclass
class SweepStats:
    timers_fired: int = 0
    late: int = 0
    submitted: int = 0
    reports: int = 0


class Sweep:
    def __init__(
        self,
        ctx: Context,
        uow: UnitOfWork,
        dispatch: Dispatch,
        inbound: Inbound,
        fallbacks: Fallbacks,
        deadlines: Deadlines,
        fraud: Fraud,
        broadcasts: Broadcasts,
    ) -> None:
        self.ctx = ctx
        self.uow = uow
        self.dispatch = dispatch
        self.inbound = inbound
        self.handlers: dict[str, Handler] = {
            deadlines_flow.REMINDER: deadlines.fire_reminder,
            fallbacks_flow.TTL: fallbacks.fire_ttl,
            fallbacks_flow.READ_WINDOW: fallbacks.fire_read_window,
            fraud_flow.ESCALATION: fraud.fire_escalation,
            broadcasts_flow.EXPAND: broadcasts.fire_expand,
        }

    def sweep(self, max_timers: int = 1000, stop: Callable[[], bool] | None = None) -> SweepStats:
        """One pass: urgent and due dispatch first, then status reports, then
        due timers.  ``stop`` is asked between steps; timers claimed but not
        fired when it says so are taken over after their lease."""
        halt = stop or (lambda: False)
        settings = self.ctx.settings
        stats = SweepStats()
        stats.submitted += self.dispatch.dispatch()
        stats.reports += self.inbound.process_reports(halt)
        fired = 0
        while fired < max_timers and not halt():
            now = self.ctx.now()
            limit = min(TIMER_BATCH, max_timers - fired)

            def claim(s: Session, now: datetime = now, limit: int = limit) -> list[Timer]:
                return timers_table.claim_due(
                    s, now, settings.worker_id, limit, settings.timer_lease
                )

            claimed = self.uow.run(claim)
            if not claimed:
                break
            for t in claimed:
                if halt():
                    break
                self.fire(t)
                fired += 1
                stats.late += int(t.late)
            stats.submitted += self.dispatch.dispatch()  # urgent work never waits behind timers
        stats.timers_fired = fired
        if not halt():
            stats.submitted += self.dispatch.dispatch()
        return stats

    def fire(self, t: Timer) -> None:
        """Fire one claimed timer in its own unit of work and mark it fired."""
        handler = self.handlers.get(t.kind)

        def run(s: Session) -> None:
            if handler is not None:
                handler(s, t)
            else:
                log.warning("timer of unknown kind %s skipped", t.kind)
            timers_table.mark_fired(s, t, self.ctx.now())

        try:
            self.uow.run(run)
        except TsuchiError as err:
            # A business refusal (closed account, retired template) ends the timer;
            # it is recorded as fired so it does not fire forever.
            log.warning("timer %s: %s", t.kind, type(err).__name__)
            self.uow.run(lambda s: timers_table.mark_fired(s, t, self.ctx.now()))
        lag = max((self.ctx.now() - v.aware(t.due_at)).total_seconds(), 0.0)
        self.ctx.observer.timer_fired(t.kind, lag)  # its unit has committed
        if t.late:
            log.info("timer %s fired late (due %s)", t.kind, t.due_at.isoformat())
