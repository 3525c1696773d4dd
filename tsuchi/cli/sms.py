"""``tsuchi sms``: tools for the people who write SMS templates.

Why this module exists: what an SMS costs (GSM-7 or UCS-2, how many parts)
depends on every character of its text; ``sms segments`` lets a template
author measure a text without a database, keys or an engine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from tsuchi.cli.common import console, err

sms_app = typer.Typer(help="SMS tools for template authors.", no_args_is_help=True)


@sms_app.command("segments")
def sms_segments(
    text: Annotated[str | None, typer.Argument(help="The text to measure.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="Measure each line of this file.")
    ] = None,
    format: Annotated[
        str, typer.Option("--format", help="text, or json (one object per text).")
    ] = "text",
    as_json: Annotated[
        bool, typer.Option("--json", hidden=True, help="Same as --format json.")
    ] = False,
) -> None:
    """Encoding (gsm7 or ucs2) and number of parts an SMS text costs."""
    from tsuchi.domain.channels import sms_cost

    if format not in ("text", "json"):
        err.print("error: --format must be text or json")
        raise typer.Exit(2)
    as_json = as_json or format == "json"
    if (text is None) == (file is None):
        err.print("error: give a TEXT or --file")
        raise typer.Exit(2)
    if text is not None:
        texts = [text]
    else:
        assert file is not None
        try:
            texts = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            err.print(f"error: --file {file}: cannot be read ({type(e).__name__})")
            raise typer.Exit(1) from None
    for t in texts:
        cost = sms_cost(t)
        if as_json:
            sys.stdout.write(
                json.dumps(
                    {
                        "encoding": cost.encoding,
                        "parts": cost.parts,
                        "units": cost.units,
                        "characters": cost.characters,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
        else:
            console.print(
                f"{cost.encoding}  {cost.parts} part(s)  {cost.units} units  "
                f"{cost.characters} characters"
            )
