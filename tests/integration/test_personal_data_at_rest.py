"""Personal data at rest: nothing readable in the database, ciphertext bound to
its subject, event and field."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tsuchi import Engine, ManualClock, Settings, SimulatedCarrierNetwork, errors
from tsuchi.demo import run_demo
from tsuchi.domain.mobile import national_form
from tsuchi.infrastructure.tables import lookup

from .world import build, count_events


def database_bytes(engine: Engine, db_url: str) -> bytes:
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        assert url.database
        db = Path(url.database)
        return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    dump = subprocess.run(
        [
            "pg_dump",
            "-h",
            url.host or "127.0.0.1",
            "-p",
            str(url.port or 5432),
            "-U",
            url.username or "root",
            url.database or "test",
        ],
        check=True,
        capture_output=True,
    )
    # bytea columns (event state, wrapped keys) are dumped as hex: scan them decoded too.
    decoded = b"".join(
        bytes.fromhex(h.decode()) for h in re.findall(rb"\\x((?:[0-9a-f]{2})+)", dump.stdout)
    )
    return dump.stdout + decoded


def personal_strings(engine: Engine) -> list[str]:
    with engine.store.session(commit=False) as s:
        ids = {r[0] for r in s.execute(text("SELECT account_id FROM tsuchi_lookup"))}
    out: list[str] = []
    from uuid import UUID

    for hex_id in ids:
        a = engine.account(UUID(hex=hex_id))
        national = national_form(a.mobile)
        out += [a.mobile, national, national.replace("-", ""), a.name, a.customer_ref]
        out += [part for part in a.name.split() if len(part) >= 2]
    return out


def test_no_personal_data_readable_in_the_database(db_url: str, tmp_path: Path) -> None:
    clock = ManualClock()
    settings = Settings(database_url=db_url, keys_dir=tmp_path / "keys", create_keys=True)
    with Engine(settings, clock=clock, gateway=SimulatedCarrierNetwork(seed=5, clock=clock)) as e:
        result = run_demo(e, clock.advance, seed=11, customers=40)
        assert result.requested > 40
        secrets = personal_strings(e)
        raw = database_bytes(e, db_url)
    assert len(secrets) >= 40 * 5
    leaked = [s for s in secrets if s.encode() in raw]
    assert not leaked, f"{len(leaked)} personal strings found in the database bytes"
    # The scan is able to find things: public strings are there.
    assert "さくらカード".encode() in raw


def _events(engine: Engine) -> list[tuple[int, str, str, bytes]]:
    with engine.store.session(commit=False) as s:
        rows = s.execute(
            text("SELECT id, originator_id, topic, state FROM tsuchi_events ORDER BY id")
        ).all()
    return [(r[0], str(r[1]), r[2], bytes(r[3])) for r in rows]


def _set_state(engine: Engine, row_id: int, state: bytes) -> None:
    with engine.store.session() as s:
        s.execute(
            text("UPDATE tsuchi_events SET state = :s WHERE id = :i"), {"s": state, "i": row_id}
        )


def _registered(engine: Engine) -> list[tuple[int, str, str, bytes]]:
    return [e for e in _events(engine) if e[2].endswith("Account.Registered")]


def test_tampered_ciphertext_is_rejected(engine: Engine) -> None:
    w = build(engine)
    row_id, _, _, state = _registered(engine)[0]
    doc = json.loads(state)
    sealed = doc["mobile"]["_data_"]
    blob = bytearray(__import__("base64").b64decode(sealed["b"]))
    blob[-1] ^= 0x01
    sealed["b"] = __import__("base64").b64encode(bytes(blob)).decode()
    _set_state(engine, row_id, json.dumps(doc).encode())
    engine.drop_caches()
    with pytest.raises(errors.CiphertextRejected):
        engine.account(w.accounts[0])


@pytest.mark.parametrize("move", ["field", "event", "subject"])
def test_moved_ciphertext_is_rejected(engine: Engine, move: str) -> None:
    w = build(engine)
    regs = _registered(engine)
    (id0, _, _, s0), (_, _, _, s1) = regs[0], regs[1]
    d0, d1 = json.loads(s0), json.loads(s1)
    if move == "field":  # the name's ciphertext put in the mobile field
        d0["mobile"] = d0["name"]
    elif move == "event":  # account 1's mobile ciphertext copied into account 0's event
        d0["mobile"] = d1["mobile"]
    else:  # ... and relabelled as account 0's subject
        d1["mobile"]["_data_"]["s"] = d0["mobile"]["_data_"]["s"]
        d0["mobile"] = d1["mobile"]
    _set_state(engine, id0, json.dumps(d0).encode())
    engine.drop_caches()  # read the stored events as they are now
    with pytest.raises(errors.CiphertextRejected):
        engine.account(w.accounts[0])


def test_blind_index_holds_no_plaintext(engine: Engine) -> None:
    build(engine)
    with engine.store.session(commit=False) as s:
        digests = [r.digest for r in s.execute(lookup.select())]
    assert digests and all(len(d) == 64 and "9011112222" not in d for d in digests)


def test_fraud_alert_text_is_encrypted_and_card_numbers_refused(
    engine: Engine, db_url: str
) -> None:
    w = build(engine)
    customer = w.accounts[0]
    at = engine.now()
    before = count_events(engine)
    for field, kw in (
        ("merchant", {"merchant": "送金 4111 1111 1111 1111"}),
        ("alert_ref", {"merchant": "店", "alert_ref": "tx-4111111111111111"}),
        ("merchant", {"merchant": "店\x1b[2J"}),
    ):
        with pytest.raises(errors.InvalidInput) as info:
            engine.raise_fraud_alert(w.sender, customer, "1234", amount=900, at=at, **kw)  # type: ignore[arg-type]
        assert info.value.field == field and "4111" not in str(info.value)
    assert count_events(engine) == before
    merchant, ref = "振込先ヤマモトジロウ", "tx-0901234999"
    case = engine.raise_fraud_alert(w.sender, customer, "1234", merchant, 900, at, alert_ref=ref)
    assert engine.raise_fraud_alert(w.sender, customer, "1234", merchant, 900, at, ref) == case
    raw = database_bytes(engine, db_url)
    assert merchant.encode() not in raw and ref.encode() not in raw
    engine.erase_account(customer, requested_by="dpo")
    engine.drop_caches()
    assert engine.fraud_case(case)["state"] == "open"  # still loads, its texts unreadable
