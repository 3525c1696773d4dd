"""The consent view: one row per consent with its current state.

Written with the consent's events; it lets the subject access report and the
consent register list consents without scanning the event log.  Ids and
states only: the evidence stays (encrypted) in the events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from tsuchi.infrastructure.tables import consent_view


def put(
    s: Session,
    consent_hex: str,
    account_hex: str,
    sender_hex: str,
    purpose: str,
    granted: bool,
    version: int,
    at: datetime,
) -> None:
    s.execute(delete(consent_view).where(consent_view.c.consent_id == consent_hex))
    s.execute(
        insert(consent_view).values(
            consent_id=consent_hex,
            account_id=account_hex,
            sender_id=sender_hex,
            purpose=purpose,
            granted=granted,
            version=version,
            updated_at=at,
        )
    )


def of_account(s: Session, account_hex: str) -> list[str]:
    """Consent ids (hex) of one account, by sender and purpose."""
    return [
        r[0]
        for r in s.execute(
            select(consent_view.c.consent_id)
            .where(consent_view.c.account_id == account_hex)
            .order_by(consent_view.c.sender_id, consent_view.c.purpose)
        )
    ]


def all_ids(s: Session) -> list[Any]:
    """Every consent id (hex), by account, sender and purpose."""
    return [
        r[0]
        for r in s.execute(
            select(consent_view.c.consent_id).order_by(
                consent_view.c.account_id, consent_view.c.sender_id, consent_view.c.purpose
            )
        )
    ]
