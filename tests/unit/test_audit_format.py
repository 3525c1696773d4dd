"""The audit export format: canonical JSON, the hash chain, signatures, tamper detection.

Exports here are built by hand (no database).  An independent verifier,
written from the format's specification without importing tsuchi, checks the
same exports, to show the format can be implemented from the spec alone.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tsuchi.projections.audit import (
    ZERO_HASH,
    canonical_json,
    checkpoint_message,
    entry_hash,
    event_facts,
    key_id,
    make_record,
    manifest_message,
    parse_public_key,
    redacted_stub,
    selection_message,
    summary_of,
    verify_export,
)

ORIGIN = "urn:uuid:00000000-0000-4000-8000-000000000001"


# -- an independent verifier, from the specification only ---------------------------------


def _spec_canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def independent_verify(d: Path, public_key: bytes) -> tuple[bool, int | None]:
    """(ok, first bad seq) for a full (not tenant-filtered) export."""
    m = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    key = Ed25519PublicKey.from_public_bytes(public_key)
    cps = [json.loads(x) for x in (d / "checkpoints.jsonl").read_text("utf-8").splitlines()]
    by_seq = {c["seq"]: c for c in cps}
    for a, b in itertools.pairwise(cps):
        if b["seq"] <= a["seq"] or b["issued_at"] < a["issued_at"]:
            return False, b["seq"]

    def signed(c: dict[str, Any]) -> bool:
        msg = (
            f"tsuchi-audit-checkpoint/v1\n{m['origin']}\n{c['seq']}\n{c['head']}\n"
            f"{c['issued_at']}\n"
        ).encode()
        try:
            key.verify(base64.b64decode(c["signature"]), msg)
        except InvalidSignature:
            return False
        return True

    first, last = m["first_seq"], m["last_seq"]
    prev = m["anchor_prev_hash"]
    if first == 1:
        if prev != "0" * 64:
            return False, 1
    else:
        anchor = by_seq.get(first - 1)
        if anchor is None or anchor["head"] != prev or not signed(anchor):
            return False, first - 1
    expected = first
    digest = hashlib.sha256()
    with (d / "records.jsonl").open("rb") as f:
        for line in f:
            digest.update(line)
            if not line.endswith(b"\n"):
                return False, expected
            try:
                r = json.loads(line)
            except ValueError:
                return False, expected
            if r.get("seq") != expected or r.get("prev_hash") != prev:
                return False, expected
            body = {k: v for k, v in r.items() if k != "entry_hash"}
            h = hashlib.sha256(b"tsuchi-audit/v1\x00" + _spec_canonical(body)).hexdigest()
            if h != r["entry_hash"]:
                return False, expected
            c = by_seq.get(expected)
            if c is not None and (c["head"] != h or not signed(c)):
                return False, expected
            prev = h
            expected += 1
    if expected != last + 1:
        return False, expected
    if last not in by_seq:
        return False, last
    if digest.hexdigest() != m["records_sha256"]:
        return False, None
    return True, None


# -- handmade exports -------------------------------------------------------------------


def handmade_records(n: int, start: int = 1, prev: str = ZERO_HASH) -> list[dict[str, Any]]:
    out = []
    for seq in range(start, start + n):
        rec = make_record(
            seq=seq,
            notification_id=seq * 2,
            recorded_at=f"2026-04-01T00:00:{seq % 60:02d}.000000Z",
            tenant="acme" if seq % 3 else "beta",
            aggregate_type="Message",
            aggregate_id=f"00000000-0000-4000-8000-{seq:012d}",
            aggregate_version=seq,
            event_type="Blocked",
            actor="host",
            correlation_id=f"corr-{seq}",
            summary={"status": "blocked", "reason": "配信停止", "attempt": 1},
            event_digest=hashlib.sha256(str(seq).encode()).hexdigest(),
            prev_hash=prev,
        )
        prev = rec["entry_hash"]
        out.append(rec)
    return out


def sign_checkpoint(key: Ed25519PrivateKey, rec: dict[str, Any], issued_at: str) -> dict[str, Any]:
    seq, head = rec["seq"], rec["entry_hash"]
    sig = key.sign(checkpoint_message(ORIGIN, seq, head, issued_at))
    pub = key.public_key().public_bytes_raw()
    return {
        "seq": seq,
        "head": head,
        "issued_at": issued_at,
        "key_id": key_id(pub),
        "signature": base64.b64encode(sig).decode(),
    }


def write_export(
    d: Path,
    key: Ed25519PrivateKey,
    records: list[dict[str, Any]],
    checkpoint_seqs: list[int],
    anchor_checkpoint: dict[str, Any] | None = None,
    tenant: str | None = None,
) -> dict[str, Any]:
    d.mkdir(parents=True, exist_ok=True)
    lines = []
    redacted = 0
    for r in records:
        if tenant is not None and r["tenant"] != tenant:
            lines.append(canonical_json(redacted_stub(r)) + b"\n")
            redacted += 1
        else:
            lines.append(canonical_json(r) + b"\n")
    data = b"".join(lines)
    (d / "records.jsonl").write_bytes(data)
    by_seq = {r["seq"]: r for r in records}
    cps = [anchor_checkpoint] if anchor_checkpoint else []
    cps += [
        sign_checkpoint(key, by_seq[s], f"2026-04-02T00:00:{i:02d}.000000Z")
        for i, s in enumerate(checkpoint_seqs)
    ]
    (d / "checkpoints.jsonl").write_bytes(b"".join(canonical_json(c) + b"\n" for c in cps))
    pub = key.public_key().public_bytes_raw()
    manifest: dict[str, Any] = {
        "format": "tsuchi-audit/v1",
        "origin": ORIGIN,
        "first_seq": records[0]["seq"],
        "last_seq": records[-1]["seq"],
        "record_count": len(records),
        "anchor_prev_hash": records[0]["prev_hash"],
        "records_sha256": hashlib.sha256(data).hexdigest(),
        "public_key": base64.b64encode(pub).decode(),
        "key_id": key_id(pub),
        "exported_at": "2026-04-03T00:00:00.000000Z",
        "range": "head",
        "malformed_count": 0,
        "malformed_seqs": [],
    }
    if tenant is not None:
        manifest["tenant"] = tenant
        manifest["redacted_count"] = redacted
        manifest["selection_signature"] = base64.b64encode(
            key.sign(
                selection_message(
                    ORIGIN,
                    tenant,
                    manifest["first_seq"],
                    manifest["last_seq"],
                    manifest["records_sha256"],
                )
            )
        ).decode()
    sign_manifest(key, manifest)
    (d / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def sign_manifest(key: Ed25519PrivateKey, manifest: dict[str, Any]) -> None:
    manifest["manifest_signature"] = base64.b64encode(key.sign(manifest_message(manifest))).decode()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def export(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    d = tmp_path / "export"
    write_export(d, key, handmade_records(10), [4, 10])
    return d


def pub(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def lines(d: Path) -> list[bytes]:
    return (d / "records.jsonl").read_bytes().splitlines(keepends=True)


def rewrite(d: Path, new_lines: list[bytes], fix_sha: bool = True) -> None:
    data = b"".join(new_lines)
    (d / "records.jsonl").write_bytes(data)
    if fix_sha:  # a careful forger also updates the manifest
        m = json.loads((d / "manifest.json").read_text())
        m["records_sha256"] = hashlib.sha256(data).hexdigest()
        (d / "manifest.json").write_text(json.dumps(m))


def both(d: Path, key: Ed25519PrivateKey) -> tuple[bool, int | None, bool, int | None]:
    ours = verify_export(d, pub(key))
    ok, seq = independent_verify(d, pub(key))
    return ours.ok, ours.first_bad_seq, ok, seq


# -- canonical JSON -----------------------------------------------------------------------


def test_canonical_json_sorts_keys_without_spaces_and_keeps_non_ascii() -> None:
    assert canonical_json({"b": 1, "a": [1, "x"], "c": {"z": True, "y": None}}) == (
        b'{"a":[1,"x"],"b":1,"c":{"y":null,"z":true}}'
    )
    assert canonical_json({"r": "配信停止"}) == '{"r":"配信停止"}'.encode()
    assert canonical_json({"q": 'a"b\\c\n\x01'}) == b'{"q":"a\\"b\\\\c\\n\\u0001"}'


def test_canonical_json_has_no_floats() -> None:
    with pytest.raises(TypeError):
        canonical_json({"a": 1.5})
    with pytest.raises(TypeError):
        canonical_json({"a": [{"b": 0.0}]})


def test_entry_hash_is_sha256_of_domain_nul_and_canonical_json_without_entry_hash() -> None:
    body = {"seq": 1, "prev_hash": ZERO_HASH, "tenant": "acme"}
    expected = hashlib.sha256(
        b'tsuchi-audit/v1\x00{"prev_hash":"' + ZERO_HASH.encode() + b'","seq":1,"tenant":"acme"}'
    ).hexdigest()
    assert entry_hash(body) == expected
    assert entry_hash({**body, "entry_hash": "ignored"}) == expected


def test_checkpoint_message_layout() -> None:
    assert checkpoint_message("o", 7, "h", "2026-04-01T00:00:00.000000Z") == (
        b"tsuchi-audit-checkpoint/v1\no\n7\nh\n2026-04-01T00:00:00.000000Z\n"
    )


def test_records_chain_from_zeros() -> None:
    recs = handmade_records(3)
    assert recs[0]["prev_hash"] == ZERO_HASH
    assert recs[1]["prev_hash"] == recs[0]["entry_hash"]
    assert recs[2]["prev_hash"] == recs[1]["entry_hash"]


# -- facts from stored events -----------------------------------------------------------


def test_summary_keeps_codes_and_never_sealed_personal_values() -> None:
    sealed = {"_type_": "pii", "_data_": {"s": "ab", "k": 1, "b": "Zm9v"}}
    state = {
        "status": "read",
        "attempt": 2,
        "reason": sealed,
        "channel": "sms",
        "postback": "いいえ",
        "text": sealed,
        "code": "402",
    }
    assert summary_of(state) == {"status": "read", "attempt": 2, "channel": "sms", "code": "402"}


def test_event_facts_from_a_stored_state() -> None:
    state = {
        "timestamp": {"_type_": "datetime_iso", "_data_": "2026-04-01T09:00:00.5+09:00"},
        "tenant": "acme",
        "account_id": {"_type_": "uuid_hex", "_data_": "e8deaf8d26bc4087b5effc145115d339"},
        "purpose": "security",
        "correlation_id": "fa-1",
        "requested_by": "core-banking",
        "variables": {"name": {"_type_": "pii", "_data_": {"s": "e8", "k": 1, "b": "eA=="}}},
    }
    raw = json.dumps(state).encode()
    f = event_facts("tsuchi.domain.message:Message.Requested", raw)
    assert (f.aggregate_type, f.event_type) == ("Message", "Requested")
    assert f.recorded_at == "2026-04-01T00:00:00.500000Z"
    assert f.actor == "core-banking" and f.tenant == "acme" and f.correlation_id == "fa-1"
    assert f.summary == {"purpose": "security"}
    assert f.references == ("e8deaf8d-26bc-4087-b5ef-fc145115d339",)
    assert f.event_digest == hashlib.sha256(raw).hexdigest()
    quiet = event_facts("tsuchi.domain.consent:Consent.Granted", b'{"by":{"_type_":"pii"}}')
    assert quiet.actor == "system" and quiet.tenant is None and quiet.recorded_at is None


def test_public_key_files_raw_base64_or_pem(key: Ed25519PrivateKey) -> None:
    raw = pub(key)
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    assert parse_public_key(raw) == raw
    assert parse_public_key(base64.b64encode(raw) + b"\n") == raw
    assert parse_public_key(pem) == raw
    with pytest.raises(ValueError):
        parse_public_key(b"not a key")


# -- verification -----------------------------------------------------------------------


def test_handmade_export_verifies_with_both_verifiers(export: Path, key: Ed25519PrivateKey) -> None:
    result = verify_export(export, pub(key))
    assert result.ok, result.reason
    assert (result.first_seq, result.last_seq, result.records, result.checkpoints) == (1, 10, 10, 2)
    assert result.key_supplied and "OK" in str(result)
    assert independent_verify(export, pub(key)) == (True, None)
    unpinned = verify_export(export, trust_embedded_key=True)
    assert unpinned.ok and not unpinned.key_supplied
    untrusted = verify_export(export)  # no key, no anchor log: nothing vouches for the signer
    assert not untrusted.ok and "no trust root" in untrusted.reason


def test_edited_record_fails_at_its_seq(export: Path, key: Ed25519PrivateKey) -> None:
    ls = lines(export)
    rec = json.loads(ls[5])
    rec["actor"] = "mallory"
    ls[5] = canonical_json(rec) + b"\n"
    rewrite(export, ls)
    assert both(export, key) == (False, 6, False, 6)


def test_edited_record_with_recomputed_hash_fails_at_the_next_link(
    export: Path, key: Ed25519PrivateKey
) -> None:
    ls = lines(export)
    rec = json.loads(ls[5])
    rec["summary"]["status"] = "delivered"
    rec["entry_hash"] = entry_hash(rec)
    ls[5] = canonical_json(rec) + b"\n"
    rewrite(export, ls)
    assert both(export, key) == (False, 7, False, 7)


def test_edited_last_record_with_recomputed_hash_fails_at_the_checkpoint(
    export: Path, key: Ed25519PrivateKey
) -> None:
    ls = lines(export)
    rec = json.loads(ls[-1])
    rec["tenant"] = "other"
    rec["entry_hash"] = entry_hash(rec)
    ls[-1] = canonical_json(rec) + b"\n"
    rewrite(export, ls)
    result = verify_export(export, pub(key))
    assert (result.ok, result.first_bad_seq) == (False, 10)
    assert "head" in result.reason
    assert independent_verify(export, pub(key)) == (False, 10)


def test_deleted_record_fails_at_the_missing_seq(export: Path, key: Ed25519PrivateKey) -> None:
    ls = lines(export)
    del ls[2]
    rewrite(export, ls)
    assert both(export, key) == (False, 3, False, 3)


def test_reordered_records_fail_at_the_first_moved_seq(
    export: Path, key: Ed25519PrivateKey
) -> None:
    ls = lines(export)
    ls[6], ls[7] = ls[7], ls[6]
    rewrite(export, ls)
    assert both(export, key) == (False, 7, False, 7)


def test_inserted_record_fails(export: Path, key: Ed25519PrivateKey) -> None:
    ls = lines(export)
    forged = json.loads(ls[3])
    forged.update(seq=5, notification_id=9, actor="mallory", prev_hash=forged["entry_hash"])
    forged["entry_hash"] = entry_hash(forged)
    ls.insert(4, canonical_json(forged) + b"\n")  # a well-linked record 5; the old 5 follows it
    rewrite(export, ls)
    assert both(export, key) == (False, 6, False, 6)
    assert "expected seq 6" in verify_export(export, pub(key)).reason


def test_inserted_renumbered_record_breaks_the_signed_head(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    d = tmp_path / "e"
    write_export(d, key, handmade_records(6), [6])
    ls = lines(d)
    recs = [json.loads(x) for x in ls]
    extra = dict(recs[2], notification_id=recs[2]["notification_id"] + 1)
    forged = [*recs[:3], extra, *recs[3:]]
    prev = ZERO_HASH
    out = []
    for i, r in enumerate(forged, start=1):  # the forger re-links and renumbers everything
        r = dict(r, seq=i, prev_hash=prev)
        r["entry_hash"] = entry_hash(r)
        prev = r["entry_hash"]
        out.append(canonical_json(r) + b"\n")
    rewrite(d, out[:6])  # keeps the manifest's range of 6
    ok, seq, ind_ok, ind_seq = both(d, key)
    assert (ok, seq) == (False, 6) and (ind_ok, ind_seq) == (False, 6)


def test_truncated_file_fails_at_the_cut_record(export: Path, key: Ed25519PrivateKey) -> None:
    data = (export / "records.jsonl").read_bytes()
    cut = data[: len(data) - 40]
    (export / "records.jsonl").write_bytes(cut)
    result = verify_export(export, pub(key))
    assert (result.ok, result.first_bad_seq) == (False, 10)
    assert independent_verify(export, pub(key)) == (False, 10)


def test_file_truncated_at_a_line_boundary_names_the_first_missing_seq(
    export: Path, key: Ed25519PrivateKey
) -> None:
    rewrite(export, lines(export)[:7], fix_sha=False)
    assert both(export, key) == (False, 8, False, 8)


def test_wrong_public_key_fails_at_the_first_checkpoint(export: Path) -> None:
    other = Ed25519PrivateKey.generate()
    result = verify_export(export, pub(other))
    assert (result.ok, result.first_bad_seq) == (False, 4)
    assert "given public key" in result.reason
    assert independent_verify(export, pub(other)) == (False, 4)


def test_resigned_export_with_a_forgers_key_fails_against_the_pinned_key(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    d = tmp_path / "forged"
    forger = Ed25519PrivateKey.generate()
    write_export(d, forger, handmade_records(5), [5])
    assert verify_export(d, trust_embedded_key=True).ok  # self-consistent, but unpinned
    assert not verify_export(d).ok
    assert verify_export(d, pub(key)).first_bad_seq == 5


def test_changed_bytes_outside_records_are_caught_by_the_manifest_digest(
    export: Path, key: Ed25519PrivateKey
) -> None:
    m = json.loads((export / "manifest.json").read_text())
    m["records_sha256"] = "f" * 64
    (export / "manifest.json").write_text(json.dumps(m))
    result = verify_export(export, pub(key))
    assert not result.ok and result.first_bad_seq is None and "records_sha256" in result.reason


def test_forged_checkpoint_signature_and_time_order(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    d = tmp_path / "cp"
    write_export(d, key, handmade_records(6), [3, 6])
    cps = (d / "checkpoints.jsonl").read_bytes().splitlines(keepends=True)
    first = json.loads(cps[0])
    first["issued_at"] = "2026-04-03T00:00:00.000000Z"  # later than the next; signature now stale
    (d / "checkpoints.jsonl").write_bytes(canonical_json(first) + b"\n" + cps[1])
    result = verify_export(d, pub(key))
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "signature" in result.reason
    # Properly signed, but going back in time.
    late = sign_checkpoint(key, handmade_records(6)[2], "2026-04-03T00:00:00.000000Z")
    (d / "checkpoints.jsonl").write_bytes(canonical_json(late) + b"\n" + cps[1])
    result = verify_export(d, pub(key))
    assert (result.ok, result.first_bad_seq) == (False, 6) and "back in time" in result.reason


def test_missing_final_checkpoint_fails(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    d = tmp_path / "nofinal"
    write_export(d, key, handmade_records(5), [3])
    result = verify_export(d, pub(key))
    assert (result.ok, result.first_bad_seq) == (False, 5)
    assert independent_verify(d, pub(key)) == (False, 5)


def test_partial_export_is_anchored_at_a_signed_checkpoint(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    recs = handmade_records(9)
    anchor = sign_checkpoint(key, recs[3], "2026-04-01T23:00:00.000000Z")
    d = tmp_path / "partial"
    write_export(d, key, recs[4:], [9], anchor_checkpoint=anchor)
    result = verify_export(d, pub(key))
    assert result.ok, result.reason
    assert (result.first_seq, result.records, result.checkpoints) == (5, 5, 2)
    assert independent_verify(d, pub(key)) == (True, None)
    # Without its anchor checkpoint the first record's link cannot be trusted.
    (d / "checkpoints.jsonl").write_bytes(
        (d / "checkpoints.jsonl").read_bytes().splitlines(keepends=True)[1]
    )
    result = verify_export(d, pub(key))
    assert (result.ok, result.first_bad_seq) == (False, 4)
    # A partial export that claims the zero anchor is refused too.
    m = json.loads((d / "manifest.json").read_text())
    m["anchor_prev_hash"] = ZERO_HASH
    (d / "manifest.json").write_text(json.dumps(m))
    assert not verify_export(d, pub(key)).ok


def test_tenant_export_redacts_other_tenants_and_still_verifies(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    d = tmp_path / "tenant"
    write_export(d, key, handmade_records(9), [4, 9], tenant="acme")
    text = (d / "records.jsonl").read_text("utf-8")
    assert "beta" not in text
    result = verify_export(d, pub(key))
    assert result.ok, result.reason
    assert (result.tenant, result.redacted, result.records) == ("acme", 3, 9)


def test_tenant_export_hiding_a_record_behind_a_stub_is_detected(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    d = tmp_path / "tenant"
    write_export(d, key, handmade_records(9), [9], tenant="acme")
    ls = lines(d)
    hidden = json.loads(ls[0])  # seq 1 belongs to acme
    ls[0] = canonical_json(redacted_stub(hidden)) + b"\n"
    rewrite(d, ls)  # the chain links still hold; the selection signature does not
    result = verify_export(d, pub(key))
    assert not result.ok and "selection" in result.reason


def test_stub_in_a_full_export_is_refused(export: Path, key: Ed25519PrivateKey) -> None:
    ls = lines(export)
    ls[1] = canonical_json(redacted_stub(json.loads(ls[1]))) + b"\n"
    rewrite(export, ls)
    assert verify_export(export, pub(key)).first_bad_seq == 2


def test_non_canonical_line_is_refused(export: Path, key: Ed25519PrivateKey) -> None:
    ls = lines(export)
    ls[0] = json.dumps(json.loads(ls[0]), sort_keys=True).encode() + b"\n"  # spaces
    rewrite(export, ls)
    result = verify_export(export, pub(key))
    assert (result.ok, result.first_bad_seq) == (False, 1) and "canonical" in result.reason


def test_missing_manifest_is_reported_without_a_seq(tmp_path: Path) -> None:
    result = verify_export(tmp_path, trust_embedded_key=True)
    assert not result.ok and result.first_bad_seq is None and "manifest" in result.reason
