"""Deadlines: card expiry, payment due, mileage expiry, document requests.

A deadline schedules one durable reminder timer per offset (days before, at
the configured local time); a fired reminder requests a notice whose
idempotency key is the timer id, so a double fire cannot send twice.  A
reminder whose day passed before it was registered is not scheduled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from tsuchi.application.context import Context
from tsuchi.application.notices import Notices
from tsuchi.application.templates import Templates
from tsuchi.application.unit_of_work import UnitOfWork
from tsuchi.domain.deadline import Deadline, deadline_id
from tsuchi.errors import UnknownDeadline
from tsuchi.infrastructure.sql import Session
from tsuchi.infrastructure.sql import timers as timers_table
from tsuchi.infrastructure.sql.timers import NewTimer, Timer

REMINDER = "reminder"


@dataclass(frozen=True)
class DeadlineSpec:
    """One deadline to register (:meth:`tsuchi.Engine.register_deadline`)."""

    sender_id: UUID
    account_id: UUID
    kind: str
    reference: str
    due: date
    template: str
    variables: dict[str, str] = field(default_factory=dict)
    offsets_days: tuple[int, ...] = (60, 30, 7)


def _reminder_prefix(did: UUID) -> str:
    return f"reminder:{did.hex}:"


class Deadlines:
    def __init__(
        self, ctx: Context, uow: UnitOfWork, notices: Notices, templates: Templates
    ) -> None:
        self.ctx = ctx
        self.uow = uow
        self.notices = notices
        self.templates = templates

    def _reminder_at(self, due: date, offset: int) -> datetime:
        settings = self.ctx.settings
        hh, mm = (int(x) for x in settings.reminder_time.split(":"))
        local = datetime.combine(
            due - timedelta(days=offset), time(hh, mm), tzinfo=ZoneInfo(settings.reminder_time_zone)
        )
        return local.astimezone(self.ctx.now().tzinfo)

    def register(self, specs: Iterable[DeadlineSpec], chunk: int = 2000) -> int:
        """Register deadlines in bulk (one unit of work per chunk); returns how
        many were new.  Re-registering is a no-op."""
        n = 0
        batch: list[DeadlineSpec] = []
        for spec in specs:
            Deadline.check_spec(spec.kind, spec.reference, list(spec.offsets_days))
            batch.append(spec)
            if len(batch) >= chunk:
                n += self._register_batch(batch)
                batch = []
        if batch:
            n += self._register_batch(batch)
        return n

    def _register_batch(self, batch: list[DeadlineSpec]) -> int:
        return self.uow.run(lambda s: self._register_chunk(s, batch))

    def _register_chunk(self, s: Session, specs: Sequence[DeadlineSpec]) -> int:
        now = self.ctx.now()
        ids = [deadline_id(x.sender_id, x.kind, x.reference) for x in specs]
        existing = self.ctx.store.existing_ids(ids)
        aggregates = []
        items = []
        for did, spec in zip(ids, specs, strict=True):
            if did in existing:
                continue
            d = Deadline(
                sender_id=spec.sender_id,
                kind=spec.kind,
                reference=spec.reference,
                account_id=spec.account_id,
                due=spec.due,
                template=spec.template,
                variables=dict(spec.variables),
                offsets_days=list(spec.offsets_days),
                at=now,
            )
            aggregates.append(d)
            for offset in d.offsets_days:
                at = self._reminder_at(spec.due, offset)
                if at < now - timedelta(days=1):
                    continue  # that reminder's day is already past
                items.append(
                    NewTimer(
                        f"{_reminder_prefix(did)}{offset}",
                        REMINDER,
                        at,
                        {"deadline_id": did.hex, "offset": offset},
                    )
                )
        self.uow.save(*aggregates)
        self.uow.schedule(s, items)
        return len(aggregates)

    def cancel(self, sender_id: UUID, kind: str, reference: str, reason: str) -> int:
        """Cancel a deadline; returns how many pending reminders were cancelled."""

        def run(s: Session) -> int:
            d = self.uow.find(Deadline, deadline_id(sender_id, kind, reference))
            if d is None:
                raise UnknownDeadline("reference")
            d.cancel(reason, self.ctx.now())
            self.uow.save(d)
            self.uow.flush(s)
            return timers_table.cancel(s, timers_table.pending(s, _reminder_prefix(d.id)))

        return self.uow.run(run)

    def fire_reminder(self, s: Session, t: Timer) -> None:
        d = self.uow.find(Deadline, UUID(hex=t.payload["deadline_id"]))
        if d is None or d.cancelled is not None:
            return
        offset = int(t.payload["offset"])
        variables: dict[str, Any] = {**d.variables}
        declared = self.templates.get(d.sender_id, d.template).latest_approved().variables
        if "due" in declared:
            variables["due"] = d.due
        if "days_left" in declared:
            variables["days_left"] = offset
        view = self.notices.request(
            d.sender_id,
            d.account_id,
            d.template,
            variables,
            idempotency_key=t.id,
            correlation_id=f"deadline:{d.id.hex}",
            requested_by="reminder",
        )
        d.record_reminder(offset, view.id, t.late, self.ctx.now())
        self.uow.save(d)
