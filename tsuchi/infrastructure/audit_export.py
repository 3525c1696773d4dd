"""Writing an audit export: planning its range and streaming its three files.

Why this module exists: an export is what a compliance officer hands an
auditor, so it must be complete or absent, re-verified against the event
store as it is written, and readable by the offline verifier
(:mod:`tsuchi.projections.audit.verify`).  It builds on the chain that
:class:`~tsuchi.infrastructure.audit.AuditTrail` keeps and re-verifies
(:meth:`AuditTrail.export <tsuchi.infrastructure.audit.AuditTrail.export>`
delegates here): it first checks that the chain extends the last checkpoint
anchored outside the database, and refuses to sign anything else; the range
is chosen so it starts at seq 1 or just after a checkpoint and ends at one;
records stream in batches (memory stays constant) to files under temporary
names, renamed only once everything is written, with a signed manifest; any
mismatch raises :class:`~tsuchi.errors.AuditMismatch` and leaves nothing
behind.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import func, select

from tsuchi.errors import AuditError, AuditMismatch, ConcurrencyConflict, InvalidInput
from tsuchi.infrastructure.audit_checkpoints import AuditCheckpoints
from tsuchi.infrastructure.audit_tables import (
    Checkpoint,
    Progress,
    aware,
    chain,
    checkpoint_of_row,
    checkpoints,
    position,
)
from tsuchi.projections.audit.format import (
    CHECKPOINTS_FILE,
    FORMAT,
    MALFORMED_KEY,
    MANIFEST_FILE,
    RECORDS_FILE,
    canonical_json,
    manifest_message,
    selection_message,
)
from tsuchi.projections.audit.records import redacted_stub

log = logging.getLogger("tsuchi.audit")


@dataclass(frozen=True)
class _Plan:
    first_seq: int
    last_seq: int
    end_checkpoint: Checkpoint | None  # None: issue one at last_seq after streaming


class _Writer:
    """Export files written under temporary names, renamed when complete."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.names = (RECORDS_FILE, CHECKPOINTS_FILE, MANIFEST_FILE)
        self.tmp = {n: out_dir / f".{n}.partial" for n in self.names}
        self.records: BinaryIO = self.tmp[RECORDS_FILE].open("wb")
        self.checkpoints: BinaryIO = self.tmp[CHECKPOINTS_FILE].open("wb")
        self.digest = hashlib.sha256()

    def record(self, obj: dict[str, Any]) -> None:
        line = canonical_json(obj) + b"\n"
        self.digest.update(line)
        self.records.write(line)

    def checkpoint(self, cp: Checkpoint) -> None:
        self.checkpoints.write(canonical_json(cp.as_dict()) + b"\n")

    def finish(self, manifest: dict[str, Any]) -> None:
        self.tmp[MANIFEST_FILE].write_bytes(
            json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"
        )
        for f in (self.records, self.checkpoints):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for n in self.names:
            self.tmp[n].replace(self.out_dir / n)

    def abandon(self) -> None:
        for f in (self.records, self.checkpoints):
            f.close()
        for p in self.tmp.values():
            p.unlink(missing_ok=True)


def _stored_checkpoints(trail: AuditCheckpoints, first: int, last: int) -> Iterator[Checkpoint]:
    """This key's checkpoints with ``first <= seq <= last``, ascending, paged."""
    cur = first
    while True:
        with trail.store.session(commit=False) as s:
            rows = s.execute(
                select(checkpoints)
                .where(
                    checkpoints.c.seq >= cur,
                    checkpoints.c.seq <= last,
                    checkpoints.c.key_id == trail.key_id,
                )
                .order_by(checkpoints.c.seq)
                .limit(500)
            ).all()
        if not rows:
            return
        for row in rows:
            yield checkpoint_of_row(row)
        cur = int(rows[-1].seq) + 1


MALFORMED_LISTED = 1000
"""At most this many malformed seqs are listed in a manifest (all are counted)."""


def _plan(
    trail: AuditCheckpoints, tenant: str | None, since: str | None, until: str | None
) -> _Plan:
    with trail.store.session(commit=False) as s:
        head_seq = int(s.execute(select(position.c.seq).where(position.c.id == 1)).scalar_one())
        if head_seq == 0:
            raise AuditError("the audit chain is empty; nothing to export")
        last: int | None = head_seq
        if until is not None:
            last = s.execute(
                select(func.max(chain.c.seq)).where(chain.c.recorded_at < until)
            ).scalar()
            if last is None:
                raise InvalidInput("until", "no audit records were recorded before it")
        target = 1
        if since is not None:
            found = s.execute(
                select(func.min(chain.c.seq)).where(
                    chain.c.recorded_at >= since, chain.c.seq <= last
                )
            ).scalar()
            if found is None:
                raise InvalidInput("since", "no audit records in the window")
            target = int(found)
        end = s.execute(
            select(checkpoints)
            .where(checkpoints.c.seq >= last)
            .order_by(checkpoints.c.seq)
            .limit(1)
        ).first()
        end_cp: Checkpoint | None = None
        if end is not None:
            if end.key_id != trail.key_id:
                raise AuditError(
                    f"the checkpoint closing this range (seq {end.seq}) is signed by "
                    f"another key ({end.key_id}); export a range ending later"
                )
            end_cp = checkpoint_of_row(end)
            last = end_cp.seq
        anchor = s.execute(
            select(func.max(checkpoints.c.seq)).where(
                checkpoints.c.seq < target, checkpoints.c.key_id == trail.key_id
            )
        ).scalar()
        first = 1 if anchor is None else int(anchor) + 1
        if tenant is not None:
            has = s.execute(
                select(chain.c.seq)
                .where(chain.c.tenant == tenant, chain.c.seq >= first, chain.c.seq <= last)
                .limit(1)
            ).first()
            if has is None:
                raise InvalidInput("tenant", "no audit records of this tenant in the range")
    assert last is not None
    return _Plan(first, int(last), end_cp)


def _check_not_overtaken(trail: AuditCheckpoints, last_seq: int, exported_at: str) -> None:
    """An export to the head must cover every checkpoint anchored before its
    ``exported_at`` (the verifier's rule); one anchored concurrently, after
    the range was chosen, makes this export retry rather than fail later."""
    if trail.anchor is None:
        return
    latest = trail.anchor.latest(trail.origin)
    if latest is not None and latest.seq > last_seq and latest.issued_at < exported_at:
        raise ConcurrencyConflict("a checkpoint was anchored while exporting; retry the export")


def write_export(
    trail: AuditCheckpoints,
    out_dir: str | Path,
    now: datetime,
    tenant: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    progress: Progress | None = None,
    batch: int = 1000,
) -> dict[str, Any]:
    """Write an export of ``trail``'s chain to ``out_dir``; returns its
    manifest.  See :meth:`AuditTrail.export
    <tsuchi.infrastructure.audit.AuditTrail.export>`."""
    issued_at = aware(now, "now")
    since_s = None if since is None else aware(since, "since")
    until_s = None if until is None else aware(until, "until")
    if since_s is not None and until_s is not None and since_s >= until_s:
        raise InvalidInput("since", "must be before until")
    if tenant is not None and not tenant:
        raise InvalidInput("tenant", "must not be empty")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if any((out / n).exists() for n in (RECORDS_FILE, CHECKPOINTS_FILE, MANIFEST_FILE)):
        raise InvalidInput("out_dir", "already holds an export; choose an empty directory")
    trail.check_rollback()  # before catch-up re-chains over a rollback
    trail.catch_up_settled(batch)
    trail.check_continuity()
    plan = _plan(trail, tenant, since_s, until_s)
    total = plan.last_seq - plan.first_seq + 1
    writer = _Writer(out)
    try:
        if progress is not None:
            progress(0, total)
        cps = _stored_checkpoints(trail, max(plan.first_seq - 1, 1), plan.last_seq)
        cp = next(cps, None)
        with trail.store.session(commit=False) as s:
            anchor, _nid = trail._anchor(s, plan.first_seq)
        if plan.first_seq > 1:
            if cp is None or cp.seq != plan.first_seq - 1 or cp.head != anchor:
                raise AuditMismatch(
                    plan.first_seq - 1, "the anchor checkpoint does not match the chain"
                )
            trail.check_signature(cp)
            writer.checkpoint(cp)
            cp = next(cps, None)
        done = 0
        redacted = 0
        malformed: list[int] = []
        malformed_count = 0
        head = anchor
        for record in trail._verified_records(plan.first_seq, plan.last_seq, batch):
            seq = record["seq"]
            if MALFORMED_KEY in record["summary"]:
                malformed_count += 1
                if len(malformed) < MALFORMED_LISTED:
                    malformed.append(seq)
            if tenant is None or record["tenant"] == tenant:
                writer.record(record)
            else:
                writer.record(redacted_stub(record))
                redacted += 1
            head = record["entry_hash"]
            while cp is not None and cp.seq <= seq:
                if cp.seq != seq or cp.head != head:
                    raise AuditMismatch(cp.seq, "the stored checkpoint does not match the chain")
                trail.check_signature(cp)
                if cp.seq < plan.last_seq or plan.end_checkpoint is not None:
                    writer.checkpoint(cp)
                cp = next(cps, None)
            done += 1
            if progress is not None and (done % batch == 0 or done == total):
                progress(done, total)
        if plan.end_checkpoint is None:
            writer.checkpoint(trail._issue(plan.last_seq, head, issued_at))
        else:
            trail.ensure_anchored(plan.end_checkpoint)
        bounded = until_s is not None
        if not bounded:
            _check_not_overtaken(trail, plan.last_seq, issued_at)
        records_sha256 = writer.digest.hexdigest()
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "origin": trail.origin,
            "first_seq": plan.first_seq,
            "last_seq": plan.last_seq,
            "record_count": total,
            "anchor_prev_hash": anchor,
            "records_sha256": records_sha256,
            "public_key": base64.b64encode(trail.public_key).decode(),
            "key_id": trail.key_id,
            "exported_at": issued_at,
            "range": "bounded" if bounded else "head",
            "malformed_count": malformed_count,
            "malformed_seqs": malformed,
        }
        if tenant is not None:
            manifest["tenant"] = tenant
            manifest["redacted_count"] = redacted
            manifest["selection_signature"] = base64.b64encode(
                trail._signing_key.sign(
                    selection_message(
                        trail.origin, tenant, plan.first_seq, plan.last_seq, records_sha256
                    )
                )
            ).decode()
        manifest["manifest_signature"] = base64.b64encode(
            trail._signing_key.sign(manifest_message(manifest))
        ).decode()
        writer.finish(manifest)
    except BaseException:
        writer.abandon()
        raise
    log.info(
        "audit export of seq %d..%d written (%d records)", plan.first_seq, plan.last_seq, total
    )
    return manifest
