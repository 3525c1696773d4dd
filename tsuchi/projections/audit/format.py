"""The audit export format ``tsuchi-audit/v1``: canonical JSON, hashes, signed messages, fields.

Why this module exists: compliance officers and outside auditors must be able
to check an audit export with nothing but its files and the engine's public
key, and to write their own verifier from the specification alone.  This
module is that specification in code: constants and pure functions (no
database, no engine) shared by the code that builds the chain's records
(:mod:`tsuchi.projections.audit.records`, used by
:mod:`tsuchi.infrastructure.audit`) and the offline verifier
(:mod:`tsuchi.projections.audit.verify`).


``records.jsonl``
    One line per event, in notification order: the canonical JSON (see
    :func:`canonical_json`) of a record, then ``\\n``.  Fields: ``seq``
    (1-based, contiguous), ``notification_id``, ``recorded_at``, ``tenant``,
    ``aggregate_type``, ``aggregate_id``, ``aggregate_version``,
    ``event_type``, ``actor``, ``correlation_id``, ``summary``,
    ``event_digest`` (hex SHA-256 of the stored event's state bytes),
    ``prev_hash`` and ``entry_hash``.  ``entry_hash`` is the hex SHA-256 of
    ``b"tsuchi-audit/v1" + b"\\0" + canonical_json(record minus entry_hash)``;
    the first record of the chain has ``prev_hash`` of 64 zeros, every later
    one the previous record's ``entry_hash``.

    ``recorded_at`` is the event's own ``timestamp`` (when the aggregate
    created it) in UTC, always written as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``
    (fixed width, so strings sort as times).  It is *not* monotonic in
    notification order: events of aggregates saved together can carry
    timestamps in a different order than they were committed.

    ``aggregate_id`` is the canonical hyphenated lower-case UUID.
    ``tenant`` is ``""`` when it cannot be attributed; ``actor`` is
    ``"system"`` unless the event names a person or system in plaintext;
    ``correlation_id`` is ``""`` except for a message's events.  ``summary``
    holds only the personal-data-free keys of :data:`SUMMARY_KEYS`.

``checkpoints.jsonl``
    Canonical JSON objects ``{"seq", "head", "issued_at", "key_id",
    "signature"}``, ascending: ``seq`` strictly increases, ``issued_at``
    (same UTC format) never decreases.  ``head`` is the ``entry_hash`` at
    ``seq``; ``signature`` is base64 Ed25519 over
    :func:`checkpoint_message`.

``manifest.json``
    ``format``, ``origin``, ``first_seq``, ``last_seq``, ``record_count``,
    ``anchor_prev_hash``, ``records_sha256``, ``public_key`` (base64 of the
    raw 32-byte key), ``key_id`` (first 16 hex of SHA-256 of the raw
    key), ``exported_at`` (the export's time, UTC format), ``range``
    (``"head"``: everything chained when it was made; ``"bounded"``: a window
    that ends earlier on purpose, ``--until``), ``malformed_count`` (records
    of stored events that could not be read, see :data:`MALFORMED_KEY`),
    ``malformed_seqs`` (the first 1,000 of their seqs) and
    ``manifest_signature``: base64 Ed25519 over :func:`manifest_message`, so
    no field (a cut-back ``last_seq`` or ``records_sha256`` included) can be
    changed without the key.  An export starts at seq 1 (anchor: 64 zeros)
    or just after a checkpoint, which it includes (its ``head`` is the
    anchor); it ends with a checkpoint at ``last_seq``.

A stored event that is not a JSON object, or has no timestamp, is chained as
what it is: ``event_digest`` of its bytes, type and aggregate from its topic,
``recorded_at`` of the record before it, and ``summary`` holding
:data:`MALFORMED_KEY` with a code (``not_json_object`` or ``no_timestamp``).

Tenant-filtered exports (an extension; full exports never use it).  A hash
chain is global, so one tenant's records alone cannot be verified as a
contiguous chain.  A tenant export therefore keeps *every* line of the range,
but a record of another tenant is reduced to a stub
``{"entry_hash", "prev_hash", "redacted": true, "seq"}``: the chain links
(``prev_hash`` of each line = ``entry_hash`` of the line before) and the
signed heads still verify, while nothing of the other tenant is disclosed
(the hashes cover a digest of encrypted state, so they reveal nothing).  A
stub's own ``entry_hash`` cannot be recomputed, so swapping one of the
tenant's records for a stub would not break the chain; to detect that, the
manifest adds ``tenant``, ``redacted_count`` and ``selection_signature``:
base64 Ed25519 over :func:`selection_message`, which binds
``records_sha256`` (the exact bytes, stubs included).  Tenant attribution
itself is the signer's statement; a full export shows it in every record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

FORMAT = "tsuchi-audit/v1"
CHECKPOINT_CONTEXT = "tsuchi-audit-checkpoint/v1"
SELECTION_CONTEXT = "tsuchi-audit-selection/v1"
MANIFEST_CONTEXT = "tsuchi-audit-manifest/v1"
MALFORMED_KEY = "malformed"
"""``summary`` key of a record whose stored event could not be read (value: why)."""
RANGES = ("head", "bounded")
ZERO_HASH = "0" * 64

RECORDS_FILE = "records.jsonl"
CHECKPOINTS_FILE = "checkpoints.jsonl"
MANIFEST_FILE = "manifest.json"

RECORD_FIELDS = frozenset(
    {
        "seq",
        "notification_id",
        "recorded_at",
        "tenant",
        "aggregate_type",
        "aggregate_id",
        "aggregate_version",
        "event_type",
        "actor",
        "correlation_id",
        "summary",
        "event_digest",
        "prev_hash",
        "entry_hash",
    }
)
STUB_FIELDS = frozenset({"seq", "prev_hash", "entry_hash", "redacted"})
CHECKPOINT_FIELDS = frozenset({"seq", "head", "issued_at", "key_id", "signature"})
MANIFEST_FIELDS = frozenset(
    {
        "format",
        "origin",
        "first_seq",
        "last_seq",
        "record_count",
        "anchor_prev_hash",
        "records_sha256",
        "public_key",
        "key_id",
        "exported_at",
        "range",
        "malformed_count",
        "malformed_seqs",
        "manifest_signature",
    }
)

SUMMARY_KEYS = (
    "status",
    "channel",
    "purpose",
    "reason",
    "urgency",
    "carrier",
    "attempt",
    "kind",
    "code",
)
"""Event fields copied into ``summary``: codes and statuses, never personal data."""


# -- canonical JSON and hashes ------------------------------------------------------------


def _check_no_floats(obj: Any, path: str = "$") -> None:
    if isinstance(obj, float):
        raise TypeError(f"canonical JSON has no floats (at {path})")
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"canonical JSON keys are strings (at {path})")
            _check_no_floats(v, f"{path}.{k}")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _check_no_floats(v, f"{path}[{i}]")


def canonical_json(obj: Any) -> bytes:
    """UTF-8 canonical JSON: keys sorted (by code point), separators ``,`` and
    ``:`` without spaces, non-ASCII characters as themselves, no floats.

    String escaping is JSON's minimum as Python writes it: ``\\"``, ``\\\\``,
    ``\\n``, ``\\r``, ``\\t``, ``\\b``, ``\\f`` and other control characters
    below U+0020 as ``\\u00xx`` (lower-case hex); everything else literal.
    """
    _check_no_floats(obj)
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry_hash(record: Mapping[str, Any]) -> str:
    """Hex SHA-256 of ``tsuchi-audit/v1``, NUL, canonical JSON of the record
    without its ``entry_hash`` field (ignored if present)."""
    body = {k: v for k, v in record.items() if k != "entry_hash"}
    return sha256_hex(FORMAT.encode() + b"\0" + canonical_json(body))


def checkpoint_message(origin: str, seq: int, head: str, issued_at: str) -> bytes:
    """The bytes a checkpoint signature covers."""
    return f"{CHECKPOINT_CONTEXT}\n{origin}\n{seq}\n{head}\n{issued_at}\n".encode()


def selection_message(
    origin: str, tenant: str, first_seq: int, last_seq: int, records_sha256: str
) -> bytes:
    """The bytes a tenant export's ``selection_signature`` covers."""
    return (
        f"{SELECTION_CONTEXT}\n{origin}\n{tenant}\n{first_seq}\n{last_seq}\n{records_sha256}\n"
    ).encode()


def manifest_message(manifest: Mapping[str, Any]) -> bytes:
    """The bytes ``manifest_signature`` covers: the context line, then the
    canonical JSON of every other manifest field."""
    body = {k: v for k, v in manifest.items() if k != "manifest_signature"}
    return MANIFEST_CONTEXT.encode() + b"\n" + canonical_json(body)


def key_id(public_key: bytes) -> str:
    """First 16 hex digits of SHA-256 of the raw 32-byte public key."""
    return sha256_hex(public_key)[:16]


def utc_iso(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC (naive times are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
