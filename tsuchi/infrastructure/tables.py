"""The engine's own tables, beside the event store's, in the same database.

``tsuchi_meta`` records the schema version and the fingerprint of the KEK the
data keys are wrapped with.  These definitions are what the code reads and
writes; the tables themselves are created and changed only by the Alembic
revisions in :mod:`tsuchi.migrations` (a test checks that both agree).
Read models hold no plaintext personal data: look-ups go through keyed blind
indexes.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

SCHEMA_VERSION = 2
"""``tsuchi_meta.schema_version`` the revisions write: a release that knows
less refuses the database (revision 0002 wrote 2)."""

metadata = MetaData()

meta = Table(
    "tsuchi_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

data_keys = Table(
    "tsuchi_data_keys",
    metadata,
    Column("subject_id", String(32), primary_key=True),
    Column("key_version", Integer, primary_key=True),
    Column("wrapped", LargeBinary, nullable=True),  # NULL once erased
    Column("kek_id", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("erased_at", DateTime(timezone=True), nullable=True),
)

lookup = Table(
    "tsuchi_lookup",
    metadata,
    Column("kind", String(16), primary_key=True),  # "mobile" | "customer_ref"
    Column("tenant", String(64), primary_key=True),
    Column("digest", String(64), primary_key=True),
    Column("account_id", String(32), primary_key=True),
    Index("tsuchi_lookup_account", "account_id"),  # erasure, change of mobile
)

outbox = Table(
    "tsuchi_outbox",
    metadata,
    Column("message_id", String(32), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("priority", Integer, nullable=False),  # 0 urgent, 1 normal, 2 bulk
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("claimed_by", String(64), nullable=True),
    Column("claimed_at", DateTime(timezone=True), nullable=True),
    # Set (committed) just before the gateway call: a claim that went stale after
    # this point may or may not have reached the gateway, and is never resent blindly.
    Column("submitting_at", DateTime(timezone=True), nullable=True),
    Index("tsuchi_outbox_due", "claimed_by", "priority", "due_at"),
)

message_view = Table(
    "tsuchi_message_view",
    metadata,
    Column("message_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("sender_id", String(32), nullable=False),
    Column("account_id", String(32), nullable=False),  # look-ups use the cap index
    Column("template", String(64), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("urgency", String(16), nullable=False),
    Column("channel", String(16), nullable=True),
    Column("carrier", String(16), nullable=True),
    Column("status", String(16), nullable=False),
    Column("reason", String(64), nullable=True),
    Column("fallback", Boolean, nullable=False, default=False),
    Column("correlation_id", String(128), nullable=False, index=True),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("routed_at", DateTime(timezone=True), nullable=True),
    Column("deferred_until", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("tsuchi_message_view_cap", "account_id", "sender_id", "purpose", "routed_at"),
)

consent_view = Table(
    "tsuchi_consent_view",
    metadata,
    Column("consent_id", String(32), primary_key=True),
    Column("account_id", String(32), nullable=False, index=True),
    Column("sender_id", String(32), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("granted", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

timers = Table(
    "tsuchi_timers",
    metadata,
    Column("id", String(160), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("payload", Text, nullable=False),  # JSON of ids only
    Column("claimed_by", String(64), nullable=True),
    Column("claimed_at", DateTime(timezone=True), nullable=True),
    Column("fired_at", DateTime(timezone=True), nullable=True),
    Column("late", Boolean, nullable=False, default=False),
    Index("tsuchi_timers_due", "fired_at", "due_at"),
)

broadcast_recipients = Table(
    "tsuchi_broadcast_recipients",
    metadata,
    Column("broadcast_id", String(32), primary_key=True),
    Column("account_id", String(32), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("message_id", String(32), nullable=True),  # set when its message exists
    Column("reply", String(16), nullable=True),  # safe | need_help | other
    Index("tsuchi_broadcast_pending", "broadcast_id", "message_id", "seq"),
    Index("tsuchi_broadcast_recipients_message", "message_id"),  # a reply's answer
)

orphan_reports = Table(
    "tsuchi_orphan_reports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("reference", String(80), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("code", String(32), nullable=False),
    Column("reported_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)
