"""What every ``tsuchi`` command shares: the consoles, ``--db``/``--keys`` and errors.

Why this module exists: the command groups live in separate modules but must
print to the same consoles, take the same ``--db`` and ``--keys`` options and
report a bad setting or a :class:`~tsuchi.errors.TsuchiError` the same way
(exit 2 and exit 1, message on stderr).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from tsuchi.errors import TsuchiError

# Messages are never hard-wrapped: scripts and logs read them as one line.
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DbOpt = Annotated[
    str,
    typer.Option(
        "--db", help="SQLAlchemy URL of the tsuchi database.", envvar="TSUCHI_DATABASE_URL"
    ),
]
KeysOpt = Annotated[
    Path | None,
    typer.Option("--keys", help="Directory of the key files.", envvar="TSUCHI_KEYS_DIR"),
]


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@\s]*@")


def mask_url(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", text)


def fail(e: TsuchiError) -> typer.Exit:
    """Print ``e`` on stderr and return the exit (code 1) to raise."""
    err.print(f"[bold red]error[/]: {type(e).__name__}: {escape(mask_url(str(e)))}")
    return typer.Exit(1)


def load_settings(db: str, keys: Path | None, **extra: Any) -> Any:
    """The :class:`~tsuchi.settings.Settings` of a command; exit 2 on a bad setting."""
    from tsuchi.errors import InvalidSetting
    from tsuchi.settings import Settings

    try:
        return Settings(database_url=db, keys_dir=keys, **extra)
    except InvalidSetting as e:
        # Names the setting and the rule; never the value (it may be a secret).
        for line in e.lines():
            err.print(f"error: {line}", markup=False, highlight=False)
        raise typer.Exit(2) from None
