"""The ``tsuchi`` command as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

TSUCHI = [sys.executable, "-m", "tsuchi.cli"]


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSUCHI_")}
    proc = subprocess.run(
        [*TSUCHI, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_help_documents_every_command(tmp_path: Path) -> None:
    out = run("--help", cwd=tmp_path).stdout
    for command in ("demo", "keys", "report"):
        assert command in out
    assert "init" in run("keys", "--help", cwd=tmp_path).stdout
    assert "deliveries" in run("report", "--help", cwd=tmp_path).stdout


def test_demo_runs_twice_on_the_same_database_and_reports(tmp_path: Path) -> None:
    first = run("demo", "--customers", "60", "--seed", "3", cwd=tmp_path)
    assert "Delivery summary" in first.stdout and "blocked" in first.stdout
    assert "sqlite:///tsuchi.db" in first.stdout
    keys = tmp_path / "tsuchi.keys"
    for f in keys.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    run("demo", "--customers", "60", "--seed", "3", cwd=tmp_path)
    report = json.loads(run("report", "deliveries", "--format", "json", cwd=tmp_path).stdout)
    assert sum(r["blocked"] for r in report) > 0
    assert any(r["blocked_by_reason"].get("marketing_no_consent") for r in report)
    assert sum(r["requested"] for r in report) > 2 * 60  # two runs' worth of notices
    assert sum(r["fallback"] for r in report) > 0
    assert len({r["day"] for r in report}) == 2  # the second run is a month later
    csv_out = tmp_path / "d.csv"
    run("report", "deliveries", "--format", "csv", "--out", str(csv_out), cwd=tmp_path)
    header = csv_out.read_text().splitlines()[0]
    for col in (
        "day",
        "sender_id",
        "template",
        "purpose",
        "channel",
        "carrier",
        "requested",
        "blocked",
        "deferred",
        "delivered",
        "read",
        "fallback",
        "delivery_p95_s",
    ):
        assert col in header.split(",")
    html = tmp_path / "r.html"
    run("report", "deliveries", "--format", "html", "--out", str(html), cwd=tmp_path)
    assert 'data-chart="funnel"' in html.read_text()
    rebuilt = run("projections", "rebuild", "delivery_report", cwd=tmp_path).stdout
    assert "events processed" in rebuilt
    again = json.loads(run("report", "deliveries", "--format", "json", cwd=tmp_path).stdout)
    assert again == report  # a rebuild from zero gives the same report


def test_keys_init_writes_0600_files_and_never_overwrites(tmp_path: Path) -> None:
    out = run("keys", "init", "--keys", str(tmp_path / "k"), cwd=tmp_path).stdout
    assert out.count("wrote") == 3
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700
    before = (tmp_path / "k" / "kek.key").read_bytes()
    again = run("keys", "init", "--keys", str(tmp_path / "k"), cwd=tmp_path, check=False)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    assert (tmp_path / "k" / "kek.key").read_bytes() == before


def test_report_without_keys_fails_clearly(tmp_path: Path) -> None:
    proc = run(
        "report",
        "deliveries",
        "--db",
        f"sqlite:///{tmp_path / 'none.db'}",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 1
    assert "KeyMaterialError" in proc.stderr and "tsuchi keys init" in proc.stderr


@pytest.mark.parametrize("fmt", ["xml"])
def test_bad_format_is_a_usage_error(tmp_path: Path, fmt: str) -> None:
    assert run("report", "deliveries", "--format", fmt, cwd=tmp_path, check=False).returncode == 2


def test_group_readable_key_files_are_refused(tmp_path: Path) -> None:
    run("keys", "init", "--keys", str(tmp_path / "tsuchi.keys"), cwd=tmp_path)
    (tmp_path / "tsuchi.keys" / "kek.key").chmod(0o640)
    proc = run("report", "deliveries", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "chmod 600" in proc.stderr


def test_subject_access_report_erasure_and_key_rotation(tmp_path: Path) -> None:
    run("demo", "--customers", "20", "--seed", "4", cwd=tmp_path)
    from tsuchi import Engine, Settings

    with Engine(Settings(database_url=f"sqlite:///{tmp_path / 'tsuchi.db'}")) as e:
        account = e.account(e.find_accounts(customer_ref="C004-000001")[0])
    national = account.mobile.replace("+81", "0")
    report = json.loads(
        run("accounts", "report", "--mobile", national, "--format", "json", cwd=tmp_path).stdout
    )
    assert report["account"]["name"] == account.name
    assert report["messages"] and report["messages"][0]["timeline"]
    text = run("accounts", "report", "--customer-ref", "C004-000001", cwd=tmp_path).stdout
    assert account.name in text and "Consents" in text and "Messages" in text

    rotated = run("keys", "rotate", cwd=tmp_path).stdout
    assert "re-wrapped 20 data keys" in rotated
    assert (tmp_path / "tsuchi.keys" / "kek.key.old").exists()

    erased = run(
        "accounts", "erase", "--customer-ref", "C004-000001", "--requested-by", "dpo", cwd=tmp_path
    )
    assert "erased account" in erased.stdout
    gone = run("accounts", "report", "--mobile", national, cwd=tmp_path, check=False)
    assert gone.returncode == 1 and "no account matches" in gone.stderr
    assert run("accounts", "report", cwd=tmp_path, check=False).returncode == 2
    db_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("tsuchi.db*"))
    assert account.name.encode() not in db_bytes


def _two_tenants_sharing_a_ref(tmp_path: Path) -> list[str]:
    from tsuchi import Engine, Settings

    url = f"sqlite:///{tmp_path / 'tsuchi.db'}"
    with Engine(Settings(database_url=url, create_keys=True)) as e:
        return [
            str(e.register_account("acme", "SHARED-1", "090-1111-2222", "山田太郎")),
            str(e.register_account("beta", "SHARED-1", "090-3333-4444", "佐藤花子")),
        ]


def test_erasure_names_its_tenant_refuses_ambiguity_and_dry_runs(tmp_path: Path) -> None:
    acme, beta = _two_tenants_sharing_a_ref(tmp_path)
    erase = ("accounts", "erase", "--customer-ref", "SHARED-1", "--requested-by", "dpo")
    ambiguous = run(*erase, cwd=tmp_path, check=False)
    assert ambiguous.returncode == 1 and "--tenant" in ambiguous.stderr
    assert "acme, beta" in ambiguous.stderr and "Nothing was erased" in ambiguous.stderr
    dry = run(*erase, "--tenant", "beta", "--dry-run", cwd=tmp_path)
    assert f"would erase account {beta} (tenant beta)" in dry.stdout
    both = run("accounts", "report", "--customer-ref", "SHARED-1", cwd=tmp_path).stdout
    assert "山田太郎" in both and "佐藤花子" in both  # the dry run changed nothing
    done = run(*erase, "--tenant", "beta", cwd=tmp_path)
    assert f"erased account {beta}" in done.stdout and acme not in done.stdout
    left = run("accounts", "report", "--customer-ref", "SHARED-1", cwd=tmp_path).stdout
    assert "山田太郎" in left and "佐藤花子" not in left


def test_exports_are_owner_only_and_never_follow_links_or_widen(tmp_path: Path) -> None:
    _two_tenants_sharing_a_ref(tmp_path)
    report = ("accounts", "report", "--customer-ref", "SHARED-1", "--tenant", "acme")
    sar = tmp_path / "sar.txt"
    run(*report, "--out", str(sar), cwd=tmp_path)
    assert stat.S_IMODE(sar.stat().st_mode) == 0o600 and "山田太郎" in sar.read_text()
    target = tmp_path / "elsewhere.txt"
    target.write_text("")
    (tmp_path / "link.txt").symlink_to(target)
    linked = run(*report, "--out", str(tmp_path / "link.txt"), cwd=tmp_path, check=False)
    assert linked.returncode == 1 and "symbolic link" in linked.stderr
    assert target.read_text() == ""
    wide = tmp_path / "wide.csv"
    wide.write_text("")
    wide.chmod(0o644)
    refused = run("consents", "export", "--out", str(wide), cwd=tmp_path, check=False)
    assert refused.returncode == 1 and "wider than 0600" in refused.stderr
    assert wide.read_text() == ""
    register = tmp_path / "register.csv"
    run("consents", "export", "--out", str(register), cwd=tmp_path)
    assert stat.S_IMODE(register.stat().st_mode) == 0o600
