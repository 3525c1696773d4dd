"""The audit trail a host uses: the chain of :mod:`.audit_chain` plus its export.

The chain (extension, re-verification), its anchored checkpoints
(:mod:`.audit_checkpoints`) and the export writer (:mod:`.audit_export`) are
separate modules; this one joins them so that ``engine.audit`` offers all of
them through one object.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from tsuchi.errors import AuditError, AuditMismatch
from tsuchi.infrastructure.audit_chain import AuditChain
from tsuchi.infrastructure.audit_checkpoints import AuditCheckpoints
from tsuchi.infrastructure.audit_export import write_export
from tsuchi.infrastructure.audit_tables import (
    Checkpoint,
    Progress,
    aggregates,
    audit_metadata,
    chain,
    checkpoints,
    position,
)


class AuditTrail(AuditCheckpoints):
    """The tamper-evident audit trail: hash chain, signed checkpoints, export."""

    def export(
        self,
        out_dir: str | Path,
        now: datetime,
        tenant: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        progress: Progress | None = None,
        batch: int = 1000,
    ) -> dict[str, Any]:
        """Write an export of the chain to ``out_dir``; returns its manifest.

        The export covers at least every record with ``since <= recorded_at <
        until`` (both optional, aware datetimes).  It starts at seq 1 or just
        after a checkpoint (included as its anchor) and ends at a checkpoint,
        so it may hold a few records outside the window.  With ``tenant``,
        other tenants' records appear as hash-only stubs (see
        :mod:`tsuchi.projections.audit.format`).  Every record is re-verified
        against the stored event behind it, and the chain must extend the
        last checkpoint anchored outside the database; a difference raises
        :class:`AuditMismatch` (:class:`~tsuchi.errors.AuditAnchorMismatch`
        for the anchor) and leaves no export behind.  The manifest is signed;
        with ``until`` its ``range`` is ``"bounded"``, otherwise ``"head"``.
        """
        return write_export(
            self,
            out_dir,
            now,
            tenant=tenant,
            since=since,
            until=until,
            progress=progress,
            batch=batch,
        )


__all__ = [
    "AuditChain",
    "AuditCheckpoints",
    "AuditError",
    "AuditMismatch",
    "AuditTrail",
    "Checkpoint",
    "aggregates",
    "audit_metadata",
    "chain",
    "checkpoints",
    "position",
]
