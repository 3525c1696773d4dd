"""Checks of the host's plain arguments, before any unit of work starts.

Each raises :class:`~tsuchi.errors.InvalidInput` naming the field and the
rule, never the value (it may be personal data).  Rules of an aggregate
stay on the aggregate (``check_*``); these are the argument shapes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from tsuchi.domain.values import Purpose
from tsuchi.errors import InvalidInput

TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SMS_SENDER_RE = re.compile(r"^(?:[A-Za-z0-9 ]{1,11}|\d{1,15})$")
LANG_RE = re.compile(r"^[a-z]{2}(?:-[A-Z]{2})?$")
CODE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def text(value: Any, field_name: str, max_len: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise InvalidInput(
            field_name, f"must be a non-empty string of at most {max_len} characters"
        )
    return value


def code(value: Any, field_name: str) -> str:
    """A reason or status code: it reaches reports and the audit trail, so it
    may never be free text about a person."""
    if not isinstance(value, str) or not CODE_RE.match(value):
        raise InvalidInput(field_name, "a code of 1 to 64 letters, digits or _.:- (no free text)")
    return value


def tenant(value: Any) -> str:
    if not isinstance(value, str) or not TENANT_RE.match(value):
        raise InvalidInput("tenant", "1 to 64 letters, digits, '_', '.', '-'")
    return value


def purpose(value: str) -> Purpose:
    try:
        return Purpose(value)
    except ValueError:
        raise InvalidInput("purpose", "must be security, transactional or marketing") from None


def aware(dt: datetime) -> datetime:
    """A naive datetime is taken as UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)
