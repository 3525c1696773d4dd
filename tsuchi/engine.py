"""The embedding API: :class:`Engine`, the one facade a host application uses.

It is the single wiring point: settings, clock, gateway, key ring and the
event store meet here, and nowhere else.  Every command runs as one unit of
work (events, data keys and read models commit together); inside
:meth:`Engine.transaction` the host's own rows join that unit too.
Infrastructure errors are translated into :mod:`tsuchi.errors` here.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate, CanMutateProtocol, DomainEventProtocol
from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError
from eventsourcing_sqlalchemy.datastore import transactions
from sqlalchemy import (
    CursorResult,
    Select,
    bindparam,
    case,
    create_engine,
    delete,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy import Engine as SAEngine
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, scoped_session

from tsuchi.domain.account import Account
from tsuchi.domain.channels import (
    check_plus_message_body,
    check_sms_body,
)
from tsuchi.domain.consent import Consent, ConsentChange, consent_id
from tsuchi.domain.message import Message, TimelineEntry, message_id
from tsuchi.domain.mobile import normalise_mobile
from tsuchi.domain.pci import check_no_card_number
from tsuchi.domain.personal import ERASED, Personal
from tsuchi.domain.sender import Sender, sender_id
from tsuchi.domain.template import Template, VariableType, render, template_id
from tsuchi.domain.values import (
    Capability,
    Carrier,
    Channel,
    MessageStatus,
    Purpose,
    Urgency,
    parse_carrier,
)
from tsuchi.errors import (
    ConcurrencyConflict,
    IdempotencyConflict,
    InvalidInput,
    KeyMaterialError,
    RuleViolation,
    TransientError,
    UnknownAccount,
    UnknownMessage,
    UnknownSender,
    UnknownTemplate,
)
from tsuchi.flows import DeadlineSpec, Flows, SweepStats
from tsuchi.infrastructure import timers as timers_table
from tsuchi.infrastructure.aggregate_cache import AggregateCache
from tsuchi.infrastructure.audit import AuditTrail
from tsuchi.infrastructure.clock import SystemClock
from tsuchi.infrastructure.crypto import (
    KeyRing,
    blind_index,
    init_keys,
    load_keys,
    promote_staged_kek,
    staged_kek,
)
from tsuchi.infrastructure.delivery_report import DeliveryReport
from tsuchi.infrastructure.recorder import CoreApplicationRecorder
from tsuchi.infrastructure.simulator import SimulatedCarrierNetwork
from tsuchi.infrastructure.store import EventStore
from tsuchi.infrastructure.tables import (
    consent_view,
    lookup,
    message_view,
    meta,
    orphan_reports,
    outbox,
)
from tsuchi.infrastructure.webhooks import read_status_webhook
from tsuchi.policies.marketing_law import check_advertising_duties
from tsuchi.policies.purpose import decide_purpose
from tsuchi.policies.routing import choose_route
from tsuchi.policies.timing import frequency_cap, next_window_opening, quiet_hours_apply
from tsuchi.ports import Clock, Gateway, KeyEncryptionKey, StatusReport, Submission
from tsuchi.projections.message_view import message_row
from tsuchi.serve import WebhookResult
from tsuchi.settings import Settings, normalise_database_url

log = logging.getLogger("tsuchi")

_UOW: ContextVar[dict[UUID, object] | None] = ContextVar("tsuchi_unit_of_work", default=None)


@dataclass
class _Dirty:
    """What the outermost unit of work writes in batches when it ends: the
    messages it created or changed (one event insert, one view batch), the
    timers it scheduled and the outbox rows it queued (flushed earlier if
    something in the unit reads the outbox)."""

    messages: dict[UUID, Message] = field(default_factory=dict)
    new: set[UUID] = field(default_factory=set)
    timers: list[tuple[str, str, datetime, dict[str, Any]]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    urgent: bool = False  # an urgent notice became due: wake the urgent dispatcher


_DIRTY: ContextVar[_Dirty | None] = ContextVar("tsuchi_dirty", default=None)
_MISSING = object()
_ACCOUNT_ERASED: type = Account.Erased  # type: ignore[attr-defined]
# Message bodies a unit of work already found valid (template, version, texts):
# a broadcast renders the same bodies for every recipient.
_CHECKED: ContextVar[set[tuple[UUID, int, str, str]] | None] = ContextVar(
    "tsuchi_checked_bodies", default=None
)

TRANSIENT_DB_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,  # eventsourcing's
    InterfaceError,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
)
T = TypeVar("T")

TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SMS_SENDER_RE = re.compile(r"^(?:[A-Za-z0-9 ]{1,11}|\d{1,15})$")
LANG_RE = re.compile(r"^[a-z]{2}(?:-[A-Z]{2})?$")
PRIORITY = {Urgency.URGENT: 0, Urgency.NORMAL: 1}


def _text(value: Any, field_name: str, max_len: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise InvalidInput(
            field_name, f"must be a non-empty string of at most {max_len} characters"
        )
    return value


CODE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


_VIEW_UPDATE = (
    update(message_view)
    .where(message_view.c.message_id == bindparam("mid"))
    .values({c.name: bindparam(c.name) for c in message_view.c if c.name != "message_id"})
)
# Statements of the hot paths, built once (building and caching a statement per
# call costs more than SQLite executing it).
_VIEW_INSERT = insert(message_view)
_OUTBOX_INSERT = insert(outbox)
_OUTBOX_ROW = (outbox.c.message_id == bindparam("mid"), outbox.c.attempt == bindparam("att"))
_OUTBOX_DELETE = delete(outbox).where(*_OUTBOX_ROW)
_OUTBOX_DELETE_ALL = delete(outbox).where(outbox.c.message_id == bindparam("mid"))
_OUTBOX_CLAIM = (
    update(outbox)
    .where(*_OUTBOX_ROW)
    .values(claimed_by=bindparam("by"), claimed_at=bindparam("at"))
)
_OUTBOX_SUBMITTING = update(outbox).where(*_OUTBOX_ROW).values(submitting_at=bindparam("at"))


def _claim_query(max_priority: int | None, postgres: bool) -> Select[Any]:
    q = (
        select(outbox.c.message_id, outbox.c.attempt, outbox.c.submitting_at, outbox.c.priority)
        .where(
            (outbox.c.claimed_by.is_(None)) | (outbox.c.claimed_at < bindparam("stale_before")),
            outbox.c.due_at <= bindparam("now"),
        )
        .order_by(outbox.c.priority, outbox.c.due_at)
        .limit(bindparam("lim"))
    )
    if max_priority is not None:
        q = q.where(outbox.c.priority <= max_priority)
    if postgres:
        q = q.with_for_update(skip_locked=True)
    return q


_CLAIM_QUERIES = {(p, pg): _claim_query(p, pg) for p in (None, 0) for pg in (False, True)}
_URGENT_DUE = _claim_query(0, False).with_only_columns(outbox.c.message_id).limit(1)


def _code(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not CODE_RE.match(value):
        raise InvalidInput(field_name, "a code of 1 to 64 letters, digits or _.:- (no free text)")
    return value


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _AccountSpec:
    tenant: str
    customer_ref: str = field(repr=False)
    e164: str = field(repr=False)
    name: str = field(repr=False)
    carrier: Carrier = Carrier.UNKNOWN
    capability: Capability = Capability.UNKNOWN
    time_zone: str = "Asia/Tokyo"
    language: str = "ja"


# -- views returned to the host ----------------------------------------------------


@dataclass(frozen=True)
class SenderView:
    id: UUID
    tenant: str
    display_name: str
    industry: str
    sms_sender_id: str
    contact: str
    vetting: dict[str, str]
    verified: bool
    suspended: bool
    closed: bool


@dataclass(frozen=True)
class AccountView:
    id: UUID
    tenant: str
    customer_ref: str = field(repr=False)
    mobile: str = field(repr=False)
    name: str = field(repr=False)
    carrier: Carrier = Carrier.UNKNOWN
    capability: Capability = Capability.UNKNOWN
    time_zone: str = "Asia/Tokyo"
    language: str = "ja"
    closed: bool = False
    erased: bool = False


@dataclass(frozen=True)
class MessageView:
    id: UUID
    sender_id: UUID
    account_id: UUID
    template: str
    template_version: int
    purpose: Purpose
    urgency: Urgency
    status: MessageStatus
    channel: Channel | None
    attempts: int
    block_reason: str | None
    authorisation: dict[str, Any]
    correlation_id: str
    requested_at: datetime
    timeline: tuple[TimelineEntry, ...]


@dataclass(frozen=True)
class ConsentView:
    id: UUID
    account_id: UUID
    sender_id: UUID
    purpose: Purpose
    granted: bool
    version: int
    history: tuple[ConsentChange, ...]


def _message_view(m: Message) -> MessageView:
    return MessageView(
        id=m.id,
        sender_id=m.sender_id,
        account_id=m.account_id,
        template=m.template_name,
        template_version=m.template_version,
        purpose=m.purpose,
        urgency=m.urgency,
        status=m.status,
        channel=m.current.channel if m.current else None,
        attempts=len(m.attempts),
        block_reason=m.block_reason,
        authorisation=dict(m.authorisation),
        correlation_id=m.correlation_id,
        requested_at=m.requested_at,
        timeline=tuple(m.timeline),
    )


class Engine:
    """tsuchi, embedded.

    ``Engine(Settings(database_url=...))`` opens (and on first use creates)
    the database the URL names.  A host may instead pass its own SQLAlchemy
    ``sqlalchemy_engine``, or a ``scoped_session`` whose transactions it
    commits itself.  ``clock`` and ``gateway`` default to the system clock and
    a seeded :class:`SimulatedCarrierNetwork`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        gateway: Gateway | None = None,
        keyring: KeyRing | None = None,
        sqlalchemy_engine: SAEngine | None = None,
        session: scoped_session[Session] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.clock: Clock = clock or SystemClock()
        self.gateway: Gateway = gateway or self._default_gateway()
        url = None
        if sqlalchemy_engine is None and session is None:
            url = normalise_database_url(self.settings.database_url)
        bind = session.get_bind() if session is not None else None
        probe = sqlalchemy_engine or (bind if isinstance(bind, SAEngine) else None)
        fresh = keyring is None and not self._keys_present()
        self.keyring = keyring or self._load_keyring(url, probe)
        try:
            self.store = EventStore(
                keyring=self.keyring,
                url=url,
                host_engine=sqlalchemy_engine,
                host_session=session,
                lock_timeout_ms=self.settings.db_lock_timeout_ms,
                sqlite_synchronous=self.settings.sqlite_synchronous,
                cache_ttl=self.settings.cache_ttl.total_seconds(),
            )
        except OperationalError as e:
            raise TransientError(f"database unavailable: {type(e).__name__}") from None
        self._owns_engine = url is not None
        self._erasures_seen = 0
        self._urgent_committed = threading.Event()
        self._cache = AggregateCache(
            self.settings.aggregate_cache_size, self.settings.cache_ttl.total_seconds()
        )
        self.store.saved_hook = self._remember
        self.store.check_schema_and_keys(self.keyring.kek.key_id, allow_new=fresh)
        self.flows = Flows(self)
        self._audit: AuditTrail | None = None
        self._delivery_report: DeliveryReport | None = None
        log.info("engine opened (%s)", self.store.engine.dialect.name)

    def _default_gateway(self) -> Gateway:
        if self.settings.gateway == "cm":
            from tsuchi.infrastructure.cm_gateway import DEFAULT_URL, CMGateway

            if not self.settings.cm_product_token:
                raise KeyMaterialError("gateway cm needs TSUCHI_CM_PRODUCT_TOKEN")
            return CMGateway(
                self.settings.cm_product_token, url=self.settings.cm_url or DEFAULT_URL
            )
        return SimulatedCarrierNetwork(seed=self.settings.simulator_seed, clock=self.clock)

    # -- keys -------------------------------------------------------------------------
    def _kek_override(self) -> bytes | None:
        if self.settings.kek is None:
            return None
        try:
            return base64.b64decode(self.settings.kek, validate=True)
        except (binascii.Error, ValueError):
            raise KeyMaterialError("TSUCHI_KEK must be base64 of 32 bytes") from None

    def _keys_present(self) -> bool:
        return (self.settings.resolved_keys_dir() / "kek.key").exists()

    def _load_keyring(self, url: str | None, probe: SAEngine | None) -> KeyRing:
        directory = self.settings.resolved_keys_dir()
        if not (directory / "kek.key").exists():
            if _database_has_kek(url, probe):
                raise KeyMaterialError(
                    f"no key files in {directory}, but this database holds encrypted personal "
                    "data; restore the keys (or set TSUCHI_KEYS_DIR). A new key is never "
                    "created for an existing database."
                )
            if not self.settings.create_keys:
                raise KeyMaterialError(
                    f"no key files in {directory}; create them with `tsuchi keys init "
                    f"--keys {directory}`"
                )
            init_keys(directory, only_missing=True)
            log.info("created new key files in %s", directory)
        staged = staged_kek(directory)
        if staged is not None and _database_kek_id(url, probe) == staged.key_id:
            promote_staged_kek(directory)  # finish a rotation interrupted after its commit
            log.warning("completed an interrupted KEK rotation in %s", directory)
        return load_keys(directory, self._kek_override())

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the event store; dispose the connection pool only if tsuchi
        created it (never the host's own engine or session)."""
        self.store.close()
        if self._owns_engine:
            self.store.engine.dispose()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drop_caches(self) -> None:
        """Forget cached data keys and aggregate states: the next reads decrypt
        and rebuild from the database (after restoring a backup, or to check
        stored events as they are now)."""
        self.store.keys.clear_cache()
        self._cache.clear()

    def now(self) -> datetime:
        return _aware(self.clock.now())

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A unit of work the host can join: rows it adds to the yielded session
        commit or roll back together with every notice requested inside."""
        with self.store.session(commit=True) as s:
            yield s

    def _unit(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` as one unit of work (all or nothing).  When this is the
        outermost unit, optimistic-concurrency conflicts and transient database
        failures (dropped connection, restart, lock timeout, busy SQLite) are
        retried with a short backoff; what still fails raises a typed,
        retryable :class:`~tsuchi.errors.TransientError`."""
        nested = transactions.get(None) is not None or self.store.datastore.scoped_session
        attempts = 1 if nested else 4
        for attempt in range(attempts):
            last = attempt == attempts - 1
            dirty = _Dirty()
            token = _DIRTY.set(dirty) if not nested else None
            try:
                with self._identity_map(), self.store.session(commit=True) as s:
                    result = fn(s)
                    if token is not None:  # the outermost unit writes what was queued
                        self._flush_outbox(s)
                        if dirty.timers:
                            timers_table.schedule(s, dirty.timers)
                        if dirty.messages:  # one save, one view batch
                            self.store.save(*dirty.messages.values())
                            self._project_many(s, list(dirty.messages.values()), dirty.new)
                if dirty.urgent and token is not None:  # committed: wake the dispatcher
                    self._urgent_committed.set()
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
                    _DIRTY.reset(token)
        raise AssertionError("unreachable")

    def _find(self, cls: type[T], aggregate_id: UUID) -> T | None:
        """Load an aggregate, at most once per unit of work (identity map).
        Senders and templates, read on every notice and rarely changed, also
        come from a process cache checked against their stored version."""
        uow = _UOW.get()
        if uow is not None and aggregate_id in uow:
            hit = uow[aggregate_id]
            return hit if isinstance(hit, cls) else None
        agg = self._load(aggregate_id)
        if uow is not None:
            uow[aggregate_id] = agg if agg is not None else _MISSING
        return agg if isinstance(agg, cls) else None

    def _load(self, aggregate_id: UUID) -> object | None:
        """From the committed-state cache brought up to date with the events
        stored since (one query), or rebuilt from the event store."""
        hit = self._cache.get(aggregate_id)
        if hit is not None:
            return self._bring_up_to_date(
                hit[1], self.store.events.get(aggregate_id, gt=hit[0]), cached=True
            )
        try:
            return self.store.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def _prefetch(
        self, aggregate_ids: Sequence[UUID], known: Mapping[UUID, object] | None = None
    ) -> None:
        """Load many aggregates into the current identity map: one version
        query for those cached (or in ``known``: committed states this thread
        holds from its previous unit of work, used as they are if unchanged),
        one query for the events of the others."""
        known = known or {}
        uow = _UOW.get()
        if uow is None:
            return
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
            v = int(held.version) if isinstance(held, Aggregate) else self._cache.peek_version(aid)
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
                cached = self._cache.get(aid)
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
            state = self._cache.get(aid)
            after = state[0] if state is not None else 0
            agg = self._bring_up_to_date(
                state[1] if state is not None else None,
                (mapper.to_domain_event(se) for se in rows if se.originator_version > after),
                cached=state is not None,
            )
            uow[aid] = agg if agg is not None else _MISSING

    def _bring_up_to_date(
        self, agg: object | None, events: Iterable[DomainEventProtocol[UUID]], cached: bool
    ) -> object | None:
        """Apply ``events`` to ``agg`` (None: rebuild from the first).  When a
        cached state meets an erasure another process made, no decrypted state
        or key of that customer may stay here (see :meth:`_forget_subject`)."""
        for e in events:
            agg = cast("CanMutateProtocol[Any]", e).mutate(agg)
            if cached and isinstance(e, _ACCOUNT_ERASED):
                self._forget_subject(e.originator_id)
        return agg

    def _forget_subject(self, subject: UUID) -> None:
        """Drop a customer's data keys and every cached state (erasures are
        rare); units of work open now do not cache what they hold."""
        self.store.keys.forget(subject)
        self._cache.clear()
        self._erasures_seen += 1

    def _remember(self, objs: tuple[Any, ...]) -> None:
        """Saved aggregates are the current state for the rest of the unit."""
        uow = _UOW.get()
        if uow is None:
            return
        for obj in objs:
            if isinstance(obj, Aggregate):
                uow[obj.id] = obj

    @contextmanager
    def _identity_map(self) -> Iterator[dict[UUID, object]]:
        """Scope of one identity map.  On a clean exit that did not run inside
        someone else's open transaction (a host's session or
        :meth:`transaction`), the aggregates it holds are committed state and
        are promoted to the process cache."""
        current = _UOW.get()
        if current is not None:
            yield current
            return
        outer_transaction = (
            transactions.get(None) is not None or self.store.datastore.scoped_session is not None
        )
        uow: dict[UUID, object] = {}
        erasures = self._erasures_seen
        token = _UOW.set(uow)
        checked = _CHECKED.set(set())
        try:
            yield uow
        finally:
            _UOW.reset(token)
            _CHECKED.reset(checked)
        if not outer_transaction and erasures == self._erasures_seen:
            for agg in uow.values():
                if isinstance(agg, Aggregate) and not agg.pending_events:
                    self._cache.put(agg.id, int(agg.version), agg)

    def _get(self, cls: type[T], aggregate_id: UUID, missing: Callable[[str], Exception]) -> T:
        agg = self._find(cls, aggregate_id)
        if agg is None:
            raise missing(str(aggregate_id))
        return agg

    def _sender(self, sender_id: UUID) -> Sender:
        return self._get(Sender, sender_id, UnknownSender)

    def _account(self, account_id: UUID) -> Account:
        return self._get(Account, account_id, UnknownAccount)

    # -- senders -------------------------------------------------------------------------
    def register_sender(
        self, tenant: str, display_name: str, industry: str, sms_sender_id: str, contact: str
    ) -> UUID:
        if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
            raise InvalidInput("tenant", "1 to 64 letters, digits, '_', '.', '-'")
        _text(display_name, "display_name", 100)
        _text(industry, "industry", 64)
        _text(contact, "contact", 200)
        if not isinstance(sms_sender_id, str) or not SMS_SENDER_RE.match(sms_sender_id):
            raise InvalidInput("sms_sender_id", "1 to 11 letters/digits, or up to 15 digits")

        def run(s: Session) -> UUID:
            sid = sender_id(tenant, sms_sender_id)
            if sid in self.store.repository:
                return sid  # idempotent: the same official account
            sender = Sender(
                tenant=tenant,
                display_name=display_name,
                industry=industry,
                sms_sender_id=sms_sender_id,
                contact=contact,
                at=self.now(),
            )
            self.store.save(sender)
            return sid

        return self._unit(run)

    def _sender_command(self, sender_id: UUID, fn: Callable[[Sender], None]) -> None:
        def run(s: Session) -> None:
            sender = self._sender(sender_id)
            fn(sender)
            self.store.save(sender)

        self._unit(run)

    def submit_vetting(self, sender_id: UUID, carrier: str) -> None:
        c = parse_carrier(carrier)
        self._sender_command(sender_id, lambda x: x.submit_vetting(c, self.now()))

    def decide_vetting(self, sender_id: UUID, carrier: str, approved: bool, note: str = "") -> None:
        c = parse_carrier(carrier)
        self._sender_command(sender_id, lambda x: x.decide_vetting(c, approved, self.now(), note))

    def suspend_sender(self, sender_id: UUID, reason: str) -> None:
        _code(reason, "reason")
        self._sender_command(sender_id, lambda x: x.suspend(reason, self.now()))

    def reinstate_sender(self, sender_id: UUID) -> None:
        self._sender_command(sender_id, lambda x: x.reinstate(self.now()))

    def close_sender(self, sender_id: UUID) -> None:
        self._sender_command(sender_id, lambda x: x.close(self.now()))

    def set_quiet_hours(self, sender_id: UUID, purpose: str, start: str, end: str) -> None:
        """Recipient-local sending window for this sender's notices of ``purpose``
        (non-urgent ones; security and urgent notices are never held)."""
        p = _purpose(purpose)
        self._sender_command(
            sender_id, lambda x: x.set_quiet_hours(p.value, start, end, self.now())
        )

    def set_frequency_cap(
        self, sender_id: UUID, per_day: int, per_week: int, over_cap: str = "defer"
    ) -> None:
        """Marketing notices per account: at most ``per_day`` in 24 h and
        ``per_week`` in 7 days; over the cap ``defer`` or ``drop``."""
        self._sender_command(
            sender_id, lambda x: x.set_frequency_cap(per_day, per_week, over_cap, self.now())
        )

    def sender(self, sender_id: UUID) -> SenderView:
        with self.store.session(commit=False):
            x = self._sender(sender_id)
        return SenderView(
            id=x.id,
            tenant=x.tenant,
            display_name=x.display_name,
            industry=x.industry,
            sms_sender_id=x.sms_sender_id,
            contact=x.contact,
            vetting={k: v.value for k, v in x.vetting.items()},
            verified=x.verified,
            suspended=x.suspended,
            closed=x.closed,
        )

    # -- accounts ------------------------------------------------------------------------
    def _digest(self, kind: str, value: str) -> str:
        return blind_index(self.keyring.index_key, kind, value)

    def register_account(
        self,
        tenant: str,
        customer_ref: str,
        mobile: str,
        name: str,
        carrier: str = "unknown",
        capability: str = "unknown",
        time_zone: str = "Asia/Tokyo",
        language: str = "ja",
    ) -> UUID:
        """Register a customer; idempotent on (tenant, customer_ref)."""
        spec = self._account_spec(
            tenant, customer_ref, mobile, name, carrier, capability, time_zone, language
        )
        return self._unit(lambda s: self._register_accounts(s, [spec])[0])

    def register_accounts(
        self, customers: Iterable[dict[str, str]], chunk: int = 500
    ) -> list[UUID]:
        """Bulk registration (one unit of work per ``chunk``); each dict has the
        keyword arguments of :meth:`register_account`.  Every entry is validated
        before its chunk is written."""
        ids: list[UUID] = []
        batch: list[_AccountSpec] = []
        for i, c in enumerate(customers):
            try:
                batch.append(self._account_spec(**c))
            except InvalidInput as e:
                raise type(e)(f"customers[{i}].{e.field}", e.rule) from None
            except TypeError:
                raise InvalidInput(f"customers[{i}]", "unknown or missing fields") from None
            if len(batch) >= chunk:
                ids += self._register_batch(batch)
                batch = []
        if batch:
            ids += self._register_batch(batch)
        return ids

    def _register_batch(self, batch: list[_AccountSpec]) -> list[UUID]:
        def run(s: Session) -> list[UUID]:
            return self._register_accounts(s, batch)

        return self._unit(run)

    def _account_spec(
        self,
        tenant: str,
        customer_ref: str,
        mobile: str,
        name: str,
        carrier: str = "unknown",
        capability: str = "unknown",
        time_zone: str = "Asia/Tokyo",
        language: str = "ja",
    ) -> _AccountSpec:
        if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
            raise InvalidInput("tenant", "1 to 64 letters, digits, '_', '.', '-'")
        _text(customer_ref, "customer_ref", 64)
        _text(name, "name", 100)
        e164 = normalise_mobile(mobile)
        c = parse_carrier(carrier)
        try:
            cap = Capability(capability)
        except ValueError:
            raise InvalidInput("capability", "must be yes, no or unknown") from None
        try:
            ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise InvalidInput("time_zone", "must be an IANA time zone name") from None
        if not isinstance(language, str) or not LANG_RE.match(language):
            raise InvalidInput("language", "must be a language code such as ja or en")
        return _AccountSpec(tenant, customer_ref, e164, name, c, cap, time_zone, language)

    def _register_accounts(self, s: Session, specs: Sequence[_AccountSpec]) -> list[UUID]:
        now = self.now()
        ids: list[UUID] = []
        accounts: list[Account] = []
        rows: list[dict[str, str]] = []
        seen: dict[tuple[str, str], UUID] = {}
        for x in specs:
            ref_digest = self._digest("customer_ref", x.customer_ref)
            existing = seen.get((x.tenant, ref_digest))
            if existing is None:
                row = s.execute(
                    select(lookup.c.account_id).where(
                        lookup.c.kind == "customer_ref",
                        lookup.c.tenant == x.tenant,
                        lookup.c.digest == ref_digest,
                    )
                ).first()
                existing = UUID(hex=row[0]) if row is not None else None
            if existing is not None:
                ids.append(existing)
                continue
            account_id = uuid4()
            self.store.keys.create(account_id, now)
            accounts.append(
                Account(
                    id=account_id,
                    tenant=x.tenant,
                    customer_ref=Personal(account_id, x.customer_ref),
                    mobile=Personal(account_id, x.e164),
                    name=Personal(account_id, x.name),
                    carrier=x.carrier,
                    capability=x.capability,
                    time_zone=x.time_zone,
                    language=x.language,
                    at=now,
                )
            )
            seen[(x.tenant, ref_digest)] = account_id
            rows += [
                {
                    "kind": "customer_ref",
                    "tenant": x.tenant,
                    "digest": ref_digest,
                    "account_id": account_id.hex,
                },
                {
                    "kind": "mobile",
                    "tenant": x.tenant,
                    "digest": self._digest("mobile", x.e164),
                    "account_id": account_id.hex,
                },
            ]
            ids.append(account_id)
        if accounts:
            self.store.save(*accounts)
            s.execute(insert(lookup), rows)
        return ids

    def find_accounts(
        self,
        tenant: str | None = None,
        *,
        mobile: str | None = None,
        customer_ref: str | None = None,
    ) -> list[UUID]:
        """Accounts by mobile number (any common format) or customer reference,
        through the blind index; all tenants unless ``tenant`` is given.
        Erased accounts are no longer found."""
        if (mobile is None) == (customer_ref is None):
            raise InvalidInput("mobile|customer_ref", "give exactly one")
        if mobile is not None:
            kind, digest = "mobile", self._digest("mobile", normalise_mobile(mobile))
        else:
            ref = _text(customer_ref, "customer_ref", 64)
            kind, digest = "customer_ref", self._digest("customer_ref", ref)
        q = select(lookup.c.account_id).where(lookup.c.kind == kind, lookup.c.digest == digest)
        if tenant is not None:
            q = q.where(lookup.c.tenant == tenant)
        with self.store.session(commit=False) as s:
            rows = s.execute(q.order_by(lookup.c.tenant)).all()
        return [UUID(hex=r[0]) for r in rows]

    def account(self, account_id: UUID) -> AccountView:
        with self.store.session(commit=False):
            a = self._account(account_id)
        return AccountView(
            id=a.id,
            tenant=a.tenant,
            customer_ref=a.customer_ref.shown(),
            mobile=a.mobile.shown(),
            name=a.name.shown(),
            carrier=a.carrier,
            capability=a.capability,
            time_zone=a.time_zone,
            language=a.language,
            closed=a.closed,
            erased=a.erased,
        )

    def change_mobile(self, account_id: UUID, mobile: str, carrier: str = "unknown") -> None:
        e164 = normalise_mobile(mobile)
        c = parse_carrier(carrier)

        def run(s: Session) -> None:
            a = self._account(account_id)
            a.change_mobile(Personal(a.id, e164), c, self.now())
            self.store.save(a)
            s.execute(
                delete(lookup).where(lookup.c.kind == "mobile", lookup.c.account_id == a.id.hex)
            )
            s.execute(
                insert(lookup).values(
                    kind="mobile",
                    tenant=a.tenant,
                    digest=self._digest("mobile", e164),
                    account_id=a.id.hex,
                )
            )

        self._unit(run)

    def close_account(self, account_id: UUID) -> None:
        def run(s: Session) -> None:
            a = self._account(account_id)
            a.close(self.now())
            self.store.save(a)

        self._unit(run)

    # -- consents -----------------------------------------------------------------------
    def grant_consent(
        self, account_id: UUID, sender_id: UUID, purpose: str, *, source: str, wording: str, by: str
    ) -> int:
        """Record an opt-in with its evidence; returns the consent version."""
        p = _purpose(purpose)
        Consent.check_purpose_needs_consent(p)
        _text(source, "evidence.source", 100)
        _text(wording, "evidence.wording", 2000)
        _text(by, "evidence.by", 100)

        def run(s: Session) -> int:
            a = self._account(account_id)
            a.check_open()
            if self._sender(sender_id).tenant != a.tenant:
                raise InvalidInput("account_id", "account belongs to another tenant")
            c = self._consent(account_id, sender_id, p) or Consent(
                account_id=account_id, sender_id=sender_id, purpose=p
            )
            c.grant(source, wording, Personal(account_id, by), self.now())
            self.store.save(c)
            self._project_consent(s, c)
            return int(c.version)

        return self._unit(run)

    def withdraw_consent(
        self, account_id: UUID, sender_id: UUID, purpose: str, *, source: str
    ) -> None:
        p = _purpose(purpose)
        Consent.check_purpose_needs_consent(p)
        _text(source, "source", 100)

        def run(s: Session) -> None:
            self._account(account_id)
            self._sender(sender_id)
            c = self._consent(account_id, sender_id, p) or Consent(
                account_id=account_id, sender_id=sender_id, purpose=p
            )
            c.withdraw(source, self.now())
            self.store.save(c)
            self._project_consent(s, c)

        self._unit(run)

    def _project_consent(self, s: Session, c: Consent) -> None:
        row = {
            "account_id": c.account_id.hex,
            "sender_id": c.sender_id.hex,
            "purpose": c.purpose.value,
            "granted": c.granted,
            "version": int(c.version),
            "updated_at": self.now(),
        }
        s.execute(delete(consent_view).where(consent_view.c.consent_id == c.id.hex))
        s.execute(insert(consent_view).values(consent_id=c.id.hex, **row))

    def _purpose_consent(self, m: Message) -> Consent | None:
        """The consent a purpose decision needs (none for security notices)."""
        if m.purpose is Purpose.SECURITY:
            return None
        return self._consent(m.account_id, m.sender_id, m.purpose)

    def _consent(self, account_id: UUID, sender_id: UUID, purpose: Purpose) -> Consent | None:
        return self._find(Consent, consent_id(account_id, sender_id, purpose))

    def consent(self, account_id: UUID, sender_id: UUID, purpose: str) -> ConsentView | None:
        p = _purpose(purpose)
        with self.store.session(commit=False):
            c = self._consent(account_id, sender_id, p)
        if c is None:
            return None
        return ConsentView(
            c.id, c.account_id, c.sender_id, c.purpose, c.granted, int(c.version), tuple(c.history)
        )

    # -- templates -------------------------------------------------------------------------
    def draft_template(
        self,
        sender_id: UUID,
        name: str,
        *,
        purpose: str,
        plus_message_text: str,
        sms_text: str,
        variables: dict[str, str] | None = None,
        suggestions: tuple[str, ...] | list[str] = (),
        author: str,
        attachments: list[dict[str, Any]] | None = None,
    ) -> int:
        """Draft a new version of a template (creating the template on first use)."""
        Template.check_name(name)
        p = _purpose(purpose)
        _text(author, "author", 100)
        try:
            vars_typed = {k: VariableType(v) for k, v in (variables or {}).items()}
        except ValueError:
            raise InvalidInput(
                "variables", f"types: {', '.join(t.value for t in VariableType)}"
            ) from None

        def run(s: Session) -> int:
            self._sender(sender_id).check_active()
            t = self._template(sender_id, name, required=False) or Template(
                sender_id=sender_id, name=name, purpose=p
            )
            if t.purpose is not p:
                raise InvalidInput("purpose", "a template keeps the purpose it was created with")
            n = t.draft(
                plus_message_text,
                tuple(suggestions),
                sms_text,
                vars_typed,
                author,
                self.now(),
                self.settings.sms_max_parts,
                attachments,
            )
            self.store.save(t)
            return n

        return self._unit(run)

    def approve_template(self, sender_id: UUID, name: str, version: int, approver: str) -> None:
        _text(approver, "approver", 100)

        def run(s: Session) -> None:
            t = self._template(sender_id, name)
            assert t is not None
            if t.purpose is Purpose.MARKETING:
                sender = self._sender(sender_id)
                v = t.get_version(version)
                check_advertising_duties(
                    {"plus_message": v.plus_message_text, "sms": v.sms_text},
                    sender.display_name,
                    sender.sms_sender_id,
                    sender.contact,
                )
            t.approve(version, approver, self.now())
            self.store.save(t)

        self._unit(run)

    def retire_template(self, sender_id: UUID, name: str, version: int) -> None:
        def run(s: Session) -> None:
            t = self._template(sender_id, name)
            assert t is not None
            t.retire(version, self.now())
            self.store.save(t)

        self._unit(run)

    def template_versions(self, sender_id: UUID, name: str) -> dict[int, str]:
        """Version number -> status (drafted, approved, retired); empty if unknown."""
        with self.store.session(commit=False):
            t = self._template(sender_id, name, required=False)
        return {} if t is None else {n: v.status.value for n, v in t.versions.items()}

    def _template(self, sender_id: UUID, name: str, required: bool = True) -> Template | None:
        t = self._find(Template, template_id(sender_id, name))
        if t is None and required:
            raise UnknownTemplate(name)
        return t

    # -- notices ------------------------------------------------------------------------------
    def request_notice(
        self,
        sender_id: UUID,
        account_id: UUID,
        template: str,
        variables: dict[str, Any] | None = None,
        *,
        idempotency_key: str,
        urgency: str = "normal",
        correlation_id: str | None = None,
        requested_by: str = "host",
        template_version: int | None = None,
        priority: int | None = None,
    ) -> MessageView:
        """Request one notice.  Consent and routing are decided now and recorded
        on the message; submission to the gateway happens in :meth:`dispatch`,
        after this unit of work commits.  The same ``idempotency_key`` for the
        same sender returns the same message and never sends twice."""
        _text(idempotency_key, "idempotency_key", 128)
        _text(template, "template", 64)
        _text(requested_by, "requested_by", 100)
        corr = correlation_id if correlation_id is not None else idempotency_key
        _text(corr, "correlation_id", 128)
        try:
            urg = Urgency(urgency)
        except ValueError:
            raise InvalidInput("urgency", "must be normal or urgent") from None
        values = dict(variables or {})
        mid = message_id(sender_id, idempotency_key)

        def run(s: Session) -> MessageView:
            # One query reads the message (if the key was used), sender,
            # template and account.
            self._prefetch([mid, sender_id, template_id(sender_id, template), account_id])
            existing = self._message(mid, required=False)
            if existing is not None:
                if existing.account_id != account_id or existing.template_name != template:
                    raise IdempotencyConflict(
                        "idempotency_key", "already used for a different notice"
                    )
                return _message_view(existing)
            sender = self._sender(sender_id)
            sender.check_active()
            account = self._account(account_id)
            account.check_open()
            if account.tenant != sender.tenant:
                raise InvalidInput("account_id", "account belongs to another tenant")
            tpl = self._template(sender_id, template)
            assert tpl is not None
            version = tpl.usable(template_version)
            stored = tpl.check_variables(version, values)
            for k, v in stored.items():
                check_no_card_number(v, f"variables.{k}")
            pm_text = render(version.plus_message_text, version.variables, stored)
            sms_text = render(version.sms_text, version.variables, stored)
            checked = _CHECKED.get()
            key = (tpl.id, version.number, pm_text, sms_text)
            if checked is None or key not in checked:
                check_plus_message_body(pm_text, version.suggestions)
                check_sms_body(sms_text, self.settings.sms_max_parts)
                if checked is not None:  # the same bodies pass again (a broadcast)
                    checked.add(key)
            event_vars: dict[str, str | Personal] = {
                k: Personal(account_id, v) if version.variables[k].personal else v
                for k, v in stored.items()
            }
            now = self.now()
            msg = Message(
                sender_id=sender_id,
                idempotency_key=idempotency_key,
                tenant=sender.tenant,
                account_id=account_id,
                template_id=tpl.id,
                template_name=tpl.name,
                template_version=version.number,
                purpose=tpl.purpose,
                urgency=urg,
                variables=event_vars,
                correlation_id=corr,
                requested_by=requested_by,
                at=now,
                bulk=priority == 2,
            )
            self._decide(s, msg, sender, account, now)
            self._add_new(s, msg)
            return _message_view(msg)

        try:
            return self._unit(run)
        except ConcurrencyConflict:
            # A concurrent request with the same key won: return its message.
            with self.store.session(commit=False):
                m = self._message(mid, required=True)
                assert m is not None
                return _message_view(m)

    def _decide(
        self, s: Session, msg: Message, sender: Sender, account: Account, now: datetime
    ) -> None:
        """Consent, quiet hours, frequency cap, then routing: the message ends
        blocked, deferred (with a durable timer in the outbox) or routed."""
        decision = decide_purpose(msg.purpose, self._purpose_consent(msg))
        if not decision.allowed:
            msg.block(decision.reason, now)
            return
        if quiet_hours_apply(msg.purpose, msg.urgency):
            window = sender.quiet_hours.get(msg.purpose.value, self.settings.quiet_hours_window)
            opening = next_window_opening(now, account.time_zone, window)
            if opening is not None:
                msg.defer(opening, "quiet_hours", now)
                self._enqueue(s, msg, 0, opening)
                return
        if msg.purpose is Purpose.MARKETING:
            cap = sender.frequency_cap or self.settings.marketing_cap.model_dump()
            sent = [
                _aware(r[0])
                for r in s.execute(
                    select(message_view.c.routed_at).where(
                        message_view.c.account_id == msg.account_id.hex,
                        message_view.c.sender_id == msg.sender_id.hex,
                        message_view.c.purpose == Purpose.MARKETING.value,
                        message_view.c.routed_at.is_not(None),
                        message_view.c.routed_at > now - timedelta(days=7),
                    )
                )
            ]
            verdict = frequency_cap(now, sent, int(cap["per_day"]), int(cap["per_week"]))
            if not verdict.allowed:
                assert verdict.until is not None
                if cap["over_cap"] == "drop":
                    msg.block(f"{verdict.reason}_dropped", now)
                else:
                    msg.defer(verdict.until, verdict.reason, now)
                    self._enqueue(s, msg, 0, verdict.until)
                return
        route = choose_route(sender, account)
        attempt = msg.route(
            route.channel, route.carrier, {**decision.basis, "route": route.reason}, now
        )
        self._enqueue(s, msg, attempt, now)

    def _enqueue(
        self, s: Session, msg: Message, attempt: int, due: datetime, claimed_by: str | None = None
    ) -> None:
        row = {
            "message_id": msg.id.hex,
            "attempt": attempt,
            "priority": 2 if msg.bulk else PRIORITY[msg.urgency],
            "due_at": due,
            "claimed_by": claimed_by,
            "claimed_at": due if claimed_by else None,
            "submitting_at": None,
        }
        dirty = _DIRTY.get()
        if dirty is None:
            s.execute(_OUTBOX_INSERT, row)
        else:  # inserted with the unit's other rows (see _flush_outbox)
            dirty.outbox.append(row)
            dirty.urgent = dirty.urgent or (row["priority"] == 0 and due <= self.now())

    def _flush_outbox(self, s: Session) -> None:
        """Insert the outbox rows the unit of work queued; called at its end
        and before anything in it reads or changes the outbox."""
        dirty = _DIRTY.get()
        if dirty is not None and dirty.outbox:
            rows, dirty.outbox = dirty.outbox, []
            s.execute(_OUTBOX_INSERT, rows)

    def _project(self, s: Session, msg: Message, new: bool = False) -> None:
        row = message_row(msg, self.now())
        if new:
            s.execute(_VIEW_INSERT, {"message_id": msg.id.hex, **row})
            return
        result = s.execute(_VIEW_UPDATE, {"mid": msg.id.hex, **row})
        if not cast("CursorResult[Any]", result).rowcount:
            s.execute(_VIEW_INSERT, {"message_id": msg.id.hex, **row})

    def _touch(self, s: Session, m: Message) -> None:
        """Save a changed message and update its view: at the end of the
        outermost unit of work (once per message, whatever the number of
        changes), or now when there is no such unit."""
        dirty = _DIRTY.get()
        if dirty is None:
            self.store.save(m)
            self._project(s, m)
        else:
            dirty.messages[m.id] = m

    def _schedule(self, s: Session, items: list[tuple[str, str, datetime, dict[str, Any]]]) -> None:
        """Schedule timers: with the unit of work's other timers in one
        statement at its end, or now when there is no such unit."""
        dirty = _DIRTY.get()
        if dirty is None:
            timers_table.schedule(s, items)
        else:
            dirty.timers.extend(items)

    def _add_new(self, s: Session, m: Message) -> None:
        """Like :meth:`_touch`, for a message just created."""
        dirty = _DIRTY.get()
        if dirty is None:
            self.store.save(m)
            self._project(s, m, new=True)
            return
        dirty.messages[m.id] = m
        dirty.new.add(m.id)
        uow = _UOW.get()
        if uow is not None:
            uow[m.id] = m

    def _project_many(self, s: Session, msgs: list[Message], new: set[UUID]) -> None:
        now = self.now()
        if new:
            s.execute(
                _VIEW_INSERT,
                [{"message_id": m.id.hex, **message_row(m, now)} for m in msgs if m.id in new],
            )
        changed = [m for m in msgs if m.id not in new]
        if not changed:
            return
        rows = [{"mid": m.id.hex, **message_row(m, now)} for m in changed]
        result = s.execute(_VIEW_UPDATE, rows)
        if cast("CursorResult[Any]", result).rowcount != len(rows):
            for m in changed:  # some rows were missing: upsert one by one
                self._project(s, m)

    def _message(self, mid: UUID, required: bool = True) -> Message | None:
        m = self._find(Message, mid)
        if m is None and required:
            raise UnknownMessage(str(mid))
        return m

    def message(self, mid: UUID) -> MessageView:
        with self.store.session(commit=False):
            m = self._message(mid)
            assert m is not None
            return _message_view(m)

    def messages(
        self, *, account_id: UUID | None = None, correlation_id: str | None = None
    ) -> list[UUID]:
        q = select(message_view.c.message_id).order_by(message_view.c.requested_at)
        if account_id is not None:
            q = q.where(message_view.c.account_id == account_id.hex)
        if correlation_id is not None:
            q = q.where(message_view.c.correlation_id == correlation_id)
        with self.store.session(commit=False) as s:
            return [UUID(hex=r[0]) for r in s.execute(q).all()]

    def cancel_notice(self, mid: UUID, reason: str) -> None:
        """``reason`` is a code (letters, digits, ``_.:-``): it reaches reports and
        the audit trail, so it must never carry free text about a person."""
        _code(reason, "reason")

        def run(s: Session) -> None:
            m = self._message(mid)
            assert m is not None
            if self._submission_in_progress(s, m.id):
                raise RuleViolation("submission_in_progress", "too late: it is being submitted")
            m.cancel(reason, self.now())
            self.store.save(m)
            self._flush_outbox(s)
            s.execute(delete(outbox).where(outbox.c.message_id == m.id.hex))
            self._project(s, m)

        self._unit(run)

    def _submission_in_progress(self, s: Session, mid: UUID) -> bool:
        self._flush_outbox(s)
        return (
            s.execute(
                select(outbox.c.message_id).where(
                    outbox.c.message_id == mid.hex, outbox.c.submitting_at.is_not(None)
                )
            ).first()
            is not None
        )

    # -- dispatch and reports -------------------------------------------------------------------
    def _claim(self, limit: int, max_priority: int | None = None) -> list[tuple[str, int]]:
        """Claim due outbox rows.  A claim whose worker vanished after it started
        talking to the gateway is reconciled instead of resent (see
        :meth:`_reconcile`)."""
        now = self.now()
        worker = self.settings.worker_id
        stale_before = now - self.settings.timer_lease

        def run(s: Session) -> list[tuple[str, int]]:
            self._flush_outbox(s)
            q = _CLAIM_QUERIES[(max_priority, s.get_bind().dialect.name == "postgresql")]
            rows = s.execute(q, {"stale_before": stale_before, "now": now, "lim": limit}).all()
            if rows and rows[0][3] == 0:
                # Urgent notices go out in a batch of their own: never held up
                # while bulk rows claimed with them are prepared and recorded.
                rows = [r for r in rows if r[3] == 0]
            fresh = [(r[0], int(r[1])) for r in rows if r[2] is None]
            ambiguous = [(r[0], int(r[1])) for r in rows if r[2] is not None]
            if fresh:
                s.execute(
                    _OUTBOX_CLAIM,
                    [{"mid": mid, "att": att, "by": worker, "at": now} for mid, att in fresh],
                )
            if ambiguous:
                fresh += self._reconcile(s, ambiguous, now)
            return fresh

        return self._unit(run)

    def _reconcile(
        self, s: Session, rows: list[tuple[str, int]], now: datetime
    ) -> list[tuple[str, int]]:
        """Rows whose submission was interrupted: ask the gateway what it has
        (if it can tell); what it has, or everything when it cannot tell, is
        recorded as submitted-unconfirmed and left to status reports and the
        delivery TTL; nothing is sent twice.  Returns rows safe to resubmit."""
        refs = [f"{mid}:{attempt}" for mid, attempt in rows]
        known_fn = getattr(self.gateway, "known", None)
        known: set[str] | None = set(known_fn(refs)) if callable(known_fn) else None
        resubmit: list[tuple[str, int]] = []
        for (mid_hex, attempt), ref in zip(rows, refs, strict=True):
            if known is not None and ref not in known:
                s.execute(
                    update(outbox)
                    .where(outbox.c.message_id == mid_hex, outbox.c.attempt == attempt)
                    .values(claimed_by=self.settings.worker_id, claimed_at=now, submitting_at=None)
                )
                resubmit.append((mid_hex, attempt))
                continue
            s.execute(
                delete(outbox).where(outbox.c.message_id == mid_hex, outbox.c.attempt == attempt)
            )
            m = self._message(UUID(hex=mid_hex))
            assert m is not None
            cur = m.current
            if cur is None or cur.number != attempt or cur.status is not MessageStatus.ROUTED:
                continue
            m.mark_submitted(
                attempt,
                "unconfirmed" if known is None else ref,
                now,
                {"reconciled": "unconfirmed" if known is None else "known"},
            )
            self.flows.on_submitted(s, m, attempt, now)
            self.store.save(m)
            self._project(s, m)
            log.warning(
                "interrupted submission of %s reconciled (%s)",
                mid_hex,
                "unconfirmed" if known is None else "gateway has it",
            )
        return resubmit

    def dispatch(self, limit: int | None = None, *, urgent_only: bool = False) -> int:
        """Submit due messages to the gateway, urgent first; deferred messages
        whose time came are decided again (consent, quiet hours, caps) first.
        Consent is checked again right before submission, so a refusal takes
        effect before the next send.  A batch that holds an urgent notice holds
        urgent notices only; ``urgent_only`` takes nothing else (the worker's
        urgent dispatcher, beside the bulk work).  Returns how many submissions
        were made (one batch: call again while it returns more than 0)."""
        batch = limit or self.settings.dispatch_batch
        # Committed states the recording step may reuse (its first attempt only:
        # a retried one could find them changed by the attempt that failed).
        held: dict[UUID, object] = {}

        def claim_and_prepare(
            s: Session,
        ) -> tuple[dict[tuple[str, int], dict[str, Any]], list[Submission]]:
            claimed = self._claim(batch, max_priority=0 if urgent_only else None)
            if not claimed:
                return {}, []
            self._prefetch_messages([UUID(hex=mid_hex) for mid_hex, _ in claimed])
            ready = self._prepare(s, claimed)
            subs: list[Submission] = []
            for mid_hex, attempt in ready:
                sub = self._build_submission(UUID(hex=mid_hex), attempt)
                if sub is not None:
                    subs.append(sub)
            held.clear()  # a retried unit starts again
            held.update(
                (k, v)
                for k, v in (_UOW.get() or {}).items()
                if isinstance(v, Aggregate) and not v.pending_events
            )
            return ready, subs

        # One transaction claims, re-checks consent, marks the rows as being
        # submitted and reads what to send; the gateway is called after it commits.
        ready, subs = self._unit(claim_and_prepare)
        if not ready:
            return 0
        try:
            results = self.gateway.submit(subs) if subs else []
        except Exception:
            # Nothing was recorded as submitted: hand the rows back for a later
            # pass (after a pause, so an unavailable gateway is not hammered).
            retry_at = self.now() + timedelta(seconds=30)

            def release(s: Session) -> None:
                for mid_hex, attempt in ready:
                    s.execute(
                        update(outbox)
                        .where(outbox.c.message_id == mid_hex, outbox.c.attempt == attempt)
                        .values(
                            claimed_by=None, claimed_at=None, submitting_at=None, due_at=retry_at
                        )
                    )

            self._unit(release)
            raise
        by_ref = {r.reference: r for r in results}

        def record(s: Session) -> None:
            reuse = dict(held)
            held.clear()
            self._prefetch_messages([UUID(hex=mid_hex) for mid_hex, _ in ready], reuse)
            if ready:
                s.execute(_OUTBOX_DELETE, [{"mid": mid_hex, "att": att} for mid_hex, att in ready])
            for (mid_hex, attempt), basis in ready.items():
                res = by_ref.get(f"{mid_hex}:{attempt}")
                if res is None:
                    continue
                m = self._message(UUID(hex=mid_hex))
                assert m is not None
                now = self.now()
                m.mark_submitted(attempt, res.gateway_ref if res.accepted else "", now, basis)
                if res.accepted:
                    self.flows.on_submitted(s, m, attempt, now)
                else:
                    m.record_report(
                        attempt, "failed", now, code=res.code, permanent=res.reason != "outage"
                    )
                    self._maybe_fall_back(s, m, res.reason or res.code)
                self._touch(s, m)

        self._unit(record)
        return len(subs)

    def _prepare(
        self, s: Session, claimed: list[tuple[str, int]]
    ) -> dict[tuple[str, int], dict[str, Any]]:
        """Decide deferred messages again and re-check consent of routed ones.
        Returns the (message, attempt) pairs to submit with the consent basis
        that holds at this moment (proof of consent at send time)."""
        ready: dict[tuple[str, int], dict[str, Any]] = {}
        now = self.now()
        for mid_hex, attempt in claimed:
            m = self._message(UUID(hex=mid_hex))
            assert m is not None
            if attempt == 0:  # a deferred message's timer
                s.execute(_OUTBOX_DELETE, {"mid": mid_hex, "att": 0})
                if m.status is not MessageStatus.DEFERRED:
                    continue
                self._decide(s, m, self._sender(m.sender_id), self._account(m.account_id), now)
                self.store.save(m)
                self._project(s, m)
                if m.status not in (MessageStatus.ROUTED,):
                    continue
                attempt = 1
                self._flush_outbox(s)
                s.execute(
                    _OUTBOX_CLAIM,
                    {"mid": mid_hex, "att": 1, "by": self.settings.worker_id, "at": now},
                )
            cur = m.current
            if cur is None or cur.number != attempt or cur.status is not MessageStatus.ROUTED:
                continue
            decision = decide_purpose(m.purpose, self._purpose_consent(m))
            if not decision.allowed:
                m.cancel(f"{decision.reason}_before_send", now)
                self.store.save(m)
                self._project(s, m)
                s.execute(_OUTBOX_DELETE_ALL, {"mid": mid_hex})
                continue
            ready[(mid_hex, attempt)] = decision.basis
        if ready:
            s.execute(
                _OUTBOX_SUBMITTING,
                [{"mid": mid_hex, "att": att, "at": now} for mid_hex, att in ready],
            )
        return ready

    def _build_submission(self, mid: UUID, attempt: int) -> Submission | None:
        m = self._message(mid)
        assert m is not None
        cur = m.current
        if cur is None or cur.number != attempt or cur.status is not MessageStatus.ROUTED:
            return None
        sender = self._sender(m.sender_id)
        account = self._account(m.account_id)
        tpl = self._template(m.sender_id, m.template_name)
        assert tpl is not None
        version = tpl.get_version(m.template_version)
        values = {k: v.reveal() if isinstance(v, Personal) else v for k, v in m.variables.items()}
        text = (
            version.plus_message_text if cur.channel is Channel.PLUS_MESSAGE else version.sms_text
        )
        return Submission(
            reference=f"{mid.hex}:{attempt}",
            channel=cur.channel,
            carrier=cur.carrier,
            sender_name=sender.display_name,
            sms_sender_id=sender.sms_sender_id,
            to=account.mobile.reveal(),
            text=render(text, version.variables, values),
            suggestions=version.suggestions if cur.channel is Channel.PLUS_MESSAGE else (),
            attachments=version.attachments if cur.channel is Channel.PLUS_MESSAGE else (),
        )

    def _maybe_fall_back(self, s: Session, m: Message, reason: str) -> None:
        cur = m.current
        if cur is None or cur.channel is not Channel.PLUS_MESSAGE:
            return
        if reason == "not_capable":
            account = self._account(m.account_id)
            account.learn_capability(Capability.NO, "gateway rejection", self.now())
            self.store.save(account)
        attempt = m.fall_back(reason, cur.carrier, self.now())
        self._enqueue(s, m, attempt, self.now())

    def process_reports(self, stop: Callable[[], bool] | None = None) -> int:
        """Pull due status reports from the gateway, 200 at a time, and apply
        them; ``stop`` is asked between batches (a stopping worker does not
        start another)."""
        now = self.now()
        total = 0
        while True:
            chunk = self.gateway.poll_reports(now, 200)
            if not chunk:
                return total

            def apply(s: Session, chunk: list[StatusReport] = chunk) -> None:
                self._prefetch_for_reports(chunk)
                for r in chunk:
                    self._apply_report(s, r)

            self._unit(apply)
            total += len(chunk)
            if stop is not None and stop():
                return total

    def _prefetch_for_reports(self, reports: list[StatusReport]) -> None:
        """The messages a batch of reports is about, and their accounts, in
        two queries."""
        mids: list[UUID] = []
        for r in reports:
            try:
                mids.append(UUID(hex=r.reference.split(":")[0]))
            except ValueError:
                continue
        self._prefetch_messages(mids)

    def _prefetch_messages(
        self, mids: list[UUID], known: Mapping[UUID, object] | None = None
    ) -> None:
        """Messages, then their accounts and the consents their purposes
        need, into the identity map: two queries."""
        self._prefetch(mids, known)
        uow = _UOW.get()
        if uow is not None:
            msgs = [m for mid in mids if isinstance(m := uow.get(mid), Message)]
            self._prefetch(
                [m.account_id for m in msgs]
                + [
                    consent_id(m.account_id, m.sender_id, m.purpose)
                    for m in msgs
                    if m.purpose is not Purpose.SECURITY
                ],
                known,
            )

    def handle_report(self, report: StatusReport) -> bool:
        """Apply one inbound report (idempotent; never regresses status).
        Returns whether it changed anything."""
        return self._unit(lambda s: self._apply_report(s, report)) == "applied"

    def handle_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        """Framework-neutral webhook entry point: authenticate (HMAC signature or
        shared secret, constant-time), parse JSON or XML, apply idempotently.
        Raises :class:`~tsuchi.infrastructure.webhooks.WebhookRejected` (with an
        HTTP status) for unsigned, forged, replayed, malformed or oversized
        requests; nothing is recorded then."""
        if not self.settings.webhook_secret:
            raise KeyMaterialError("no webhook secret configured (TSUCHI_WEBHOOK_SECRET)")
        reports = read_status_webhook(
            headers,
            body,
            secret=self.settings.webhook_secret,
            now=self.now(),
            max_body=self.settings.webhook_max_body,
        )

        def run(s: Session) -> WebhookResult:
            outcomes = [self._apply_report(s, r) for r in reports]
            return WebhookResult(
                accepted=outcomes.count("applied"),
                duplicates=outcomes.count("duplicate"),
                orphans=outcomes.count("orphan"),
            )

        return self._unit(run)

    def _apply_report(self, s: Session, r: StatusReport) -> str:
        """Apply a report: "applied", "duplicate" (nothing new) or "orphan"
        (no such message: kept, without any text, for reconciliation)."""
        try:
            mid_hex, attempt_s = r.reference.split(":")
            mid, attempt = UUID(hex=mid_hex), int(attempt_s)
            m = self._message(mid, required=False)
        except ValueError:
            m = None
        at = _aware(r.at)
        if m is None:
            s.execute(
                insert(orphan_reports).values(
                    reference=r.reference[:80],
                    kind=r.kind,
                    code=r.code[:32],
                    reported_at=at,
                    received_at=self.now(),
                )
            )
            log.warning("report for an unknown reference kept as orphan")
            return "orphan"
        if r.kind == "reply":
            erased = self._account(m.account_id).erased
            key = blind_index(
                self.keyring.index_key,
                "reply",
                f"{r.reference}\0{at.isoformat()}\0{r.postback}\0{r.text}",
            )[:32]
            text = None if erased else Personal(m.account_id, r.text)
            changed = m.receive_reply(text, r.postback, at, dedupe_key=key)
            if changed and not erased:
                self.flows.on_reply(s, m, r.text, r.postback)
        else:
            changed = m.record_report(attempt, r.kind, at, r.code, r.permanent)
            if changed and r.kind in ("failed", "expired"):
                self._maybe_fall_back(s, m, f"{r.kind} {r.code}".strip())
            if (
                changed
                and r.kind == "delivered"
                and m.current
                and m.current.channel is Channel.PLUS_MESSAGE
            ):
                account = self._account(m.account_id)
                account.learn_capability(Capability.YES, "delivery report", at)
                self.store.save(account)
        self._touch(s, m)
        return "applied" if changed else "duplicate"

    # -- scheduled flows (see tsuchi.flows) -------------------------------------------------------
    def sweep(self, max_timers: int = 1000, stop: Callable[[], bool] | None = None) -> SweepStats:
        """One worker pass: dispatch (urgent first), status reports, due timers.
        ``stop`` is asked between steps, so a stopping worker finishes quickly."""
        return self.flows.sweep(max_timers, stop)

    def register_deadline(self, spec: DeadlineSpec) -> UUID:
        """Register a card expiry, payment due date, mileage expiry or document
        deadline; reminders are scheduled at its offsets (days before)."""
        self.flows.register_deadlines([spec])
        from tsuchi.domain.deadline import deadline_id

        return deadline_id(spec.sender_id, spec.kind, spec.reference)

    def register_deadlines(self, specs: Iterable[DeadlineSpec], chunk: int = 2000) -> int:
        """Bulk registration; returns how many were new."""
        return self.flows.register_deadlines(specs, chunk)

    def cancel_deadline(self, sender_id: UUID, kind: str, reference: str, reason: str) -> int:
        return self.flows.cancel_deadline(sender_id, kind, reference, reason)

    def raise_fraud_alert(
        self,
        sender_id: UUID,
        account_id: UUID,
        card_last4: str,
        merchant: str,
        amount: int,
        at: datetime,
        alert_ref: str | None = None,
    ) -> UUID:
        """Urgent "was this you?" +Message with reply buttons; SMS as well if not
        read in time; "not me" emits CardBlockRequested and confirms; silence
        emits EscalationRequired.  Returns the fraud case id."""
        return self.flows.raise_fraud_alert(
            sender_id, account_id, card_last4, merchant, amount, at, alert_ref
        )

    def fraud_case(self, case_id: UUID) -> dict[str, Any]:
        case = self.flows.fraud_case(case_id)
        return {
            "id": str(case.id),
            "state": case.state,
            "account_id": str(case.account_id),
            "card_last4": case.card_last4,
            "message_id": str(case.message_id),
        }

    def start_broadcast(
        self,
        sender_id: UUID,
        name: str,
        template: str,
        account_ids: Sequence[UUID],
        variables: dict[str, str] | None = None,
        urgency: str = "normal",
        requested_by: str = "host",
    ) -> UUID:
        """A safety check or campaign to many accounts; messages are created by
        the sweep in chunks, at bulk priority."""
        return self.flows.start_broadcast(
            sender_id, name, template, account_ids, variables, urgency, requested_by
        )

    def broadcast_report(self, broadcast_id: UUID) -> dict[str, Any]:
        return self.flows.broadcast_report(broadcast_id)

    # -- audit trail ----------------------------------------------------------------------------
    @property
    def audit(self) -> AuditTrail:
        """The tamper-evident audit trail (hash chain, signed checkpoints, export)."""
        if self._audit is None:
            self._audit = AuditTrail(self.store, self.keyring.signing_key)
        return self._audit

    @property
    def delivery_report(self) -> DeliveryReport:
        """The delivery report projection (per day, sender, template, purpose,
        channel, carrier) and the message log."""
        if self._delivery_report is None:
            self._delivery_report = DeliveryReport(self.store)
        return self._delivery_report

    def catch_up_projections(self, max_events: int | None = None) -> int:
        """Bring the delivery report and the audit chain up to the event log
        (or about ``max_events`` further each, for a bounded worker job)."""
        return self.delivery_report.catch_up(max_events=max_events) + self.audit.catch_up(
            max_events=max_events
        )

    def audit_checkpoint(self) -> None:
        """Extend the hash chain and sign a checkpoint (a periodic worker job)."""
        self.audit.catch_up()
        self.audit.checkpoint(self.now())

    # -- personal data: erasure, rotation, subject access ---------------------------------------
    def erase_account(self, account_id: UUID, requested_by: str) -> int:
        """Erase a customer by destroying their data keys (crypto-shredding).

        Appends a personal-data-free ``Erased`` event, cancels the account's
        pending messages, removes it from the blind indexes, destroys its data
        keys and forgets any cached key.  Every event still loads; personal
        fields then read as the erased marker.  Returns how many pending
        messages were cancelled.
        """
        _text(requested_by, "requested_by", 100)

        def run(s: Session) -> int:
            a = self._account(account_id)
            self._flush_outbox(s)
            pending = s.execute(
                select(outbox.c.message_id)
                .join(message_view, message_view.c.message_id == outbox.c.message_id)
                .where(
                    message_view.c.account_id == account_id.hex, outbox.c.submitting_at.is_(None)
                )  # in flight: the gateway has it
            ).all()
            cancelled = 0
            for (mid_hex,) in pending:
                m = self._message(UUID(hex=mid_hex))
                assert m is not None
                if m.status in (
                    MessageStatus.REQUESTED,
                    MessageStatus.DEFERRED,
                    MessageStatus.ROUTED,
                ):
                    m.cancel("account erased", self.now())
                    self.store.save(m)
                    self._project(s, m)
                    cancelled += 1
                s.execute(delete(outbox).where(outbox.c.message_id == mid_hex))
            a.mark_erased(self.now(), requested_by)
            self.store.save(a)
            s.execute(delete(lookup).where(lookup.c.account_id == account_id.hex))
            self.store.keys.erase(account_id, self.now())
            return cancelled

        cancelled = self._unit(run)
        self._forget_subject(account_id)  # no decrypted state of the customer stays in memory
        self.store.compact_after_erasure()
        log.info("account %s erased; %d pending messages cancelled", account_id, cancelled)
        return cancelled

    def rotate_subject_key(self, account_id: UUID) -> int:
        """Give a customer a new data key for new writes; returns its version."""

        def run(s: Session) -> int:
            if self._account(account_id).erased:
                raise RuleViolation("account_erased", "an erased account has no keys")
            return self.store.keys.rotate_subject(account_id, self.now())

        return self._unit(run)

    def rewrap_data_keys(self, new_kek: KeyEncryptionKey) -> int:
        """Re-wrap every data key under ``new_kek`` and record its id, in one
        transaction; events are untouched.  Returns how many keys."""

        def run(s: Session) -> int:
            n = self.store.keys.rewrap_all(new_kek)
            self.store.set_kek_id(new_kek.key_id)
            return n

        old = self.store.keys.kek
        try:
            return self._unit(run)
        except Exception:
            self.store.keys.kek = old
            raise

    def subject_access_report(self, account_id: UUID) -> dict[str, Any]:
        """Everything held about one customer (APPI disclosure request): profile,
        consents with evidence and history, messages with content and status
        timeline."""
        with self.store.session(commit=False) as s:
            a = self._account(account_id)
            consent_ids = [
                UUID(hex=r[0])
                for r in s.execute(
                    select(consent_view.c.consent_id)
                    .where(consent_view.c.account_id == account_id.hex)
                    .order_by(consent_view.c.sender_id, consent_view.c.purpose)
                )
            ]
            consents = [c for c in (self._find(Consent, i) for i in consent_ids) if c]
            message_ids = self.messages(account_id=account_id)
            messages = [self._message(i) for i in message_ids]
            senders = {c.sender_id for c in consents} | {m.sender_id for m in messages if m}
            sender_names = {i: self._sender(i).display_name for i in senders}
            message_docs = [self._message_document(m, sender_names) for m in messages if m]
        return {
            "format": "tsuchi-subject-access/v1",
            "generated_at": self.now().isoformat(),
            "account": {
                "id": str(a.id),
                "tenant": a.tenant,
                "customer_ref": a.customer_ref.shown(),
                "mobile": a.mobile.shown(),
                "name": a.name.shown(),
                "carrier": a.carrier.value,
                "plus_message_capability": a.capability.value,
                "time_zone": a.time_zone,
                "language": a.language,
                "registered_at": a.registered_at.isoformat(),
                "closed": a.closed,
                "erased": a.erased,
            },
            "consents": [
                {
                    "id": str(c.id),
                    "sender": sender_names[c.sender_id],
                    "purpose": c.purpose.value,
                    "granted": c.granted,
                    "history": [
                        {
                            "version": h.version,
                            "action": h.action,
                            "at": h.at.isoformat(),
                            "source": h.source,
                            "wording": h.wording,
                            "by": h.by.shown() if h.by is not None else None,
                        }
                        for h in c.history
                    ],
                }
                for c in consents
            ],
            "messages": message_docs,
        }

    def _message_document(self, m: Message, sender_names: dict[UUID, str]) -> dict[str, Any]:
        tpl = self._template(m.sender_id, m.template_name)
        assert tpl is not None
        version = tpl.get_version(m.template_version)
        values = {k: v.shown() if isinstance(v, Personal) else v for k, v in m.variables.items()}
        return {
            "id": str(m.id),
            "sender": sender_names[m.sender_id],
            "template": f"{m.template_name} v{m.template_version}",
            "purpose": m.purpose.value,
            "urgency": m.urgency.value,
            "status": m.status.value,
            "requested_at": m.requested_at.isoformat(),
            "content": {
                "plus_message": render(version.plus_message_text, version.variables, values),
                "sms": render(version.sms_text, version.variables, values),
            },
            "authorisation": m.authorisation,
            "timeline": [
                {
                    "at": t.at.isoformat(),
                    "status": t.status,
                    "attempt": t.attempt,
                    "detail": t.detail,
                }
                for t in m.timeline
            ],
            "replies": [
                {"at": at.isoformat(), "text": text.shown() if text else ERASED}
                for at, text in m.replies
            ],
        }

    # -- reports -----------------------------------------------------------------------------------
    def delivery_summary(self) -> list[dict[str, Any]]:
        """Counts of messages by tenant, purpose, channel, status and, for
        blocked, deferred and cancelled ones, the reason."""
        reason = case(
            (
                message_view.c.status.in_(["blocked", "deferred", "cancelled"]),
                func.coalesce(message_view.c.reason, ""),
            ),
            else_="",
        ).label("reason")
        cols = (
            message_view.c.tenant,
            message_view.c.purpose,
            message_view.c.channel,
            message_view.c.status,
            reason,
        )
        fallback = func.sum(case((message_view.c.fallback, 1), else_=0))
        with self.store.session(commit=False) as s:
            rows = s.execute(
                select(*cols, func.count(), fallback).group_by(*cols).order_by(*cols)
            ).all()
        return [
            {
                "tenant": t,
                "purpose": p,
                "channel": c or "-",
                "status": st,
                "reason": r,
                "count": n,
                "fallback": int(fb or 0),
            }
            for t, p, c, st, r, n, fb in rows
        ]

    def consent_as_of(
        self, account_id: UUID, sender_id: UUID, purpose: str, at: datetime
    ) -> dict[str, Any]:
        """The consent as it stood at ``at``: granted or not, and the change
        (version, source, wording, when) that made it so."""
        p = _purpose(purpose)
        if p is Purpose.SECURITY:
            return {"purpose": p.value, "granted": True, "rule": "security_always_allowed"}
        with self.store.session(commit=False):
            c = self._consent(account_id, sender_id, p)
        change = c.state_at(_aware(at)) if c is not None else None
        default = p is Purpose.TRANSACTIONAL
        return {
            "consent_id": str(c.id) if c is not None else None,
            "purpose": p.value,
            "granted": default if change is None else change.action == "granted",
            "version": None if change is None else change.version,
            "at": None if change is None else change.at.isoformat(),
            "source": None if change is None else change.source,
            "wording": None if change is None else change.wording,
        }

    def consent_register(self) -> Iterator[dict[str, Any]]:
        """Every consent: account, sender, purpose, current status, evidence and
        history.  Personal evidence (who gave it) is shown only as present or
        erased; the subject access report holds the plaintext."""
        with self.store.session(commit=False) as s:
            rows = s.execute(
                select(consent_view).order_by(
                    consent_view.c.account_id, consent_view.c.sender_id, consent_view.c.purpose
                )
            ).all()
        for row in rows:
            with self.store.session(commit=False):
                c = self._find(Consent, UUID(hex=row.consent_id))
                sender = self._find(Sender, c.sender_id) if c is not None else None
            if c is None:
                continue
            yield {
                "consent_id": str(c.id),
                "account_id": str(c.account_id),
                "tenant": sender.tenant if sender else "",
                "sender": sender.display_name if sender else str(c.sender_id),
                "purpose": c.purpose.value,
                "status": "granted" if c.granted else "withdrawn",
                "version": int(c.version),
                "history": [
                    {
                        "version": h.version,
                        "action": h.action,
                        "at": h.at.isoformat(),
                        "source": h.source,
                        "wording": h.wording,
                        "by": None if h.by is None else ("erased" if h.by.erased else "recorded"),
                    }
                    for h in c.history
                ],
            }

    def latest_request_time(self) -> datetime | None:
        with self.store.session(commit=False) as s:
            t = s.execute(select(func.max(message_view.c.requested_at))).scalar_one()
        return None if t is None else _aware(t)

    def wait_for_urgent(self, timeout: float) -> bool:
        """Block until a unit of work of this engine commits an urgent notice
        that is due (True), or ``timeout`` seconds pass (False).  The worker's
        urgent dispatcher waits here, so an alert raised in its own process is
        submitted at once; those of other processes are found by
        :meth:`urgent_due`, which it asks between waits."""
        woke = self._urgent_committed.wait(timeout)
        self._urgent_committed.clear()  # what is committed now, dispatch will see
        return woke

    def urgent_due(self) -> bool:
        """Whether an urgent notice waits to be claimed: one read, no write
        lock, so it can be asked often."""
        now = self.now()
        with self.store.session(commit=False) as s:
            params = {"stale_before": now - self.settings.timer_lease, "now": now}
            return s.execute(_URGENT_DUE, params).first() is not None

    def pending_dispatch(self) -> int:
        with self.store.session(commit=False) as s:
            return int(s.execute(select(func.count()).select_from(outbox)).scalar_one())


def _purpose(purpose: str) -> Purpose:
    try:
        return Purpose(purpose)
    except ValueError:
        raise InvalidInput("purpose", "must be security, transactional or marketing") from None


def _database_has_kek(url: str | None, probe: SAEngine | None) -> bool:
    return _database_kek_id(url, probe) is not None


def _database_kek_id(url: str | None, probe: SAEngine | None) -> str | None:
    if probe is not None:
        engine = probe
    elif url is not None:
        engine = create_engine(url)
    else:
        return None
    try:
        if not inspect(engine).has_table("tsuchi_meta"):
            return None
        with engine.connect() as conn:
            row = conn.execute(select(meta.c.value).where(meta.c.key == "kek_id")).first()
        return None if row is None else str(row[0])
    finally:
        if probe is None:
            engine.dispose()


__all__ = ["AccountView", "ConsentView", "Engine", "MessageView", "SenderView"]
