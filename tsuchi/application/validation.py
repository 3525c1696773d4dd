"""Checks of the host's plain arguments, before any unit of work starts.

Each raises :class:`~tsuchi.errors.InvalidInput` naming the field and the
rule, never the value (it may be personal data).  Rules of an aggregate
stay on the aggregate (``check_*``); these are the argument shapes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from tsuchi.domain.channels import check_no_control_characters
from tsuchi.domain.values import Purpose
from tsuchi.errors import InvalidInput

TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SMS_SENDER_RE = re.compile(r"^(?:[A-Za-z0-9 ]{1,11}|\d{1,15})$")
LANG_RE = re.compile(r"^[a-z]{2}(?:-[A-Z]{2})?$")
CODE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def text(value: Any, field_name: str, max_len: int, *, multiline: bool = False) -> str:
    """A non-empty string of at most ``max_len`` characters, without control
    characters (line breaks and tabs only when ``multiline``) and without
    lone surrogates."""
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise InvalidInput(
            field_name, f"must be a non-empty string of at most {max_len} characters"
        )
    check_no_control_characters(value, field_name, allow_newlines=multiline)
    return value


def uuid(value: Any, field_name: str) -> UUID:
    """An id argument: a :class:`~uuid.UUID` (its canonical string is accepted)."""
    if isinstance(value, UUID):
        return value
    if isinstance(value, str) and len(value) <= 36:
        try:
            return UUID(value)
        except ValueError:
            pass
    raise InvalidInput(field_name, "must be a UUID")


def optional_int(value: Any, field_name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field_name, "must be an integer or None")
    return int(value)


def mapping(value: Any, field_name: str) -> dict[str, Any]:
    """A dict argument with string keys (None is an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InvalidInput(field_name, "must be a dict with string keys")
    return dict(value)


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
