"""Operations commands as users run them: audit export/verify, the worker,
sms segments."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from .test_cli import TSUCHI, run


def test_audit_export_and_verify_round_trip_and_tamper(tmp_path: Path) -> None:
    run("demo", "--customers", "15", "--seed", "6", cwd=tmp_path)
    out = run("audit", "export", "--out", str(tmp_path / "exp"), cwd=tmp_path)
    assert "exported seq 1.." in out.stdout
    key = run("audit", "public-key", cwd=tmp_path).stdout.strip()
    (tmp_path / "pub.key").write_text(key)
    ok = run(
        "audit",
        "verify",
        str(tmp_path / "exp"),
        "--public-key",
        str(tmp_path / "pub.key"),
        cwd=tmp_path,
    )
    assert ok.stdout.startswith("OK")
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert manifest["format"] == "tsuchi-audit/v1"
    # One changed record in the export: verify fails at that seq.
    lines = (tmp_path / "exp" / "records.jsonl").read_text(encoding="utf-8").splitlines()
    rec = json.loads(lines[9])
    rec["event_type"] = "Forged"
    lines[9] = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    (tmp_path / "exp" / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    bad = run(
        "audit",
        "verify",
        str(tmp_path / "exp"),
        "--public-key",
        str(tmp_path / "pub.key"),
        cwd=tmp_path,
        check=False,
    )
    assert bad.returncode == 1 and "seq 10" in bad.stderr
    # One changed byte in a stored event: export refuses naming that seq.
    con = sqlite3.connect(tmp_path / "tsuchi.db")
    state = con.execute("SELECT state FROM tsuchi_events WHERE id = 5").fetchone()[0]
    con.execute(
        "UPDATE tsuchi_events SET state = ? WHERE id = 5", (state.replace(b'"at"', b'"At"', 1),)
    )
    con.commit()
    con.close()
    refused = run("audit", "export", "--out", str(tmp_path / "exp2"), cwd=tmp_path, check=False)
    assert refused.returncode == 1 and "seq 5" in refused.stderr
    assert not (tmp_path / "exp2" / "manifest.json").exists()


def test_worker_runs_until_sigterm_and_exits_zero(tmp_path: Path) -> None:
    run("demo", "--customers", "10", "--seed", "8", cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSUCHI_")}
    unchosen = subprocess.run(
        [*TSUCHI, "worker", "--max-seconds", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert unchosen.returncode == 2 and "TSUCHI_GATEWAY" in unchosen.stderr
    env["TSUCHI_GATEWAY"] = "simulator"
    proc = subprocess.Popen(
        [*TSUCHI, "worker", "--sweep-seconds", "0.2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        started = False
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "worker worker-1 started" in line:
                started = True
                break
        assert started
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert time.monotonic() - t0 < 10
        assert "stopped after" in err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sms_segments_json_for_text_and_file(tmp_path: Path) -> None:
    one = json.loads(run("sms", "segments", "あ" * 71, "--json", cwd=tmp_path).stdout)
    assert one["encoding"] == "ucs2" and one["parts"] == 2
    f = tmp_path / "texts.txt"
    f.write_text("hello\n" + "€" * 81 + "\n" + "😀" * 36 + "\n", encoding="utf-8")
    rows = [
        json.loads(x)
        for x in run(
            "sms", "segments", "--file", str(f), "--json", cwd=tmp_path
        ).stdout.splitlines()
    ]
    assert [(r["encoding"], r["parts"]) for r in rows] == [("gsm7", 1), ("gsm7", 2), ("ucs2", 2)]
    assert run("sms", "segments", cwd=tmp_path, check=False).returncode == 2


def test_help_lists_operations(tmp_path: Path) -> None:
    out = run("--help", cwd=tmp_path).stdout
    for command in ("worker", "serve", "audit", "accounts", "consents", "sms"):
        assert command in out
