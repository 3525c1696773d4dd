"""Two engine processes on one PostgreSQL changing the same consents and
sending to the same accounts; and a soak of mixed load with flat memory and
connection counts.  ``TSUCHI_SOAK_SECONDS`` (default 60) sets the soak length."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import resource
import time
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import create_engine, text

from tsuchi import Engine, ManualClock, Settings, SimulatedCarrierNetwork, StatusReport, errors
from tsuchi.domain.message import gateway_reference

from ..conftest import PG_URL, reset_postgres
from ..integration.world import build

SOAK_SECONDS = float(os.environ.get("TSUCHI_SOAK_SECONDS", "60"))


def _contender(
    url: str, keys: str, sender: str, accounts: list[str], seed: int, seconds: float, out: Any
) -> None:
    rng = random.Random(seed)
    stats = {"grant": 0, "withdraw": 0, "request": 0, "submitted": 0, "conflicts": 0}
    settings = Settings(
        database_url=url,
        keys_dir=Path(keys),
        worker_id=f"p{seed}",
        quiet_hours_window=("00:00", "23:59"),
    )  # real clock: any hour
    with Engine(settings) as e:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            a = UUID(rng.choice(accounts))
            op = rng.random()
            try:
                if op < 0.3:
                    e.grant_consent(
                        a, UUID(sender), "marketing", source="web", wording="v1", by="x"
                    )
                    stats["grant"] += 1
                elif op < 0.55:
                    e.withdraw_consent(a, UUID(sender), "marketing", source="app")
                    stats["withdraw"] += 1
                elif op < 0.85:
                    e.request_notice(UUID(sender), a, "campaign", idempotency_key=f"p{seed}-{n}")
                    stats["request"] += 1
                else:
                    stats["submitted"] += e.dispatch()
            except errors.ConcurrencyConflict:
                stats["conflicts"] += 1
            n += 1
    out.put(stats)


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL: set TSUCHI_TEST_DATABASE_URL")
def test_two_engine_processes_on_the_same_consents(tmp_path: Path) -> None:
    assert PG_URL
    reset_postgres(PG_URL)
    settings = Settings(database_url=PG_URL, keys_dir=tmp_path / "keys", create_keys=True)
    with Engine(settings) as e:
        w = build(e)
        e.set_frequency_cap(w.sender, per_day=1000, per_week=5000)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [
        ctx.Process(
            target=_contender,
            args=(
                PG_URL,
                str(tmp_path / "keys"),
                str(w.sender),
                [str(a) for a in w.accounts],
                seed,
                15.0,
                q,
            ),
        )
        for seed in (1, 2)
    ]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    print(f"contenders: {results}")
    assert sum(r["grant"] + r["withdraw"] for r in results) > 20
    assert sum(r["submitted"] for r in results) > 0
    with Engine(settings) as e:
        e.dispatch(100)
        for a in w.accounts:
            c = e.consent(a, w.sender, "marketing")
            if c is None:
                continue
            versions = [h.version for h in c.history]
            assert versions == sorted(versions) and len(set(versions)) == len(versions)
            # A withdrawal only follows a grant (re-grants are allowed): had an update
            # been lost under contention, two withdrawals would follow each other.
            actions = [h.action for h in c.history]
            assert ("withdrawn", "withdrawn") not in set(pairwise(actions))
            granted_versions = {h.version for h in c.history if h.action == "granted"}
            for mid in e.messages(account_id=a):
                m = e.services.notices.find(mid)
                assert m is not None
                if m.sent_basis:
                    # Proof of consent: the version that authorised the send was a grant.
                    assert m.sent_basis["consent_version"] in granted_versions


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_soak_mixed_load_keeps_memory_and_connections_flat(
    settings: Settings, clock: ManualClock, network: SimulatedCarrierNetwork, db_url: str
) -> None:
    # The aggregate cache is bounded (aggregate_cache_size, 20,000 states by
    # default, some 30 MB when full): a small bound fills it during the
    # warm-up, so what grows after it is a leak, not the cache filling up.
    bounded = settings.model_copy(update={"aggregate_cache_size": 500})
    with Engine(bounded, clock=clock, gateway=network) as engine:
        _soak(engine, clock, db_url)


def _soak(engine: Engine, clock: ManualClock, db_url: str) -> None:
    w = build(engine)
    engine.set_frequency_cap(w.sender, per_day=10**6, per_week=10**6)
    accounts = engine.register_accounts(
        {
            "tenant": "acme",
            "customer_ref": f"S{i}",
            "mobile": f"0701{i:07d}",
            "name": f"客{i}",
            "carrier": ("docomo", "au", "softbank", "rakuten")[i % 4],
        }
        for i in range(100)
    )
    for a in accounts[::2]:
        engine.grant_consent(a, w.sender, "marketing", source="web", wording="v1", by="x")
    pg = create_engine(db_url) if db_url.startswith("postgresql") else None
    rng = random.Random(3)
    samples: list[tuple[float, float, int]] = []
    n = 0
    start = time.monotonic()
    next_sample = start
    while time.monotonic() - start < SOAK_SECONDS:
        a = rng.choice(accounts)
        kind = rng.random()
        if kind < 0.5:
            engine.request_notice(w.sender, a, "note", {"memo": "明細"}, idempotency_key=f"s{n}")
        elif kind < 0.6:
            engine.request_notice(w.sender, a, "campaign", idempotency_key=f"m{n}")
        elif kind < 0.7:
            engine.raise_fraud_alert(
                w.sender, a, "4242", "EC", 1000, clock.now(), alert_ref=f"f{n}"
            )
        elif kind < 0.75:
            ids = engine.messages(account_id=a)
            if ids:
                engine.handle_report(
                    StatusReport(
                        gateway_reference(ids[-1], 1),
                        "reply",
                        clock.now(),
                        text="はい、私です",
                        postback="はい、私です",
                    )
                )
        else:
            clock.advance(timedelta(seconds=30))
            engine.sweep()
        n += 1
        if time.monotonic() >= next_sample:
            conns = 0
            if pg is not None:
                with pg.connect() as c:
                    conns = c.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE datname = current_database()"
                        )
                    ).scalar_one()
            samples.append((time.monotonic() - start, _rss_mb(), int(conns)))
            next_sample += max(1.0, SOAK_SECONDS / 12)
    if pg is not None:
        pg.dispose()
    warm = samples[len(samples) // 4]
    last = samples[-1]
    peak_conns = max(s[2] for s in samples)
    print(
        f"soak {db_url.split(':')[0]}: {n} operations in {SOAK_SECONDS:.0f}s, RSS "
        f"{warm[1]:.0f} MB after warm-up -> {last[1]:.0f} MB at end, peak connections "
        f"{peak_conns}"
    )
    assert last[1] - warm[1] < 40, samples  # flat memory (allowing allocator noise)
    assert peak_conns <= 20, samples  # pool_size 5 + overflow 10 + this test's own
