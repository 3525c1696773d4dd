"""Readiness: can this process do its work right now?

Why this module exists: a load balancer or Kubernetes must stop sending
webhooks to a process that cannot apply them (so the aggregator retries
elsewhere or later) without restarting it, and liveness alone cannot tell:
a SQLite connection keeps working on a database file that was moved away,
and a PostgreSQL pool only notices an outage on its next query.  The check
here asks the database itself, on a fresh query: the SQLite file is still
where the URL names it, the schema record is the one this version writes,
and the KEK the process loaded is the one the database's data keys are
wrapped with.  Reasons are short and hold no host, user or path.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, select

from tsuchi.infrastructure.store import AggregateStore
from tsuchi.infrastructure.tables import SCHEMA_VERSION, meta


def readiness_problem(store: AggregateStore, kek_id: str) -> str | None:
    """None when ready; otherwise a short reason (``database file missing``,
    ``database unreachable``, ``schema not current``, ``keys do not match``)."""
    bind = store.datastore.engine
    if isinstance(bind, Engine) and bind.dialect.name == "sqlite":
        database = bind.url.database
        if database and database != ":memory:" and not Path(database).is_file():
            return "database file missing"
    query = select(meta.c.key, meta.c.value)
    try:
        if isinstance(bind, Engine):  # a fresh query on tsuchi's (or the host's) pool
            with bind.connect() as conn:
                rows = {str(k): str(v) for k, v in conn.execute(query)}
        else:  # a host session: its own connection
            with store.session(commit=False) as s:
                rows = {str(k): str(v) for k, v in s.execute(query)}
    except Exception:  # only the fact: a driver's message names hosts and users
        return "database unreachable"
    if rows.get("schema_version") != str(SCHEMA_VERSION):
        return "schema not current"
    if rows.get("kek_id") != kek_id:
        return "keys do not match"
    return None
