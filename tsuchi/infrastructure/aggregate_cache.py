"""A process cache of committed aggregate states.

Rebuilding an aggregate from the event store (a query, then decoding,
decrypting and applying every event) is most of what a notice costs: the
same message, account, sender and template are read again by each step of
its life (request, dispatch, each status report).  This cache keeps the
state an aggregate had when a unit of work that read or wrote it committed,
as a pickled snapshot with its version.  A load is then a query for the
events stored *after* that version (normally none) and the decoding of the
snapshot: never stale, because what other processes wrote since is read
from the database and applied.

Only committed states enter (the engine promotes them after its own commit;
never inside a host's open transaction), each load gets its own copy, and
entries expire after ``ttl`` seconds, which bounds how long decrypted
personal data of a customer erased by *another* process can stay in this
one's memory (an erasure in this process clears the cache at once).
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from tsuchi.infrastructure.expiring import ExpiringMap


class AggregateCache:
    """``aggregate id -> (version, pickled state)``, LRU with a TTL; thread-safe."""

    def __init__(
        self, max_entries: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self._entries: ExpiringMap[UUID, tuple[int, bytes]] = ExpiringMap(ttl, max_entries, clock)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, aggregate_id: UUID) -> tuple[int, Any] | None:
        """``(version, a private copy of the state)``, or None."""
        with self._lock:
            entry = self._entries.get(aggregate_id)
        if entry is None:
            return None
        return entry[0], pickle.loads(entry[1])  # noqa: S301 - our own bytes, never external

    def peek_version(self, aggregate_id: UUID) -> int | None:
        """The version of the live entry for ``aggregate_id`` (no copy made)."""
        with self._lock:
            entry = self._entries.get(aggregate_id, touch=False)
        return None if entry is None else entry[0]

    def put(self, aggregate_id: UUID, version: int, state: object) -> None:
        """Keep ``state`` (committed at ``version``) unless the same or a newer
        version is kept; a kept entry's lifetime runs from when it was first kept."""
        if self.max_entries <= 0 or (self.peek_version(aggregate_id) or 0) >= version:
            return
        blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            entry = self._entries.get(aggregate_id, touch=False)
            if entry is None or entry[0] < version:
                self._entries.set(aggregate_id, (version, blob))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
