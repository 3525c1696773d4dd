"""The process caches and the fair write lock, on their own."""

from __future__ import annotations

import threading
import time
from uuid import uuid4

from tsuchi.infrastructure.aggregate_cache import AggregateCache
from tsuchi.infrastructure.expiring import ExpiringMap
from tsuchi.infrastructure.store import FairLock


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_cache_hands_out_private_copies() -> None:
    cache = AggregateCache(10, 60.0)
    aid = uuid4()
    state = {"timeline": ["requested"]}
    cache.put(aid, 1, state)
    state["timeline"].append("changed after commit")  # the unit's object, not the cache's
    hit = cache.get(aid)
    assert hit is not None and hit[0] == 1 and hit[1] == {"timeline": ["requested"]}
    hit[1]["timeline"].append("a unit's change")
    again = cache.get(aid)
    assert again is not None and again[1] == {"timeline": ["requested"]}


def test_cache_keeps_the_newest_version() -> None:
    cache = AggregateCache(10, 60.0)
    aid = uuid4()
    cache.put(aid, 3, "v3")
    cache.put(aid, 2, "v2 from a slower reader")
    assert cache.get(aid) == (3, "v3")
    cache.put(aid, 4, "v4")
    assert cache.get(aid) == (4, "v4")


def test_cache_entries_expire_and_are_bounded() -> None:
    clock = Clock()
    cache = AggregateCache(2, 60.0, clock=clock)
    a, b, c = uuid4(), uuid4(), uuid4()
    cache.put(a, 1, "a")
    clock.t = 30
    cache.put(a, 1, "a again")  # same version: its lifetime still runs from the first put
    cache.put(b, 1, "b")
    clock.t = 61
    assert cache.get(a) is None and cache.peek_version(a) is None
    assert cache.get(b) == (1, "b")
    cache.put(c, 1, "c")
    cache.put(a, 1, "a")
    assert len(cache) == 2 and cache.get(b) is None  # least recently used went first


def test_cache_size_zero_turns_it_off() -> None:
    cache = AggregateCache(0, 60.0)
    aid = uuid4()
    cache.put(aid, 1, "x")
    assert cache.get(aid) is None and len(cache) == 0


def test_expiring_map_forgets_after_ttl_and_is_bounded() -> None:
    clock = Clock()
    keys: ExpiringMap[str, int] = ExpiringMap(5.0, 2, clock=clock)
    keys.set("a", 1)
    assert keys.get("a") == 1
    clock.t = 5.1
    assert keys.get("a") is None and len(keys) == 0
    keys.set("a", 1)
    keys.set("b", 2)
    assert keys.get("a", touch=False) == 1  # not marked as used: "a" stays the oldest
    keys.set("c", 3)
    assert keys.get("a") is None and keys.get("b") == 2 and keys.get("c") == 3


def test_fair_lock_serves_waiters_in_arrival_order() -> None:
    lock = FairLock()
    order: list[int] = []
    assert lock.acquire()
    started: list[threading.Thread] = []
    for i in range(5):
        t = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i), lock.release()))
        t.start()
        started.append(t)
        while len(lock._waiters) < i + 1:  # wait until it queued
            time.sleep(0.001)
    lock.release()
    for t in started:
        t.join(5)
    assert order == [0, 1, 2, 3, 4]


def test_fair_lock_is_not_taken_back_by_its_last_holder() -> None:
    """The unfair case: a holder that releases and asks again at once (a worker
    going from one unit of work to the next) goes after the thread waiting."""
    lock = FairLock()
    turns: list[str] = []
    assert lock.acquire()
    waiter = threading.Thread(
        target=lambda: (lock.acquire(), turns.append("waiter"), lock.release())
    )
    waiter.start()
    while not lock._waiters:
        time.sleep(0.001)
    lock.release()
    assert lock.acquire(timeout=5)
    turns.append("holder again")
    lock.release()
    waiter.join(5)
    assert turns == ["waiter", "holder again"]


def test_fair_lock_timeout() -> None:
    lock = FairLock()
    assert lock.acquire()
    assert not lock.acquire(timeout=0.01)
    assert not lock.acquire(blocking=False)
    lock.release()
    assert lock.acquire(blocking=False)
    lock.release()
