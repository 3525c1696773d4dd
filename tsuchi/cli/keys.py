"""``tsuchi keys``: create the key files and rotate the KEK.

Why this module exists: key handling is the one part of the command line
that writes secrets to disk; keeping ``keys init`` and ``keys rotate``
together keeps the order of staging, re-wrapping and promoting a KEK in one
readable place.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tsuchi.cli.common import DbOpt, KeysOpt, console, fail, load_settings
from tsuchi.errors import TsuchiError

keys_app = typer.Typer(
    help="Key files: the KEK, the blind-index key, the audit signing key.", no_args_is_help=True
)


@keys_app.command("init")
def keys_init(
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
) -> None:
    """Write new key files (mode 0600); never overwrites existing ones."""
    from tsuchi.infrastructure.crypto import init_keys

    settings = load_settings(db, keys)
    try:
        written = init_keys(settings.resolved_keys_dir())
    except TsuchiError as e:
        raise fail(e) from None
    for path in written:
        console.print(f"wrote {path}")


@keys_app.command("rotate")
def keys_rotate(
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
    destroy_old: Annotated[
        bool, typer.Option(help="Delete the previous KEK file at once.")
    ] = False,
) -> None:
    """Re-wrap every data key under a new KEK; events are not touched.

    The new KEK is staged as kek.key.next, the database re-wrapped in one
    transaction, then kek.key.next becomes kek.key and the previous KEK
    kek.key.old (delete it once no backup needs it, or use --destroy-old).
    """
    from tsuchi.engine import Engine
    from tsuchi.infrastructure.crypto import OLD_KEK_FILE, promote_staged_kek, stage_new_kek

    try:
        settings = load_settings(db, keys)
        directory = settings.resolved_keys_dir()
        with Engine(settings) as engine:
            new = stage_new_kek(directory)
            n = engine.rewrap_data_keys(new)
        promote_staged_kek(directory)
    except TsuchiError as e:
        raise fail(e) from None
    if destroy_old:
        (directory / OLD_KEK_FILE).unlink()
    console.print(f"re-wrapped {n} data keys under KEK {new.key_id}")
    if not destroy_old:
        console.print(
            f"previous KEK kept as {directory / OLD_KEK_FILE}; destroy it when no backup needs it"
        )
