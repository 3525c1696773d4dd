"""The Template aggregate and variable rendering.

A template belongs to one sender and has numbered versions.  Each version
declares per-channel bodies (+Message text with suggested replies and
actions, see :mod:`tsuchi.domain.suggestions`; SMS text) and typed
variables.  A version is drafted, approved by someone other than its author
(four eyes), and eventually retired; only approved versions can be sent.
Placeholders are ``{name}``; nothing else of Python's format language
is allowed, so a body can never reach into objects.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from tsuchi.domain.channels import (
    check_attachments,
    check_no_control_characters,
    check_plus_message_body,
    check_sms_body,
)
from tsuchi.domain.pci import check_no_card_number
from tsuchi.domain.suggestions import Suggestion, parse_suggestions
from tsuchi.domain.values import Channel, Purpose
from tsuchi.errors import (
    FourEyesViolation,
    InvalidInput,
    InvalidVariables,
    RuleViolation,
    TemplateNotApproved,
)

TEMPLATE_NAMESPACE = uuid5(NAMESPACE_URL, "https://tsuchi.example/template")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class VariableType(StrEnum):
    TEXT = "text"
    PERSONAL_TEXT = "personal_text"  # free text about the customer: encrypted
    NAME = "name"  # a person's name: encrypted
    AMOUNT = "amount"  # yen, integer
    DATE = "date"
    CARD_LAST4 = "card_last4"
    CARD_NUMBER = "card_number"  # stored and rendered as its last 4 digits only
    URL = "url"
    NUMBER = "number"

    @property
    def personal(self) -> bool:
        return self in (VariableType.PERSONAL_TEXT, VariableType.NAME)


class VersionStatus(StrEnum):
    DRAFTED = "drafted"
    APPROVED = "approved"
    RETIRED = "retired"


@dataclass
class TemplateVersion:
    number: int
    plus_message_text: str
    suggestions: tuple[Suggestion, ...]
    sms_text: str
    variables: dict[str, VariableType]
    author: str
    status: VersionStatus = VersionStatus.DRAFTED
    approver: str | None = None
    attachments: tuple[dict[str, Any], ...] = ()

    def body(self, channel: Channel, values: dict[str, str]) -> str:
        """The text sent on ``channel``, its placeholders filled from ``values``
        (stored forms: shown as their display forms)."""
        text = self.plus_message_text if channel is Channel.PLUS_MESSAGE else self.sms_text
        return render(text, self.variables, values)

    def bodies(self, values: dict[str, str]) -> tuple[str, str]:
        """The +Message and the SMS text with ``values`` filled in."""
        return self.body(Channel.PLUS_MESSAGE, values), self.body(Channel.SMS, values)


def template_id(sender_id: UUID, name: str) -> UUID:
    return uuid5(TEMPLATE_NAMESPACE, f"{sender_id}/{name}")


def placeholders(text: str, field: str) -> set[str]:
    """Names used as ``{name}`` in ``text``; refuse any other format syntax."""
    names: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:
        raise InvalidInput(field, "unbalanced braces in body") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not NAME_RE.match(name) or spec or conversion:
            raise InvalidInput(field, "placeholders must be plain {name} of a declared variable")
        names.add(name)
    return names


def _card_last4(value: str) -> str:
    digits = re.sub(r"[\s-]", "", value)
    if not digits.isdigit() or not 13 <= len(digits) <= 19:
        raise InvalidVariables("variables", "card_number values need 13 to 19 digits")
    return digits[-4:]


def coerce_variable(name: str, kind: VariableType, value: Any) -> str:
    """Validate one variable value and return its stored string form."""
    field = f"variables.{name}"
    if kind is VariableType.AMOUNT:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidVariables(field, "amount must be a non-negative integer (yen)")
        return str(value)
    if kind is VariableType.NUMBER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidVariables(field, "must be an integer")
        return str(value)
    if kind is VariableType.DATE:
        if isinstance(value, date):
            return value.isoformat()[:10]
        raise InvalidVariables(field, "must be a date")
    if not isinstance(value, str):
        raise InvalidVariables(field, "must be a string")
    if kind is VariableType.CARD_NUMBER:
        return _card_last4(value)
    if kind is VariableType.CARD_LAST4:
        if not re.fullmatch(r"\d{4}", value):
            raise InvalidVariables(field, "card_last4 must be exactly 4 digits")
        return value
    if kind is VariableType.URL:
        if not re.fullmatch(r"https://[^\s<>\"]{1,2000}", value):
            raise InvalidVariables(field, "url must be an https URL")
        return value
    if len(value) > 1000 or not value.strip():
        raise InvalidVariables(field, "text must have 1 to 1000 characters")
    check_no_control_characters(value, field)
    return value


def display_value(kind: VariableType, stored: str) -> str:
    """How a stored variable value reads in a rendered body."""
    if kind is VariableType.AMOUNT:
        return f"{int(stored):,}円"
    if kind in (VariableType.CARD_NUMBER, VariableType.CARD_LAST4):
        return f"****{stored}"
    return stored


class Template(Aggregate):
    @staticmethod
    def create_id(sender_id: UUID, name: str, purpose: Purpose) -> UUID:
        return template_id(sender_id, name)

    @event("Created")
    def __init__(self, sender_id: UUID, name: str, purpose: Purpose) -> None:
        self.sender_id = sender_id
        self.name = name
        self.purpose = Purpose(purpose)
        self.versions: dict[int, TemplateVersion] = {}

    @staticmethod
    def check_name(name: str) -> None:
        if not NAME_RE.match(name):
            raise InvalidInput("name", "lowercase letters, digits and _; 1 to 64 characters")

    @staticmethod
    def check_bodies(
        plus_message_text: str,
        suggestions: tuple[Suggestion, ...],
        sms_text: str,
        variables: dict[str, VariableType],
        sms_max_parts: int,
    ) -> None:
        """``suggestions`` were checked one by one by :func:`parse_suggestions`."""
        used = placeholders(plus_message_text, "body.plus_message") | placeholders(
            sms_text, "body.sms"
        )
        undeclared = used - set(variables)
        if undeclared:
            raise InvalidVariables("variables", "every placeholder must be a declared variable")
        check_plus_message_body(plus_message_text, tuple(s.label for s in suggestions))
        check_sms_body(sms_text, sms_max_parts)
        check_no_card_number(plus_message_text, "body.plus_message")
        check_no_card_number(sms_text, "body.sms")

    def get_version(self, number: int) -> TemplateVersion:
        try:
            return self.versions[number]
        except KeyError:
            raise InvalidInput("template_version", "no such version of this template") from None

    def latest_approved(self) -> TemplateVersion:
        approved = [v for v in self.versions.values() if v.status is VersionStatus.APPROVED]
        if not approved:
            raise TemplateNotApproved("template_not_approved", "no approved version to send")
        return max(approved, key=lambda v: v.number)

    def usable(self, number: int | None) -> TemplateVersion:
        if number is None:
            return self.latest_approved()
        v = self.get_version(number)
        if v.status is not VersionStatus.APPROVED:
            raise TemplateNotApproved("template_not_approved", f"version {number} is {v.status}")
        return v

    def draft(
        self,
        plus_message_text: str,
        suggestions: Sequence[str | Suggestion],
        sms_text: str,
        variables: dict[str, VariableType],
        author: str,
        at: datetime,
        sms_max_parts: int,
        attachments: list[dict[str, Any]] | None = None,
    ) -> int:
        for name in variables:
            if not NAME_RE.match(name):
                raise InvalidVariables("variables", "variable names: lowercase letters, digits, _")
        parsed = parse_suggestions(suggestions)
        self.check_bodies(plus_message_text, parsed, sms_text, variables, sms_max_parts)
        check_attachments(list(attachments or []))
        number = len(self.versions) + 1
        self._drafted(
            number=number,
            plus_message_text=plus_message_text,
            suggestions=[x.to_stored() for x in parsed],
            sms_text=sms_text,
            variables={k: v.value for k, v in variables.items()},
            author=author,
            at=at,
            attachments=[dict(a) for a in attachments or []],
        )
        return number

    def approve(self, number: int, approver: str, at: datetime) -> None:
        v = self.get_version(number)
        if v.status is not VersionStatus.DRAFTED:
            raise RuleViolation("not_drafted", f"version {number} is {v.status}")
        if approver == v.author:
            raise FourEyesViolation("four_eyes", "the approver must differ from the author")
        self._approved(number=number, approver=approver, at=at)

    def retire(self, number: int, at: datetime) -> None:
        v = self.get_version(number)
        if v.status is VersionStatus.RETIRED:
            raise RuleViolation("already_retired", f"version {number} is retired")
        self._retired(number=number, at=at)

    def check_variables(self, version: TemplateVersion, values: dict[str, Any]) -> dict[str, str]:
        missing = set(version.variables) - set(values)
        if missing:
            # Declared names (the template's own), safe to show.
            raise InvalidVariables("variables", f"missing: {', '.join(sorted(missing))}")
        unknown = set(values) - set(version.variables)
        if unknown:
            # The names are the host's: never echoed (one was a phone number).
            raise InvalidVariables("variables", f"{len(unknown)} undeclared variable(s)")
        return {
            name: coerce_variable(name, kind, values[name])
            for name, kind in version.variables.items()
        }

    @event("VersionDrafted")
    def _drafted(
        self,
        number: int,
        plus_message_text: str,
        suggestions: list[str | dict[str, Any]],
        sms_text: str,
        variables: dict[str, str],
        author: str,
        at: datetime,
        attachments: list[dict[str, Any]] | None = None,
    ) -> None:
        # Versions stored before suggestions had codes hold plain labels:
        # they read back as reply suggestions with their labels' codes.
        self.versions[number] = TemplateVersion(
            number=number,
            plus_message_text=plus_message_text,
            suggestions=tuple(Suggestion.from_stored(x) for x in suggestions),
            sms_text=sms_text,
            variables={k: VariableType(v) for k, v in variables.items()},
            author=author,
            attachments=tuple(attachments or ()),
        )

    @event("VersionApproved")
    def _approved(self, number: int, approver: str, at: datetime) -> None:
        self.versions[number].status = VersionStatus.APPROVED
        self.versions[number].approver = approver

    @event("VersionRetired")
    def _retired(self, number: int, at: datetime) -> None:
        self.versions[number].status = VersionStatus.RETIRED


def render(text: str, variables: dict[str, VariableType], values: dict[str, str]) -> str:
    """Fill ``{name}`` placeholders with display forms of stored values."""
    return text.format_map({k: display_value(variables[k], v) for k, v in values.items()})
