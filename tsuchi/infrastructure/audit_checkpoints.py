"""Signed checkpoints of the audit chain, anchored outside the database.

Why this module exists: a checkpoint is the chain's head signed with the
engine's Ed25519 key; stored only in the database it would prove nothing
against whoever can write the database (delete the checkpoints, recompute the
chain, and tsuchi would sign the forgery).  So before signing, the chain must
extend the last checkpoint anchored outside the database
(:class:`~tsuchi.ports.AuditAnchor`; same head at its seq, and a chain that
reaches it) and the head this process chained itself, and every checkpoint
signed is appended to the anchor log before it is relied on.  The chain
itself (catch-up and re-verification) is :mod:`.audit_chain`.
"""

from __future__ import annotations

import base64
import logging
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from eventsourcing.persistence import IntegrityError as ESIntegrityError
from sqlalchemy import exc as sa_exc
from sqlalchemy import insert, select

from tsuchi.errors import AuditAnchorMismatch, AuditMismatch, ConcurrencyConflict, InvalidInput
from tsuchi.infrastructure.audit_chain import AuditChain
from tsuchi.infrastructure.audit_tables import (
    Checkpoint,
    aware,
    chain,
    checkpoint_of_row,
    checkpoints,
    position,
)
from tsuchi.ports import AnchoredCheckpoint
from tsuchi.projections.audit.format import ZERO_HASH, checkpoint_message

log = logging.getLogger("tsuchi.audit")


class AuditCheckpoints(AuditChain):
    """The chain plus its signed, anchored checkpoints."""

    # -- continuity: the anchor log and what this process chained ------------------------
    def _head_at(self, seq: int) -> str | None:
        with self.store.session(commit=False) as s:
            found = s.execute(select(chain.c.entry_hash).where(chain.c.seq == seq)).scalar()
        return None if found is None else str(found)

    def check_rollback(self) -> None:
        """Refuse a chain that lost or changed the head this process chained
        last (call it before a catch-up, which would re-chain over it)."""
        if self._chained is not None:
            seq, head = self._chained
            if self._head_at(seq) != head:
                raise AuditMismatch(
                    seq, "the chain was rolled back: this process chained this seq and it changed"
                )

    def check_continuity(self) -> AnchoredCheckpoint | None:
        """Refuse a chain that does not extend what was fixed before: the last
        anchored checkpoint (same head at its seq, and a chain that reaches
        it) and the head this process chained last.  Returns the last
        anchored checkpoint (None if nothing is anchored)."""
        self.check_rollback()
        if self.anchor is None:
            return None
        latest = self.anchor.latest(self.origin)
        if latest is None:
            others = self.anchor.origins() - {self.origin}
            if others:
                raise AuditAnchorMismatch(
                    0,
                    f"the anchor log {self.anchor.location} holds checkpoints of another chain "
                    f"({sorted(others)[0]}) and none of this one ({self.origin}): the audit "
                    "tables were recreated, or the anchor belongs to another database",
                )
            return None
        found = self._head_at(latest.seq)
        if found is None:
            raise AuditAnchorMismatch(
                latest.seq,
                "the chain ends before the last anchored checkpoint: history was cut off",
            )
        if found != latest.head:
            raise AuditAnchorMismatch(
                latest.seq,
                "the chain's head differs from the anchored checkpoint: history was rewritten",
            )
        return latest

    def check_signature(self, cp: Checkpoint) -> None:
        """A stored checkpoint must carry this key's valid signature."""
        try:
            self._public.verify(
                base64.b64decode(cp.signature),
                checkpoint_message(self.origin, cp.seq, cp.head, cp.issued_at),
            )
        except (InvalidSignature, ValueError):
            raise AuditMismatch(cp.seq, "the stored checkpoint's signature is invalid") from None

    def ensure_anchored(self, cp: Checkpoint) -> None:
        """Append ``cp`` to the anchor log unless a checkpoint at or beyond
        its seq is anchored already (after checking it against the chain and
        its signature): a checkpoint stored while the anchor was unreachable,
        or issued before anchoring existed, is anchored on the next run."""
        if self.anchor is None:
            return
        latest = self.anchor.latest(self.origin)
        if latest is not None and latest.seq >= cp.seq:
            return
        if cp.key_id != self.key_id:
            return  # another key's checkpoint: anchored by its signer
        if self._head_at(cp.seq) != cp.head:
            raise AuditMismatch(cp.seq, "the stored checkpoint does not match the chain")
        self.check_signature(cp)
        self.anchor.append(cp.anchored(self.origin))
        log.info("audit checkpoint at seq %d anchored in %s", cp.seq, self.anchor.location)

    # -- checkpoints ---------------------------------------------------------------------
    def latest_checkpoint(self) -> Checkpoint | None:
        _ = self.origin
        with self.store.session(commit=False) as s:
            row = s.execute(select(checkpoints).order_by(checkpoints.c.seq.desc()).limit(1)).first()
        return None if row is None else checkpoint_of_row(row)

    def checkpoint(self, now: datetime, batch: int = 1000) -> Checkpoint | None:
        """Check for a rollback (:meth:`check_rollback`), catch up, check
        continuity (:meth:`check_continuity`), re-verify the chain since the
        latest checkpoint, sign the head and anchor it.
        Returns the latest checkpoint if the head is already signed, or None
        while the chain is empty."""
        issued_at = aware(now, "now")
        self.check_rollback()  # before catch-up re-chains over a rollback
        self.catch_up(batch)
        self.check_continuity()
        with self.store.session(commit=False) as s:
            pos = s.execute(select(position.c.seq, position.c.head).where(position.c.id == 1)).one()
        head_seq = int(pos.seq)
        latest = self.latest_checkpoint()
        if head_seq == 0:
            return None
        if latest is not None and latest.seq >= head_seq:
            self.ensure_anchored(latest)
            return latest
        start = 1 if latest is None else latest.seq + 1
        if latest is not None:
            with self.store.session(commit=False) as s:
                anchor, _nid = self._anchor(s, start)
            if anchor != latest.head:
                raise AuditMismatch(latest.seq, "the chain no longer matches this checkpoint")
        head = ZERO_HASH
        for record in self._verified_records(start, head_seq, batch):
            head = record["entry_hash"]
        return self._issue(head_seq, head, issued_at)

    def _issue(self, seq: int, head: str, issued_at: str) -> Checkpoint:
        """Sign ``head`` at ``seq``, store the checkpoint and anchor it."""
        signature = base64.b64encode(
            self._signing_key.sign(checkpoint_message(self.origin, seq, head, issued_at))
        ).decode()
        cp = Checkpoint(seq, head, issued_at, self.key_id, signature)
        fresh = True
        try:
            with self.store.session(commit=True) as s:
                s.execute(select(position.c.id).where(position.c.id == 1).with_for_update()).one()
                latest = s.execute(
                    select(checkpoints).order_by(checkpoints.c.seq.desc()).limit(1)
                ).first()
                if latest is not None:
                    if int(latest.seq) == seq and latest.key_id == self.key_id:
                        cp, fresh = checkpoint_of_row(latest), False  # issued concurrently
                    elif int(latest.seq) >= seq:
                        raise ConcurrencyConflict(
                            "a later checkpoint was issued concurrently; retry"
                        )
                    elif issued_at < latest.issued_at:
                        raise InvalidInput("now", "is before the latest checkpoint's issued_at")
                if fresh:
                    s.execute(insert(checkpoints).values(**cp.as_dict()))
        except (sa_exc.IntegrityError, ESIntegrityError):
            raise ConcurrencyConflict("a checkpoint was issued concurrently; retry") from None
        if fresh:
            log.info("audit checkpoint at seq %d (key %s)", seq, self.key_id)
        self.ensure_anchored(cp)
        return cp
