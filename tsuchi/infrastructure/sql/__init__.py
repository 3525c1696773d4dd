"""tsuchi's own tables, one module each, in the shape the service layer uses them.

Each module owns one table written in a command's transaction: the services
above hand in the unit of work's session and call these functions; no other
module outside :mod:`tsuchi.infrastructure` speaks SQL to these tables.  The
statements of hot paths are built once at import (building and caching a
statement per call costs more than SQLite executing it).

``Session``, ``ScopedSession`` and ``DatabaseEngine`` are re-exported so that services can name
the types they pass on without importing SQLAlchemy themselves.
"""

from sqlalchemy import Engine as DatabaseEngine
from sqlalchemy.orm import Session, scoped_session

ScopedSession = scoped_session[Session]

__all__ = ["DatabaseEngine", "ScopedSession", "Session"]
