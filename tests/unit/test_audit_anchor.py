"""The anchor log and the verifier's trust rules, on handmade exports (no database).

The anchor log keeps signed checkpoints outside the database; an export must
extend it.  These tests write exports and anchor logs by hand and check each
rule: signed manifests, truncation, re-signing with another key, a missing
trust root, continuity with the anchor, and a corrupt anchor log named by
file and line.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tsuchi.errors import AuditAnchorCorrupt
from tsuchi.infrastructure.audit_anchor import FileAuditAnchor
from tsuchi.ports import AnchoredCheckpoint
from tsuchi.projections.audit import MALFORMED_KEY, make_record, verify_export
from tsuchi.projections.audit.anchor import ANCHOR_FILE, anchor_line, read_anchor_index

from .test_audit_format import (
    ORIGIN,
    handmade_records,
    pub,
    sign_checkpoint,
    sign_manifest,
    write_export,
)


def anchored(cp: dict[str, Any], origin: str = ORIGIN) -> AnchoredCheckpoint:
    return AnchoredCheckpoint(
        origin, cp["seq"], cp["head"], cp["issued_at"], cp["key_id"], cp["signature"]
    )


def export_with_anchor(
    tmp_path: Path, key: Ed25519PrivateKey, n: int = 10, cps: tuple[int, ...] = (4, 10)
) -> tuple[Path, Path, list[dict[str, Any]]]:
    """An export and an anchor log holding its checkpoints."""
    d = tmp_path / "export"
    recs = handmade_records(n)
    write_export(d, key, recs, list(cps))
    log = tmp_path / "anchor.jsonl"
    lines = [json.loads(x) for x in (d / "checkpoints.jsonl").read_text().splitlines()]
    log.write_bytes(b"".join(anchor_line(anchored(c)) for c in lines))
    return d, log, recs


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_export_extends_its_anchor_log(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    d, log, _ = export_with_anchor(tmp_path, key)
    result = verify_export(d, anchor=log)
    assert result.ok and result.anchored == 2 and not result.key_supplied, result
    assert "extends 2 anchored checkpoints" in str(result)
    assert verify_export(d, pub(key), anchor=log).ok
    # A directory holding audit-anchor.jsonl is the same log.
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / ANCHOR_FILE).write_bytes(log.read_bytes())
    assert verify_export(d, anchor=tmp_path / "dir").ok


def test_no_trust_root_fails(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    d, _log, _ = export_with_anchor(tmp_path, key)
    result = verify_export(d)
    assert not result.ok and "no trust root" in result.reason
    assert verify_export(d, trust_embedded_key=True).ok


def test_cut_back_export_with_a_fixed_manifest_fails(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """Records and checkpoints cut back to the checkpoint at seq 4, the
    manifest's range and digest fixed to match: the manifest's signature no
    longer verifies, whatever the trust root."""
    d, log, _ = export_with_anchor(tmp_path, key)
    lines = (d / "records.jsonl").read_bytes().splitlines(keepends=True)[:4]
    (d / "records.jsonl").write_bytes(b"".join(lines))
    cps = (d / "checkpoints.jsonl").read_bytes().splitlines(keepends=True)[:1]
    (d / "checkpoints.jsonl").write_bytes(b"".join(cps))
    m = json.loads((d / "manifest.json").read_text())
    m.update(last_seq=4, record_count=4, records_sha256=hashlib.sha256(b"".join(lines)).hexdigest())
    (d / "manifest.json").write_text(json.dumps(m))
    for result in (
        verify_export(d, pub(key)),
        verify_export(d, anchor=log),
        verify_export(d, trust_embedded_key=True),
    ):
        assert not result.ok and "manifest signature is invalid" in result.reason, result


def test_export_cut_off_before_an_anchored_checkpoint_fails_unless_bounded(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """A genuine export to seq 4 (signed), while the anchor log already held
    a checkpoint at seq 10 issued before the export was made: a "head"
    export must cover it; a bounded one need not."""
    _d, log, recs = export_with_anchor(tmp_path, key)
    short = tmp_path / "short"
    write_export(short, key, recs[:4], [4])
    first = (short / "checkpoints.jsonl").read_bytes()
    later = sign_checkpoint(key, recs[9], "2026-04-02T12:00:00.000000Z")
    log.write_bytes(anchor_line(anchored(json.loads(first))) + anchor_line(anchored(later)))
    result = verify_export(short, pub(key), anchor=log)
    assert (result.ok, result.first_bad_seq) == (False, 10) and "cut off" in result.reason
    m = json.loads((short / "manifest.json").read_text())
    m["range"] = "bounded"
    sign_manifest(key, m)
    (short / "manifest.json").write_text(json.dumps(m))
    assert verify_export(short, pub(key), anchor=log).ok
    # A checkpoint anchored after the export was made is not required.
    m["range"], m["exported_at"] = "head", "2026-04-02T06:00:00.000000Z"
    sign_manifest(key, m)
    (short / "manifest.json").write_text(json.dumps(m))
    assert verify_export(short, pub(key), anchor=log).ok


def test_rewritten_history_fails_against_the_anchor(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """The key holder signs a rewritten chain (seq 3 changed, everything after
    recomputed): every signature verifies, but the anchored head at seq 4 differs."""
    _d, log, recs = export_with_anchor(tmp_path, key)
    changed = {k: v for k, v in recs[2].items() if k != "entry_hash"}
    forged = [*handmade_records(2), make_record(**{**changed, "actor": "x"})]
    prev = forged[-1]["entry_hash"]
    for r in recs[3:]:
        body = {k: v for k, v in r.items() if k != "entry_hash"}
        forged.append(make_record(**{**body, "prev_hash": prev}))
        prev = forged[-1]["entry_hash"]
    d2 = tmp_path / "forged"
    write_export(d2, key, forged, [4, 10])
    assert verify_export(d2, pub(key)).ok  # signed by the genuine key
    result = verify_export(d2, pub(key), anchor=log)
    assert (result.ok, result.first_bad_seq) == (False, 4) and "rewritten" in result.reason


def test_export_resigned_with_another_key_fails_against_the_anchor(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    _d, log, recs = export_with_anchor(tmp_path, key)
    forger = Ed25519PrivateKey.generate()
    d2 = tmp_path / "resigned"
    write_export(d2, forger, recs, [4, 10])
    assert verify_export(d2, trust_embedded_key=True).ok
    result = verify_export(d2, anchor=log)
    assert not result.ok and "another key" in result.reason
    assert not verify_export(d2, pub(key)).ok


def test_export_of_another_chain_or_outside_the_anchored_range_fails(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    d, _log, _ = export_with_anchor(tmp_path, key)
    other = tmp_path / "other.jsonl"
    lines = [json.loads(x) for x in (d / "checkpoints.jsonl").read_text().splitlines()]
    other.write_bytes(anchor_line(anchored(lines[0], origin="urn:uuid:other")))
    result = verify_export(d, pub(key), anchor=other)
    assert not result.ok and "no checkpoint of this chain" in result.reason
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(anchor_line(anchored({**lines[0], "seq": 99})))
    result = verify_export(d, pub(key), anchor=empty)
    assert not result.ok and "nothing to check it against" in result.reason


@pytest.mark.parametrize(
    ("mangle", "rule"),
    [
        (lambda b: b[:-1], "truncated"),
        (lambda b: b.replace(b'"seq":4', b'"seq":"4"'), "seq"),
        (lambda b: b.replace(b"tsuchi-audit-anchor/v1", b"tsuchi-audit-anchor/v0"), "format"),
        (lambda b: b + b"not json\n", "not JSON"),
        (lambda b: b.replace(b'"seq":4,', b'"seq": 4,'), "canonical"),
    ],
)
def test_corrupt_anchor_log_is_a_typed_error_naming_file_and_line(
    tmp_path: Path, key: Ed25519PrivateKey, mangle: Any, rule: str
) -> None:
    d, log, _ = export_with_anchor(tmp_path, key)
    log.write_bytes(mangle(log.read_bytes()))
    with pytest.raises(AuditAnchorCorrupt) as e:
        verify_export(d, pub(key), anchor=log)
    assert e.value.path == str(log) and e.value.line in (1, 2, 3) and rule in e.value.rule
    assert str(log) in str(e.value)


def test_two_heads_at_one_seq_make_the_log_corrupt(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    _d, log, recs = export_with_anchor(tmp_path, key)
    other = sign_checkpoint(key, {**recs[3], "entry_hash": "a" * 64}, "2026-04-02T00:00:09.000000Z")
    with log.open("ab") as f:
        f.write(anchor_line(anchored(other)))
    with pytest.raises(AuditAnchorCorrupt) as e:
        read_anchor_index(log, ORIGIN)
    assert "two different heads" in e.value.rule


def test_malformed_records_are_counted_and_named(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    recs = handmade_records(2)
    bad = {k: v for k, v in recs[1].items() if k != "entry_hash"}
    bad["summary"] = {MALFORMED_KEY: "not_json_object"}
    recs[1] = make_record(**bad)
    d = tmp_path / "x"
    m = write_export(d, key, recs, [2])
    result = verify_export(d, pub(key))
    assert not result.ok and "malformed_count" in result.reason  # the manifest says 0
    m["malformed_count"], m["malformed_seqs"] = 1, [2]
    sign_manifest(key, m)
    (d / "manifest.json").write_text(json.dumps(m))
    result = verify_export(d, pub(key))
    assert result.ok and result.malformed == (2,) and result.malformed_count == 1
    assert "1 malformed stored events chained by digest (seq 2)" in str(result)


# -- the local-file anchor ----------------------------------------------------------------


def test_file_anchor_appends_owner_only_lines_and_reads_them_back(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    recs = handmade_records(4)
    a = FileAuditAnchor(tmp_path)  # a directory: audit-anchor.jsonl inside it
    assert a.latest(ORIGIN) is None and a.origins() == frozenset()
    first = anchored(sign_checkpoint(key, recs[1], "2026-04-02T00:00:00.000000Z"))
    second = anchored(sign_checkpoint(key, recs[3], "2026-04-02T00:00:01.000000Z"))
    a.append(first)
    assert a.latest(ORIGIN) == first
    a.append(second)
    a.append(first)  # the same checkpoint twice (two processes) is allowed
    path = tmp_path / ANCHOR_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == anchor_line(first) + anchor_line(second) + anchor_line(first)
    fresh = FileAuditAnchor(path)
    assert fresh.latest(ORIGIN) == second and fresh.origins() == {ORIGIN}
    assert a.latest(ORIGIN) == second


def test_file_anchor_refuses_links_wide_permissions_and_rewrites(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    recs = handmade_records(2)
    cp = anchored(sign_checkpoint(key, recs[1], "2026-04-02T00:00:00.000000Z"))
    target = tmp_path / "elsewhere.jsonl"
    link = tmp_path / "link.jsonl"
    os.symlink(target, link)
    with pytest.raises(AuditAnchorCorrupt) as e:
        FileAuditAnchor(link).append(cp)
    assert "symbolic link" in e.value.rule and not target.exists()
    wide = tmp_path / "wide.jsonl"
    wide.write_bytes(b"")
    wide.chmod(0o644)
    with pytest.raises(AuditAnchorCorrupt) as e:
        FileAuditAnchor(wide).append(cp)
    assert "0600" in e.value.rule
    log = tmp_path / "log.jsonl"
    a = FileAuditAnchor(log)
    a.append(cp)
    assert a.latest(ORIGIN) == cp
    log.write_bytes(b"")  # a writer of the file system empties it
    with pytest.raises(AuditAnchorCorrupt) as e:
        a.latest(ORIGIN)
    assert "shrunk" in e.value.rule
    torn = tmp_path / "torn.jsonl"
    FileAuditAnchor(torn).append(cp)
    torn.write_bytes(torn.read_bytes()[:-5])
    with pytest.raises(AuditAnchorCorrupt) as e:
        FileAuditAnchor(torn).append(cp)
    assert "truncated" in e.value.rule
