"""``tsuchi audit export`` and ``verify`` against a writer of the database, as users run them.

The real CLI in a subprocess on a SQLite database made by ``tsuchi demo``;
the database is rewritten with ``sqlite3`` as an attacker with write access
would.  Exit codes are the contract: export refuses with 1; verify exits 0
when intact, 1 when it fails, 2 when there is nothing to verify against or
the anchor log cannot be read.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tsuchi import Engine, Settings, SimulatedCarrierNetwork
from tsuchi.projections.audit import canonical_json, checkpoint_message, key_id, manifest_message

from .test_cli import run

ANCHOR = "tsuchi.keys/audit-anchor.jsonl"


def exported(tmp_path: Path, name: str = "exp") -> Path:
    run("audit", "export", "--out", str(tmp_path / name), cwd=tmp_path)
    return tmp_path / name


def demo(tmp_path: Path) -> Path:
    run("demo", "--customers", "10", "--seed", "4", cwd=tmp_path)
    key = run("audit", "public-key", cwd=tmp_path).stdout.strip()
    (tmp_path / "pub.key").write_text(key)
    return exported(tmp_path)


def more_events(tmp_path: Path) -> None:
    """A few more events in the demo's database, written by the library."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'tsuchi.db'}", keys_dir=tmp_path / "tsuchi.keys"
    )
    with Engine(settings, gateway=SimulatedCarrierNetwork(seed=1)) as engine:
        engine.register_sender("late-bank", "後発銀行", "bank", "LATEBANK", "0120-000-999")


def verify(tmp_path: Path, d: Path, *flags: str) -> tuple[int, str, str]:
    p = run("audit", "verify", str(d), *flags, cwd=tmp_path, check=False)
    return p.returncode, p.stdout, p.stderr


def test_verify_needs_a_trust_root_and_checks_the_anchor(tmp_path: Path) -> None:
    d = demo(tmp_path)
    assert (tmp_path / ANCHOR).exists()
    code, _out, err = verify(tmp_path, d)
    assert code == 2 and "--public-key" in err and "--anchor" in err
    code, out, _ = verify(tmp_path, d, "--anchor", ANCHOR)
    assert code == 0 and out.startswith("OK") and "anchored" in out
    code, out, _ = verify(tmp_path, d, "--public-key", "pub.key", "--anchor", ANCHOR)
    assert code == 0
    code, out, err = verify(tmp_path, d, "--trust-embedded-key")
    assert code == 0 and "warning" in err
    code, _out, err = verify(tmp_path, d, "--anchor", "missing.jsonl")
    assert code == 2 and "does not exist" in err


def test_rewritten_database_is_refused_by_export(tmp_path: Path) -> None:
    """(1) checkpoints deleted, an event changed, the chain recomputed from
    scratch: the export refuses to sign it (exit 1, naming the anchored seq)."""
    demo(tmp_path)
    anchored = [json.loads(x) for x in (tmp_path / ANCHOR).read_text().splitlines()]
    con = sqlite3.connect(tmp_path / "tsuchi.db")
    state = con.execute("SELECT state FROM tsuchi_events WHERE id = 5").fetchone()[0]
    con.execute(
        "UPDATE tsuchi_events SET state = ? WHERE id = 5", (state.replace(b'"at"', b'"At"', 1),)
    )
    for table in ("tsuchi_audit_checkpoints", "tsuchi_audit_chain", "tsuchi_audit_aggregates"):
        con.execute(f"DELETE FROM {table}")
    con.execute(
        "UPDATE tsuchi_audit_position SET notification_id = 0, seq = 0, head = ?", ("0" * 64,)
    )
    con.commit()
    con.close()
    p = run("audit", "export", "--out", str(tmp_path / "forged"), cwd=tmp_path, check=False)
    assert p.returncode == 1 and "refused" in p.stderr and "anchored" in p.stderr
    assert f"seq {anchored[-1]['seq']}" in p.stderr and "rewritten" in p.stderr
    assert not (tmp_path / "forged" / "manifest.json").exists()
    assert (tmp_path / ANCHOR).read_text().count("\n") == len(anchored)


def test_cut_back_export_fails_verification(tmp_path: Path) -> None:
    """(3) an export cut back to an earlier checkpoint, manifest fixed."""
    run("demo", "--customers", "10", "--seed", "4", cwd=tmp_path)
    run("audit", "export", "--out", str(tmp_path / "first"), cwd=tmp_path)
    more_events(tmp_path)
    d = exported(tmp_path, "second")
    cps = (d / "checkpoints.jsonl").read_bytes().splitlines(keepends=True)
    assert len(cps) >= 2
    first = json.loads(cps[0])
    lines = (d / "records.jsonl").read_bytes().splitlines(keepends=True)[: first["seq"]]
    (d / "records.jsonl").write_bytes(b"".join(lines))
    (d / "checkpoints.jsonl").write_bytes(cps[0])
    m = json.loads((d / "manifest.json").read_text())
    m.update(
        last_seq=first["seq"],
        record_count=first["seq"],
        records_sha256=hashlib.sha256(b"".join(lines)).hexdigest(),
    )
    (d / "manifest.json").write_text(json.dumps(m))
    for flags in (("--public-key", "pub.key"), ("--anchor", ANCHOR), ("--trust-embedded-key",)):
        if flags[0] == "--public-key":
            key = run("audit", "public-key", cwd=tmp_path).stdout.strip()
            (tmp_path / "pub.key").write_text(key)
        code, _out, err = verify(tmp_path, d, *flags)
        assert code == 1 and "manifest signature" in err, (flags, err)


def test_export_resigned_with_another_key_fails(tmp_path: Path) -> None:
    """(4) every signature replaced with a forger's key."""
    d = demo(tmp_path)
    forger = Ed25519PrivateKey.generate()
    raw = forger.public_key().public_bytes_raw()
    m = json.loads((d / "manifest.json").read_text())
    out = []
    for line in (d / "checkpoints.jsonl").read_text().splitlines():
        cp = json.loads(line)
        message = checkpoint_message(m["origin"], cp["seq"], cp["head"], cp["issued_at"])
        cp["signature"] = base64.b64encode(forger.sign(message)).decode()
        cp["key_id"] = key_id(raw)
        out.append(canonical_json(cp) + b"\n")
    (d / "checkpoints.jsonl").write_bytes(b"".join(out))
    m["public_key"], m["key_id"] = base64.b64encode(raw).decode(), key_id(raw)
    m["manifest_signature"] = base64.b64encode(forger.sign(manifest_message(m))).decode()
    (d / "manifest.json").write_text(json.dumps(m))
    assert verify(tmp_path, d, "--public-key", "pub.key")[0] == 1
    code, _out, err = verify(tmp_path, d, "--anchor", ANCHOR)
    assert code == 1 and "another key" in err
    assert verify(tmp_path, d)[0] == 2
    code, _out, err = verify(tmp_path, d, "--trust-embedded-key")
    assert code == 0 and "warning" in err


def test_corrupt_anchor_log_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    d = demo(tmp_path)
    log = tmp_path / ANCHOR
    log.write_bytes(log.read_bytes() + b'{"format": "tsuchi-audit-anchor/v1"}\n')
    n = log.read_text().count("\n")
    code, _out, err = verify(tmp_path, d, "--anchor", ANCHOR)
    assert code == 2 and "audit-anchor.jsonl" in err and f"line {n}" in err


def test_malformed_event_is_named_by_export_and_verify(tmp_path: Path) -> None:
    """(6) one stored event that is not JSON: chained by digest and named."""
    run("demo", "--customers", "10", "--seed", "2", cwd=tmp_path)
    con = sqlite3.connect(tmp_path / "tsuchi.db")
    nid = con.execute("SELECT max(id) FROM tsuchi_events").fetchone()[0] + 1
    con.execute(
        "INSERT INTO tsuchi_events (id, originator_id, originator_version, topic, state) "
        "VALUES (?, ?, 1, 'tsuchi.domain.message:Message.Requested', ?)",
        (nid, uuid.uuid4().bytes, b"\x00garbage"),
    )
    con.commit()
    con.close()
    p = run("audit", "export", "--out", str(tmp_path / "exp"), cwd=tmp_path)
    m = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    seq = m["malformed_seqs"][0]
    assert m["malformed_count"] == 1 and "malformed stored events" in p.stderr
    assert f"seq {seq}" in p.stderr
    code, out, _ = verify(tmp_path, tmp_path / "exp", "--anchor", ANCHOR)
    assert code == 0 and f"seq {seq}" in out and "malformed" in out
