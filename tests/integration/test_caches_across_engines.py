"""Two engines on one database: what one writes, the other's caches never hide.

Each engine keeps committed aggregate states and unwrapped data keys in
memory.  These tests warm one engine's caches, change things through a second
engine (as another process would), and check that the first one decides on
the current state: a suspended sender sends nothing, a new mobile number is
used, a refused consent blocks the send, and an erasure is applied at the
next read of the account.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tsuchi import Engine, ManualClock, Settings, SimulatedCarrierNetwork, errors
from tsuchi.domain.personal import ERASED
from tsuchi.ports import Submission, SubmitResult

from .world import NAMES, build


@pytest.fixture
def other(db_url: str, tmp_path: Path, engine: Engine, clock: ManualClock) -> Iterator[Engine]:
    settings = Settings(database_url=db_url, keys_dir=tmp_path / "keys", worker_id="other")
    with Engine(settings, clock=clock, gateway=SimulatedCarrierNetwork(seed=4, clock=clock)) as e:
        yield e


def test_a_sender_suspended_elsewhere_is_refused(engine: Engine, other: Engine) -> None:
    w = build(engine)
    engine.request_notice(w.sender, w.accounts[0], "note", {"memo": "m"}, idempotency_key="warm")
    other.suspend_sender(w.sender, "vetting_withdrawn")
    with pytest.raises(errors.RuleViolation):
        engine.request_notice(w.sender, w.accounts[1], "note", {"memo": "m"}, idempotency_key="k2")


def test_a_mobile_changed_elsewhere_is_used(
    engine: Engine, other: Engine, network: SimulatedCarrierNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = build(engine)
    assert engine.account(w.accounts[0]).mobile.endswith("9011112222")  # cached now
    other.change_mobile(w.accounts[0], "090-7777-8888", carrier="docomo")
    assert engine.account(w.accounts[0]).mobile == "+819077778888"
    sent: list[str] = []
    submit = network.submit

    def recording(subs: Sequence[Submission]) -> list[SubmitResult]:
        sent.extend(s.to for s in subs)
        return submit(subs)

    monkeypatch.setattr(network, "submit", recording)
    engine.request_notice(w.sender, w.accounts[0], "note", {"memo": "m"}, idempotency_key="k")
    assert engine.dispatch() == 1
    assert sent == ["+819077778888"]


def test_a_consent_refused_elsewhere_blocks_the_send(engine: Engine, other: Engine) -> None:
    w = build(engine)
    engine.grant_consent(
        w.accounts[0], w.sender, "marketing", source="web", wording="キャンペーン案内", by="self"
    )
    first = engine.request_notice(w.sender, w.accounts[0], "campaign", {}, idempotency_key="c1")
    assert first.status == "routed"
    other.withdraw_consent(w.accounts[0], w.sender, "marketing", source="web")
    assert engine.dispatch() == 0  # consent is checked again right before sending
    assert engine.message(first.id).status == "cancelled"


def test_an_erasure_elsewhere_applies_at_the_next_read(engine: Engine, other: Engine) -> None:
    w = build(engine)
    engine.request_notice(
        w.sender, w.accounts[0], "note", {"memo": "ご住所変更の件"}, idempotency_key="n"
    )
    assert engine.account(w.accounts[0]).name == NAMES[0]
    assert "ご住所変更の件" in str(engine.subject_access_report(w.accounts[0]))  # all cached
    other.erase_account(w.accounts[0], requested_by="dpo")
    # Reading the account applies the Erased event: this engine drops the
    # customer's key and every cached state, so nothing decrypts any more.
    report = engine.subject_access_report(w.accounts[0])
    assert report["account"]["name"] == ERASED
    assert "ご住所変更の件" not in str(report)
    assert "山田太郎" not in str(report)
    assert engine.account(w.accounts[1]).name == NAMES[1]  # others unaffected
