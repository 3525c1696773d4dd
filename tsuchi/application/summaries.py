"""Summaries read from the message view: counts for operators and reports.

No aggregate is loaded and nothing is decrypted: the view holds ids,
statuses and reasons only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tsuchi.application.unit_of_work import UnitOfWork
from tsuchi.infrastructure.sql import message_view as message_view_table


class Summaries:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def delivery_summary(self) -> list[dict[str, Any]]:
        with self.uow.read() as s:
            return message_view_table.summary(s)

    def latest_request_time(self) -> datetime | None:
        with self.uow.read() as s:
            return message_view_table.latest_request_time(s)
