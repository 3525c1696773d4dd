"""Filters that keep a host's own Alembic autogenerate away from tsuchi's tables.

A bank that embeds tsuchi in its own database usually runs Alembic for its own
schema.  Autogenerate compares the host's ``MetaData`` with the database and
proposes to drop every table the metadata does not name, tsuchi's among them.
Pass :func:`include_name` and :func:`include_object` to the host's
``context.configure(...)``: every ``tsuchi_*`` table (tsuchi's read models,
outbox, timers, keys, event store ``tsuchi_events``, audit chain, projections
and its own revision table ``tsuchi_alembic_version``) is then neither
created, altered nor dropped by the host's revisions.  tsuchi's schema is
upgraded by ``tsuchi db upgrade`` alone.

These functions only look at names: they import nothing of tsuchi's runtime.
"""

from __future__ import annotations

from typing import Any

TABLE_PREFIX = "tsuchi_"
"""Every table tsuchi creates begins with this."""

VERSION_TABLE = "tsuchi_alembic_version"
"""tsuchi's own Alembic revision table (the host keeps ``alembic_version``)."""


def is_tsuchi_table(name: str | None) -> bool:
    """Whether ``name`` is one of tsuchi's tables (by its ``tsuchi_`` prefix)."""
    return name is not None and name.startswith(TABLE_PREFIX)


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic ``include_name`` hook: leave tsuchi's reflected tables unread.

    Tables whose name begins with ``tsuchi_`` are not reflected, so
    autogenerate proposes no change to them (nor to their indexes); every
    other name is included.
    """
    if type_ == "table":
        return not is_tsuchi_table(name)
    return True


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic ``include_object`` hook: skip tsuchi's tables and their indexes.

    Use it beside :func:`include_name` (or alone, on Alembic versions that
    reflect every table first): a ``tsuchi_*`` table, or an index, column or
    constraint of one, is left out of the comparison.
    """
    if type_ == "table":
        return not is_tsuchi_table(name)
    table = getattr(obj, "table", None)
    if table is not None and is_tsuchi_table(getattr(table, "name", None)):
        return False
    return True
