"""Settings are checked when they are built: each refusal is an InvalidSetting
naming the setting (or the TSUCHI_ variable) and the rule, never the value."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tsuchi import Settings, errors
from tsuchi.settings import NOT_SETTINGS, unknown_variables

SECRET = "do-not-echo-0123456789"


@pytest.mark.parametrize(
    ("setting", "value", "rule"),
    [
        ("quiet_hours_window", ("8:00", "21:00"), "HH:MM"),
        ("quiet_hours_window", ("24:00", "06:00"), "HH:MM"),
        ("quiet_hours_window", ("09:00", "09:00"), "must not be empty"),
        ("reminder_time_zone", "Asia/Tokio", "IANA time zone"),
        ("reminder_time_zone", "../../etc/passwd", "IANA time zone"),
        ("cm_report_time_zone", "", "IANA time zone"),
        ("timer_lease", timedelta(0), "positive duration"),
        ("sms_report_ttl", timedelta(seconds=-1), "positive duration"),
        ("urgent_read_window", timedelta(0), "positive duration"),
        ("fraud_escalate_after", timedelta(0), "positive duration"),
        ("pool_timeout", timedelta(0), "positive duration"),
        ("delivery_ttl", {"urgent": timedelta(minutes=5)}, "normal and urgent"),
        ("delivery_ttl", {"urgent": timedelta(0), "normal": timedelta(hours=1)}, "urgent"),
        ("cm_url", "ftp://gw.messaging.cm.com/v1.0/message", "https://"),
        ("cm_url", "http://gw.messaging.cm.com/v1.0/message", "loopback"),
        ("cm_url", "https:///no-host", "https://"),
        ("pool_size", 0, "greater than or equal to 1"),
        ("max_overflow", -1, "greater than or equal to 0"),
        ("database_url", "mysql://root@localhost/db", "only sqlite"),
    ],
)
def test_a_bad_setting_is_refused_at_construction(setting: str, value: Any, rule: str) -> None:
    with pytest.raises(errors.InvalidSetting) as e:
        Settings(**{setting: value})
    assert e.value.field == setting
    assert rule in e.value.rule
    assert f"setting {setting} (TSUCHI_{setting.upper()})" in str(e.value)
    assert isinstance(e.value, errors.ConfigurationError)
    assert isinstance(e.value, errors.InvalidInput)


def test_every_problem_is_named_and_no_value_is_echoed() -> None:
    with pytest.raises(errors.InvalidSetting) as e:
        Settings(reminder_time_zone=SECRET, cm_url=f"http://{SECRET}.example/", worker_id=7)
    named = {field for field, _ in e.value.problems}
    assert {"reminder_time_zone", "cm_url", "worker_id"} <= named
    assert SECRET not in str(e.value)


def test_an_unknown_argument_is_no_setting() -> None:
    with pytest.raises(errors.InvalidSetting, match=r"setting gatway .*is not a setting"):
        Settings(gatway="cm")


def test_an_unknown_tsuchi_variable_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TSUCHI_GATWAY", SECRET)
    with pytest.raises(errors.InvalidSetting) as e:
        Settings()
    assert e.value.field == "TSUCHI_GATWAY"
    assert str(e.value) == "environment variable TSUCHI_GATWAY: is not a setting of tsuchi"


def test_a_bad_variable_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TSUCHI_REMINDER_TIME_ZONE", "Mars/Olympus")
    with pytest.raises(errors.InvalidSetting, match="TSUCHI_REMINDER_TIME_ZONE"):
        Settings()
    monkeypatch.setenv("TSUCHI_REMINDER_TIME_ZONE", "Asia/Tokyo")
    monkeypatch.setenv("TSUCHI_CM_WEBHOOK_ALLOW", "[not json")
    with pytest.raises(errors.InvalidSetting) as e:
        Settings()
    assert e.value.field == "cm_webhook_allow"


def test_variables_of_the_tests_and_settings_are_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NOT_SETTINGS:
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("TSUCHI_POOL_SIZE", "3")
    monkeypatch.setenv("TSUCHI_POOL_TIMEOUT", "PT4S")
    monkeypatch.setenv("tsuchi_max_overflow", "2")  # names match case-insensitively
    s = Settings()
    assert (s.pool_size, s.max_overflow, s.pool_timeout) == (3, 2, timedelta(seconds=4))
    assert unknown_variables({"TSUCHI_TEST_DATABASE_URL": "x", "TSUCHI_KEK": "y"}) == []
    assert unknown_variables({"TSUCHI_NOPE": "x", "OTHER": "y"}) == ["TSUCHI_NOPE"]


def test_good_settings_are_kept() -> None:
    s = Settings(
        quiet_hours_window=("21:30", "07:00"),  # across midnight
        reminder_time_zone="America/Los_Angeles",
        cm_url="http://127.0.0.1:8099/v1.0/message",
        database_url="postgresql://u:p@db/tsuchi",
    )
    assert s.quiet_hours_window == ("21:30", "07:00")
    assert (s.pool_size, s.max_overflow, s.pool_timeout) == (5, 10, timedelta(seconds=30))
