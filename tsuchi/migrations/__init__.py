"""tsuchi's schema revisions (Alembic), and helpers for a host's own Alembic.

Why this package exists: it holds the migration scripts tsuchi ships
(``versions/``, run by ``tsuchi db upgrade``), the code that reads a
database's revision and refuses to run on one that is not current
(:mod:`~tsuchi.migrations.schema`), and the filters a host passes to its own
Alembic environment so that autogenerate leaves tsuchi's tables alone
(:mod:`~tsuchi.migrations.filters`)::

    from tsuchi.migrations import include_name, include_object

    context.configure(
        connection=connection,
        target_metadata=host_metadata,
        include_name=include_name,
        include_object=include_object,
    )
"""

from __future__ import annotations

from tsuchi.migrations.filters import (
    TABLE_PREFIX,
    VERSION_TABLE,
    include_name,
    include_object,
    is_tsuchi_table,
)

__all__ = ["TABLE_PREFIX", "VERSION_TABLE", "include_name", "include_object", "is_tsuchi_table"]
