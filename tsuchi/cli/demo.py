"""``tsuchi demo``: the card-issuer and insurer scenario, end to end.

Why this module exists: the demo is the quickest way to see tsuchi work (and
to fill a database for the reports); it drives a real engine against the
simulated carrier network on a manual clock and prints a delivery summary.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from tsuchi.cli.common import DbOpt, KeysOpt, console, fail, load_settings, mask_url
from tsuchi.errors import TsuchiError


def demo(
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the scenario and the carrier simulator.")] = 7,
    customers: Annotated[int, typer.Option(min=10, max=100_000)] = 1000,
) -> None:
    """Run the card-issuer and insurer scenario on the embedded database."""
    from tsuchi.demo import demo_start, run_demo
    from tsuchi.engine import Engine
    from tsuchi.infrastructure.clock import ManualClock
    from tsuchi.infrastructure.simulator import SimulatedCarrierNetwork

    t0 = time.perf_counter()
    clock = ManualClock()
    try:
        settings = load_settings(db, keys, create_keys=True)
        with Engine(
            settings, clock=clock, gateway=SimulatedCarrierNetwork(seed=seed, clock=clock)
        ) as engine:
            clock.set(demo_start(engine))
            with console.status("running the demo") as status:
                result = run_demo(
                    engine,
                    clock.advance,
                    seed=seed,
                    customers=customers,
                    progress=lambda m: status.update(m),
                )
    except TsuchiError as e:
        raise fail(e) from None
    table = Table(
        title=f"Delivery summary ({result.started:%Y-%m-%d} simulated, "
        f"{result.requested} notices to {result.customers} customers)"
    )
    cols = ("tenant", "purpose", "channel", "status", "reason", "count", "fallback")
    for col in cols:
        table.add_column(col, justify="right" if col in ("count", "fallback") else "left")
    for row in result.summary:
        table.add_row(*(str(row[c]) for c in cols))
    console.print(table)
    console.print(f"database: [bold]{mask_url(settings.database_url)}[/]")
    console.print(f"keys:     [bold]{settings.resolved_keys_dir()}[/]")
    console.print(f"took {time.perf_counter() - t0:.1f} s")
