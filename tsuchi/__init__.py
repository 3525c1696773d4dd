"""tsuchi: an embeddable, event-sourced +Message / SMS notification engine.

Importing tsuchi creates no engines, sessions or threads; everything is wired
when the host constructs :class:`Engine`.
"""

from tsuchi import errors
from tsuchi.domain.personal import ERASED, Personal
from tsuchi.domain.values import Capability, Carrier, Channel, MessageStatus, Purpose, Urgency
from tsuchi.engine import AccountView, ConsentView, Engine, MessageView, SenderView
from tsuchi.infrastructure.clock import ManualClock, SystemClock
from tsuchi.infrastructure.crypto import LocalKMS, init_keys
from tsuchi.infrastructure.simulator import NetworkProfile, SimulatedCarrierNetwork
from tsuchi.ports import Clock, Gateway, KeyEncryptionKey, StatusReport, Submission, SubmitResult
from tsuchi.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "ERASED",
    "AccountView",
    "Capability",
    "Carrier",
    "Channel",
    "Clock",
    "ConsentView",
    "Engine",
    "Gateway",
    "KeyEncryptionKey",
    "LocalKMS",
    "ManualClock",
    "MessageStatus",
    "MessageView",
    "NetworkProfile",
    "Personal",
    "Purpose",
    "SenderView",
    "Settings",
    "SimulatedCarrierNetwork",
    "StatusReport",
    "Submission",
    "SubmitResult",
    "SystemClock",
    "Urgency",
    "errors",
    "init_keys",
]
