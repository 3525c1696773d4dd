"""The anchor log ``tsuchi-audit-anchor/v1``: signed checkpoints kept outside the database.

Why this module exists: a hash chain and its checkpoints stored in the same
database prove nothing against whoever can write that database (they can
delete the checkpoints, recompute the chain and have it signed again).  So
every signed checkpoint is also appended to a log the database writer cannot
rewrite (a local file, WORM storage in production), and both the export (before
it signs) and the offline verifier (``tsuchi audit verify --anchor``) check
that the chain *extends* what was anchored.  This module is the log's format
and the pure continuity rules; writing the log is
:mod:`tsuchi.infrastructure.audit_anchor`.

The log is UTF-8 JSON lines, each the canonical JSON (see
:func:`~tsuchi.projections.audit.format.canonical_json`) of
``{"format": "tsuchi-audit-anchor/v1", "origin", "seq", "head",
"issued_at", "key_id", "signature"}`` followed by ``\\n``: the fields of a
checkpoint (``signature`` over
:func:`~tsuchi.projections.audit.format.checkpoint_message`) plus the
``origin`` of the chain it belongs to.  Lines are in append order; several
processes may append, so ``seq`` need not grow from line to line, but one
origin and seq always carry one head (the same checkpoint may appear twice).
A line that is not of this form, a truncated last line included, makes the
whole log unreadable (:class:`~tsuchi.errors.AuditAnchorCorrupt`, naming the
file, the line and the rule): an anchor that cannot be read anchors nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tsuchi.errors import AuditAnchorCorrupt
from tsuchi.ports import AnchoredCheckpoint
from tsuchi.projections.audit.format import canonical_json, utc_iso

ANCHOR_FORMAT = "tsuchi-audit-anchor/v1"
ANCHOR_FILE = "audit-anchor.jsonl"
"""The log's file name when the configured anchor location is a directory."""

ANCHOR_FIELDS = frozenset({"format", "origin", "seq", "head", "issued_at", "key_id", "signature"})


def anchor_path(location: str | Path) -> Path:
    """The log file of an anchor location: the path itself, or
    :data:`ANCHOR_FILE` inside it when it is a directory."""
    path = Path(location)
    return path / ANCHOR_FILE if path.is_dir() else path


def anchor_line(cp: AnchoredCheckpoint) -> bytes:
    """One line of the log (canonical JSON and ``\\n``)."""
    return (
        canonical_json(
            {
                "format": ANCHOR_FORMAT,
                "origin": cp.origin,
                "seq": cp.seq,
                "head": cp.head,
                "issued_at": cp.issued_at,
                "key_id": cp.key_id,
                "signature": cp.signature,
            }
        )
        + b"\n"
    )


def _hex(v: Any, n: int) -> bool:
    return isinstance(v, str) and len(v) == n and all(c in "0123456789abcdef" for c in v)


def _utc(v: Any) -> bool:
    from datetime import datetime

    if not isinstance(v, str) or not v.endswith("Z"):
        return False
    try:
        return utc_iso(datetime.fromisoformat(v)) == v
    except ValueError:
        return False


def parse_anchor_line(path: str, n: int, line: bytes) -> AnchoredCheckpoint:
    """One line of the log, checked; :class:`AuditAnchorCorrupt` names the
    rule it breaks."""
    if not line.endswith(b"\n"):
        raise AuditAnchorCorrupt(path, n, "the line is truncated (no newline at its end)")
    try:
        obj = json.loads(line)
    except ValueError:
        raise AuditAnchorCorrupt(path, n, "the line is not JSON") from None
    if not isinstance(obj, dict) or set(obj) != ANCHOR_FIELDS:
        raise AuditAnchorCorrupt(path, n, f"the fields are not those of {ANCHOR_FORMAT}")
    if obj["format"] != ANCHOR_FORMAT:
        raise AuditAnchorCorrupt(path, n, f"format is not {ANCHOR_FORMAT}")
    seq = obj["seq"]
    if type(seq) is not int or seq < 1:
        raise AuditAnchorCorrupt(path, n, "seq is not a positive integer")
    if not isinstance(obj["origin"], str) or not obj["origin"]:
        raise AuditAnchorCorrupt(path, n, "origin is missing")
    if not _hex(obj["head"], 64):
        raise AuditAnchorCorrupt(path, n, "head is not 64 hex digits")
    if not _hex(obj["key_id"], 16):
        raise AuditAnchorCorrupt(path, n, "key_id is not 16 hex digits")
    if not _utc(obj["issued_at"]):
        raise AuditAnchorCorrupt(path, n, "issued_at is not a UTC ISO-8601 time")
    if not isinstance(obj["signature"], str) or not obj["signature"]:
        raise AuditAnchorCorrupt(path, n, "signature is missing")
    if canonical_json(obj) + b"\n" != line:
        raise AuditAnchorCorrupt(path, n, "the line is not canonical JSON")
    return AnchoredCheckpoint(
        obj["origin"], seq, obj["head"], obj["issued_at"], obj["key_id"], obj["signature"]
    )


def iter_anchor_log(
    location: str | Path, offset: int = 0
) -> Iterator[tuple[int, AnchoredCheckpoint]]:
    """``(end offset, checkpoint)`` for each line of the log from byte
    ``offset`` on (a missing file is an empty log).  Reads line by line."""
    path = anchor_path(location)
    name = str(path)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as e:
        raise AuditAnchorCorrupt(name, 0, f"cannot be read ({type(e).__name__})") from None
    with f:
        f.seek(offset)
        n = 0
        pos = offset
        for line in f:
            n += 1
            pos += len(line)
            yield pos, parse_anchor_line(name, n, line)


class AnchorIndex:
    """What one pass over the log tells about one chain ``origin``: the
    anchored heads in a seq window, the latest checkpoint, and the origins
    present.  Conflicting heads for one seq make the log corrupt."""

    def __init__(self, origin: str, low: int = 0, high: int | None = None) -> None:
        self.origin = origin
        self.low = low
        self.high = high
        self.in_window: dict[int, AnchoredCheckpoint] = {}
        self.latest: AnchoredCheckpoint | None = None
        self.origins: set[str] = set()
        self.after: list[AnchoredCheckpoint] = []  # beyond ``high``, this origin
        self._seen: dict[int, str] = {}

    def add(self, path: str, cp: AnchoredCheckpoint) -> None:
        self.origins.add(cp.origin)
        if cp.origin != self.origin:
            return
        known = self._seen.get(cp.seq)
        if known is not None and known != cp.head:
            raise AuditAnchorCorrupt(path, 0, f"two different heads are anchored at seq {cp.seq}")
        self._seen[cp.seq] = cp.head
        if self.latest is None or cp.seq > self.latest.seq:
            self.latest = cp
        if cp.seq >= self.low and (self.high is None or cp.seq <= self.high):
            self.in_window[cp.seq] = cp
        elif self.high is not None and cp.seq > self.high and known is None:
            self.after.append(cp)


def read_anchor_index(
    location: str | Path, origin: str, low: int = 0, high: int | None = None
) -> AnchorIndex:
    """One pass over the log for ``origin`` (see :class:`AnchorIndex`)."""
    index = AnchorIndex(origin, low, high)
    name = str(anchor_path(location))
    for _pos, cp in iter_anchor_log(location):
        index.add(name, cp)
    return index


__all__ = [
    "ANCHOR_FIELDS",
    "ANCHOR_FILE",
    "ANCHOR_FORMAT",
    "AnchorIndex",
    "anchor_line",
    "anchor_path",
    "iter_anchor_log",
    "parse_anchor_line",
    "read_anchor_index",
]
