from datetime import UTC, datetime
from uuid import uuid4

import pytest

from tsuchi.domain.account import Account
from tsuchi.domain.consent import Consent
from tsuchi.domain.personal import Personal
from tsuchi.domain.sender import Sender
from tsuchi.domain.values import Capability, Carrier, Channel, Purpose, parse_carrier
from tsuchi.errors import InvalidInput
from tsuchi.policies.purpose import decide_purpose
from tsuchi.policies.routing import choose_route

T0 = datetime(2026, 4, 1, tzinfo=UTC)


def consent(state: str) -> Consent | None:
    if state == "none":
        return None
    a = uuid4()
    c = Consent(account_id=a, sender_id=uuid4(), purpose=Purpose.MARKETING)
    if state in ("granted", "withdrawn"):
        c.grant("web", "v1", Personal(a, "x"), T0)
    if state in ("withdrawn", "refused"):
        c.withdraw("app", T0)
    return c


@pytest.mark.parametrize(
    ("purpose", "state", "allowed", "reason"),
    [
        (Purpose.SECURITY, "none", True, "security_always_allowed"),
        (Purpose.SECURITY, "withdrawn", True, "security_always_allowed"),
        (Purpose.TRANSACTIONAL, "none", True, "transactional_allowed"),
        (Purpose.TRANSACTIONAL, "granted", True, "transactional_allowed"),
        (Purpose.TRANSACTIONAL, "refused", False, "transactional_withdrawn"),
        (Purpose.MARKETING, "none", False, "marketing_no_consent"),
        (Purpose.MARKETING, "granted", True, "marketing_opt_in"),
        (Purpose.MARKETING, "withdrawn", False, "marketing_withdrawn"),
        (Purpose.MARKETING, "refused", False, "marketing_withdrawn"),
    ],
)
def test_purpose_rules(purpose: Purpose, state: str, allowed: bool, reason: str) -> None:
    d = decide_purpose(purpose, consent(state))
    assert (d.allowed, d.reason) == (allowed, reason)


def test_marketing_decision_records_consent_id_and_version() -> None:
    c = consent("granted")
    assert c is not None
    d = decide_purpose(Purpose.MARKETING, c)
    assert d.basis["consent_id"] == str(c.id) and d.basis["consent_version"] == 2


def account(carrier: Carrier, capability: Capability) -> Account:
    i = uuid4()
    return Account(
        id=i,
        tenant="t",
        customer_ref=Personal(i, "r"),
        mobile=Personal(i, "m"),
        name=Personal(i, "n"),
        carrier=carrier,
        capability=capability,
        time_zone="Asia/Tokyo",
        language="ja",
        at=T0,
    )


@pytest.mark.parametrize(
    ("carrier", "capability", "approved", "channel"),
    [
        (Carrier.DOCOMO, Capability.UNKNOWN, ["docomo"], Channel.PLUS_MESSAGE),
        (Carrier.DOCOMO, Capability.YES, ["docomo"], Channel.PLUS_MESSAGE),
        (Carrier.DOCOMO, Capability.NO, ["docomo"], Channel.SMS),
        (Carrier.AU, Capability.YES, ["docomo"], Channel.SMS),  # not approved on au
        (Carrier.SOFTBANK, Capability.YES, ["docomo", "au", "softbank"], Channel.PLUS_MESSAGE),
        (Carrier.RAKUTEN, Capability.YES, ["docomo", "au", "softbank"], Channel.SMS),
        (Carrier.UNKNOWN, Capability.YES, ["docomo", "au", "softbank"], Channel.SMS),
    ],
)
def test_routing(
    carrier: Carrier, capability: Capability, approved: list[str], channel: Channel
) -> None:
    s = Sender(tenant="t", display_name="D", industry="i", sms_sender_id="S", contact="c", at=T0)
    for c in approved:
        s.submit_vetting(Carrier(c), T0)
        s.decide_vetting(Carrier(c), True, T0)
    assert choose_route(s, account(carrier, capability)).channel is channel


@pytest.mark.parametrize(
    ("brand", "host"),
    [
        ("ahamo", Carrier.DOCOMO),
        ("UQ", Carrier.AU),
        ("povo", Carrier.AU),
        ("Y!mobile", Carrier.SOFTBANK),
        ("LINEMO", Carrier.SOFTBANK),
        ("rakuten", Carrier.RAKUTEN),
    ],
)
def test_mvno_brands_map_to_host_networks(brand: str, host: Carrier) -> None:
    assert parse_carrier(brand) is host


def test_unknown_carrier_is_a_typed_error() -> None:
    with pytest.raises(InvalidInput) as e:
        parse_carrier("vodafone")
    assert e.value.field == "carrier"
