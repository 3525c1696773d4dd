"""The audit chain's tables, the checkpoint value and the row conversions.

Why this module exists: the chain (:mod:`.audit_chain`), its export
(:mod:`.audit_export`) and the anchor checks share the same four tables and
row shapes; keeping them here keeps each of those modules about one job.

Tables (own :class:`~sqlalchemy.MetaData`, created on first use):

``tsuchi_audit_position``
    One row: the database's stable ``origin`` (``urn:uuid:…``, random, made
    once) and the chain's position (last notification id, seq, head).  It is
    updated in the same transaction as the chain rows it accounts for, with a
    compare-and-set, so every event is chained exactly once.
``tsuchi_audit_chain``
    One row per event: the record of the export format (``summary`` as
    canonical JSON).  Append-only.
``tsuchi_audit_aggregates``
    aggregate id -> tenant and correlation id, because only an aggregate's
    first event (or none of them, for consents and templates, which inherit
    the tenant of the account or sender they refer to) carries them.
``tsuchi_audit_checkpoints``
    Signed heads; seq strictly grows, ``issued_at`` never decreases.  Each is
    also appended to the anchor log outside the database
    (:mod:`.audit_anchor`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text

from tsuchi.errors import InvalidInput
from tsuchi.ports import AnchoredCheckpoint
from tsuchi.projections.audit.format import utc_iso

audit_metadata = MetaData()
SCHEMA_LOCK = threading.Lock()

position = Table(
    "tsuchi_audit_position",
    audit_metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("origin", String(64), nullable=False),
    Column("notification_id", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("head", String(64), nullable=False),
)

chain = Table(
    "tsuchi_audit_chain",
    audit_metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("notification_id", BigInteger, nullable=False, unique=True),
    Column("recorded_at", String(32), nullable=False, index=True),
    Column("tenant", Text, nullable=False),
    Column("aggregate_type", Text, nullable=False),
    Column("aggregate_id", String(36), nullable=False),
    Column("aggregate_version", BigInteger, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("correlation_id", Text, nullable=False),
    Column("summary", Text, nullable=False),
    Column("event_digest", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    Index("tsuchi_audit_chain_tenant", "tenant", "seq"),
)

aggregates = Table(
    "tsuchi_audit_aggregates",
    audit_metadata,
    Column("aggregate_id", String(36), primary_key=True),
    Column("tenant", Text, nullable=False),
    Column("correlation_id", Text, nullable=False),
)

checkpoints = Table(
    "tsuchi_audit_checkpoints",
    audit_metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("head", String(64), nullable=False),
    Column("issued_at", String(32), nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("signature", Text, nullable=False),
)


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: the chain's ``head`` at ``seq`` at ``issued_at``."""

    seq: int
    head: str
    issued_at: str
    key_id: str
    signature: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "head": self.head,
            "issued_at": self.issued_at,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    def anchored(self, origin: str) -> AnchoredCheckpoint:
        """This checkpoint as the anchor log keeps it."""
        return AnchoredCheckpoint(
            origin, self.seq, self.head, self.issued_at, self.key_id, self.signature
        )


Progress = Callable[[int, int], None]
"""``progress(done, total)``: records written so far out of the export's total."""


def uuid_str(value: Any) -> str:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview) and len(bytes(value)) == 16:
        return str(UUID(bytes=bytes(value)))
    return str(UUID(str(value)))


def aware(moment: datetime, name: str) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput(name, "needs a time zone (an aware datetime)")
    return utc_iso(moment)


def record_of_row(row: Any) -> dict[str, Any]:
    return {
        "seq": int(row.seq),
        "notification_id": int(row.notification_id),
        "recorded_at": row.recorded_at,
        "tenant": row.tenant,
        "aggregate_type": row.aggregate_type,
        "aggregate_id": row.aggregate_id,
        "aggregate_version": int(row.aggregate_version),
        "event_type": row.event_type,
        "actor": row.actor,
        "correlation_id": row.correlation_id,
        "summary": json.loads(row.summary),
        "event_digest": row.event_digest,
        "prev_hash": row.prev_hash,
        "entry_hash": row.entry_hash,
    }


def checkpoint_of_row(row: Any) -> Checkpoint:
    return Checkpoint(int(row.seq), row.head, row.issued_at, row.key_id, row.signature)
