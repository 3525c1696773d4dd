"""Baseline: the schema of the release before revisions existed (schema version 1).

The ten tables that release's engine created on first start: tsuchi's own
(keys, blind-index look-ups, read models, outbox, timers, broadcast
recipients, orphan reports, the ``tsuchi_meta`` record) and the event store's
``tsuchi_events``, in the shape ``eventsourcing-sqlalchemy`` 1.0 gives it
(``CREATE_TABLE`` is off in tsuchi's store, so only this revision creates it).
Frozen here as DDL: later changes are later revisions, never edits of this one.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    meta = op.create_table(
        "tsuchi_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "tsuchi_data_keys",
        sa.Column("subject_id", sa.String(32), primary_key=True),
        sa.Column("key_version", sa.Integer, primary_key=True),
        sa.Column("wrapped", sa.LargeBinary, nullable=True),
        sa.Column("kek_id", sa.String(32), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("erased_at", TZ, nullable=True),
    )
    op.create_table(
        "tsuchi_lookup",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(32), primary_key=True),
    )
    op.create_table(
        "tsuchi_outbox",
        sa.Column("message_id", sa.String(32), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("due_at", TZ, nullable=False),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claimed_at", TZ, nullable=True),
        sa.Column("submitting_at", TZ, nullable=True),
    )
    op.create_index("tsuchi_outbox_due", "tsuchi_outbox", ["claimed_by", "priority", "due_at"])
    op.create_table(
        "tsuchi_message_view",
        sa.Column("message_id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("sender_id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("urgency", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("carrier", sa.String(16), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("fallback", sa.Boolean, nullable=False),
        sa.Column("correlation_id", sa.String(128), nullable=False),
        sa.Column("requested_at", TZ, nullable=False),
        sa.Column("routed_at", TZ, nullable=True),
        sa.Column("deferred_until", TZ, nullable=True),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index(
        "ix_tsuchi_message_view_correlation_id", "tsuchi_message_view", ["correlation_id"]
    )
    op.create_index(
        "tsuchi_message_view_cap",
        "tsuchi_message_view",
        ["account_id", "sender_id", "purpose", "routed_at"],
    )
    op.create_table(
        "tsuchi_consent_view",
        sa.Column("consent_id", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("sender_id", sa.String(32), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("granted", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("ix_tsuchi_consent_view_account_id", "tsuchi_consent_view", ["account_id"])
    op.create_table(
        "tsuchi_timers",
        sa.Column("id", sa.String(160), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("due_at", TZ, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claimed_at", TZ, nullable=True),
        sa.Column("fired_at", TZ, nullable=True),
        sa.Column("late", sa.Boolean, nullable=False),
    )
    op.create_index("tsuchi_timers_due", "tsuchi_timers", ["fired_at", "due_at"])
    op.create_table(
        "tsuchi_broadcast_recipients",
        sa.Column("broadcast_id", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.String(32), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("message_id", sa.String(32), nullable=True),
        sa.Column("reply", sa.String(16), nullable=True),
    )
    op.create_index(
        "tsuchi_broadcast_pending",
        "tsuchi_broadcast_recipients",
        ["broadcast_id", "message_id", "seq"],
    )
    op.create_table(
        "tsuchi_orphan_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("reference", sa.String(80), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("reported_at", TZ, nullable=False),
        sa.Column("received_at", TZ, nullable=False),
    )
    op.create_index("ix_tsuchi_orphan_reports_reference", "tsuchi_orphan_reports", ["reference"])
    op.create_table(
        "tsuchi_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column(
            "originator_id",
            sa.BINARY(16).with_variant(postgresql.UUID(), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "originator_version",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("state", sa.LargeBinary, nullable=False),
    )
    op.create_index(
        "tsuchi_events_aggregate_idx",
        "tsuchi_events",
        ["originator_id", "originator_version"],
        unique=True,
    )
    op.bulk_insert(meta, [{"key": "schema_version", "value": "1"}])


def downgrade() -> None:
    for table in (
        "tsuchi_events",
        "tsuchi_orphan_reports",
        "tsuchi_broadcast_recipients",
        "tsuchi_timers",
        "tsuchi_consent_view",
        "tsuchi_message_view",
        "tsuchi_outbox",
        "tsuchi_lookup",
        "tsuchi_data_keys",
        "tsuchi_meta",
    ):
        op.drop_table(table)
