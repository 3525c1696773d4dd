"""Alembic's environment for tsuchi's own revisions.

Why this module exists: Alembic runs it for every ``upgrade``/``stamp``.
tsuchi always hands it an open connection (``config.attributes["connection"]``,
see :mod:`tsuchi.migrations.schema`): no URL is read from a file or the
environment, no logging is configured, and the transaction is the caller's,
so a revision and its stamp commit together.  Revisions are kept in
``tsuchi_alembic_version``, beside any ``alembic_version`` of the host.
"""

from __future__ import annotations

from alembic import context

from tsuchi.errors import ConfigurationError
from tsuchi.migrations.filters import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise ConfigurationError(
        "tsuchi's revisions run through `tsuchi db upgrade`, not the alembic CLI"
    )
context.configure(
    connection=connection,
    target_metadata=None,
    version_table=VERSION_TABLE,
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
