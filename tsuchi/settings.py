"""Settings: one pydantic model, from arguments or ``TSUCHI_*`` environment variables.

Where the keys are (in this order):

1. ``keys_dir`` / ``TSUCHI_KEYS_DIR``;
2. for a SQLite file database ``path/name.db``: the directory ``path/name.keys/``;
3. otherwise ``./tsuchi-keys/``.

The audit anchor log (signed checkpoints kept outside the database) is
``audit_anchor`` / ``TSUCHI_AUDIT_ANCHOR`` (a file, or a directory holding
``audit-anchor.jsonl``), by default ``audit-anchor.jsonl`` in the keys
directory.

``TSUCHI_KEK`` (base64 of 32 bytes) may supply the KEK instead of the key
file, for hosts that inject secrets through the environment.

Every setting is checked when ``Settings(...)`` is built, not when first used:
sending windows, time zones, durations, URLs and pool sizes; a ``TSUCHI_*``
environment variable that names no setting (a typo such as
``TSUCHI_GATEWAY_URL``) is refused too, except the few listed in
:data:`NOT_SETTINGS` that tsuchi's tests and benchmarks read.  A refusal is
one :class:`~tsuchi.errors.InvalidSetting` naming every setting and rule, and
never the value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, IPvAnyNetwork, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from tsuchi.errors import InvalidSetting, UnsupportedDatabaseURL

SUPPORTED_DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql+psycopg")
ENV_PREFIX = "TSUCHI_"
NOT_SETTINGS = frozenset(
    {
        "TSUCHI_TEST_DATABASE_URL",  # the test suite's PostgreSQL
        "TSUCHI_BENCH_DATABASE_URL",  # the benchmarks' PostgreSQL
        "TSUCHI_SOAK_SECONDS",  # the soak test's length
        "TSUCHI_LONG_TESTS",  # the long property tests
    }
)
"""``TSUCHI_*`` variables that are not settings and are let through."""

_HHMM = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def normalise_database_url(url: str) -> str:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UnsupportedDatabaseURL("is not a SQLAlchemy URL") from None
    driver = parsed.drivername
    if driver in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif driver not in SUPPORTED_DRIVERS:
        raise UnsupportedDatabaseURL(
            "only sqlite:///FILE and postgresql+psycopg://... are supported"
        )
    return parsed.render_as_string(hide_password=False)


class FrequencyCap(BaseModel):
    per_day: int = Field(default=1, ge=1)
    per_week: int = Field(default=3, ge=1)
    over_cap: Literal["defer", "drop"] = "defer"


def _ttl() -> dict[str, timedelta]:
    return {"urgent": timedelta(minutes=10), "normal": timedelta(hours=24)}


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``TSUCHI_*`` names in ``environ`` that are neither a setting nor in
    :data:`NOT_SETTINGS` (names are matched case-insensitively, as pydantic does)."""
    fields = set(Settings.model_fields)
    allowed = {n.upper() for n in NOT_SETTINGS}
    return sorted(
        name
        for name in environ
        if name.upper().startswith(ENV_PREFIX)
        and name.upper() not in allowed
        and name[len(ENV_PREFIX) :].lower() not in fields
    )


def _problems(e: ValidationError) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for problem in e.errors():
        where = ".".join(str(x) for x in problem["loc"]) or "settings"
        rule = str(problem["msg"]).removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            rule = "is not a setting"
        found.append((where, rule))
    return found


def _positive(value: timedelta, what: str = "") -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"{what}must be a positive duration")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TSUCHI_", extra="forbid")

    def __init__(self, **values: Any) -> None:
        """Build and check every setting; raise :class:`~tsuchi.errors.InvalidSetting`."""
        unknown = unknown_variables(os.environ)
        if unknown:
            raise InvalidSetting([(name, "is not a setting of tsuchi") for name in unknown])
        try:
            super().__init__(**values)
        except ValidationError as e:
            problems = _problems(e)
            url = [rule for where, rule in problems if where == "database_url"]
            if url:
                others = [p for p in problems if p[0] != "database_url"]
                raise UnsupportedDatabaseURL(url[0], others) from None
            raise InvalidSetting(problems) from None
        except SettingsError as e:  # a variable that does not parse (JSON of a list, ...)
            m = re.search(r'field "([a-z_]+)"', str(e))
            raise InvalidSetting([(m[1] if m else "settings", "cannot be parsed")]) from None

    database_url: str = "sqlite:///tsuchi.db"
    keys_dir: Path | None = None
    kek: str | None = Field(default=None, repr=False)
    create_keys: bool = Field(
        default=False,
        description="Create key files when absent and the database holds no encrypted data.",
    )
    sms_max_parts: int = Field(default=10, ge=1, le=255)
    dispatch_batch: int = Field(default=100, ge=1, le=100)
    worker_id: str = "worker-1"
    aggregate_cache_size: int = Field(
        default=20_000,
        ge=0,
        description="Committed aggregate states kept in memory per engine (0 disables).",
    )
    cache_ttl: timedelta = Field(
        default=timedelta(seconds=60),
        gt=timedelta(0),
        description=(
            "How long an unwrapped data key or a cached aggregate state is used (states "
            "are always brought up to date first); bounds how long an erasure made by "
            "another process leaves decryptable data in this one's memory."
        ),
    )
    quiet_hours_window: tuple[str, str] = Field(
        default=("08:00", "21:00"),
        description="Default recipient-local sending window for non-urgent notices.",
    )
    delivery_ttl: dict[str, timedelta] = Field(
        default_factory=_ttl,
        description="No delivery report in this time (per urgency): +Message falls back to SMS.",
    )
    sms_report_ttl: timedelta = Field(
        default=timedelta(hours=72),
        description="An SMS with no final report after this long is recorded as expired.",
    )
    urgent_read_window: timedelta = Field(
        default=timedelta(minutes=5),
        description="An urgent +Message not read within this window goes by SMS as well.",
    )
    fraud_alert_template: str = "fraud_alert"
    fraud_confirmation_template: str = "fraud_confirmation"
    fraud_escalate_after: timedelta = Field(
        default=timedelta(minutes=30),
        description="No answer to a fraud alert within this time: EscalationRequired.",
    )
    opt_out_keywords: tuple[str, ...] = ("STOP", "停止", "配信停止")
    reply_window: timedelta = Field(
        default=timedelta(days=7),
        gt=timedelta(0),
        description=(
            "An incoming message without CM's messageContext answers the latest message "
            "sent to its number within this time before it was written."
        ),
    )
    operator_reply_window: timedelta = Field(
        default=timedelta(hours=24),
        gt=timedelta(0),
        description="An operator may answer a customer in free text this long after they wrote.",
    )
    opt_out_confirmation_template: str = "opt_out_confirmation"
    reminder_time: str = Field(default="10:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    reminder_time_zone: str = Field(
        default="Asia/Tokyo", description="IANA time zone deadline reminders are timed in."
    )
    timer_lease: timedelta = Field(
        default=timedelta(minutes=2),
        description="A claimed timer or outbox row whose worker vanished is retried after this.",
    )
    gateway: Literal["simulator", "cm"] = Field(
        default="simulator",
        description="simulator: the seeded carrier network; cm: CM.com Business Messaging.",
    )
    simulator_seed: int = 0
    cm_product_token: str | None = Field(default=None, repr=False)
    cm_url: str | None = None
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description=(
            "SQLite: FULL syncs the WAL at each commit, so an acknowledged notice survives a "
            "power loss; NORMAL is faster but can lose the last commits (never corrupts)."
        ),
    )
    pool_size: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="PostgreSQL: connections kept open per engine.",
    )
    max_overflow: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="PostgreSQL: connections opened beyond pool_size under load, then closed.",
    )
    pool_timeout: timedelta = Field(
        default=timedelta(seconds=30),
        description=(
            "PostgreSQL: how long a unit of work waits for a free connection before it "
            "fails as a retryable error."
        ),
    )
    db_lock_timeout_ms: int = Field(
        default=10_000,
        ge=100,
        description="PostgreSQL lock_timeout: a longer lock wait fails as a retryable error.",
    )
    webhook_secret: str | None = Field(
        default=None,
        repr=False,
        description="Shared secret that signs inbound webhooks (X-Tsuchi-Signature / Token).",
    )
    webhook_max_body: int = Field(default=1 << 20, ge=1024)
    max_concurrent_requests: int = Field(
        default=32,
        ge=1,
        le=10_000,
        description=(
            "tsuchi serve: requests handled at once per process (bodies are buffered up to "
            "webhook_max_body each); more are answered 503 with Retry-After."
        ),
    )
    webhook_allow_token: bool = Field(
        default=False,
        description=(
            "Also accept X-Tsuchi-Token (the bare secret) on /webhooks/status: weaker than the "
            "signature, since a token seen once authenticates any body, forever."
        ),
    )
    cm_webhook_token: str | None = Field(
        default=None,
        repr=False,
        min_length=32,
        max_length=128,
        pattern=r"^[A-Za-z0-9_-]+$",
        description=(
            "The secret path segment of CM.com's callback URLs "
            "(/webhooks/cm/<token>/status|inbound|events): CM signs nothing."
        ),
    )
    cm_webhook_allow: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="CIDR blocks CM's callbacks may come from (empty: any address).",
    )
    cm_trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Proxies whose X-Forwarded-For names the caller for cm_webhook_allow.",
    )
    cm_report_time_zone: str = Field(
        default="UTC",
        description="Time zone of CM status reports' `received` times that carry no offset.",
    )
    audit_anchor: Path | None = Field(
        default=None,
        description=(
            "The audit anchor log: a file, or a directory holding audit-anchor.jsonl, outside "
            "the database (WORM storage in production); default: in the keys directory."
        ),
    )
    audit_checkpoint_every: timedelta = Field(
        default=timedelta(seconds=30),
        gt=timedelta(0),
        description=(
            "How often the worker chains new events and signs and anchors a checkpoint: "
            "the longest time an event stays unanchored."
        ),
    )
    audit_gap_settle: timedelta = Field(
        default=timedelta(seconds=2),
        ge=timedelta(0),
        description=(
            "A gap in the notification ids is chained past only once it has been seen for "
            "this long (a transaction that holds the missing id may still commit)."
        ),
    )
    marketing_cap: FrequencyCap = Field(
        default_factory=lambda: FrequencyCap(),
        description="Default marketing frequency cap per account and sender.",
    )

    # -- checks run at construction ------------------------------------------------
    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            normalise_database_url(value)
        except UnsupportedDatabaseURL as e:
            raise ValueError(e.rule) from None
        return value

    @field_validator("cm_url")
    @classmethod
    def _cm_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if not parts.hostname or parts.scheme not in ("https", "http"):
            raise ValueError("must be an https:// URL")
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            raise ValueError("must be https:// (http:// only to a loopback address)")
        return value

    @field_validator("quiet_hours_window")
    @classmethod
    def _window(cls, value: tuple[str, str]) -> tuple[str, str]:
        for part in value:
            if not _HHMM.fullmatch(part):
                raise ValueError("each end must be HH:MM (24-hour)")
        if value[0] == value[1]:
            raise ValueError("the sending window must not be empty")
        return value

    @field_validator("reminder_time_zone", "cm_report_time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone (e.g. Asia/Tokyo)") from None
        return value

    @field_validator("delivery_ttl")
    @classmethod
    def _delivery_ttl(cls, value: dict[str, timedelta]) -> dict[str, timedelta]:
        expected = set(_ttl())
        if set(value) != expected:
            raise ValueError(f"must give exactly {' and '.join(sorted(expected))}")
        for urgency, ttl in value.items():
            _positive(ttl, f"{urgency}: ")
        return value

    @field_validator(
        "sms_report_ttl",
        "urgent_read_window",
        "fraud_escalate_after",
        "timer_lease",
        "pool_timeout",
    )
    @classmethod
    def _duration(cls, value: timedelta) -> timedelta:
        return _positive(value)

    def resolved_keys_dir(self) -> Path:
        if self.keys_dir is not None:
            return self.keys_dir
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            db = Path(url.database)
            return db.with_name(db.stem + ".keys")
        return Path("tsuchi-keys")

    def resolved_audit_anchor(self) -> Path:
        """Where the audit anchor log is (see the module docstring)."""
        if self.audit_anchor is not None:
            return self.audit_anchor
        return self.resolved_keys_dir() / "audit-anchor.jsonl"
