"""The floor under a ratio: tsuchi's own events stored with no tsuchi logic.

A ratio against the baseline (:mod:`benchmarks.baseline`) prices everything a
notice costs beyond storing the same number of events.  Part of that price is
not logic at all: tsuchi's events carry more structure than the baseline's
one padding string (UUIDs, datetimes, enums, nested routing and consent
records) and their personal fields are sealed with AES-GCM, so mapping them
to stored events costs more.  :func:`replay_own_events` measures that part
alone: the events a run stored, read back and decrypted (untimed), are
mapped again by tsuchi's own mapper (transcoding and encryption) and inserted
with the same grouping into transactions, on the same persistence module as
the baseline (``eventsourcing.sqlite`` or ``eventsourcing.postgres``).

Creating the events (the domain methods that decide them) is not timed, nor
is any read, view row, outbox row or timer.  The result is a generous upper
bound on the ratio any engine that records these events could reach:
``floor ratio = floor rate / baseline rate``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.application import Application

from benchmarks.baseline import backend_env
from benchmarks.common import Backend, TxPattern
from tsuchi import Engine


class OwnEvents(Application[UUID]):
    name = "floorreplay"


@dataclass
class FloorRun:
    events: int
    transactions: int
    seconds: float


def replay_own_events(
    backend: Backend, engine: Engine, pattern: TxPattern, after_id: int
) -> FloorRun:
    """Store again the events ``engine`` recorded after notification
    ``after_id``, grouped as ``pattern`` saw them committed; time the mapping
    and the inserts."""
    recorder = engine.store.recorder
    mapper = engine.store.mapper
    notifications: list[Any] = []
    start = after_id + 1
    while len(notifications) < pattern.events:
        page = recorder.select_notifications(start, 5000)  # type: ignore[attr-defined]
        if not page:
            break
        notifications.extend(page)
        start = page[-1].id + 1
    if len(notifications) != pattern.events:
        raise RuntimeError(f"read {len(notifications)} events, the probe saw {pattern.events}")
    domain = [mapper.to_domain_event(n) for n in notifications]
    groups: list[list[Any]] = []
    i = 0
    for tx in pattern.transactions:
        groups.append(domain[i : i + len(tx)])
        i += len(tx)
    app = OwnEvents(env=backend_env(backend, "floorreplay"))
    try:
        target = app.recorder
        t0 = time.perf_counter()
        for group in groups:
            target.insert_events([mapper.to_stored_event(e) for e in group])
        seconds = time.perf_counter() - t0
    finally:
        app.close()
        db = app.env.get("SQLITE_DBNAME")
        if db:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
    return FloorRun(pattern.events, len(groups), seconds)
