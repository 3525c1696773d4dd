"""Shared pieces of the benchmarks: backends, results, engines, a synthetic
world of senders, templates and accounts, a probe that records how tsuchi
groups its events into transactions, and a gateway wrapper that timestamps
submissions.

All customer data is synthetic (numbers from 090-1xxx-xxxx, one fixed
name); none of it is ever printed.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import Engine as SAEngine
from sqlalchemy import create_engine, event, insert, text

from tsuchi import Engine, ManualClock, Settings, SimulatedCarrierNetwork
from tsuchi.domain.account import Account
from tsuchi.domain.personal import Personal
from tsuchi.domain.values import Capability, Carrier
from tsuchi.infrastructure.crypto import blind_index
from tsuchi.infrastructure.tables import lookup
from tsuchi.ports import StatusReport, Submission, SubmitResult

TENANT = "bench"
CARRIERS = ("docomo", "au", "softbank")
SYNTHETIC_NAME = "山田太郎"
START = datetime(2026, 4, 1, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo: inside the sending window


# -- results ------------------------------------------------------------------------------


@dataclass
class Result:
    """One row of the results table and of ``bench-results.json``."""

    name: str
    backend: str
    n: int
    value: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    target: str | None = None
    meets_target: bool | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "n": self.n,
            "value": round(self.value, 6),
            "unit": self.unit,
            "baseline": None if self.baseline is None else round(self.baseline, 6),
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "target": self.target,
            "meets_target": self.meets_target,
            "note": self.note,
        }


def throughput(
    name: str,
    backend: str,
    n: int,
    value: float,
    unit: str,
    baseline: float | None,
    min_ratio: float | None = None,
    note: str = "",
) -> Result:
    """A throughput row: ratio = value / baseline, target ``ratio >= min_ratio``."""
    ratio = value / baseline if baseline else None
    target = None if min_ratio is None else f"ratio >= {min_ratio:g}"
    meets = None if min_ratio is None or ratio is None else ratio >= min_ratio
    return Result(name, backend, n, value, unit, baseline, ratio, target, meets, note)


def under_limit(
    name: str, backend: str, n: int, value: float, unit: str, limit: float | None, note: str = ""
) -> Result:
    """A latency or memory row against an absolute limit: ratio = limit / value."""
    if limit is None:
        return Result(name, backend, n, value, unit, note=note)
    ratio = limit / value if value > 0 else None
    return Result(
        name,
        backend,
        n,
        value,
        unit,
        None,
        ratio,
        f"< {limit:g} {unit}",
        value < limit,
        note,
    )


# -- context and backends --------------------------------------------------------------------


@dataclass
class Backend:
    """A database kind the benchmarks run on; ``fresh_url`` gives an empty database."""

    name: str  # "sqlite" | "postgres"
    workdir: Path
    pg_url: str | None = None
    _count: int = 0

    def fresh_url(self) -> str:
        self._count += 1
        if self.name == "sqlite":
            path = self.workdir / f"bench-{self._count}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            with sqlite3.connect(path) as conn:  # WAL is a property of the file: set it first
                conn.execute("PRAGMA journal_mode=WAL")
            return f"sqlite:///{path}"
        assert self.pg_url is not None
        reset_postgres(self.pg_url)
        return self.pg_url

    def fresh_dir(self, tag: str) -> Path:
        self._count += 1
        d = self.workdir / f"{tag}-{self._count}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d


def reset_postgres(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


@dataclass
class Sizes:
    e2e: tuple[int, int, int]
    export: tuple[int, int, int]
    broadcast: int
    timers: int
    pii_messages: int
    latency_samples: int
    latency_recipients: int
    broadcast_timebox_s: float
    latency_timebox_s: float
    timer_sweep_s: float
    latency_variants: tuple[str, ...] = ("worker", "sweep_only")


FULL = Sizes(
    e2e=(10_000, 100_000, 1_000_000),
    export=(10_000, 100_000, 1_000_000),
    broadcast=100_000,
    timers=1_000_000,
    pii_messages=5_000,
    latency_samples=200,
    latency_recipients=20_000,
    broadcast_timebox_s=3600.0,
    latency_timebox_s=300.0,
    timer_sweep_s=60.0,
)

QUICK = Sizes(
    e2e=(100, 500, 1_000),
    export=(1_000, 10_000, 100_000),
    broadcast=10_000,
    timers=20_000,
    pii_messages=600,
    latency_samples=100,
    latency_recipients=5_000,
    broadcast_timebox_s=20.0,
    latency_timebox_s=15.0,
    timer_sweep_s=4.0,
    latency_variants=("worker",),
)
"""Quick mode, within five minutes for both backends on two cores: the audit
log (100,000 events) and broadcast (10,000 recipients) sizes the figures ask
for in quick mode; e2e at 100, 500 and 1,000 notices; 20,000 reminders; a
time box on the broadcast (PostgreSQL does not expand all 10,000 in it) and
on the timer sweep."""


@dataclass
class Ctx:
    """What a figure needs: the backend, the sizes, and a cache shared by
    figures that reuse one measurement (growth, projection)."""

    backend: Backend
    quick: bool
    sizes: Sizes
    log: Callable[[str], None]
    cache: dict[str, Any] = field(default_factory=dict)


# -- engines and the synthetic world ------------------------------------------------------


@dataclass
class Rig:
    engine: Engine
    clock: ManualClock
    gateway: StampingGateway
    url: str
    keys_dir: Path
    sender: UUID
    accounts: list[UUID]

    def close(self) -> None:
        self.engine.close()


def open_engine(
    ctx: Ctx, *, seed: int = 1
) -> tuple[Engine, ManualClock, StampingGateway, str, Path]:
    url = ctx.backend.fresh_url()
    keys = ctx.backend.fresh_dir("keys")
    clock = ManualClock(START)
    gateway = StampingGateway(SimulatedCarrierNetwork(seed=seed, clock=clock))
    settings = Settings(database_url=url, keys_dir=keys, create_keys=True)
    engine = Engine(settings, clock=clock, gateway=gateway)
    return engine, clock, gateway, url, keys


TEMPLATES: tuple[tuple[str, str, str, str, dict[str, str], list[str]], ...] = (
    (
        "fraud_alert",
        "security",
        "{name}様 カード末尾{last4}で{amount}のご利用がありました。",
        "BENCH: card {last4} {amount}",
        {"name": "name", "last4": "card_last4", "amount": "amount"},
        ["はい、私です", "いいえ、身に覚えがありません"],
    ),
    (
        "safety_check",
        "security",
        "安否確認: ご無事ですか？",
        "安否確認: ご無事ですか？",
        {},
        ["無事です", "助けが必要"],
    ),
    (
        "card_expiry",
        "transactional",
        "カード末尾{last4}の有効期限は{due}です。",
        "カード末尾{last4}の有効期限は{due}です。",
        {"last4": "card_last4", "due": "date"},
        [],
    ),
    (
        "fraud_confirmation",
        "security",
        "カード末尾{last4}を停止しました。",
        "停止しました {last4}",
        {"last4": "card_last4"},
        [],
    ),
)


def build_rig(ctx: Ctx, accounts: int, *, bulk_accounts: bool = False, seed: int = 1) -> Rig:
    """A fresh database with one vetted sender, approved templates and
    ``accounts`` synthetic customers (through ``register_account``, or in bulk
    through the event store when ``bulk_accounts``)."""
    engine, clock, gateway, url, keys = open_engine(ctx, seed=seed)
    s = engine.register_sender(TENANT, "ベンチカード", "card_issuer", "BENCH", "0120-000-000")
    for c in CARRIERS:
        engine.submit_vetting(s, c)
        engine.decide_vetting(s, c, True)
    for name, purpose, pm, sms, variables, suggestions in TEMPLATES:
        v = engine.draft_template(
            s,
            name,
            purpose=purpose,
            plus_message_text=pm,
            sms_text=sms,
            variables=variables,
            suggestions=suggestions,
            author="author@bench",
        )
        engine.approve_template(s, name, v, "approver@bench")
    if bulk_accounts:
        ids = bulk_register_accounts(engine, accounts)
    else:
        ids = [
            engine.register_account(
                TENANT, f"C{i}", synthetic_mobile(i), SYNTHETIC_NAME, carrier=CARRIERS[i % 3]
            )
            for i in range(accounts)
        ]
    return Rig(engine, clock, gateway, url, keys, s, ids)


def synthetic_mobile(i: int) -> str:
    return f"090{10_000_000 + i:08d}"


def bulk_register_accounts(engine: Engine, n: int, chunk: int = 1000) -> list[UUID]:
    """Accounts as ``register_account`` makes them (data key, sealed
    ``Account.Registered``, blind-index rows) but saved in chunks of
    ``chunk`` per transaction: set-up, not measured."""
    ids: list[UUID] = []
    index_key = engine.keyring.index_key
    for start in range(0, n, chunk):
        with engine.transaction() as s:
            now = engine.now()
            aggs = []
            rows = []
            for i in range(start, min(n, start + chunk)):
                aid = uuid.uuid4()
                engine.store.keys.create(aid, now)
                mobile = "+81" + synthetic_mobile(i)[1:]
                aggs.append(
                    Account(
                        id=aid,
                        tenant=TENANT,
                        customer_ref=Personal(aid, f"C{i}"),
                        mobile=Personal(aid, mobile),
                        name=Personal(aid, SYNTHETIC_NAME),
                        carrier=Carrier(CARRIERS[i % 3]),
                        capability=Capability.UNKNOWN,
                        time_zone="Asia/Tokyo",
                        language="ja",
                        at=now,
                    )
                )
                for kind, value in (("customer_ref", f"C{i}"), ("mobile", mobile)):
                    rows.append(
                        {
                            "kind": kind,
                            "tenant": TENANT,
                            "digest": blind_index(index_key, kind, value),
                            "account_id": aid.hex,
                        }
                    )
                ids.append(aid)
            engine.store.save(*aggs)
            s.execute(insert(lookup), rows)
    return ids


def alert_variables() -> dict[str, Any]:
    return {"name": SYNTHETIC_NAME, "last4": "4242", "amount": 52000}


# -- the gateway wrapper ---------------------------------------------------------------------


class StampingGateway:
    """Wraps the simulator; records ``perf_counter`` of every submission and
    lets a caller wait for a reference prefix (a message id's hex)."""

    def __init__(self, inner: SimulatedCarrierNetwork) -> None:
        self.inner = inner
        self.first_submit: float | None = None
        self.submits = 0
        self._cond = threading.Condition()
        self._seen: dict[str, float] = {}
        self._watch: set[str] = set()

    def watch(self, mid_hex: str) -> None:
        with self._cond:
            self._watch.add(mid_hex)

    def wait_for(self, mid_hex: str, timeout: float) -> float | None:
        deadline = time.perf_counter() + timeout
        with self._cond:
            while mid_hex not in self._seen:
                left = deadline - time.perf_counter()
                if left <= 0:
                    return None
                self._cond.wait(left)
            self._watch.discard(mid_hex)
            return self._seen.pop(mid_hex)

    def submit(self, submissions: Sequence[Submission]) -> list[SubmitResult]:
        now = time.perf_counter()
        with self._cond:
            if submissions and self.first_submit is None:
                self.first_submit = now
            self.submits += len(submissions)
            if self._watch:
                for sub in submissions:
                    mid = sub.reference.split(":", 1)[0]
                    if mid in self._watch:
                        self._seen[mid] = now
                self._cond.notify_all()
        return self.inner.submit(submissions)

    def poll_reports(self, until: datetime, limit: int = 1000) -> list[StatusReport]:
        return self.inner.poll_reports(until, limit)

    @property
    def pending_reports(self) -> int:
        return self.inner.pending_reports


# -- the transaction probe -----------------------------------------------------------------


@dataclass
class TxPattern:
    """Events tsuchi stored, grouped as committed: per transaction, the list of
    (originator id, stored state length)."""

    transactions: list[list[tuple[str, int]]] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(len(t) for t in self.transactions)

    def summary(self) -> str:
        txs = len(self.transactions)
        if not txs:
            return "no events"
        sizes = [len(t) for t in self.transactions]
        avg_state = sum(s for t in self.transactions for _, s in t) / max(1, self.events)
        return (
            f"{self.events} events in {txs} txs (avg {self.events / txs:.1f}/tx, "
            f"max {max(sizes)}; avg state {avg_state:.0f} B)"
        )


class TxProbe:
    """Counts events inserted into ``tsuchi_events`` per committed transaction,
    with SQLAlchemy engine listeners (no change to tsuchi): every ``INSERT``
    statement on the events table, however many rows it carries."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sa: SAEngine = engine.store.engine
        record_cls: Any = getattr(engine.store.recorder, "events_record_cls")  # noqa: B009
        self.record_cls = record_cls
        self.pattern = TxPattern()
        self.active = False
        self._lock = threading.Lock()
        self.table = record_cls.__table__
        self._insert_prefix = f"INSERT INTO {self.table.name} "
        event.listen(self.sa, "after_cursor_execute", self._after_cursor_execute)
        event.listen(self.sa, "commit", self._commit)
        event.listen(self.sa, "rollback", self._rollback)

    def _after_cursor_execute(
        self,
        conn: Any,
        _cursor: Any,
        statement: str,
        parameters: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        """tsuchi's recorder inserts events with one multi-row ``INSERT`` whose
        parameters are (originator_id, originator_version, topic, state) per row."""
        if not self.active or not statement.startswith(self._insert_prefix):
            return
        pending = conn.info.setdefault("bench_events", [])
        flat = list(parameters)
        for i in range(0, len(flat), 4):
            pending.append((str(flat[i]), len(flat[i + 3])))

    def _commit(self, conn: Any) -> None:
        pending = conn.info.pop("bench_events", None)
        if pending and self.active:
            with self._lock:
                self.pattern.transactions.append(pending)

    def _rollback(self, conn: Any) -> None:
        conn.info.pop("bench_events", None)

    @contextmanager
    def recording(self) -> Iterator[TxPattern]:
        self.pattern = TxPattern()
        self.active = True
        try:
            yield self.pattern
        finally:
            self.active = False

    def close(self) -> None:
        event.remove(self.sa, "after_cursor_execute", self._after_cursor_execute)
        event.remove(self.sa, "commit", self._commit)
        event.remove(self.sa, "rollback", self._rollback)


def count_events(engine: Engine) -> int:
    with engine.store.session(commit=False) as s:
        return int(s.execute(text("SELECT count(*) FROM tsuchi_events")).scalar_one())


# -- misc -------------------------------------------------------------------------------------


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def pg_env(url: str) -> dict[str, str]:
    """``eventsourcing.postgres`` settings for a SQLAlchemy PostgreSQL URL."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    env = {
        "POSTGRES_DBNAME": str(u.database or ""),
        "POSTGRES_HOST": str(u.host or "127.0.0.1"),
        "POSTGRES_PORT": str(u.port or 5432),
        "POSTGRES_USER": str(u.username or os.environ.get("USER", "postgres")),
        "POSTGRES_PASSWORD": str(u.password or ""),
    }
    return env
