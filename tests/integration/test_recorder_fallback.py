"""The recorder's portable path: drivers other than pysqlite and psycopg get
the Core statements of ``eventsourcing-sqlalchemy``'s recorder.  The engine's
contract runs here with that path forced, on both databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tsuchi import Engine, ManualClock, Settings, SimulatedCarrierNetwork
from tsuchi.infrastructure.recorder import CoreApplicationRecorder

from . import test_engine_contract as contract


@pytest.fixture
def portable(
    settings: Settings, clock: ManualClock, network: SimulatedCarrierNetwork
) -> Iterator[Engine]:
    with Engine(settings, clock=clock, gateway=network) as e:
        recorder = e.store.recorder
        assert isinstance(recorder, CoreApplicationRecorder) and recorder._direct
        recorder._direct = False
        yield e


def test_notice_lifecycle(
    portable: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    contract.test_notice_is_routed_submitted_delivered_and_read(portable, clock, network)


def test_idempotency(
    portable: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    contract.test_same_idempotency_key_returns_same_message_and_never_sends_twice(
        portable, clock, network
    )


def test_fallback_and_capability(
    portable: Engine, clock: ManualClock, network: SimulatedCarrierNetwork
) -> None:
    contract.test_not_capable_falls_back_to_sms_and_learns_capability(portable, clock, network)
