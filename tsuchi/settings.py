"""Settings: one pydantic model, from arguments or ``TSUCHI_*`` environment variables.

Where the keys are (in this order):

1. ``keys_dir`` / ``TSUCHI_KEYS_DIR``;
2. for a SQLite file database ``path/name.db``: the directory ``path/name.keys/``;
3. otherwise ``./tsuchi-keys/``.

``TSUCHI_KEK`` (base64 of 32 bytes) may supply the KEK instead of the key
file, for hosts that inject secrets through the environment.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, IPvAnyNetwork
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from tsuchi.errors import UnsupportedDatabaseURL

SUPPORTED_DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql+psycopg")


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TSUCHI_", extra="forbid")

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
    reminder_time_zone: str = "Asia/Tokyo"
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
    marketing_cap: FrequencyCap = Field(
        default_factory=lambda: FrequencyCap(),
        description="Default marketing frequency cap per account and sender.",
    )

    def resolved_keys_dir(self) -> Path:
        if self.keys_dir is not None:
            return self.keys_dir
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            db = Path(url.database)
            return db.with_name(db.stem + ".keys")
        return Path("tsuchi-keys")
