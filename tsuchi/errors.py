"""The error tree every tsuchi caller can rely on.

Everything tsuchi raises on purpose derives from :class:`TsuchiError`.  Messages
never contain personal data: they name the field and the rule that was broken,
never the value that broke it.

::

    TsuchiError
    ├── InvalidInput                 bad input; nothing was persisted   (field, rule)
    │   ├── InvalidMobileNumber
    │   ├── InvalidVariables         missing, unknown or mistyped template variables
    │   ├── BodyTooLong              a rendered body over the channel limit
    │   ├── IdempotencyConflict      same idempotency key, different request
    │   └── WebhookRejected          a webhook request refused   (status, field, rule)
    ├── NotFound                     (kind, key)
    │   ├── UnknownAccount
    │   ├── UnknownSender
    │   ├── UnknownTemplate
    │   ├── UnknownMessage
    │   ├── UnknownDeadline          (also an InvalidInput, as it was before)
    │   ├── UnknownFraudCase         (also an InvalidInput)
    │   └── UnknownBroadcast         (also an InvalidInput)
    ├── RuleViolation                a domain invariant refused a command
    │   ├── TemplateNotApproved
    │   ├── SenderNotActive
    │   ├── AccountClosed
    │   └── FourEyesViolation
    ├── ConfigurationError           the engine cannot start safely
    │   ├── InvalidSetting           a setting (or TSUCHI_* variable) refused at construction
    │   │   └── UnsupportedDatabaseURL
    │   ├── SchemaTooNew             a schema revision newer than this code
    │   ├── SchemaOutdated           an older schema: run `tsuchi db upgrade`
    │   ├── SchemaUnrecognised       tsuchi tables of no known schema: never adopted
    │   └── KeyMaterialError         missing, wrong or unsafe key material
    ├── PersonalDataError
    │   ├── CiphertextRejected       tampered or moved ciphertext
    │   └── DataErased               the subject was erased; plaintext is gone
    ├── GatewayRejected              the aggregator refused the whole request   (code, rule)
    ├── ProjectionError              a stored event a projection cannot apply
    ├── WorkerDied                   a part of the worker stopped: exit, be restarted
    ├── TransientError               retry the operation
    │   ├── ConcurrencyConflict
    │   └── GatewayUnavailable       the aggregator cannot be reached; nothing handed over
    └── AuditError                   the audit trail cannot do what was asked
        ├── AuditMismatch            the database no longer matches the chain   (seq, reason)
        │   └── AuditAnchorMismatch  the chain does not extend the anchored checkpoints
        └── AuditAnchorCorrupt       the anchor log is unusable   (path, line, rule)
"""

from __future__ import annotations


class TsuchiError(Exception):
    """Base class of every error tsuchi raises on purpose."""


class InvalidInput(TsuchiError, ValueError):
    """Input broke a rule; nothing was persisted.

    ``field`` names the offending input, ``rule`` the rule it broke.  The
    offending value itself is never included (it may be personal data).
    """

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class InvalidMobileNumber(InvalidInput):
    """Not a Japanese mobile number (070/080/090) or not a number at all."""


class InvalidVariables(InvalidInput):
    """Template variables missing, undeclared or of the wrong type."""


class BodyTooLong(InvalidInput):
    """A rendered body exceeds what the channel can carry."""


class IdempotencyConflict(InvalidInput):
    """An idempotency key was reused for a different request."""


class NotFound(TsuchiError, LookupError):
    """A referenced thing does not exist."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"{kind} not found: {key}")


class UnknownAccount(NotFound):
    def __init__(self, key: str) -> None:
        super().__init__("account", key)


class UnknownSender(NotFound):
    def __init__(self, key: str) -> None:
        super().__init__("sender", key)


class UnknownTemplate(NotFound):
    def __init__(self, key: str) -> None:
        super().__init__("template", key)


class UnknownMessage(NotFound):
    def __init__(self, key: str) -> None:
        super().__init__("message", key)


class UnknownDeadline(NotFound, InvalidInput):
    """No such deadline.  Also an :class:`InvalidInput` (``field`` names the
    argument), which is what callers caught before it had its own type."""

    def __init__(self, field: str) -> None:
        NotFound.__init__(self, "deadline", field)
        self.field = field
        self.rule = "no such deadline"


class UnknownFraudCase(NotFound, InvalidInput):
    """No such fraud case (also an :class:`InvalidInput` on ``case_id``)."""

    def __init__(self, key: str) -> None:
        NotFound.__init__(self, "fraud case", key)
        self.field = "case_id"
        self.rule = "no such fraud case"


class UnknownBroadcast(NotFound, InvalidInput):
    """No such broadcast (also an :class:`InvalidInput` on ``broadcast_id``)."""

    def __init__(self, key: str) -> None:
        NotFound.__init__(self, "broadcast", key)
        self.field = "broadcast_id"
        self.rule = "no such broadcast"


class WebhookRejected(InvalidInput):
    """A webhook request was refused; answer it with ``status``."""

    def __init__(self, status: int, field: str, rule: str) -> None:
        self.status = status
        super().__init__(field, rule)


class RuleViolation(TsuchiError):
    """A domain invariant refused a command.  ``rule`` names the invariant."""

    def __init__(self, rule: str, detail: str = "") -> None:
        self.rule = rule
        self.detail = detail
        super().__init__(f"{rule}: {detail}" if detail else rule)


class TemplateNotApproved(RuleViolation):
    pass


class SenderNotActive(RuleViolation):
    pass


class AccountClosed(RuleViolation):
    pass


class FourEyesViolation(RuleViolation):
    pass


class ConfigurationError(TsuchiError):
    """The engine cannot start safely with this configuration."""


class InvalidSetting(ConfigurationError, InvalidInput):
    """``Settings(...)`` refused a setting: ``field`` names the first setting
    and ``rule`` what it broke; ``problems`` lists every ``(setting, rule)``.
    The refused value is never included (it may be a secret)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = list(problems) or [("settings", "invalid")]
        field, rule = self.problems[0]
        InvalidInput.__init__(self, field, rule)
        self.args = ("; ".join(self.lines()),)

    def lines(self) -> list[str]:
        """One line per refused setting, for an operator."""
        return [_setting_problem(f, r) for f, r in self.problems]


def _setting_problem(setting: str, rule: str) -> str:
    """``setting quiet_hours_window (TSUCHI_QUIET_HOURS_WINDOW): rule``, or
    ``environment variable TSUCHI_X: rule`` for a variable that is no setting."""
    if setting.upper().startswith("TSUCHI_"):
        return f"environment variable {setting}: {rule}"
    return f"setting {setting} (TSUCHI_{setting.split('.')[0].upper()}): {rule}"


class UnsupportedDatabaseURL(InvalidSetting):
    """``database_url`` names no database tsuchi supports (``rule`` says which)."""

    def __init__(self, rule: str, others: list[tuple[str, str]] | None = None) -> None:
        super().__init__([("database_url", rule), *(others or [])])


class SchemaTooNew(ConfigurationError):
    """The database was written by a newer tsuchi than this one."""


class SchemaOutdated(ConfigurationError):
    """The database's schema is older than this tsuchi needs: run ``tsuchi db upgrade``."""


class SchemaUnrecognised(ConfigurationError):
    """The database holds tsuchi tables that match no schema revision; it is
    refused, never stamped as current."""


class KeyMaterialError(ConfigurationError):
    """Key material is missing, wrong for this database, or stored unsafely."""


class PersonalDataError(TsuchiError):
    """Base of errors about encrypted personal data."""


class CiphertextRejected(PersonalDataError):
    """A ciphertext failed authentication: tampered, or moved to another
    event, field or subject.  It never decrypts to wrong data."""


class DataErased(PersonalDataError):
    """The data subject was erased; the plaintext no longer exists."""


class TransientError(TsuchiError):
    """The operation may succeed if retried."""


class ConcurrencyConflict(TransientError):
    """Another writer changed the same aggregate first; retry the command."""


class GatewayRejected(TsuchiError):
    """The aggregator refused the whole request (bad credentials, no balance,
    malformed request, unexpected 4xx).  Retrying the same request will not
    help; ``code`` is CM's error code (or ``http_<status>``), ``rule`` names it."""

    def __init__(self, code: str, rule: str) -> None:
        self.code = code
        self.rule = rule
        super().__init__(f"aggregator rejected the request: {rule} (code {code})")


class GatewayUnavailable(TransientError):
    """The aggregator cannot be reached right now and nothing was handed over;
    retry later.  ``retry_after`` (seconds) is a hint when known."""

    def __init__(self, rule: str, retry_after: float | None = None) -> None:
        self.rule = rule
        self.retry_after = retry_after
        super().__init__(f"aggregator unavailable: {rule}")


class WorkerDied(TsuchiError):
    """A part of the worker (its scheduler or its urgent dispatcher) stopped
    running: the process must exit non-zero so that a supervisor restarts it."""

    def __init__(self, part: str) -> None:
        self.part = part
        super().__init__(f"the worker's {part} stopped running")


class ProjectionError(TsuchiError):
    """A projection cannot apply a stored event (it is not readable JSON, or
    breaks the projection's assumptions); ``notification_id`` names it."""

    def __init__(self, notification_id: int, reason: str) -> None:
        self.notification_id = notification_id
        self.reason = reason
        super().__init__(f"stored event {notification_id}: {reason}")


# -- audit trail (tsuchi.infrastructure.audit) -------------------------------------------------


class AuditError(TsuchiError):
    """The audit trail cannot do what was asked (nothing to export, a stored
    event it cannot read, a checkpoint it cannot issue)."""


class AuditMismatch(AuditError):
    """The database no longer matches the audit chain at ``seq``: a stored
    event was changed, deleted or inserted after it was chained, or the chain
    or a checkpoint itself was altered.  ``reason`` says which."""

    def __init__(self, seq: int, reason: str) -> None:
        self.seq = seq
        self.reason = reason
        super().__init__(f"audit mismatch at seq {seq}: {reason}")


class AuditAnchorMismatch(AuditMismatch):
    """The chain does not extend the checkpoints anchored outside the
    database: history was rewritten, cut off, or moved to a new chain.
    ``seq`` is the anchored checkpoint it contradicts."""


class AuditAnchorCorrupt(AuditError):
    """The anchor log (the checkpoint log kept outside the database) cannot
    be read or appended to, or breaks its format: ``path`` names the file,
    ``line`` the line (0 when the whole file is at fault), ``rule`` what is
    wrong."""

    def __init__(self, path: str, line: int, rule: str) -> None:
        self.path = path
        self.line = line
        self.rule = rule
        where = f"{path} line {line}" if line else path
        super().__init__(f"audit anchor log {where}: {rule}")


__all__ = [
    "AccountClosed",
    "AuditAnchorCorrupt",
    "AuditAnchorMismatch",
    "AuditError",
    "AuditMismatch",
    "BodyTooLong",
    "CiphertextRejected",
    "ConcurrencyConflict",
    "ConfigurationError",
    "DataErased",
    "FourEyesViolation",
    "GatewayRejected",
    "GatewayUnavailable",
    "IdempotencyConflict",
    "InvalidInput",
    "InvalidMobileNumber",
    "InvalidSetting",
    "InvalidVariables",
    "KeyMaterialError",
    "NotFound",
    "PersonalDataError",
    "ProjectionError",
    "RuleViolation",
    "SchemaOutdated",
    "SchemaTooNew",
    "SchemaUnrecognised",
    "SenderNotActive",
    "TemplateNotApproved",
    "TransientError",
    "TsuchiError",
    "UnknownAccount",
    "UnknownBroadcast",
    "UnknownDeadline",
    "UnknownFraudCase",
    "UnknownMessage",
    "UnknownSender",
    "UnknownTemplate",
    "UnsupportedDatabaseURL",
    "WebhookRejected",
    "WorkerDied",
]
