"""Purpose and consent rules: may this notice be sent at all?

* ``security``: always allowed, cannot be refused (fraud alerts, one-time codes).
* ``transactional``: allowed unless the customer withdrew it for this sender.
* ``marketing``: only with a granted, not withdrawn consent for this sender
  (特定電子メール法: prior opt-in).

The decision carries its *basis*: the rule, and the consent id and version that
authorised it, stored on the message as proof of consent at send time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tsuchi.domain.consent import Consent
from tsuchi.domain.values import Purpose


@dataclass(frozen=True)
class PurposeDecision:
    allowed: bool
    reason: str
    basis: dict[str, Any] = field(default_factory=dict)


def decide_purpose(purpose: Purpose, consent: Consent | None) -> PurposeDecision:
    if purpose is Purpose.SECURITY:
        return PurposeDecision(True, "security_always_allowed", {"rule": "security_always_allowed"})
    basis: dict[str, Any] = {}
    if consent is not None:
        basis = {"consent_id": str(consent.id), "consent_version": consent.version}
    if purpose is Purpose.TRANSACTIONAL:
        if consent is not None and consent.history and not consent.granted:
            return PurposeDecision(False, "transactional_withdrawn", basis)
        return PurposeDecision(True, "transactional_allowed", {"rule": "transactional", **basis})
    # marketing
    if consent is None or not consent.history:
        return PurposeDecision(False, "marketing_no_consent", basis)
    if not consent.granted:
        return PurposeDecision(False, "marketing_withdrawn", basis)
    return PurposeDecision(True, "marketing_opt_in", {"rule": "marketing_opt_in", **basis})
