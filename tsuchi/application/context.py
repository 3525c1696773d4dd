"""What every service reads and nothing changes: settings, clock, store, keys
and the observer that metrics listen through.

One :class:`Context` is built by the facade and handed to each service, so a
service's constructor names only the context and the services it calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from tsuchi.infrastructure.crypto import KeyRing, blind_index
from tsuchi.infrastructure.store import AggregateStore
from tsuchi.ports import Clock, NullObserver, Observer
from tsuchi.settings import Settings


@dataclass(frozen=True)
class Context:
    settings: Settings
    clock: Clock
    store: AggregateStore
    keyring: KeyRing
    observer: Observer = field(default_factory=NullObserver)
    """Told what committed, for metrics (see :meth:`UnitOfWork.after_commit`)."""

    def now(self) -> datetime:
        """The clock's time, always timezone-aware (UTC if the clock is naive)."""
        t = self.clock.now()
        return t if t.tzinfo is not None else t.replace(tzinfo=UTC)

    def digest(self, kind: str, value: str) -> str:
        """The keyed blind-index digest of a personal value."""
        return blind_index(self.keyring.index_key, kind, value)
