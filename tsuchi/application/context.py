"""What every service reads and nothing changes: settings, clock, store, keys.

One :class:`Context` is built by the facade and handed to each service, so a
service's constructor names only the context and the services it calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from tsuchi.infrastructure.crypto import KeyRing, blind_index
from tsuchi.infrastructure.store import AggregateStore
from tsuchi.ports import Clock
from tsuchi.settings import Settings


@dataclass(frozen=True)
class Context:
    settings: Settings
    clock: Clock
    store: AggregateStore
    keyring: KeyRing

    def now(self) -> datetime:
        """The clock's time, always timezone-aware (UTC if the clock is naive)."""
        t = self.clock.now()
        return t if t.tzinfo is not None else t.replace(tzinfo=UTC)

    def digest(self, kind: str, value: str) -> str:
        """The keyed blind-index digest of a personal value."""
        return blind_index(self.keyring.index_key, kind, value)
