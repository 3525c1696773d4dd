"""The audit trail on a real event store, SQLite and PostgreSQL alike: chain,
checkpoints, exports, and the tampering each of them must reveal."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from tsuchi import Engine, ManualClock, SimulatedCarrierNetwork, errors
from tsuchi.errors import AuditMismatch
from tsuchi.infrastructure.audit import AuditTrail, chain, checkpoints
from tsuchi.projections.audit import canonical_json, utc_iso, verify_export

from .world import NAMES, NUMBERS, World, build, count_events, count_rows


def drain(engine: Engine, clock: ManualClock, rounds: int = 12) -> None:
    for _ in range(rounds):
        engine.dispatch()
        clock.advance(timedelta(minutes=5))
        engine.process_reports()


def history(engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork) -> World:
    """A world with consents, notices (one with a personal memo), reports and replies."""
    w = build(engine)
    network.capability["+819011112222"] = True
    network.capability["+818033334444"] = False
    engine.grant_consent(
        w.accounts[0], w.sender, "marketing", source="web", wording="同意文言 v3", by=NAMES[0]
    )
    engine.request_notice(
        w.sender,
        w.accounts[0],
        "fraud_alert",
        {"name": NAMES[0], "last4": "1234", "amount": 52000},
        idempotency_key="fa-1",
        urgency="urgent",
        requested_by="core-banking",
    )
    engine.request_notice(
        w.sender,
        w.accounts[1],
        "note",
        {"memo": f"{NAMES[1]}様 {NUMBERS[1]} へ折り返し"},
        idempotency_key="note-1",
    )
    engine.request_notice(w.sender, w.accounts[2], "campaign", idempotency_key="camp-1")
    drain(engine, clock)
    return w


@pytest.fixture
def trail(engine: Engine) -> AuditTrail:
    return AuditTrail(engine.store, engine.keyring.signing_key)


def records(d: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (d / "records.jsonl").read_text("utf-8").splitlines()]


def seq_of(engine: Engine, notification_id: int) -> int:
    with engine.store.session(commit=False) as s:
        return int(
            s.execute(
                select(chain.c.seq).where(chain.c.notification_id == notification_id)
            ).scalar_one()
        )


def test_export_round_trip_verifies(
    engine: Engine,
    clock: ManualClock,
    network: SimulatedCarrierNetwork,
    trail: AuditTrail,
    tmp_path: Path,
) -> None:
    history(engine, clock, network)
    seen: list[tuple[int, int]] = []
    manifest = trail.export(tmp_path / "x", engine.now(), progress=lambda d, t: seen.append((d, t)))
    n = count_events(engine)
    assert (manifest["first_seq"], manifest["last_seq"], manifest["record_count"]) == (1, n, n)
    assert manifest["origin"] == trail.origin and manifest["key_id"] == trail.key_id
    assert seen[0] == (0, n) and seen[-1] == (n, n)
    result = verify_export(tmp_path / "x", trail.public_key)
    assert result.ok, result.reason
    assert result.records == n and result.checkpoints == 1
    recs = records(tmp_path / "x")
    assert [r["seq"] for r in recs] == list(range(1, n + 1))
    assert {r["tenant"] for r in recs} == {"acme"}
    requested = [r for r in recs if r["event_type"] == "Requested"]
    assert {r["correlation_id"] for r in requested} == {"fa-1", "note-1", "camp-1"}
    fraud = next(r for r in requested if r["correlation_id"] == "fa-1")
    assert fraud["actor"] == "core-banking"
    assert fraud["summary"] == {"purpose": "security", "urgency": "urgent"}
    same_message = [r for r in recs if r["aggregate_id"] == fraud["aggregate_id"]]
    assert len(same_message) > 2 and {r["correlation_id"] for r in same_message} == {"fa-1"}
    consent = [r for r in recs if r["aggregate_type"] == "Consent"]
    assert consent and {r["tenant"] for r in consent} == {"acme"}
    template = [r for r in recs if r["aggregate_type"] == "Template"]
    assert {r["tenant"] for r in template} == {"acme"}
    assert {"alice", "bob"} <= {r["actor"] for r in template}
    assert all(r["recorded_at"].endswith("Z") for r in recs)
    # The checkpoint it issued is stored and is the latest.
    latest = trail.latest_checkpoint()
    assert latest is not None and latest.seq == n
    # Read in pages of 7 records: the same export, byte for byte.
    again = trail.export(tmp_path / "paged", engine.now(), batch=7)
    assert again["records_sha256"] == manifest["records_sha256"]
    assert (tmp_path / "paged" / "records.jsonl").read_bytes() == (
        tmp_path / "x" / "records.jsonl"
    ).read_bytes()


def test_export_contains_no_personal_data_and_survives_erasure(
    engine: Engine,
    clock: ManualClock,
    network: SimulatedCarrierNetwork,
    trail: AuditTrail,
    tmp_path: Path,
) -> None:
    w = history(engine, clock, network)
    engine.erase_account(w.accounts[1], requested_by="dpo")
    engine.request_notice(
        w.sender,
        w.accounts[0],
        "fraud_alert",
        {"name": NAMES[0], "last4": "9999", "amount": 1},
        idempotency_key="fa-2",
    )
    trail.export(tmp_path / "x", engine.now())
    assert verify_export(tmp_path / "x", trail.public_key).ok
    blob = "".join(
        (tmp_path / "x" / f).read_text("utf-8")
        for f in ("records.jsonl", "checkpoints.jsonl", "manifest.json")
    )
    forms = []
    for number in NUMBERS:
        digits = number.replace("-", "")
        forms += [number, digits, "+81" + digits[1:]]
    for personal in [*forms, *NAMES, "折り返し"]:
        assert personal not in blob, "personal data leaked into the audit export"
    # The customer refs are too short to scan for in base64 text: compare values.
    values: list[str] = []
    for r in records(tmp_path / "x"):
        values += [str(v) for v in r.values()] + [str(v) for v in r["summary"].values()]
    assert not {"C0", "C1"} & set(values)
    erased = [r for r in records(tmp_path / "x") if r["event_type"] == "Erased"]
    assert erased and erased[0]["actor"] == "dpo"


def test_changed_stored_event_makes_export_refuse_naming_the_seq(
    engine: Engine,
    clock: ManualClock,
    network: SimulatedCarrierNetwork,
    trail: AuditTrail,
    tmp_path: Path,
) -> None:
    history(engine, clock, network)
    trail.catch_up()
    victim = 17
    with engine.store.session(commit=True) as s:
        state = bytes(
            s.execute(
                text("SELECT state FROM tsuchi_events WHERE id = :i"), {"i": victim}
            ).scalar_one()
        )
        changed = state[:-2] + bytes([state[-2] ^ 0x01]) + state[-1:]
        s.execute(
            text("UPDATE tsuchi_events SET state = :s WHERE id = :i"), {"s": changed, "i": victim}
        )
    with pytest.raises(AuditMismatch) as e:
        trail.export(tmp_path / "x", engine.now())
    assert isinstance(e.value, errors.TsuchiError)
    assert e.value.seq == seq_of(engine, victim)
    assert "changed" in e.value.reason
    assert not any((tmp_path / "x").iterdir()), "a refused export leaves nothing behind"
    with pytest.raises(AuditMismatch):
        trail.checkpoint(engine.now())  # nor is the changed log ever signed


def test_deleted_stored_event_and_altered_chain_row_are_named(
    engine: Engine,
    clock: ManualClock,
    network: SimulatedCarrierNetwork,
    trail: AuditTrail,
    tmp_path: Path,
) -> None:
    history(engine, clock, network)
    trail.catch_up()
    with engine.store.session(commit=True) as s:
        s.execute(update(chain).where(chain.c.seq == 9).values(actor="mallory"))
    with pytest.raises(AuditMismatch) as e:
        trail.export(tmp_path / "a", engine.now())
    assert e.value.seq == 9 and "chain row" in e.value.reason
    with engine.store.session(commit=True) as s:
        s.execute(update(chain).where(chain.c.seq == 9).values(actor="bob"))
        s.execute(text("DELETE FROM tsuchi_events WHERE id = 5"))
    with pytest.raises(AuditMismatch) as e:
        trail.export(tmp_path / "b", engine.now())
    assert e.value.seq == seq_of(engine, 5) and "deleted" in e.value.reason


def test_changed_record_in_an_export_fails_verification_at_that_seq(
    engine: Engine,
    clock: ManualClock,
    network: SimulatedCarrierNetwork,
    trail: AuditTrail,
    tmp_path: Path,
) -> None:
    history(engine, clock, network)
    d = tmp_path / "x"
    trail.export(d, engine.now())
    ls = (d / "records.jsonl").read_bytes().splitlines(keepends=True)
    rec = json.loads(ls[11])
    rec["summary"]["status"] = "read"
    ls[11] = canonical_json(rec) + b"\n"
    (d / "records.jsonl").write_bytes(b"".join(ls))
    result = verify_export(d, trail.public_key)
    assert (result.ok, result.first_bad_seq) == (False, 12)


def test_catch_up_is_idempotent_and_exactly_once(
    engine: Engine,
    clock: ManualClock,
    network: SimulatedCarrierNetwork,
    trail: AuditTrail,
) -> None:
    w = history(engine, clock, network)
    n = count_events(engine)
    assert trail.catch_up(batch=7) == n
    assert trail.catch_up() == 0
    assert count_rows(engine, chain) == n
    again = AuditTrail(engine.store, engine.keyring.signing_key)  # another process
    assert again.catch_up() == 0 and again.origin == trail.origin
    engine.request_notice(w.sender, w.accounts[2], "campaign", idempotency_key="camp-2")
    assert trail.catch_up() == count_events(engine) - n
    with engine.store.session(commit=False) as s:
        nids = [r[0] for r in s.execute(select(chain.c.notification_id).order_by(chain.c.seq))]
        eids = [r[0] for r in s.execute(text("SELECT id FROM tsuchi_events ORDER BY id"))]
    assert nids == eids
    first = trail.checkpoint(engine.now())
    assert first is not None and first.seq == count_events(engine)
    assert trail.checkpoint(engine.now() + timedelta(hours=1)) == first
    assert count_rows(engine, checkpoints) == 1


def test_incremental_exports_start_after_a_checkpoint(
    engine: Engine,
    clock: ManualClock,
    network: SimulatedCarrierNetwork,
    trail: AuditTrail,
    tmp_path: Path,
) -> None:
    w = history(engine, clock, network)
    cp = trail.checkpoint(engine.now())
    assert cp is not None
    time.sleep(0.01)
    mark = datetime.now(UTC)  # recorded_at is the events' own (wall-clock) timestamp
    time.sleep(0.01)
    clock.advance(timedelta(hours=1))
    engine.request_notice(
        w.sender,
        w.accounts[0],
        "fraud_alert",
        {"name": NAMES[0], "last4": "4321", "amount": 800},
        idempotency_key="fa-2",
    )
    drain(engine, clock, rounds=4)
    trail.catch_up()
    head = count_events(engine)
    assert head >= cp.seq + 4

    # A window ending between checkpoints gets a checkpoint of its own.
    with engine.store.session(commit=False) as s:
        at = s.execute(select(chain.c.recorded_at).where(chain.c.seq == cp.seq + 2)).scalar_one()
        cut = datetime.fromisoformat(at) + timedelta(microseconds=1)
        expected_last = s.execute(
            select(func.max(chain.c.seq)).where(chain.c.recorded_at < utc_iso(cut))
        ).scalar_one()
    assert expected_last < head
    window = tmp_path / "window"
    m = trail.export(window, engine.now(), since=mark, until=cut)
    assert (m["first_seq"], m["last_seq"]) == (cp.seq + 1, expected_last)
    assert m["anchor_prev_hash"] == cp.head
    result = verify_export(window, trail.public_key)
    assert result.ok and result.checkpoints == 2, result
    first_cp = json.loads((window / "checkpoints.jsonl").read_text().splitlines()[0])
    assert first_cp["seq"] == cp.seq

    later = tmp_path / "since"
    m = trail.export(later, engine.now(), since=mark)
    assert (m["first_seq"], m["last_seq"]) == (cp.seq + 1, head)
    result = verify_export(later, trail.public_key)
    assert result.ok and result.checkpoints == 3, result

    earlier = tmp_path / "until"
    m = trail.export(earlier, engine.now(), until=mark)
    assert (m["first_seq"], m["last_seq"]) == (1, cp.seq)  # ends at the existing checkpoint
    assert verify_export(earlier, trail.public_key).ok

    full = tmp_path / "full"
    trail.export(full, engine.now())
    result = verify_export(full, trail.public_key)
    assert result.ok and result.checkpoints == 3, result
    assert count_rows(engine, checkpoints) == 3


def test_tenant_export_redacts_other_tenants(
    engine: Engine,
    clock: ManualClock,
    network: SimulatedCarrierNetwork,
    trail: AuditTrail,
    tmp_path: Path,
) -> None:
    history(engine, clock, network)
    beta = engine.register_sender("beta", "BETA銀行", "bank", "BETA", "0120-111-111")
    engine.submit_vetting(beta, "docomo")
    engine.register_account("beta", "B1", "090-7777-8888", "高橋次郎", carrier="docomo")
    d = tmp_path / "acme"
    m = trail.export(d, engine.now(), tenant="acme")
    assert m["tenant"] == "acme" and m["redacted_count"] == 3
    result = verify_export(d, trail.public_key)
    assert result.ok and result.tenant == "acme" and result.redacted == 3, result
    body = (d / "records.jsonl").read_text("utf-8")
    assert "beta" not in body and str(beta) not in body
    stubs = [r for r in records(d) if r.get("redacted")]
    assert [set(s) for s in stubs] == [{"seq", "prev_hash", "entry_hash", "redacted"}] * 3
    with pytest.raises(errors.InvalidInput) as e:
        trail.export(tmp_path / "none", engine.now(), tenant="nobody")
    assert e.value.field == "tenant"


def test_bad_export_requests_are_typed(engine: Engine, trail: AuditTrail, tmp_path: Path) -> None:
    with pytest.raises(errors.TsuchiError):
        trail.export(tmp_path / "empty", datetime.now(UTC))  # nothing chained yet
    assert trail.checkpoint(datetime.now(UTC)) is None
    build(engine)
    with pytest.raises(errors.InvalidInput) as e:
        trail.export(tmp_path / "naive", datetime(2026, 4, 1))
    assert e.value.field == "now"
    now = datetime.now(UTC)
    with pytest.raises(errors.InvalidInput) as e:
        trail.export(tmp_path / "w", now, since=now, until=now - timedelta(days=1))
    assert e.value.field == "since"
    trail.export(tmp_path / "ok", now)
    with pytest.raises(errors.InvalidInput) as e:
        trail.export(tmp_path / "ok", now)
    assert e.value.field == "out_dir"
    with engine.store.session(commit=False) as s:
        assert s.execute(select(func.count()).select_from(checkpoints)).scalar_one() == 1


def test_concurrent_catch_up_chains_each_event_exactly_once(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork, tmp_path: Path
) -> None:
    w = build(engine)
    for i in range(30):
        engine.request_notice(w.sender, w.accounts[i % 3], "campaign", idempotency_key=f"c{i}")
    trails = [AuditTrail(engine.store, engine.keyring.signing_key) for _ in range(3)]
    failures: list[BaseException] = []

    def run(t: AuditTrail) -> None:
        for _ in range(10):
            try:
                t.catch_up(batch=3)
            except errors.TransientError:
                pass  # a lost race is retried by the next call
            except BaseException as e:  # pragma: no cover - reported below
                failures.append(e)

    threads = [threading.Thread(target=run, args=(t,)) for t in trails]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    trails[0].catch_up()
    assert count_rows(engine, chain) == count_events(engine)
    assert len({t.origin for t in trails}) == 1
    trails[1].export(tmp_path / "x", engine.now())
    assert verify_export(tmp_path / "x", trails[2].public_key).ok


def test_event_inserted_behind_the_chain_is_named(
    engine: Engine,
    clock: ManualClock,
    network: SimulatedCarrierNetwork,
    trail: AuditTrail,
    tmp_path: Path,
) -> None:
    history(engine, clock, network)
    ticks = [0.0]
    trail = AuditTrail(engine.store, engine.keyring.signing_key, monotonic=lambda: ticks[0])
    trail.catch_up()
    n = count_events(engine)
    copy = (
        "INSERT INTO tsuchi_events (id, originator_id, originator_version, topic, state) "
        "SELECT :nid, originator_id, originator_version + :dv, topic, state "
        "FROM tsuchi_events WHERE id = 1"
    )
    with engine.store.session(commit=True) as s:
        s.execute(text(copy), {"nid": n + 100, "dv": 1000})
    # A gap in the ids is not chained past until it has settled (2 s by default).
    assert trail.catch_up() == 0 and trail.gap_wait == 2.0
    ticks[0] += 1.5
    assert trail.catch_up() == 0 and trail.gap_wait == pytest.approx(0.5)
    ticks[0] += 0.5
    assert trail.catch_up() == 1 and trail.gap_wait is None
    with engine.store.session(commit=True) as s:  # into the gap the chain already passed
        s.execute(text(copy), {"nid": n + 50, "dv": 2000})
    assert trail.catch_up() == 0
    for batch in (1000, 2, 1):  # one page, or pages that split around the gap
        with pytest.raises(AuditMismatch) as e:
            trail.export(tmp_path / f"x{batch}", engine.now(), batch=batch)
        assert e.value.seq == n + 1 and "inserted" in e.value.reason
