"""The audit trail against a writer of the database, SQLite and PostgreSQL alike.

Whoever can write the database can delete checkpoints, recompute the chain,
roll it back, cut off its tail or recreate the audit tables.  Each test here
does one of those with plain SQL and checks that tsuchi refuses to sign the
result (the anchor log outside the database disagrees), that exports tampered
with afterwards fail verification, and that one malformed stored event is
chained and reported instead of stopping the chain.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, func, select, text, update

from tsuchi import Engine, ManualClock, SimulatedCarrierNetwork
from tsuchi.errors import AuditAnchorMismatch, AuditMismatch
from tsuchi.infrastructure.audit import AuditTrail, aggregates, chain, checkpoints, position
from tsuchi.infrastructure.audit_anchor import FileAuditAnchor
from tsuchi.projections.audit import (
    MALFORMED_KEY,
    ZERO_HASH,
    canonical_json,
    checkpoint_message,
    key_id,
    manifest_message,
    verify_export,
)
from tsuchi.worker import Worker

from .test_audit_trail import drain, history
from .world import World, count_events


def anchor_of(engine: Engine) -> Path:
    return engine.settings.resolved_audit_anchor()


def another_process(engine: Engine) -> AuditTrail:
    """The audit trail as a freshly started process sees it (no memory of its own)."""
    return AuditTrail(
        engine.store, engine.keyring.signing_key, anchor=FileAuditAnchor(anchor_of(engine))
    )


def state_of(engine: Engine, nid: int) -> bytes:
    with engine.store.session(commit=False) as s:
        return bytes(
            s.execute(
                text("SELECT state FROM tsuchi_events WHERE id = :i"), {"i": nid}
            ).scalar_one()
        )


def change_event(engine: Engine, nid: int) -> None:
    state = state_of(engine, nid)
    changed = state[:-2] + bytes([state[-2] ^ 0x01]) + state[-1:]
    with engine.store.session(commit=True) as s:
        s.execute(
            text("UPDATE tsuchi_events SET state = :s WHERE id = :i"), {"s": changed, "i": nid}
        )


def roll_back_chain(engine: Engine, to_seq: int) -> None:
    """Delete the chain after ``to_seq`` and put the position back there."""
    with engine.store.session(commit=True) as s:
        if to_seq == 0:
            nid, head = 0, ZERO_HASH
        else:
            row = s.execute(
                select(chain.c.notification_id, chain.c.entry_hash).where(chain.c.seq == to_seq)
            ).one()
            nid, head = int(row.notification_id), str(row.entry_hash)
        s.execute(delete(chain).where(chain.c.seq > to_seq))
        s.execute(delete(checkpoints).where(checkpoints.c.seq > to_seq))
        if to_seq == 0:
            s.execute(delete(aggregates))
        s.execute(update(position).values(notification_id=nid, seq=to_seq, head=head))


def anchored_lines(engine: Engine) -> list[dict[str, Any]]:
    path = anchor_of(engine)
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def checkpointed(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> tuple[int, World]:
    w = history(engine, clock, network)
    engine.audit_checkpoint()
    cp = engine.audit.latest_checkpoint()
    assert cp is not None and cp.seq == count_events(engine)
    assert [(a["seq"], a["head"]) for a in anchored_lines(engine)] == [(cp.seq, cp.head)]
    return cp.seq, w


# -- (1) checkpoints deleted, chain recomputed: the anchor disagrees ---------------------------


def test_recomputed_chain_over_a_changed_event_is_refused(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork, tmp_path: Path
) -> None:
    last, _w = checkpointed(engine, clock, network)
    change_event(engine, 3)
    roll_back_chain(engine, 0)  # every checkpoint and chain row gone
    forger = another_process(engine)
    assert forger.catch_up() == count_events(engine)  # the chain recomputed over the change
    with pytest.raises(AuditAnchorMismatch) as e:
        forger.export(tmp_path / "x", engine.now())
    assert e.value.seq == last and "rewritten" in e.value.reason
    assert not any((tmp_path / "x").iterdir())
    with pytest.raises(AuditAnchorMismatch):
        forger.checkpoint(engine.now())
    with engine.store.session(commit=False) as s:
        assert s.execute(select(func.count()).select_from(checkpoints)).scalar_one() == 0
    assert len(anchored_lines(engine)) == 1  # nothing forged was anchored


def test_cut_off_tail_is_refused(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork, tmp_path: Path
) -> None:
    last, _w = checkpointed(engine, clock, network)
    with engine.store.session(commit=True) as s:
        nid = s.execute(select(chain.c.notification_id).where(chain.c.seq == last - 3)).scalar_one()
        s.execute(text("DELETE FROM tsuchi_events WHERE id > :n"), {"n": nid})
    roll_back_chain(engine, last - 3)
    with pytest.raises(AuditAnchorMismatch) as e:
        another_process(engine).export(tmp_path / "x", engine.now())
    assert e.value.seq == last and "cut off" in e.value.reason


def test_recreated_audit_tables_are_refused(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork, tmp_path: Path
) -> None:
    checkpointed(engine, clock, network)
    change_event(engine, 3)
    roll_back_chain(engine, 0)
    with engine.store.session(commit=True) as s:
        s.execute(delete(position))  # a new origin: a chain that never was anchored
    forger = another_process(engine)
    with pytest.raises(AuditAnchorMismatch) as e:
        forger.export(tmp_path / "x", engine.now())
    assert "another chain" in e.value.reason and forger.origin in e.value.reason


# -- (2) a rollback after the last checkpoint ----------------------------------------------


@pytest.mark.parametrize("tamper", ["edit", "delete"])
def test_rollback_after_the_last_checkpoint_is_detected(
    engine: Engine,
    clock: ManualClock,
    network: SimulatedCarrierNetwork,
    tmp_path: Path,
    tamper: str,
) -> None:
    last, w = checkpointed(engine, clock, network)
    history_more(engine, clock, w)
    assert engine.catch_up_projections() > 0  # chained, not yet checkpointed
    with engine.store.session(commit=False) as s:
        victim = s.execute(
            select(chain.c.notification_id).where(chain.c.seq == last + 2)
        ).scalar_one()
    if tamper == "edit":
        change_event(engine, victim)
    else:
        with engine.store.session(commit=True) as s:
            s.execute(text("DELETE FROM tsuchi_events WHERE id = :n"), {"n": victim})
    roll_back_chain(engine, last)
    with pytest.raises(AuditMismatch) as e:
        engine.audit_checkpoint()
    assert e.value.seq > last and "rolled back" in e.value.reason
    with pytest.raises(AuditMismatch):
        engine.audit.export(tmp_path / "x", engine.now())
    assert len(anchored_lines(engine)) == 1


def history_more(engine: Engine, clock: ManualClock, w: World) -> None:
    for i in range(3):
        engine.request_notice(
            w.sender, w.accounts[i % len(w.accounts)], "campaign", idempotency_key=f"m{i}"
        )
    drain(engine, clock, rounds=2)


def test_the_worker_checkpoints_every_30_seconds_by_default(engine: Engine) -> None:
    assert engine.settings.audit_checkpoint_every == timedelta(seconds=30)
    assert Worker(engine).checkpoint_every == timedelta(seconds=30)


# -- (3), (4), (5) exports tampered with after they were written -----------------------------


def two_checkpoint_export(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork, d: Path
) -> dict[str, Any]:
    _last, w = checkpointed(engine, clock, network)
    clock.advance(timedelta(minutes=1))
    history_more(engine, clock, w)
    m = engine.audit.export(d, engine.now())
    assert len((d / "checkpoints.jsonl").read_text().splitlines()) == 2
    assert len(anchored_lines(engine)) == 2
    return m


def test_export_cut_back_to_an_earlier_checkpoint_fails(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork, tmp_path: Path
) -> None:
    d = tmp_path / "x"
    two_checkpoint_export(engine, clock, network, d)
    pub = engine.audit.public_key
    assert verify_export(d, pub).ok and verify_export(d, anchor=anchor_of(engine)).ok
    first = json.loads((d / "checkpoints.jsonl").read_text().splitlines()[0])
    lines = (d / "records.jsonl").read_bytes().splitlines(keepends=True)[: first["seq"]]
    (d / "records.jsonl").write_bytes(b"".join(lines))
    (d / "checkpoints.jsonl").write_bytes(canonical_json(first) + b"\n")
    m = json.loads((d / "manifest.json").read_text())
    m.update(
        last_seq=first["seq"],
        record_count=first["seq"],
        records_sha256=hashlib.sha256(b"".join(lines)).hexdigest(),
    )
    (d / "manifest.json").write_text(json.dumps(m))
    for result in (verify_export(d, pub), verify_export(d, anchor=anchor_of(engine))):
        assert not result.ok and "manifest signature" in result.reason


def resign(d: Path, forger: Ed25519PrivateKey) -> None:
    """Re-sign every checkpoint and the manifest with ``forger``'s key."""
    m = json.loads((d / "manifest.json").read_text())
    raw = forger.public_key().public_bytes_raw()
    cps = []
    for line in (d / "checkpoints.jsonl").read_text().splitlines():
        cp = json.loads(line)
        msg = checkpoint_message(m["origin"], cp["seq"], cp["head"], cp["issued_at"])
        cp["signature"] = base64.b64encode(forger.sign(msg)).decode()
        cp["key_id"] = key_id(raw)
        cps.append(canonical_json(cp) + b"\n")
    (d / "checkpoints.jsonl").write_bytes(b"".join(cps))
    m["public_key"], m["key_id"] = base64.b64encode(raw).decode(), key_id(raw)
    m["manifest_signature"] = base64.b64encode(forger.sign(manifest_message(m))).decode()
    (d / "manifest.json").write_text(json.dumps(m))


def test_export_resigned_with_another_key_fails_unless_its_key_is_trusted(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork, tmp_path: Path
) -> None:
    d = tmp_path / "x"
    two_checkpoint_export(engine, clock, network, d)
    resign(d, Ed25519PrivateKey.generate())
    assert not verify_export(d, engine.audit.public_key).ok
    result = verify_export(d, anchor=anchor_of(engine))
    assert not result.ok and "another key" in result.reason
    untrusted = verify_export(d)
    assert not untrusted.ok and "no trust root" in untrusted.reason
    assert verify_export(d, trust_embedded_key=True).ok  # only what the caller asked for


# -- (6) a malformed stored event ---------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "why"), [(b"\xff not json", "not_json_object"), (b'{"a": 1}', "no_timestamp")]
)
def test_malformed_event_is_chained_reported_and_the_chain_continues(
    engine: Engine,
    clock: ManualClock,
    network: SimulatedCarrierNetwork,
    tmp_path: Path,
    state: bytes,
    why: str,
) -> None:
    w = history(engine, clock, network)
    n = count_events(engine)
    sqlite = engine.store.engine.dialect.name == "sqlite"
    originator = uuid4()
    with engine.store.session(commit=True) as s:
        s.execute(
            text(
                "INSERT INTO tsuchi_events (id, originator_id, originator_version, topic, state) "
                "VALUES (:i, :o, 1, 'tsuchi.domain.message:Message.Requested', :s)"
            ),
            {"i": n + 1, "o": originator.bytes if sqlite else str(originator), "s": state},
        )
    trail = another_process(engine)
    assert trail.catch_up() == n + 1
    history_more(engine, clock, w)  # later events are chained after it
    total = count_events(engine)
    d = tmp_path / "x"
    m = trail.export(d, engine.now())
    assert m["last_seq"] == total and m["malformed_count"] == 1
    recs = [json.loads(x) for x in (d / "records.jsonl").read_text().splitlines()]
    bad = recs[n]
    assert bad["notification_id"] == n + 1 and bad["summary"][MALFORMED_KEY] == why
    assert bad["event_type"] == "Requested" and bad["recorded_at"] == recs[n - 1]["recorded_at"]
    assert m["malformed_seqs"] == [bad["seq"]]
    result = verify_export(d, engine.audit.public_key, anchor=anchor_of(engine))
    assert result.ok and result.malformed == (bad["seq"],), result
    assert f"seq {bad['seq']}" in str(result)
    # Its bytes are still guarded: changing them is found at its seq.
    with engine.store.session(commit=True) as s:
        s.execute(
            text("UPDATE tsuchi_events SET state = :s WHERE id = :i"), {"s": b"x", "i": n + 1}
        )
    with pytest.raises(AuditMismatch) as e:
        trail.export(tmp_path / "y", engine.now())
    assert e.value.seq == bad["seq"]


def test_a_checkpoint_stored_without_the_anchor_is_anchored_on_the_next_run(
    engine: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    """A checkpoint issued while the anchor log was not configured (or not
    reachable) is anchored by the next checkpoint run, after its head and
    signature are checked; a forged one never is."""
    history(engine, clock, network)
    unanchored = AuditTrail(engine.store, engine.keyring.signing_key)
    cp = unanchored.checkpoint(engine.now())
    assert cp is not None and anchored_lines(engine) == []
    assert engine.audit.checkpoint(engine.now()) == cp
    assert [(a["seq"], a["head"]) for a in anchored_lines(engine)] == [(cp.seq, cp.head)]
    # A checkpoint row written with SQL (no valid signature) is not anchored.
    with engine.store.session(commit=True) as s:
        s.execute(update(checkpoints).values(signature=base64.b64encode(b"x" * 64).decode()))
    with engine.store.session(commit=True) as s:
        s.execute(delete(checkpoints).where(checkpoints.c.seq != cp.seq))
    path = anchor_of(engine)
    path.write_bytes(b"")  # a fresh anchor log
    with pytest.raises(AuditMismatch) as e:
        another_process(engine).checkpoint(engine.now())
    assert e.value.seq == cp.seq and "signature" in e.value.reason
    assert path.read_bytes() == b""
