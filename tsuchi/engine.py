"""The embedding API: :class:`Engine`, the one facade a host application uses.

It is the composition root: settings, clock, gateway, key ring and the
aggregate store meet here and nowhere else, and the services of
:mod:`tsuchi.application` are built bottom-up from them.  Every public method
is a documented delegate to the one service that owns the job; the services
never import this module.  Every command runs as one unit of work (events,
data keys and read models commit together); inside :meth:`Engine.transaction`
the host's own rows join that unit too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

from tsuchi.application.accounts import account_spec
from tsuchi.application.bootstrap import (
    build_services,
    default_gateway,
    keys_present,
    load_keyring,
    open_store,
)
from tsuchi.application.context import Context
from tsuchi.application.flows.deadlines import DeadlineSpec
from tsuchi.application.sweep import SweepStats
from tsuchi.application.views import (
    AccountView,
    ConsentView,
    InboundMediaView,
    InboundView,
    MessageView,
    ReplyResult,
    SenderView,
    WebhookResult,
)
from tsuchi.domain.deadline import deadline_id
from tsuchi.domain.suggestions import Suggestion
from tsuchi.infrastructure.audit import AuditTrail
from tsuchi.infrastructure.audit_anchor import FileAuditAnchor
from tsuchi.infrastructure.clock import SystemClock
from tsuchi.infrastructure.crypto import KeyRing
from tsuchi.infrastructure.delivery_report import DeliveryReport
from tsuchi.infrastructure.metrics import Metrics, read_backlog
from tsuchi.infrastructure.readiness import readiness_problem
from tsuchi.infrastructure.sql import DatabaseEngine, ScopedSession, Session
from tsuchi.ports import Clock, Gateway, KeyEncryptionKey, StatusReport
from tsuchi.settings import Settings, normalise_database_url

log = logging.getLogger("tsuchi")


class Engine:
    """tsuchi, embedded.

    ``Engine(Settings(database_url=...))`` opens (and on first use creates)
    the database the URL names.  A host may instead pass its own SQLAlchemy
    ``sqlalchemy_engine``, or a ``scoped_session`` whose transactions it
    commits itself.  ``clock`` and ``gateway`` default to the system clock and
    a seeded :class:`SimulatedCarrierNetwork`.  ``metrics`` (a
    :class:`~tsuchi.infrastructure.metrics.Metrics`) defaults to one with a
    private Prometheus registry.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        gateway: Gateway | None = None,
        keyring: KeyRing | None = None,
        sqlalchemy_engine: DatabaseEngine | None = None,
        session: ScopedSession | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.metrics = metrics if metrics is not None else Metrics()
        """The engine's Prometheus metrics (a private registry unless ``metrics``
        is given): ``engine.metrics.registry`` for a host's exporter."""
        self.clock: Clock = clock or SystemClock()
        self.gateway: Gateway = gateway or default_gateway(self.settings, self.clock)
        url = None
        if sqlalchemy_engine is None and session is None:
            url = normalise_database_url(self.settings.database_url)
        bind = session.get_bind() if session is not None else None
        probe = sqlalchemy_engine or (bind if isinstance(bind, DatabaseEngine) else None)
        fresh = keyring is None and not keys_present(self.settings)
        self.keyring = keyring or load_keyring(self.settings, url, probe)
        self.store = open_store(self.settings, self.keyring, url, sqlalchemy_engine, session)
        self._owns_engine = url is not None
        ctx = Context(self.settings, self.clock, self.store, self.keyring, self.metrics)
        self.store.check_schema_and_keys(self.keyring.kek.key_id, allow_new=fresh)
        self.services = build_services(ctx, self.gateway)
        self._audit: AuditTrail | None = None
        self._delivery_report: DeliveryReport | None = None
        self.metrics.watch(lambda: read_backlog(self.store, self.gateway, self.now()))
        log.info("engine opened (%s)", self.store.engine.dialect.name)

    # -- lifecycle -------------------------------------------------------------------
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
        self.services.uow.cache.clear()

    def now(self) -> datetime:
        """The engine clock's time, always timezone-aware."""
        return self.services.uow.ctx.now()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A unit of work the host can join: rows it adds to the yielded session
        commit or roll back together with every notice requested inside."""
        with self.store.session(commit=True) as s:
            yield s

    # -- senders ---------------------------------------------------------------------
    def register_sender(
        self, tenant: str, display_name: str, industry: str, sms_sender_id: str, contact: str
    ) -> UUID:
        """Register an official account; idempotent on (tenant, sms_sender_id)."""
        return self.services.senders.register(
            tenant, display_name, industry, sms_sender_id, contact
        )

    def submit_vetting(self, sender_id: UUID, carrier: str) -> None:
        """Record that the sender was submitted to ``carrier`` for vetting."""
        self.services.senders.submit_vetting(sender_id, carrier)

    def decide_vetting(self, sender_id: UUID, carrier: str, approved: bool, note: str = "") -> None:
        """Record a carrier's vetting decision for the sender."""
        self.services.senders.decide_vetting(sender_id, carrier, approved, note)

    def suspend_sender(self, sender_id: UUID, reason: str) -> None:
        """Stop all sending for the sender; ``reason`` is a code."""
        self.services.senders.suspend(sender_id, reason)

    def reinstate_sender(self, sender_id: UUID) -> None:
        """Lift a suspension."""
        self.services.senders.reinstate(sender_id)

    def close_sender(self, sender_id: UUID) -> None:
        """Close the official account for good; it sends nothing more."""
        self.services.senders.close(sender_id)

    def set_quiet_hours(self, sender_id: UUID, purpose: str, start: str, end: str) -> None:
        """Recipient-local sending window for this sender's notices of ``purpose``
        (non-urgent ones; security and urgent notices are never held)."""
        self.services.senders.set_quiet_hours(sender_id, purpose, start, end)

    def set_frequency_cap(
        self, sender_id: UUID, per_day: int, per_week: int, over_cap: str = "defer"
    ) -> None:
        """Marketing notices per account: at most ``per_day`` in 24 h and
        ``per_week`` in 7 days; over the cap ``defer`` or ``drop``."""
        self.services.senders.set_frequency_cap(sender_id, per_day, per_week, over_cap)

    def sender(self, sender_id: UUID) -> SenderView:
        """The sender as it stands now."""
        return self.services.senders.view(sender_id)

    # -- accounts --------------------------------------------------------------------
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
        spec = account_spec(
            tenant, customer_ref, mobile, name, carrier, capability, time_zone, language
        )
        return self.services.accounts.register(spec)

    def register_accounts(
        self, customers: Iterable[dict[str, str]], chunk: int = 500
    ) -> list[UUID]:
        """Bulk registration (one unit of work per ``chunk``); each dict has the
        keyword arguments of :meth:`register_account`.  Every entry is validated
        before its chunk is written."""
        return self.services.accounts.register_many(customers, chunk)

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
        return self.services.accounts.find(tenant, mobile=mobile, customer_ref=customer_ref)

    def account(self, account_id: UUID) -> AccountView:
        """The account with its personal fields decrypted (or the erased marker)."""
        return self.services.accounts.view(account_id)

    def change_mobile(self, account_id: UUID, mobile: str, carrier: str = "unknown") -> None:
        """New mobile number: the blind index follows and capability is unknown again."""
        self.services.accounts.change_mobile(account_id, mobile, carrier)

    def close_account(self, account_id: UUID) -> None:
        """Close the account and cancel its pending notices."""
        self.services.accounts.close(account_id)

    # -- consents --------------------------------------------------------------------
    def grant_consent(
        self, account_id: UUID, sender_id: UUID, purpose: str, *, source: str, wording: str, by: str
    ) -> int:
        """Record an opt-in with its evidence; returns the consent version."""
        return self.services.consents.grant(
            account_id, sender_id, purpose, source=source, wording=wording, by=by
        )

    def withdraw_consent(
        self, account_id: UUID, sender_id: UUID, purpose: str, *, source: str
    ) -> None:
        """Record an opt-out; it takes effect before the next submission."""
        self.services.consents.withdraw(account_id, sender_id, purpose, source=source)

    def consent(self, account_id: UUID, sender_id: UUID, purpose: str) -> ConsentView | None:
        """The consent with its history, or None if never given nor refused."""
        return self.services.consents.view(account_id, sender_id, purpose)

    def consent_as_of(
        self, account_id: UUID, sender_id: UUID, purpose: str, at: datetime
    ) -> dict[str, Any]:
        """The consent as it stood at ``at``: granted or not, and the change
        (version, source, wording, when) that made it so."""
        return self.services.consents.as_of(account_id, sender_id, purpose, at)

    def consent_register(self) -> Iterator[dict[str, Any]]:
        """Every consent: account, sender, purpose, current status, evidence and
        history (personal evidence only as present or erased)."""
        return self.services.consents.register()

    # -- templates -------------------------------------------------------------------
    def draft_template(
        self,
        sender_id: UUID,
        name: str,
        *,
        purpose: str,
        plus_message_text: str,
        sms_text: str,
        variables: dict[str, str] | None = None,
        suggestions: Sequence[str | Suggestion] = (),
        author: str,
        attachments: list[dict[str, Any]] | None = None,
    ) -> int:
        """Draft a new version of a template (creating the template on first use).
        ``suggestions``: labels (reply suggestions) or :class:`~tsuchi.Suggestion` values."""
        return self.services.templates.draft(
            sender_id,
            name,
            purpose=purpose,
            plus_message_text=plus_message_text,
            sms_text=sms_text,
            variables=variables,
            suggestions=suggestions,
            author=author,
            attachments=attachments,
        )

    def approve_template(self, sender_id: UUID, name: str, version: int, approver: str) -> None:
        """Approve a drafted version (four eyes: not by its author)."""
        self.services.templates.approve(sender_id, name, version, approver)

    def retire_template(self, sender_id: UUID, name: str, version: int) -> None:
        """Retire a version; new notices can no longer use it."""
        self.services.templates.retire(sender_id, name, version)

    def template_versions(self, sender_id: UUID, name: str) -> dict[int, str]:
        """Each version of the template and its state."""
        return self.services.templates.versions(sender_id, name)

    # -- notices ---------------------------------------------------------------------
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
        bulk: bool = False,
    ) -> MessageView:
        """Request one notice.  Consent and routing are decided now and recorded
        on the message; submission happens in :meth:`dispatch`, after this unit
        of work commits.  The same ``idempotency_key`` for the same sender
        returns the same message and never sends twice.  ``bulk`` notices are
        dispatched after every other due notice."""
        return self.services.notices.request(
            sender_id,
            account_id,
            template,
            variables,
            idempotency_key=idempotency_key,
            urgency=urgency,
            correlation_id=correlation_id,
            requested_by=requested_by,
            template_version=template_version,
            bulk=bulk,
        )

    def message(self, mid: UUID) -> MessageView:
        """The message with its decision, route and status timeline."""
        return self.services.notices.view(mid)

    def messages(
        self, *, account_id: UUID | None = None, correlation_id: str | None = None
    ) -> list[UUID]:
        """Message ids, oldest first, of an account and/or a correlation id."""
        return self.services.notices.ids(account_id, correlation_id)

    def cancel_notice(self, mid: UUID, reason: str) -> None:
        """Cancel a notice not yet submitted.  ``reason`` is a code (letters,
        digits, ``_.:-``): it reaches reports and the audit trail, so it must
        never carry free text about a person."""
        self.services.notices.cancel(mid, reason)

    # -- dispatch and inbound reports --------------------------------------------------
    def dispatch(self, limit: int | None = None, *, urgent_only: bool = False) -> int:
        """Submit due messages to the gateway, urgent first, deciding deferred
        ones again and checking consent right before submission; returns how
        many were submitted.  ``urgent_only`` takes urgent notices only."""
        return self.services.dispatch.dispatch(limit, urgent_only=urgent_only)

    def process_reports(self, stop: Callable[[], bool] | None = None) -> int:
        """Pull due status reports from the gateway and apply them; ``stop`` is
        asked between batches."""
        return self.services.inbound.process_reports(stop)

    def handle_report(self, report: StatusReport) -> bool:
        """Apply one inbound report (idempotent; never regresses status).
        Returns whether it changed anything."""
        return self.services.inbound.handle_report(report)

    def handle_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        """Framework-neutral webhook entry point: authenticate, parse, apply
        idempotently.  Raises :class:`~tsuchi.errors.WebhookRejected` (with an
        HTTP status) for unsigned, forged, replayed, malformed or oversized
        requests; nothing is recorded then."""
        return self.services.inbound.handle_webhook(headers, body)

    def handle_cm_callback(
        self, route: str, token: str, headers: Mapping[str, str], body: bytes
    ) -> WebhookResult:
        """One CM.com callback (``route``: ``status``, ``inbound`` or ``events``)
        as ``POST /webhooks/cm/{token}/{route}`` receives it; see docs/cm.md.
        Raises :class:`~tsuchi.errors.WebhookRejected`: 404 for a wrong token,
        400 for a body that cannot be parsed."""
        return self.services.callbacks.handle(route, token, headers, body)

    def inbound(self, account_id: UUID) -> list[InboundView]:
        """What the customer wrote (incoming messages), oldest first: text and
        media references (URL, MIME type, size; never fetched) decrypted, the
        notice each answered (None if it matched none); the erased marker
        once the customer is erased."""
        return self.services.conversations.of_account(account_id)

    def reply(self, account_id: UUID, text: str, *, operator: str) -> ReplyResult:
        """An operator answers the customer in free text, within
        ``operator_reply_window`` after they last wrote, on their channel;
        recorded with ``operator`` before it is sent (once, never retried)."""
        return self.services.conversations.reply(account_id, text, operator)

    # -- flows -----------------------------------------------------------------------
    def sweep(self, max_timers: int = 1000, stop: Callable[[], bool] | None = None) -> SweepStats:
        """One worker pass: dispatch (urgent first), status reports, due timers.
        ``stop`` is asked between steps, so a stopping worker finishes quickly."""
        return self.services.sweep.sweep(max_timers, stop)

    def register_deadline(self, spec: DeadlineSpec) -> UUID:
        """Register a card expiry, payment due date, mileage expiry or document
        deadline; reminders are scheduled at its offsets (days before)."""
        self.services.deadlines.register([spec])
        return deadline_id(spec.sender_id, spec.kind, spec.reference)

    def register_deadlines(self, specs: Iterable[DeadlineSpec], chunk: int = 2000) -> int:
        """Bulk registration; returns how many were new."""
        return self.services.deadlines.register(specs, chunk)

    def cancel_deadline(self, sender_id: UUID, kind: str, reference: str, reason: str) -> int:
        """Cancel a deadline's reminders; returns how many timers were cancelled."""
        return self.services.deadlines.cancel(sender_id, kind, reference, reason)

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
        return self.services.fraud.raise_alert(
            sender_id, account_id, card_last4, merchant, amount, at, alert_ref
        )

    def fraud_case(self, case_id: UUID) -> dict[str, Any]:
        """The fraud case: state, account, card's last four digits, message."""
        return self.services.fraud.summary(case_id)

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
        the sweep in chunks, as bulk notices."""
        return self.services.broadcasts.start(
            sender_id, name, template, account_ids, variables, urgency, requested_by
        )

    def broadcast_report(self, broadcast_id: UUID) -> dict[str, Any]:
        """Recipients, replies by answer, and who has not answered yet."""
        return self.services.broadcasts.report(broadcast_id)

    # -- projections: audit trail and delivery report ------------------------------------
    @property
    def audit(self) -> AuditTrail:
        """The tamper-evident audit trail (hash chain, signed checkpoints
        anchored in ``settings.resolved_audit_anchor()``, export)."""
        if self._audit is None:
            self._audit = AuditTrail(
                self.store,
                self.keyring.signing_key,
                anchor=FileAuditAnchor(self.settings.resolved_audit_anchor()),
                gap_settle=self.settings.audit_gap_settle,
            )
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
        """Extend the hash chain, sign a checkpoint and anchor it (a periodic
        worker job, every ``settings.audit_checkpoint_every``)."""
        self.audit.checkpoint(self.now())

    # -- personal data ---------------------------------------------------------------
    def erase_account(self, account_id: UUID, requested_by: str) -> int:
        """Erase a customer by destroying their data keys (crypto-shredding):
        every event still loads, personal fields then read as the erased
        marker.  Returns how many pending messages were cancelled."""
        return self.services.privacy.erase(account_id, requested_by)

    def compact_storage(self) -> bool:
        """Push destroyed key material out of the database's old page images
        now (SQLite: checkpoint and truncate the WAL; PostgreSQL: vacuum the
        tables erasure writes).  ``erase_account`` does this already; this
        returns whether it could complete (False on SQLite while another
        connection holds a read transaction: try again once it ends)."""
        return self.services.privacy.compact()

    def rotate_subject_key(self, account_id: UUID) -> int:
        """Give a customer a new data key for new writes; returns its version."""
        return self.services.privacy.rotate_subject_key(account_id)

    def rewrap_data_keys(self, new_kek: KeyEncryptionKey) -> int:
        """Re-wrap every data key under ``new_kek`` and record its id, in one
        transaction; events are untouched.  Returns how many keys."""
        return self.services.privacy.rewrap_data_keys(new_kek)

    def subject_access_report(self, account_id: UUID) -> dict[str, Any]:
        """Everything held about one customer (APPI disclosure request): profile,
        consents with evidence and history, messages with content and timeline."""
        return self.services.privacy.subject_access_report(account_id)

    # -- reports and worker probes -----------------------------------------------------
    def delivery_summary(self) -> list[dict[str, Any]]:
        """Counts of messages by tenant, purpose, channel, status and, for
        blocked, deferred and cancelled ones, the reason."""
        return self.services.summaries.delivery_summary()

    def latest_request_time(self) -> datetime | None:
        """When the newest notice was requested (None before the first)."""
        return self.services.summaries.latest_request_time()

    def wait_for_urgent(self, timeout: float) -> bool:
        """Block until a unit of work of this engine commits a due urgent notice
        (True) or ``timeout`` seconds pass (False); other processes' urgent
        notices are found by :meth:`urgent_due`."""
        return self.services.dispatch.wait_for_urgent(timeout)

    def urgent_due(self) -> bool:
        """Whether an urgent notice waits to be claimed (one read, no lock)."""
        return self.services.dispatch.urgent_due()

    def readiness(self) -> str | None:
        """None when this engine can work now (database reachable, its file
        where the URL names it, schema current, the loaded KEK the database's);
        otherwise a short reason.  ``GET /readyz`` answers 503 with it."""
        return readiness_problem(self.store, self.keyring.kek.key_id)

    def pending_dispatch(self) -> int:
        """How many messages wait in the outbox."""
        return self.services.dispatch.pending()


__all__ = [
    "AccountView",
    "ConsentView",
    "DeadlineSpec",
    "Engine",
    "InboundMediaView",
    "InboundView",
    "MessageView",
    "ReplyResult",
    "SenderView",
    "SweepStats",
    "WebhookResult",
]
