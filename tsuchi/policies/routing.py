"""Routing: which channel a notice takes first.

+Message when the recipient's carrier runs it (docomo, au, SoftBank and their
MVNO brands), the sender is approved on that carrier, and the recipient is not
known to be incapable.  SMS otherwise; Rakuten Mobile is always SMS.
"""

from __future__ import annotations

from dataclasses import dataclass

from tsuchi.domain.account import Account
from tsuchi.domain.sender import Sender
from tsuchi.domain.values import VETTING_CARRIERS, Capability, Carrier, Channel


@dataclass(frozen=True)
class Route:
    channel: Channel
    carrier: Carrier
    reason: str


def choose_route(sender: Sender, account: Account) -> Route:
    carrier = account.carrier
    if carrier not in VETTING_CARRIERS:
        return Route(Channel.SMS, carrier, f"no +Message on {carrier.value}")
    if not sender.approved_on(carrier):
        return Route(Channel.SMS, carrier, f"sender not approved on {carrier.value}")
    if account.capability is Capability.NO:
        return Route(Channel.SMS, carrier, "recipient not +Message capable")
    return Route(Channel.PLUS_MESSAGE, carrier, "sender approved, recipient capable or unknown")
