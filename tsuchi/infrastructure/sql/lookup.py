"""The blind index: keyed digests of mobile numbers and customer references.

Accounts are found by the HMAC of a normalised value, never by the value; an
erased account's rows are deleted, so it can no longer be found.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from tsuchi.infrastructure.tables import lookup

MOBILE, CUSTOMER_REF = "mobile", "customer_ref"


def row(kind: str, tenant: str, digest: str, account_hex: str) -> dict[str, str]:
    return {"kind": kind, "tenant": tenant, "digest": digest, "account_id": account_hex}


def insert_rows(s: Session, rows: list[dict[str, str]]) -> None:
    if rows:
        s.execute(insert(lookup), rows)


def find(s: Session, kind: str, digest: str, tenant: str | None = None) -> list[str]:
    """Account ids (hex) with this digest, by tenant."""
    q = select(lookup.c.account_id).where(lookup.c.kind == kind, lookup.c.digest == digest)
    if tenant is not None:
        q = q.where(lookup.c.tenant == tenant)
    return [r[0] for r in s.execute(q.order_by(lookup.c.tenant))]


def replace_mobile(s: Session, account_hex: str, tenant: str, digest: str) -> None:
    s.execute(delete(lookup).where(lookup.c.kind == MOBILE, lookup.c.account_id == account_hex))
    s.execute(insert(lookup).values(row(MOBILE, tenant, digest, account_hex)))


def forget_account(s: Session, account_hex: str) -> None:
    s.execute(delete(lookup).where(lookup.c.account_id == account_hex))
