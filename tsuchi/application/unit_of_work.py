"""The unit of work: every command runs in one, and services are handed it.

:meth:`UnitOfWork.run` runs a function as one transaction (events, data keys,
read models and the host's rows commit together), retrying optimistic
concurrency conflicts and transient database failures when it is the
outermost unit.  Inside it:

- **Identity map.** :meth:`find` loads an aggregate at most once per unit;
  saved aggregates are the current state for the rest of the unit.  On a
  clean exit outside anyone else's transaction, the states it holds are
  committed and are promoted to the process cache (senders, templates and
  accounts are read on every notice).
- **Prefetch.** :meth:`prefetch` loads many aggregates in two queries (a
  version check for cached states, the events of the others).
- **Writes, one rule.** Aggregates other than messages are saved at once
  (:meth:`save`).  Messages, timers and outbox rows are written behind:
  :meth:`save_message`, :meth:`add_message`, :meth:`schedule` and
  :meth:`enqueue` queue them and the outermost unit writes each batch in one
  statement when its function returns (a broadcast chunk touches hundreds).
  Code that reads the outbox or the timers in the same unit calls
  :meth:`flush` first.  :meth:`save_message_now` writes a message at once; it
  is for the two places whose next step needs the write done: the dispatch
  claim (its states are handed to the recording step as committed) and
  erasure (every event of the customer is stored before their keys go).
  Inside a host's own transaction nothing is queued: every write goes
  straight through, since the host decides when it commits.

The scope of one unit lives in a ContextVar, so one engine serves many
threads, each with its own unit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate, CanMutateProtocol, DomainEventProtocol
from eventsourcing.persistence import IntegrityError

from tsuchi.application.context import Context
from tsuchi.domain.account import Account
from tsuchi.domain.consent import consent_id
from tsuchi.domain.message import Message
from tsuchi.domain.values import Purpose
from tsuchi.errors import ConcurrencyConflict, InvalidInput, TransientError
from tsuchi.infrastructure.aggregate_cache import AggregateCache
from tsuchi.infrastructure.recorder import CoreApplicationRecorder
from tsuchi.infrastructure.sql import Session
from tsuchi.infrastructure.sql import message_view as message_view_table
from tsuchi.infrastructure.sql import outbox as outbox_table
from tsuchi.infrastructure.sql import timers as timers_table
from tsuchi.infrastructure.store import TRANSIENT_DB_ERRORS, AggregateStore
from tsuchi.projections.message_view import message_row

log = logging.getLogger("tsuchi")

T = TypeVar("T")
_MISSING = object()
_ACCOUNT_ERASED: type = Account.Erased  # type: ignore[attr-defined]
ATTEMPTS = 4


@dataclass
class _Pending:
    """What the outermost unit writes in batches when its function returns."""

    messages: dict[UUID, Message] = field(default_factory=dict)
    new: set[UUID] = field(default_factory=set)
    timers: list[timers_table.NewTimer] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    urgent: bool = False  # an urgent notice became due: wake the urgent dispatcher


@dataclass
class _Scope:
    identity: dict[UUID, object] = field(default_factory=dict)
    # Message bodies already found valid (template, version, texts): a
    # broadcast renders the same bodies for every recipient.
    checked: set[tuple[UUID, int, str, str]] = field(default_factory=set)
    pending: _Pending | None = None  # None inside a host's transaction
    cacheable: bool = True  # states are committed on a clean exit
    committed: list[Callable[[], None]] = field(default_factory=list)  # after_commit


_SCOPE: ContextVar[_Scope | None] = ContextVar("tsuchi_unit_of_work", default=None)


def _notify(calls: list[Callable[[], None]]) -> None:
    for fn in calls:
        try:
            fn()
        except Exception as e:  # an observer never fails a command that committed
            log.warning("after-commit observer failed: %s", type(e).__name__)


class UnitOfWork:
    def __init__(self, ctx: Context, cache: AggregateCache) -> None:
        self.ctx = ctx
        self.store: AggregateStore = ctx.store
        self.cache = cache
        self.urgent_committed = threading.Event()
        self._erasures_seen = 0
        self.store.saved_hook = self._remember

    # -- running ---------------------------------------------------------------------
    def run(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` as one unit of work (all or nothing).  When this is the
        outermost unit, optimistic-concurrency conflicts and transient database
        failures (dropped connection, restart, lock timeout, busy SQLite) are
        retried with a short backoff; what still fails raises a typed,
        retryable :class:`~tsuchi.errors.TransientError`."""
        in_transaction = self.store.in_outer_transaction()
        attempts = 1 if in_transaction else ATTEMPTS
        for attempt in range(attempts):
            last = attempt == attempts - 1
            outer = _SCOPE.get()
            scope = outer or _Scope(
                pending=None if in_transaction else _Pending(), cacheable=not in_transaction
            )
            token = _SCOPE.set(scope) if outer is None else None
            erasures = self._erasures_seen
            try:
                with self.store.session(commit=True) as s:
                    result = fn(s)
                    if token is not None and scope.pending is not None:
                        self._write_pending(s, scope.pending)
                if token is not None:
                    self._promote(scope, erasures)
                    if scope.pending is not None and scope.pending.urgent:
                        self.urgent_committed.set()  # committed: wake the dispatcher
                    _notify(scope.committed)
                return result
            except IntegrityError:
                if last:
                    raise ConcurrencyConflict(
                        "another writer changed the same record; retry"
                    ) from None
            except TRANSIENT_DB_ERRORS as e:
                if last:
                    raise TransientError(
                        f"database unavailable or busy ({type(e).__name__}); retry"
                    ) from None
                log.warning("transient database error (%s); retrying", type(e).__name__)
                time.sleep(0.2 * 2**attempt)
            finally:
                if token is not None:
                    _SCOPE.reset(token)
        raise AssertionError("unreachable")

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once the outermost unit has committed (at once outside
        a unit); a retried unit forgets the calls of its failed attempt, and a
        unit that fails makes none.  Inside a host's transaction they are made
        when tsuchi's part is done, since the host commits later.  For metrics:
        ``fn`` must not fail (what it raises is logged and dropped)."""
        scope = _SCOPE.get()
        if scope is None:
            _notify([fn])
        else:
            scope.committed.append(fn)

    def read(self) -> Any:
        """A read-only session (joined if a unit is open): ``with uow.read() as s``."""
        return self.store.session(commit=False)

    def _write_pending(self, s: Session, p: _Pending) -> None:
        self.flush(s)
        if p.messages:  # one save, one view batch
            msgs = list(p.messages.values())
            self.store.save(*msgs)
            now = self.ctx.now()
            message_view_table.write_batch(
                s,
                [(m.id.hex, message_row(m, now)) for m in msgs if m.id in p.new],
                [(m.id.hex, message_row(m, now)) for m in msgs if m.id not in p.new],
            )

    def _promote(self, scope: _Scope, erasures: int) -> None:
        if scope.cacheable and erasures == self._erasures_seen:
            for agg in scope.identity.values():
                if isinstance(agg, Aggregate) and not agg.pending_events:
                    self.cache.put(agg.id, int(agg.version), agg)

    # -- reading -----------------------------------------------------------------------
    def find(self, cls: type[T], aggregate_id: UUID) -> T | None:
        """An aggregate of ``cls`` or None, loaded at most once per unit."""
        if not isinstance(aggregate_id, UUID):
            raise InvalidInput(f"{cls.__name__.lower()}_id", "must be a UUID")
        scope = _SCOPE.get()
        if scope is not None and aggregate_id in scope.identity:
            hit = scope.identity[aggregate_id]
            return hit if isinstance(hit, cls) else None
        agg = self._load(aggregate_id)
        if scope is not None:
            scope.identity[aggregate_id] = agg if agg is not None else _MISSING
        return agg if isinstance(agg, cls) else None

    def get(self, cls: type[T], aggregate_id: UUID, missing: Callable[[str], Exception]) -> T:
        """Like :meth:`find`; raises ``missing(id)`` when there is none."""
        agg = self.find(cls, aggregate_id)
        if agg is None:
            raise missing(str(aggregate_id))
        return agg

    def exists(self, aggregate_id: UUID) -> bool:
        return aggregate_id in self.store.repository

    def _load(self, aggregate_id: UUID) -> object | None:
        """From the committed-state cache brought up to date with the events
        stored since (one query), or rebuilt from the event store."""
        hit = self.cache.get(aggregate_id)
        if hit is not None:
            return self._bring_up_to_date(
                hit[1], self.store.events.get(aggregate_id, gt=hit[0]), cached=True
            )
        try:
            return self.store.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def prefetch(
        self, aggregate_ids: Sequence[UUID], known: Mapping[UUID, object] | None = None
    ) -> None:
        """Load many aggregates into the current identity map: one version
        query for those cached (or in ``known``: committed states this thread
        holds from its previous unit of work, used as they are if unchanged),
        one query for the events of the others."""
        known = known or {}
        scope = _SCOPE.get()
        if scope is None:
            return
        uow = scope.identity
        wanted = [a for a in dict.fromkeys(aggregate_ids) if a not in uow]
        if not wanted:
            return
        recorder = self.store.recorder
        assert isinstance(recorder, CoreApplicationRecorder)
        # Cached states need only a version check; the events are read for
        # the others and for those that changed since they were cached.
        hits: dict[UUID, int] = {}
        for aid in wanted:
            held = known.get(aid)
            v = int(held.version) if isinstance(held, Aggregate) else self.cache.peek_version(aid)
            if v is not None:
                hits[aid] = v
        versions = recorder.latest_versions(wanted) if hits else None
        to_read: list[UUID] = []
        for aid in wanted:
            if versions is not None and aid not in versions:
                uow[aid] = _MISSING
            elif versions is not None and versions[aid] == hits.get(aid):
                if aid in known:
                    uow[aid] = known[aid]
                    continue
                cached = self.cache.get(aid)
                if cached is not None and cached[0] == versions[aid]:
                    uow[aid] = cached[1]
                else:  # evicted or replaced meanwhile
                    to_read.append(aid)
            else:
                to_read.append(aid)
        if not to_read:
            return
        stored = recorder.select_events_of(to_read)
        mapper = self.store.mapper
        for aid in to_read:
            rows = stored.get(aid)
            if not rows:
                uow[aid] = _MISSING
                continue
            state = self.cache.get(aid)
            after = state[0] if state is not None else 0
            agg = self._bring_up_to_date(
                state[1] if state is not None else None,
                (mapper.to_domain_event(se) for se in rows if se.originator_version > after),
                cached=state is not None,
            )
            uow[aid] = agg if agg is not None else _MISSING

    def prefetch_messages(
        self, mids: list[UUID], known: Mapping[UUID, object] | None = None
    ) -> None:
        """Messages, then their accounts and the consents their purposes
        need, into the identity map: two queries."""
        self.prefetch(mids, known)
        scope = _SCOPE.get()
        if scope is None:
            return
        msgs = [m for mid in mids if isinstance(m := scope.identity.get(mid), Message)]
        self.prefetch(
            [m.account_id for m in msgs]
            + [
                consent_id(m.account_id, m.sender_id, m.purpose)
                for m in msgs
                if m.purpose is not Purpose.SECURITY
            ],
            known,
        )

    def committed_states(self) -> dict[UUID, object]:
        """The aggregates of the current unit with nothing left to save."""
        scope = _SCOPE.get()
        if scope is None:
            return {}
        return {
            k: v
            for k, v in scope.identity.items()
            if isinstance(v, Aggregate) and not v.pending_events
        }

    def body_checked(self, key: tuple[UUID, int, str, str]) -> bool:
        """Whether this unit already found these rendered bodies valid."""
        scope = _SCOPE.get()
        return scope is not None and key in scope.checked

    def mark_body_checked(self, key: tuple[UUID, int, str, str]) -> None:
        scope = _SCOPE.get()
        if scope is not None:
            scope.checked.add(key)

    def _bring_up_to_date(
        self, agg: object | None, events: Iterable[DomainEventProtocol[UUID]], cached: bool
    ) -> object | None:
        """Apply ``events`` to ``agg`` (None: rebuild from the first).  When a
        cached state meets an erasure another process made, no decrypted state
        or key of that customer may stay here (see :meth:`forget_subject`)."""
        for e in events:
            agg = cast("CanMutateProtocol[Any]", e).mutate(agg)
            if cached and isinstance(e, _ACCOUNT_ERASED):
                self.forget_subject(e.originator_id)
        return agg

    def forget_subject(self, subject: UUID) -> None:
        """Drop a customer's data keys and every cached state (erasures are
        rare); units of work open now do not cache what they hold."""
        self.store.keys.forget(subject)
        self.cache.clear()
        self._erasures_seen += 1

    def _remember(self, objs: tuple[Any, ...]) -> None:
        """Saved aggregates are the current state for the rest of the unit."""
        scope = _SCOPE.get()
        if scope is None:
            return
        for obj in objs:
            if isinstance(obj, Aggregate):
                scope.identity[obj.id] = obj

    # -- writing -------------------------------------------------------------------------
    def save(self, *aggregates: Any) -> None:
        """Store the new events of aggregates now (within the unit's transaction)."""
        self.store.save(*aggregates)

    def save_message_now(self, s: Session, m: Message) -> None:
        """Store a changed message's events and its view row now."""
        self.store.save(m)
        message_view_table.upsert(s, m.id.hex, message_row(m, self.ctx.now()))

    def save_message(self, s: Session, m: Message) -> None:
        """Save a changed message and its view row at the end of the outermost
        unit (once, whatever the number of changes)."""
        p = self._pending()
        if p is None:
            self.save_message_now(s, m)
        else:
            p.messages[m.id] = m

    def add_message(self, s: Session, m: Message) -> None:
        """Like :meth:`save_message`, for a message just created."""
        p = self._pending()
        if p is None:
            self.store.save(m)
            message_view_table.upsert(s, m.id.hex, message_row(m, self.ctx.now()), new=True)
            return
        p.messages[m.id] = m
        p.new.add(m.id)
        scope = _SCOPE.get()
        if scope is not None:
            scope.identity[m.id] = m

    def schedule(self, s: Session, items: Iterable[timers_table.NewTimer]) -> None:
        """Schedule durable timers (existing ids are left as they are)."""
        p = self._pending()
        if p is None:
            timers_table.schedule(s, items)
        else:
            p.timers.extend(items)

    def enqueue(self, s: Session, row: dict[str, Any]) -> None:
        """Queue an outbox row (see :func:`tsuchi.infrastructure.sql.outbox.row`)."""
        p = self._pending()
        if p is None:
            outbox_table.insert(s, [row])
            return
        p.outbox.append(row)
        p.urgent = p.urgent or (
            row["priority"] == outbox_table.URGENT and row["due_at"] <= self.ctx.now()
        )

    def flush(self, s: Session) -> None:
        """Write the queued outbox rows and timers now: before anything in the
        unit reads or changes those tables."""
        p = self._pending()
        if p is None:
            return
        if p.outbox:
            rows, p.outbox = p.outbox, []
            outbox_table.insert(s, rows)
        if p.timers:
            items, p.timers = p.timers, []
            timers_table.schedule(s, items)

    def _pending(self) -> _Pending | None:
        scope = _SCOPE.get()
        return None if scope is None else scope.pending
