"""Security: injection attempts through string inputs, secrets and personal data
kept out of errors and exports, CSV formula injection neutralised."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import inspect

from tsuchi import Engine, errors

from ..e2e.test_cli import run
from ..integration.world import build, count_events

INJECTIONS = [
    "'; DROP TABLE tsuchi_events; --",
    '" OR 1=1 --',
    "{__class__.__mro__}",
    "<script>alert(1)</script>",
    '=HYPERLINK("http://evil")',
    "\x00\x1b[31m",
    "../../etc/passwd",
    "${jndi:ldap://x}",
]


@pytest.mark.parametrize("attack", INJECTIONS)
def test_injection_strings_are_data_or_refused(engine: Engine, attack: str) -> None:
    w = build(engine)
    tables = set(inspect(engine.store.engine).get_table_names())
    for call in (
        lambda: engine.register_account("acme", attack, "090-4444-5555", attack),
        lambda: engine.request_notice(
            w.sender,
            w.accounts[0],
            "note",
            {"memo": attack},
            idempotency_key=attack,
            correlation_id=attack,
        ),
        lambda: engine.grant_consent(
            w.accounts[0], w.sender, "marketing", source=attack, wording=attack, by=attack
        ),
        lambda: engine.draft_template(
            w.sender,
            attack,
            purpose="security",
            plus_message_text=attack,
            sms_text=attack,
            author=attack,
        ),
        lambda: engine.register_sender(attack, attack, attack, "X", attack),
        lambda: engine.find_accounts(customer_ref=attack),
    ):
        before = count_events(engine)
        try:
            call()
        except errors.TsuchiError as e:
            assert attack not in str(e)  # refused without echoing the value
            assert count_events(engine) == before
    assert set(inspect(engine.store.engine).get_table_names()) == tables
    if attack.strip():
        try:
            ids = engine.find_accounts(customer_ref=attack)
        except errors.InvalidInput:
            ids = []  # refused as a customer ref (control characters): never stored
        if ids:  # stored as data, read back intact
            assert engine.account(ids[0]).name == attack


def test_csv_exports_neutralise_formulas(tmp_path: Path) -> None:
    run("demo", "--customers", "10", "--seed", "2", cwd=tmp_path)
    with _open(tmp_path) as e:
        w_sender = e.register_sender("sakura-card", "=1+1", "=cmd|' /C calc'!A0", "EVIL", "0120")
        a = e.find_accounts(customer_ref="C002-000000")[0]
        e.grant_consent(a, w_sender, "marketing", source="+SUM(1)", wording="@x", by="-1")
    out = run("consents", "export", "--format", "csv", cwd=tmp_path).stdout
    for row in csv.reader(io.StringIO(out)):
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@")), cell
    data = json.loads(run("consents", "export", "--format", "json", cwd=tmp_path).stdout)
    assert any(entry["sender"] == "=1+1" for entry in data)  # JSON keeps the data as is


def _open(tmp_path: Path) -> Engine:
    from tsuchi import Settings

    return Engine(Settings(database_url=f"sqlite:///{tmp_path / 'tsuchi.db'}"))
