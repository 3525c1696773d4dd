"""Personal data as a type.

Every field that can identify or describe a customer (mobile number, name,
customer reference, personal template variables, reply texts, consent evidence
naming a person) is held as :class:`Personal`.  The value knows its data
subject, so the event mapper can encrypt it under that subject's data key, and
its ``repr`` never shows the plaintext, so it cannot leak through logs or
exception messages by accident.

After erasure the value reads as :data:`ERASED`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from uuid import UUID

from tsuchi.errors import DataErased

ERASED: Final = "[erased]"
"""What an erased personal field reads as in reports."""


@dataclass(frozen=True)
class Personal:
    """A personal value belonging to one data subject (a customer account)."""

    subject: UUID
    value: str | None

    @property
    def erased(self) -> bool:
        return self.value is None

    def reveal(self) -> str:
        """Return the plaintext; raise :class:`DataErased` if it is gone."""
        if self.value is None:
            raise DataErased(f"personal data of subject {self.subject} was erased")
        return self.value

    def shown(self) -> str:
        """The plaintext, or the erased marker (for reports to the subject)."""
        return ERASED if self.value is None else self.value

    def __repr__(self) -> str:
        state = "erased" if self.value is None else "***"
        return f"Personal(subject={self.subject}, {state})"

    __str__ = __repr__
