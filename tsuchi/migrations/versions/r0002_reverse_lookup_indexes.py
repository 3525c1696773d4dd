"""Indexes for the two look-ups that scanned a whole table.

- ``tsuchi_lookup`` by ``account_id``: erasure and a change of mobile number
  delete an account's blind indexes; the primary key leads with ``kind``,
  ``tenant`` and ``digest``, so without this index each is a full scan.
- ``tsuchi_broadcast_recipients`` by ``message_id``: every reply to a
  broadcast message records its answer there; ``tsuchi_broadcast_pending``
  leads with ``broadcast_id``, so each reply scanned every recipient row of
  every broadcast.

``tsuchi_meta.schema_version`` becomes 2, so a release from before revisions
refuses a database upgraded past it (``SchemaTooNew``) instead of running on it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

meta = sa.table("tsuchi_meta", sa.column("key", sa.String), sa.column("value", sa.Text))


def _schema_version(value: str) -> None:
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value=value))


def upgrade() -> None:
    op.create_index("tsuchi_lookup_account", "tsuchi_lookup", ["account_id"])
    op.create_index(
        "tsuchi_broadcast_recipients_message", "tsuchi_broadcast_recipients", ["message_id"]
    )
    _schema_version("2")


def downgrade() -> None:
    _schema_version("1")
    op.drop_index("tsuchi_broadcast_recipients_message", "tsuchi_broadcast_recipients")
    op.drop_index("tsuchi_lookup_account", "tsuchi_lookup")
