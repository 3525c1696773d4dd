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
is any read, view row, outbox row or timer: ``floor rate / baseline rate``
is what storing tsuchi's events costs next to the baseline, so the rest of
the ``e2e`` gap is tsuchi's logic.  Events are read back one transaction's
worth at a time, so memory stays flat at any size.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import ApplicationRecorder

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
    assert isinstance(recorder, ApplicationRecorder)
    mapper = engine.store.mapper

    def pages() -> Iterator[Any]:
        """The run's stored events in notification order, 5,000 at a time."""
        start, seen = after_id + 1, 0
        while seen < pattern.events:
            page = recorder.select_notifications(start, 5000)
            if not page:
                break
            yield from page
            seen += len(page)
            start = page[-1].id + 1

    app = OwnEvents(env=backend_env(backend, OwnEvents.name))
    stored = pages()
    seconds = 0.0
    count = 0
    try:
        target = app.recorder
        for tx in pattern.transactions:  # read and decrypted untimed, one group at a time
            group = [mapper.to_domain_event(n) for n in islice(stored, len(tx))]
            count += len(group)
            t0 = time.perf_counter()
            target.insert_events([mapper.to_stored_event(e) for e in group])
            seconds += time.perf_counter() - t0
    finally:
        app.close()
        db = app.env.get("SQLITE_DBNAME")
        if db:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
    if count != pattern.events:
        raise RuntimeError(f"read {count} events, the probe saw {pattern.events}")
    return FloorRun(pattern.events, len(pattern.transactions), seconds)
