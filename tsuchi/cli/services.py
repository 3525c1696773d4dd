"""``tsuchi worker`` and ``tsuchi serve``: the long-running processes.

Why this module exists: unlike the other commands, these two do not run and
exit; they hold an engine open until a signal (``worker``: scheduler, sweeps,
dispatch and projections, and metrics on ``--metrics-port``) or until the
server stops (``serve``: the aggregator's webhooks, probes and metrics, in one
or ``--workers`` processes), and log at INFO.  Both exit 0 after SIGTERM.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tsuchi.cli.common import DbOpt, KeysOpt, err, fail, load_settings
from tsuchi.errors import TsuchiError

if TYPE_CHECKING:
    from tsuchi.settings import Settings


def worker(
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
    worker_id: Annotated[str, typer.Option("--id", help="Name of this worker.")] = "worker-1",
    sweep_seconds: Annotated[float, typer.Option(min=0.05, help="Sweep interval.")] = 1.0,
    max_seconds: Annotated[
        float | None, typer.Option(help="Stop after this long (default: until a signal).")
    ] = None,
    heartbeat: Annotated[
        Path | None,
        typer.Option(help="File touched after every successful sweep (for a liveness probe)."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Serve GET /metrics (Prometheus) on this port."),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Interface for --metrics-port.")] = "127.0.0.1",
) -> None:
    """Run the scheduler, sweeps, dispatch and projections until SIGTERM/SIGINT."""
    from datetime import timedelta

    from tsuchi.engine import Engine
    from tsuchi.worker import Worker

    logging.getLogger("tsuchi").setLevel(logging.INFO)
    # A stop request that arrives while the engine opens is kept, not fatal.
    early_stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early_stop.append(signum))
    try:
        with Engine(_explicit_gateway(load_settings(db, keys, worker_id=worker_id))) as engine:
            w = Worker(engine, sweep_every=timedelta(seconds=sweep_seconds), heartbeat=heartbeat)
            w.install_signal_handlers()
            if early_stop:
                w.stop()
            try:
                stop_metrics = (
                    engine.metrics.serve(metrics_port, metrics_host) if metrics_port else None
                )
            except OSError as e:  # the port is taken or the interface does not exist
                err.print(f"error: --metrics-port {metrics_port}: {e.strerror or type(e).__name__}")
                raise typer.Exit(1) from None
            try:
                w.run(max_seconds=max_seconds)
            finally:
                if stop_metrics is not None:
                    stop_metrics()
    except TsuchiError as e:
        raise fail(e) from None


def serve(
    db: DbOpt = "sqlite:///tsuchi.db",
    keys: KeysOpt = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes sharing the port (uvicorn).")
    ] = 1,
) -> None:
    """Receive aggregator webhooks (POST /webhooks/status, and CM.com's callbacks
    at POST /webhooks/cm/<TSUCHI_CM_WEBHOOK_TOKEN>/status|inbound|events) and
    answer GET /healthz, /readyz and /metrics.  SIGTERM finishes the requests
    in flight and exits 0.

    Webhooks must be signed with TSUCHI_WEBHOOK_SECRET (at least 32 bytes;
    X-Tsuchi-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">, or
    X-Tsuchi-Token)."""
    from tsuchi.engine import Engine
    from tsuchi.serve import engine_app, run

    logging.getLogger("tsuchi").setLevel(logging.INFO)
    settings = _explicit_gateway(load_settings(db, keys))
    _check_serve_settings(settings)
    # A stop request that arrives while the engine opens ends the command, cleanly.
    early_stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early_stop.append(signum))
    try:
        if workers > 1:
            with Engine(settings):  # keys, database and schema checked once, here
                pass
            _hand_settings_to_workers(db, keys, settings)
            if not early_stop:
                run("tsuchi.serve:app_from_environment", host, port, workers=workers)
            return
        with Engine(settings) as engine:
            if not early_stop:
                run(engine_app(engine), host, port)
    except TsuchiError as e:
        raise fail(e) from None


def _check_serve_settings(settings: Settings) -> None:
    """Refuse at start (exit 2, one line naming the setting) what would make
    every webhook fail later."""
    if settings.gateway == "cm" and not settings.cm_webhook_token:
        err.print("error: set TSUCHI_CM_WEBHOOK_TOKEN (at least 32 characters)")
        raise typer.Exit(1)
    if not settings.webhook_secret and not settings.cm_webhook_token:
        err.print("error: set TSUCHI_WEBHOOK_SECRET (or TSUCHI_CM_WEBHOOK_TOKEN)")
        raise typer.Exit(1)
    from tsuchi.serve import MIN_WEBHOOK_SECRET

    secret = settings.webhook_secret
    if secret is not None and len(secret.encode()) < MIN_WEBHOOK_SECRET:
        err.print(
            "error: setting webhook_secret (TSUCHI_WEBHOOK_SECRET): must be at least "
            f"{MIN_WEBHOOK_SECRET} bytes"
        )
        raise typer.Exit(2)


def _hand_settings_to_workers(db: str, keys: Path | None, settings: Settings) -> None:
    """Worker processes build their engines from the environment: the
    options given here go there too, and their metrics are shared through a
    directory of this run (prometheus-client's multiprocess mode)."""
    import atexit
    import os
    import shutil
    import tempfile

    os.environ["TSUCHI_DATABASE_URL"] = db
    if keys is not None:
        os.environ["TSUCHI_KEYS_DIR"] = str(keys)
    os.environ["TSUCHI_GATEWAY"] = settings.gateway
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        directory = tempfile.mkdtemp(prefix="tsuchi-metrics-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def _explicit_gateway(settings: Settings) -> Settings:
    """A long-running process never falls back to the simulator unasked: a
    real alert would be marked delivered and nothing sent."""
    if "gateway" not in settings.model_fields_set:
        err.print(
            "error: setting gateway (TSUCHI_GATEWAY) must be chosen: cm, or simulator for a trial"
        )
        raise typer.Exit(2)
    return settings
