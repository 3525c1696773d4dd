"""Chain records built from stored events, and the stubs of tenant exports.

Why this module exists: an audit record is derived from a stored event
without decrypting anything, so something has to know which plaintext parts
of a tsuchi event (topic, timestamp, status codes, who acted, the account or
sender it refers to) become a record's fields, and how a record of another
tenant is reduced to a hash-only stub.  That knowledge is tsuchi's, not the
format's (:mod:`tsuchi.projections.audit.format`), and the verifier never
needs it; the database side (:mod:`tsuchi.infrastructure.audit`) and tests
that build exports by hand share it from here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from tsuchi.projections.audit.format import SUMMARY_KEYS, entry_hash, sha256_hex, utc_iso

ACTOR_KEYS = ("requested_by", "approver", "author")
"""Event fields that name who acted, in order of preference (plaintext only)."""

SYSTEM_ACTOR = "system"


# -- facts of one stored event --------------------------------------------------------------


def parse_topic(topic: str) -> tuple[str, str]:
    """``tsuchi.domain.message:Message.Routed`` -> ``("Message", "Routed")``."""
    _module, _, qualname = topic.partition(":")
    aggregate_type, _, event_type = (qualname or topic).partition(".")
    return aggregate_type, event_type


def _plain_str(state: Mapping[str, Any], key: str) -> str | None:
    value = state.get(key)
    return value if isinstance(value, str) else None


def summary_of(state: Mapping[str, Any]) -> dict[str, str | int | bool]:
    """The personal-data-free key facts of a decoded event state."""
    out: dict[str, str | int | bool] = {}
    for key in SUMMARY_KEYS:
        value = state.get(key)
        if isinstance(value, str | int) and not isinstance(value, float):
            out[key] = value
    return out


def actor_of(state: Mapping[str, Any]) -> str:
    for key in ACTOR_KEYS:
        value = _plain_str(state, key)
        if value:
            return value
    return SYSTEM_ACTOR


def _uuid_ref(value: Any) -> str | None:
    if isinstance(value, dict) and value.get("_type_") == "uuid_hex":
        value = value.get("_data_")
    if not isinstance(value, str):
        return None
    try:
        return str(UUID(value))
    except ValueError:
        return None


def recorded_at_of(state: Mapping[str, Any]) -> str | None:
    """The event's ``timestamp`` as :func:`utc_iso`, or None if it has none."""
    value = state.get("timestamp")
    if isinstance(value, dict) and value.get("_type_") == "datetime_iso":
        value = value.get("_data_")
    if not isinstance(value, str):
        return None
    try:
        return utc_iso(datetime.fromisoformat(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class EventFacts:
    """What the audit trail takes from one stored event, before tenant and
    correlation are resolved across aggregates."""

    recorded_at: str | None
    aggregate_type: str
    event_type: str
    actor: str
    summary: dict[str, str | int | bool]
    event_digest: str
    tenant: str | None  # carried by the event itself
    correlation_id: str | None  # carried by the event itself
    references: tuple[str, ...]  # aggregates it refers to (account, sender), by id


REFERENCE_KEYS = ("account_id", "sender_id")
"""Where an aggregate's first event points at the aggregate its tenant comes from."""


def event_facts(topic: str, state_bytes: bytes) -> EventFacts:
    """Decode a stored event's JSON state (without decrypting anything)."""
    state = json.loads(state_bytes)
    if not isinstance(state, dict):
        raise ValueError("event state is not a JSON object")
    aggregate_type, event_type = parse_topic(topic)
    refs = tuple(r for r in (_uuid_ref(state.get(k)) for k in REFERENCE_KEYS) if r is not None)
    return EventFacts(
        recorded_at=recorded_at_of(state),
        aggregate_type=aggregate_type,
        event_type=event_type,
        actor=actor_of(state),
        summary=summary_of(state),
        event_digest=sha256_hex(state_bytes),
        tenant=_plain_str(state, "tenant"),
        correlation_id=_plain_str(state, "correlation_id"),
        references=refs,
    )


# -- records ---------------------------------------------------------------------------------


def make_record(
    *,
    seq: int,
    notification_id: int,
    recorded_at: str,
    tenant: str,
    aggregate_type: str,
    aggregate_id: str,
    aggregate_version: int,
    event_type: str,
    actor: str,
    correlation_id: str,
    summary: Mapping[str, str | int | bool],
    event_digest: str,
    prev_hash: str,
) -> dict[str, Any]:
    """A complete record, ``entry_hash`` included."""
    record: dict[str, Any] = {
        "seq": seq,
        "notification_id": notification_id,
        "recorded_at": recorded_at,
        "tenant": tenant,
        "aggregate_type": aggregate_type,
        "aggregate_id": aggregate_id,
        "aggregate_version": aggregate_version,
        "event_type": event_type,
        "actor": actor,
        "correlation_id": correlation_id,
        "summary": dict(summary),
        "event_digest": event_digest,
        "prev_hash": prev_hash,
    }
    record["entry_hash"] = entry_hash(record)
    return record


def redacted_stub(record: Mapping[str, Any]) -> dict[str, Any]:
    """Another tenant's record as a tenant export shows it."""
    return {
        "seq": record["seq"],
        "prev_hash": record["prev_hash"],
        "entry_hash": record["entry_hash"],
        "redacted": True,
    }
