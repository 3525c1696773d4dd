"""Reading the schema record before the store opens.

``tsuchi_meta`` holds the schema version (written by the schema revisions)
and the KEK fingerprint (written by the store); start-up must know, before
any key is created, whether the database already holds encrypted data and
under which KEK.
"""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, inspect, select
from sqlalchemy import exc as sa_exc

from tsuchi.errors import TransientError
from tsuchi.infrastructure.tables import meta


def database_kek_id(url: str | None, probe: Engine | None) -> str | None:
    """The KEK id the database records, or None (no database or no record)."""
    if probe is not None:
        engine = probe
    elif url is not None:
        engine = create_engine(url)
    else:
        return None
    try:
        if not inspect(engine).has_table("tsuchi_meta"):
            return None
        with engine.connect() as conn:
            row = conn.execute(select(meta.c.value).where(meta.c.key == "kek_id")).first()
        return None if row is None else str(row[0])
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
        # Only the type: the driver's message names the host and the user.
        raise TransientError(f"database unavailable: {type(e).__name__}") from None
    finally:
        if probe is None:
            engine.dispose()
