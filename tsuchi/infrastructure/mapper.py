"""The event mapper that encrypts personal fields.

Before an event is serialised, every :class:`~tsuchi.domain.personal.Personal`
value in it (at any depth of dicts and lists) is replaced by a
:class:`~tsuchi.infrastructure.crypto.Sealed` ciphertext; after a stored
event is read, each ``Sealed`` becomes ``Personal`` again, or an erased
``Personal`` if its subject's keys were destroyed.  The associated data is
``originator_id/originator_version/field.path``, so a ciphertext moved to
another event or field does not authenticate.  Everything else (topics, ids,
timestamps, statuses) stays plaintext.
"""

from __future__ import annotations

import base64
from datetime import date
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder, Transcoding
from eventsourcing.utils import get_topic

from tsuchi.domain.personal import Personal
from tsuchi.infrastructure.crypto import DataKeyStore, Sealed


class SealedAsDict(Transcoding):
    type = Sealed
    name = "pii"

    def encode(self, obj: Sealed) -> dict[str, Any]:
        return {
            "s": obj.subject.hex,
            "k": obj.key_version,
            "b": base64.b64encode(obj.blob).decode(),
        }

    def decode(self, data: dict[str, Any]) -> Sealed:
        return Sealed(UUID(hex=data["s"]), int(data["k"]), base64.b64decode(data["b"]))


class DateAsISO(Transcoding):
    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


# Only these can hold personal data (leaves are strings, numbers, dates, ...):
# the context string of a field is built only when it can be needed.
_NESTED_OR_PERSONAL = (Personal, dict, list)
_NESTED_OR_SEALED = (Sealed, dict, list)
_IDENTITY = ("originator_id", "originator_version")


class PersonalDataMapper(Mapper[UUID]):
    def __init__(self, transcoder: Transcoder, keys: DataKeyStore) -> None:
        super().__init__(transcoder=transcoder)
        self.keys = keys

    def _seal(self, value: Any, context: str) -> Any:
        if isinstance(value, Personal):
            if value.value is None:
                raise ValueError("cannot store an erased personal value")
            return self.keys.seal(value.subject, context, value.value)
        if isinstance(value, dict):
            return {
                k: self._seal(v, f"{context}.{k}") if isinstance(v, _NESTED_OR_PERSONAL) else v
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [
                self._seal(v, f"{context}.{i}") if isinstance(v, _NESTED_OR_PERSONAL) else v
                for i, v in enumerate(value)
            ]
        return value

    def _open(self, value: Any, context: str) -> Any:
        if isinstance(value, Sealed):
            return Personal(value.subject, self.keys.open(value, context))
        if isinstance(value, dict):
            return {
                k: self._open(v, f"{context}.{k}") if isinstance(v, _NESTED_OR_SEALED) else v
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [
                self._open(v, f"{context}.{i}") if isinstance(v, _NESTED_OR_SEALED) else v
                for i, v in enumerate(value)
            ]
        return value

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        topic = get_topic(domain_event.__class__)
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        prefix = f"{originator_id}/{originator_version}"
        state = {
            k: self._seal(v, f"{prefix}/{k}") if isinstance(v, _NESTED_OR_PERSONAL) else v
            for k, v in state.items()
        }
        class_version = getattr(type(domain_event), "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        return StoredEvent(
            originator_id=originator_id,
            originator_version=originator_version,
            topic=topic,
            state=self.transcoder.encode(state),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        domain_event = super().to_domain_event(stored_event)
        prefix = f"{stored_event.originator_id}/{stored_event.originator_version}"
        d = domain_event.__dict__
        for k, v in list(d.items()):
            if isinstance(v, _NESTED_OR_SEALED) and k not in _IDENTITY:
                d[k] = self._open(v, f"{prefix}/{k}")
        return domain_event
