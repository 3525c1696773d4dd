"""The audit export format's old module path, kept for compatibility.

Existing imports of ``tsuchi.projections.audit_format`` keep working; the
code lives in the :mod:`tsuchi.projections.audit` package (specification in
:mod:`~tsuchi.projections.audit.format`, records in
:mod:`~tsuchi.projections.audit.records`, verifier in
:mod:`~tsuchi.projections.audit.verify`).  New code imports from there.
"""

from __future__ import annotations

from tsuchi.projections.audit import (
    ACTOR_KEYS,
    CHECKPOINT_CONTEXT,
    CHECKPOINT_FIELDS,
    CHECKPOINTS_FILE,
    FORMAT,
    MANIFEST_FIELDS,
    MANIFEST_FILE,
    RECORD_FIELDS,
    RECORDS_FILE,
    REFERENCE_KEYS,
    SELECTION_CONTEXT,
    STUB_FIELDS,
    SUMMARY_KEYS,
    SYSTEM_ACTOR,
    ZERO_HASH,
    EventFacts,
    VerifyResult,
    actor_of,
    canonical_json,
    checkpoint_message,
    entry_hash,
    event_facts,
    key_id,
    make_record,
    parse_public_key,
    parse_topic,
    recorded_at_of,
    redacted_stub,
    selection_message,
    sha256_hex,
    summary_of,
    utc_iso,
    verify_export,
)

__all__ = [
    "ACTOR_KEYS",
    "CHECKPOINTS_FILE",
    "CHECKPOINT_CONTEXT",
    "CHECKPOINT_FIELDS",
    "FORMAT",
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
