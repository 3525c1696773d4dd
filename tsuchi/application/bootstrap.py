"""The one bootstrap: keys and the gateway first, then every service bottom-up.

Keys: load the key files; create them only for a database that holds no
encrypted data yet (a new key is never created for an existing database);
finish a KEK rotation that was interrupted after its commit.  Gateway: the
simulated carrier network unless the settings name CM.com.  Services: built
in :func:`build_services` from the entity services up to the sweep, each
handed only the unit of work, the context and the services it calls down to.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass

from eventsourcing.persistence import OperationalError

from tsuchi.application.accounts import Accounts
from tsuchi.application.callbacks import Callbacks
from tsuchi.application.consents import Consents
from tsuchi.application.context import Context
from tsuchi.application.conversations import Conversations
from tsuchi.application.dispatch import Dispatch
from tsuchi.application.flows.broadcasts import Broadcasts
from tsuchi.application.flows.deadlines import Deadlines
from tsuchi.application.flows.fallbacks import Fallbacks
from tsuchi.application.flows.fraud import Fraud
from tsuchi.application.flows.replies import Replies
from tsuchi.application.inbound import Inbound
from tsuchi.application.notices import Notices
from tsuchi.application.privacy import Privacy
from tsuchi.application.senders import Senders
from tsuchi.application.summaries import Summaries
from tsuchi.application.sweep import Sweep
from tsuchi.application.templates import Templates
from tsuchi.application.unit_of_work import UnitOfWork
from tsuchi.errors import KeyMaterialError, TransientError
from tsuchi.infrastructure.aggregate_cache import AggregateCache
from tsuchi.infrastructure.crypto import (
    KeyRing,
    init_keys,
    load_keys,
    promote_staged_kek,
    staged_kek,
)
from tsuchi.infrastructure.simulator import SimulatedCarrierNetwork
from tsuchi.infrastructure.sql import DatabaseEngine, ScopedSession
from tsuchi.infrastructure.sql.meta import database_kek_id
from tsuchi.infrastructure.store import AggregateStore
from tsuchi.ports import Clock, Gateway
from tsuchi.settings import Settings

log = logging.getLogger("tsuchi")


def default_gateway(settings: Settings, clock: Clock) -> Gateway:
    if settings.gateway == "cm":
        from tsuchi.infrastructure.cm_gateway import DEFAULT_URL, CMGateway

        if not settings.cm_product_token:
            raise KeyMaterialError("gateway cm needs TSUCHI_CM_PRODUCT_TOKEN")
        return CMGateway(settings.cm_product_token, url=settings.cm_url or DEFAULT_URL)
    return SimulatedCarrierNetwork(seed=settings.simulator_seed, clock=clock)


def _first_key_file(settings: Settings) -> str:
    # With an injected KEK the key directory holds only the index and signing
    # keys: a kek.key beside it would be a second, unused KEK on disk.
    return "kek.key" if settings.kek is None else "index.key"


def keys_present(settings: Settings) -> bool:
    return (settings.resolved_keys_dir() / _first_key_file(settings)).exists()


def _kek_override(settings: Settings) -> bytes | None:
    if settings.kek is None:
        return None
    try:
        return base64.b64decode(settings.kek, validate=True)
    except (binascii.Error, ValueError):
        raise KeyMaterialError("TSUCHI_KEK must be base64 of 32 bytes") from None


def load_keyring(settings: Settings, url: str | None, probe: DatabaseEngine | None) -> KeyRing:
    directory = settings.resolved_keys_dir()
    override = _kek_override(settings)
    if not keys_present(settings):
        if database_kek_id(url, probe) is not None:
            raise KeyMaterialError(
                f"no key files in {directory}, but this database holds encrypted personal "
                "data; restore the keys (or set TSUCHI_KEYS_DIR). A new key is never "
                "created for an existing database."
            )
        if not settings.create_keys:
            raise KeyMaterialError(
                f"no key files in {directory}; create them with `tsuchi keys init "
                f"--keys {directory}`"
            )
        init_keys(directory, only_missing=True, with_kek=override is None)
        log.info("created new key files in %s", directory)
    staged = staged_kek(directory)
    if staged is not None and database_kek_id(url, probe) == staged.key_id:
        promote_staged_kek(directory)  # finish a rotation interrupted after its commit
        log.warning("completed an interrupted KEK rotation in %s", directory)
    return load_keys(directory, override)


@dataclass(frozen=True)
class Services:
    """Every service of one engine; the facade delegates to these."""

    uow: UnitOfWork
    senders: Senders
    accounts: Accounts
    templates: Templates
    consents: Consents
    notices: Notices
    summaries: Summaries
    fallbacks: Fallbacks
    deadlines: Deadlines
    fraud: Fraud
    broadcasts: Broadcasts
    dispatch: Dispatch
    inbound: Inbound
    privacy: Privacy
    sweep: Sweep
    callbacks: Callbacks
    conversations: Conversations


def open_store(
    settings: Settings,
    keyring: KeyRing,
    url: str | None,
    host_engine: DatabaseEngine | None,
    host_session: ScopedSession | None,
) -> AggregateStore:
    """The aggregate store on tsuchi's own database (``url``) or the host's."""
    try:
        return AggregateStore(
            keyring=keyring,
            url=url,
            host_engine=host_engine,
            host_session=host_session,
            lock_timeout_ms=settings.db_lock_timeout_ms,
            sqlite_synchronous=settings.sqlite_synchronous,
            cache_ttl=settings.cache_ttl.total_seconds(),
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout.total_seconds(),
        )
    except OperationalError as e:
        raise TransientError(f"database unavailable: {type(e).__name__}") from None


def build_services(ctx: Context, gateway: Gateway) -> Services:
    """The unit of work, entity services, the flows that use them, then the pipelines."""
    uow = UnitOfWork(
        ctx,
        AggregateCache(ctx.settings.aggregate_cache_size, ctx.settings.cache_ttl.total_seconds()),
    )
    senders = Senders(ctx, uow)
    accounts = Accounts(ctx, uow)
    templates = Templates(ctx, uow, senders)
    consents = Consents(ctx, uow, senders, accounts)
    notices = Notices(ctx, uow, senders, accounts, templates, consents)
    fallbacks = Fallbacks(ctx, uow, notices, accounts)
    deadlines = Deadlines(ctx, uow, notices, templates)
    fraud = Fraud(ctx, uow, notices, accounts, templates)
    broadcasts = Broadcasts(ctx, uow, notices, senders, templates)
    replies = Replies(ctx, fraud, broadcasts, consents, notices, templates)
    dispatch = Dispatch(
        ctx, uow, gateway, notices, senders, accounts, templates, consents, fallbacks
    )
    inbound = Inbound(ctx, uow, gateway, notices, accounts, fallbacks, replies)
    privacy = Privacy(ctx, uow, accounts, consents, notices, senders, templates)
    sweep = Sweep(ctx, uow, dispatch, inbound, fallbacks, deadlines, fraud, broadcasts)
    conversations = Conversations(ctx, uow, gateway, senders, accounts, notices, inbound, replies)
    return Services(
        uow,
        senders,
        accounts,
        templates,
        consents,
        notices,
        Summaries(uow),
        fallbacks,
        deadlines,
        fraud,
        broadcasts,
        dispatch,
        inbound,
        privacy,
        sweep,
        Callbacks(ctx, uow, inbound, conversations),
        conversations,
    )
