"""How the ``tsuchi`` command fails: one line on stderr, exit 1 (a usage
error exit 2), never a traceback unless ``--debug``, never a password."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from .test_cli import run

PG_URL = os.environ.get("TSUCHI_TEST_DATABASE_URL")


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str, code: int = 1) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and len(proc.stderr) < 500, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith("error"), proc.stderr
    for needle in needles:
        assert needle in first, (needle, proc.stderr)


def test_an_unreachable_database_is_one_line_without_its_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg://ops:hunter2@127.0.0.1:1/tsuchi"
    proc = run("report", "deliveries", "--db", url, cwd=tmp_path, check=False)
    one_line_error(proc, "TransientError")
    assert "hunter2" not in proc.stderr + proc.stdout


def test_an_unsupported_database_url_names_the_setting(tmp_path: Path) -> None:
    proc = run(
        "accounts", "report", "--mobile", "090-1", "--db", "mysql://x", cwd=tmp_path, check=False
    )
    one_line_error(proc, "database_url", code=2)  # a bad setting, named


def test_missing_files_and_directories_are_one_line(tmp_path: Path) -> None:
    run("demo", "--customers", "10", "--seed", "2", cwd=tmp_path)
    missing = run(
        "sms", "segments", "--file", str(tmp_path / "nope.txt"), cwd=tmp_path, check=False
    )
    one_line_error(missing, "--file")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    undecodable = run(
        "sms", "segments", "--file", str(tmp_path / "bad.txt"), cwd=tmp_path, check=False
    )
    one_line_error(undecodable, "--file")
    nowhere = str(tmp_path / "no" / "such" / "report.html")
    out = run(
        "report", "deliveries", "--format", "html", "--out", nowhere, cwd=tmp_path, check=False
    )
    one_line_error(out, "directory must exist")


def test_until_is_excluded_in_every_date_range(tmp_path: Path) -> None:
    run("demo", "--customers", "10", "--seed", "3", cwd=tmp_path)
    day = ("report", "deliveries", "--format", "json", "--since", "2026-04-01")
    empty = run(*day, "--until", "2026-04-01", cwd=tmp_path, check=False)
    assert empty.returncode == 2 and "--until is excluded" in empty.stderr
    some = json.loads(run(*day, "--until", "2026-04-02", cwd=tmp_path).stdout)
    assert some and {r["day"] for r in some} == {"2026-04-01"}


def test_version_python_dash_m_and_one_format_vocabulary(tmp_path: Path) -> None:
    from importlib.metadata import version

    proc = subprocess.run(
        [sys.executable, "-m", "tsuchi", "--version"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"tsuchi {version('tsuchi')}"
    seg = run("sms", "segments", "--format", "json", "こんにちは", cwd=tmp_path).stdout
    assert json.loads(seg) == {"encoding": "ucs2", "parts": 1, "units": 5, "characters": 5}
    assert run("sms", "segments", "--format", "xml", "a", cwd=tmp_path, check=False).returncode == 2
    assert "--show-completion" in run("--help", cwd=tmp_path).stdout


def test_demo_never_prints_the_database_password(tmp_path: Path) -> None:
    if not PG_URL:
        pytest.skip("PostgreSQL: set TSUCHI_TEST_DATABASE_URL to run")
    from tests.conftest import reset_postgres

    reset_postgres(PG_URL)
    # Trust authentication ignores the password; the command must still hide it.
    url = make_url(PG_URL).set(password="hunter2").render_as_string(hide_password=False)
    proc = run(
        "demo", "--customers", "10", "--db", url, "--keys", str(tmp_path / "k"), cwd=tmp_path
    )
    assert "hunter2" not in proc.stdout + proc.stderr and "***@" in proc.stdout
    reset_postgres(PG_URL)
