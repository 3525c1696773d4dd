"""The audit export format ``tsuchi-audit/v1``, the records it holds, and its offline verifier.

Why this package exists: the audit trail's exports must be checkable by
outside auditors with nothing but the files and a public key, so the format
is kept apart from the database and the engine, in three parts with one job
each:

:mod:`~tsuchi.projections.audit.format`
    the specification: canonical JSON, hashes, signed messages, the fields
    and files of an export (read this to write an independent verifier);
:mod:`~tsuchi.projections.audit.records`
    how a stored tsuchi event becomes a chain record, without decrypting
    anything, and how a tenant export reduces other tenants' records to stubs;
:mod:`~tsuchi.projections.audit.anchor`
    the anchor log (signed checkpoints kept outside the database) and its
    reader;
:mod:`~tsuchi.projections.audit.verify`
    the offline verifier (:func:`verify_export`, :func:`parse_public_key`).

The database side, which extends the chain and writes exports, is
:mod:`tsuchi.infrastructure.audit`.
"""

from __future__ import annotations

from tsuchi.projections.audit.format import (
    CHECKPOINT_CONTEXT,
    CHECKPOINT_FIELDS,
    CHECKPOINTS_FILE,
    FORMAT,
    MALFORMED_KEY,
    MANIFEST_CONTEXT,
    MANIFEST_FIELDS,
    MANIFEST_FILE,
    RECORD_FIELDS,
    RECORDS_FILE,
    SELECTION_CONTEXT,
    STUB_FIELDS,
    SUMMARY_KEYS,
    ZERO_HASH,
    canonical_json,
    checkpoint_message,
    entry_hash,
    key_id,
    manifest_message,
    selection_message,
    sha256_hex,
    utc_iso,
)
from tsuchi.projections.audit.records import (
    ACTOR_KEYS,
    REFERENCE_KEYS,
    SYSTEM_ACTOR,
    EventFacts,
    actor_of,
    event_facts,
    make_record,
    parse_topic,
    recorded_at_of,
    redacted_stub,
    summary_of,
)
from tsuchi.projections.audit.verify import (
    VerifyResult,
    parse_public_key,
    verify_export,
)

__all__ = [
    "ACTOR_KEYS",
    "CHECKPOINTS_FILE",
    "CHECKPOINT_CONTEXT",
    "CHECKPOINT_FIELDS",
    "FORMAT",
    "MALFORMED_KEY",
    "MANIFEST_CONTEXT",
    "MANIFEST_FIELDS",
    "MANIFEST_FILE",
    "RECORDS_FILE",
    "RECORD_FIELDS",
    "REFERENCE_KEYS",
    "SELECTION_CONTEXT",
    "STUB_FIELDS",
    "SUMMARY_KEYS",
    "SYSTEM_ACTOR",
    "ZERO_HASH",
    "EventFacts",
    "VerifyResult",
    "actor_of",
    "canonical_json",
    "checkpoint_message",
    "entry_hash",
    "event_facts",
    "key_id",
    "make_record",
    "manifest_message",
    "parse_public_key",
    "parse_topic",
    "recorded_at_of",
    "redacted_stub",
    "selection_message",
    "sha256_hex",
    "summary_of",
    "utc_iso",
    "verify_export",
]
