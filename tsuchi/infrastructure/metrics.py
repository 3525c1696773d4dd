"""Prometheus metrics: what the services report, and the backlog read at a scrape.

Why this module exists: operations need numbers to alert on (notices blocked,
submissions rejected, fallbacks, the outbox growing, timers lagging, the
audit chain falling behind, webhooks refused) and ``prometheus-client`` is
the well-kept way to expose them.  :class:`Metrics` holds every family in
one :class:`~prometheus_client.CollectorRegistry`: a private one per engine
unless the host passes its own, never the process-global default, so two
engines in one process do not collide.  It implements the
:class:`~tsuchi.ports.Observer` port the services report through after their
units of work commit, so the service layer never imports this library.

Families that count or time events are updated as they happen; the backlog
(outbox depth and the age of its oldest due row, timer lag, projection and
audit-chain lag, the gateway's circuit state) is read from the database when
Prometheus scrapes, through :func:`read_backlog`.  Every label value is a
code free of personal data: tenant, purpose, channel, carrier, outcome,
reason, route, HTTP status; never a number, a name, a customer reference or
a message id.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from tsuchi.infrastructure.audit_tables import position as audit_position
from tsuchi.infrastructure.projection_runner import ProjectionRunner, positions
from tsuchi.infrastructure.sql import outbox as outbox_table
from tsuchi.infrastructure.sql import timers as timers_table
from tsuchi.infrastructure.store import AggregateStore

log = logging.getLogger("tsuchi.metrics")

PRIORITIES = {
    outbox_table.URGENT: "urgent",
    outbox_table.NORMAL: "normal",
    outbox_table.BULK: "bulk",
}
CIRCUIT_STATES = ("closed", "half_open", "open")
LATENCY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600, 72 * 3600)
LAG_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)

__all__ = ["CONTENT_TYPE_LATEST", "Backlog", "Metrics", "read_backlog"]


@dataclass(frozen=True)
class Backlog:
    """What a scrape reads from the database (None: could not be read)."""

    outbox_depth: dict[str, int] = field(default_factory=dict)
    outbox_oldest_due_seconds: float | None = None
    timer_lag_seconds: float | None = None
    projection_lag: dict[str, int] = field(default_factory=dict)
    audit_chain_lag: int | None = None
    circuit_state: str | None = None
    database_up: bool = True


def read_backlog(store: AggregateStore, gateway: object, now: datetime) -> Backlog:
    """Read the backlog through the outbox and timers modules, the projection
    positions and the audit chain's position; a part that cannot be read
    (the database is down) is left out and ``database_up`` is False."""
    now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    breaker = getattr(gateway, "breaker", None)
    state = getattr(breaker, "state", None)
    circuit = state if isinstance(state, str) and state in CIRCUIT_STATES else None
    try:
        with store.session(commit=False) as s:
            depth, oldest = outbox_table.backlog(s, now)
            timer_due = timers_table.oldest_due(s, now)
            runner = ProjectionRunner(store)
            head = int(
                s.execute(select(func.coalesce(func.max(runner.events.c.id), 0))).scalar_one()
            )
    except Exception as e:  # a scrape must answer even when the database does not
        log.warning("metrics: backlog not readable (%s)", type(e).__name__)
        return Backlog(circuit_state=circuit, database_up=False)
    lag: dict[str, int] = {}
    audit_lag: int | None = None
    try:
        with store.session(commit=False) as s:
            for name, pos in s.execute(select(positions.c.name, positions.c.position)):
                lag[str(name)] = max(head - int(pos), 0)
    except Exception:  # the table appears with the first projection run
        lag = {}
    try:
        with store.session(commit=False) as s:
            at = s.execute(select(audit_position.c.notification_id)).scalar()
        audit_lag = None if at is None else max(head - int(at), 0)
    except Exception:  # the chain has not started yet
        audit_lag = None
    return Backlog(
        outbox_depth={PRIORITIES.get(p, str(p)): n for p, n in depth.items()},
        outbox_oldest_due_seconds=None if oldest is None else _age(now, oldest),
        timer_lag_seconds=None if timer_due is None else _age(now, timer_due),
        projection_lag=lag,
        audit_chain_lag=audit_lag,
        circuit_state=circuit,
    )


def _age(now: datetime, then: datetime) -> float:
    then = then if then.tzinfo is not None else then.replace(tzinfo=UTC)
    return max((now - then).total_seconds(), 0.0)


class _BacklogCollector(Collector):
    """Yields the backlog gauges, read when the registry is collected."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        out: list[Metric] = []
        jobs = self.metrics.jobs_probe
        if jobs is not None:
            since = GaugeMetricFamily(
                "tsuchi_worker_seconds_since_success",
                "Seconds since each worker job last succeeded (absent: not yet)",
                labels=["job"],
            )
            for job, seconds in sorted(jobs().items()):
                if seconds is not None:
                    since.add_metric([job], seconds)
            out.append(since)
        probe = self.metrics.backlog_probe
        if probe is None:
            return out
        b = probe()
        up = GaugeMetricFamily(
            "tsuchi_backlog_readable", "1 if the last scrape could read the database, else 0"
        )
        up.add_metric([], 1.0 if b.database_up else 0.0)
        out.append(up)
        depth = GaugeMetricFamily(
            "tsuchi_outbox_depth",
            "Attempts waiting in the outbox, by priority",
            labels=["priority"],
        )
        for name in PRIORITIES.values():
            depth.add_metric([name], float(b.outbox_depth.get(name, 0)))
        oldest = GaugeMetricFamily(
            "tsuchi_outbox_oldest_due_seconds",
            "Age of the oldest outbox row that is due (0 when none is)",
        )
        oldest.add_metric([], b.outbox_oldest_due_seconds or 0.0)
        timers = GaugeMetricFamily(
            "tsuchi_timer_lag_seconds", "Age of the oldest due, unfired timer (0 when none is)"
        )
        timers.add_metric([], b.timer_lag_seconds or 0.0)
        if b.database_up:
            out += [depth, oldest, timers]
        projections = GaugeMetricFamily(
            "tsuchi_projection_lag_events",
            "Events in the log not yet applied by a projection",
            labels=["projection"],
        )
        for name, n in sorted(b.projection_lag.items()):
            projections.add_metric([name], float(n))
        out.append(projections)
        if b.audit_chain_lag is not None:
            audit = GaugeMetricFamily(
                "tsuchi_audit_chain_lag_events", "Events in the log not yet in the audit hash chain"
            )
            audit.add_metric([], float(b.audit_chain_lag))
            out.append(audit)
        if b.circuit_state is not None:
            circuit = GaugeMetricFamily(
                "tsuchi_gateway_circuit_state",
                "The gateway's circuit breaker: 1 for the state it is in",
                labels=["state"],
            )
            for state in CIRCUIT_STATES:
                circuit.add_metric([state], 1.0 if state == b.circuit_state else 0.0)
            out.append(circuit)
        return out


class Metrics:
    """Every tsuchi metric family in one registry (a private
    :class:`CollectorRegistry` unless ``registry`` is given).  One
    :class:`Metrics` per registry: a second one on the same registry is
    refused by ``prometheus-client`` (duplicated time series)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.notices = Counter(
            "tsuchi_notices_requested",
            "New notices by how they were decided",
            ["tenant", "purpose", "outcome"],
            registry=r,
        )
        self.submissions = Counter(
            "tsuchi_submissions",
            "Attempts handed to the gateway, by outcome",
            ["tenant", "channel", "carrier", "outcome"],
            registry=r,
        )
        self.gateway_errors = Counter(
            "tsuchi_gateway_errors",
            "Submission calls that failed as a whole (nothing recorded as sent)",
            ["error"],
            registry=r,
        )
        self.unconfirmed_submissions = Counter(
            "tsuchi_unconfirmed_submissions",
            "Attempts recorded as submitted without the gateway's confirmation",
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "tsuchi_delivery_seconds",
            "From submission to the delivery report",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.read_seconds = Histogram(
            "tsuchi_read_seconds",
            "From submission to the read receipt",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "tsuchi_fallbacks",
            "Attempts that fell back to SMS, by reason and carrier",
            ["reason", "carrier"],
            registry=r,
        )
        self.timer_fire_lag = Histogram(
            "tsuchi_timer_fire_lag_seconds",
            "How long after falling due a timer fired",
            ["kind"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.webhook_requests = Counter(
            "tsuchi_webhook_requests",
            "Webhook requests by route and HTTP status answered",
            ["route", "status"],
            registry=r,
        )
        self.backlog_probe: Callable[[], Backlog] | None = None
        self.jobs_probe: Callable[[], dict[str, float | None]] | None = None
        r.register(_BacklogCollector(self))

    # -- the Observer port ----------------------------------------------------------------
    def notice_requested(self, tenant: str, purpose: str, outcome: str) -> None:
        self.notices.labels(tenant, purpose, outcome).inc()

    def submitted(self, tenant: str, channel: str, carrier: str, outcome: str) -> None:
        self.submissions.labels(tenant, channel, carrier, outcome).inc()

    def gateway_error(self, error: str) -> None:
        self.gateway_errors.labels(error).inc()

    def unconfirmed(self, count: int) -> None:
        self.unconfirmed_submissions.inc(count)

    def progressed(self, channel: str, kind: str, seconds: float) -> None:
        family = self.delivery_seconds if kind == "delivered" else self.read_seconds
        family.labels(channel).observe(seconds)

    def fell_back(self, reason: str, carrier: str) -> None:
        self.fallbacks.labels(reason, carrier).inc()

    def timer_fired(self, kind: str, lag_seconds: float) -> None:
        self.timer_fire_lag.labels(kind).observe(lag_seconds)

    # -- the HTTP front ----------------------------------------------------------------------
    def webhook(self, route: str, status: int) -> None:
        """One webhook request answered (``route``: a route name, never a path)."""
        self.webhook_requests.labels(route, str(status)).inc()

    def watch(self, probe: Callable[[], Backlog]) -> None:
        """Read the backlog gauges from ``probe`` at each scrape (the engine's)."""
        self.backlog_probe = probe

    def watch_jobs(self, liveness: Callable[[], dict[str, float | None]] | None) -> None:
        """Report a worker's seconds since each job's last success (None: stop)."""
        self.jobs_probe = liveness

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format (reads the backlog).  With
        ``PROMETHEUS_MULTIPROC_DIR`` set (``tsuchi serve --workers N``), the
        counts and histograms of every process writing there, summed."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            combined.register(_BacklogCollector(self))
            return generate_latest(combined)
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> Callable[[], None]:
        """Serve ``GET /metrics`` on ``host:port`` in a background thread
        (``prometheus_client.start_http_server``); returns the function that
        stops it."""
        from prometheus_client import start_http_server

        server, thread = start_http_server(port, addr=host, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        log.info("metrics on http://%s:%d/metrics (pid %d)", host, port, os.getpid())
        return stop
