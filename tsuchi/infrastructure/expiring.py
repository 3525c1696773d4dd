"""A bounded map whose entries expire: the shape of tsuchi's in-memory caches.

Unwrapped data keys and cached aggregate states both hold what must not stay
in memory for long after a customer is erased by another process, and both
must not grow without bound.  :class:`ExpiringMap` is least-recently-used
with a time to live counted from when an entry was set; callers hold their
own lock.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ExpiringMap(Generic[K, V]):
    """LRU of at most ``max_entries``; an entry expires ``ttl`` seconds after
    it was set (never, with ``ttl`` None).  Not thread-safe on its own."""

    def __init__(
        self, ttl: float | None, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._items: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K, touch: bool = True) -> V | None:
        """The live value (an expired one is dropped); ``touch`` marks it as
        recently used."""
        item = self._items.get(key)
        if item is None:
            return None
        if self.ttl is not None and item[1] < self._clock():
            del self._items[key]
            return None
        if touch:
            self._items.move_to_end(key)
        return item[0]

    def set(self, key: K, value: V) -> None:
        expires = self._clock() + self.ttl if self.ttl is not None else 0.0
        self._items[key] = (value, expires)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def keys(self) -> list[K]:
        return list(self._items)

    def clear(self) -> None:
        self._items.clear()
