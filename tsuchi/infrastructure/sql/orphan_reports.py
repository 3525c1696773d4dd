"""Reports for references tsuchi does not know, kept for reconciliation.

Only the reference, kind, code and times are kept: never a reply's text.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.orm import Session

from tsuchi.infrastructure.tables import orphan_reports


def keep(
    s: Session, reference: str, kind: str, code: str, reported_at: datetime, received_at: datetime
) -> None:
    s.execute(
        insert(orphan_reports).values(
            reference=reference[:80],
            kind=kind,
            code=code[:32],
            reported_at=reported_at,
            received_at=received_at,
        )
    )
