"""CM.com's callbacks, applied: status reports, incoming messages, RCS events.

CM signs nothing, so the callback URLs carry a secret path segment (setting
``cm_webhook_token``, compared in constant time; a wrong one is "not found"
and records nothing).  What CM sends is read by
:mod:`tsuchi.infrastructure.cm_callbacks` and applied by
:meth:`Inbound.apply <tsuchi.application.inbound.Inbound.apply>` in one unit
of work, idempotently: a retried callback changes nothing.

Outcomes a bank's SRE can rely on: a body that cannot be parsed is refused
(400, naming the field); anything well-formed is answered as done, whether it
applied, was a duplicate or matched no message; a body that makes applying
fail is a *poison* callback: recorded (route, a digest of the body, the
error type: never the body, which holds personal data) with the orphans and
answered as done, so CM does not retry it for days.  Only a database that is
unavailable is an error (:class:`~tsuchi.errors.TransientError`), and CM's
retry then delivers the callback later.

An incoming (MO) message is matched and recorded by
:class:`~tsuchi.application.conversations.Conversations`: by CM's
``messageContext``, else by the number's latest message within
``reply_window``; handled like a reply (keyword opt-out included), kept in
the account's conversation, or (an unknown number) as an orphan under the
blind-index digest of the number only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from tsuchi.application.context import Context
from tsuchi.application.conversations import Conversations
from tsuchi.application.inbound import APPLIED, DUPLICATE, ORPHAN, Inbound
from tsuchi.application.unit_of_work import UnitOfWork
from tsuchi.application.views import WebhookResult
from tsuchi.errors import KeyMaterialError, TransientError, WebhookRejected
from tsuchi.infrastructure.cm_callbacks import (
    InboundMessage,
    parse_event,
    parse_inbound,
    parse_status,
)
from tsuchi.infrastructure.sql import Session
from tsuchi.infrastructure.sql import orphan_reports as orphan_table
from tsuchi.infrastructure.webhooks import check_size
from tsuchi.ports import StatusReport

log = logging.getLogger("tsuchi.cm")

ROUTES = ("status", "inbound", "events")


class Callbacks:
    """The three CM callback routes, framework-neutral: ``handle(route,
    token, headers, body)`` is what ``tsuchi serve`` calls for ``POST
    /webhooks/cm/{token}/{route}``, and what a host's own web framework calls."""

    def __init__(
        self, ctx: Context, uow: UnitOfWork, inbound: Inbound, conversations: Conversations
    ) -> None:
        self.ctx = ctx
        self.uow = uow
        self.inbound = inbound
        self.conversations = conversations

    def check_token(self, route: str, token: str) -> None:
        """Raise :class:`WebhookRejected` (404) unless ``route`` is one of
        ours and ``token`` is the configured one (constant-time compare)."""
        expected = self.ctx.settings.cm_webhook_token
        if not expected:
            raise KeyMaterialError("no CM callback token configured (TSUCHI_CM_WEBHOOK_TOKEN)")
        given = token.encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected.encode()) or route not in ROUTES:
            raise WebhookRejected(404, "path", "no such callback")

    def handle(
        self, route: str, token: str, headers: Mapping[str, str], body: bytes
    ) -> WebhookResult:
        """Authenticate by token, parse (400 if unparseable), apply."""
        self.check_token(route, token)
        settings = self.ctx.settings
        check_size(body, settings.webhook_max_body)
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        reports, mo = self._read(route, content_type, body)
        digest = self.conversations.number_digest(mo) if mo is not None else ""

        def run(s: Session) -> WebhookResult:
            outcomes = [self.inbound.apply(s, r) for r in reports]
            if mo is not None:
                outcomes.append(self.conversations.receive(s, mo, digest))
            return WebhookResult(
                accepted=outcomes.count(APPLIED),
                duplicates=outcomes.count(DUPLICATE),
                orphans=outcomes.count(ORPHAN),
            )

        try:
            return self.uow.run(run)
        except TransientError:
            raise
        except Exception as exc:  # a body that makes applying fail: keep it, answer done
            return self._keep_poison(route, body, exc)

    def _read(
        self, route: str, content_type: str, body: bytes
    ) -> tuple[list[StatusReport], InboundMessage | None]:
        if route == "status":
            tz = ZoneInfo(self.ctx.settings.cm_report_time_zone)
            return parse_status(content_type, body, tz), None
        if route == "events":
            return parse_event(body), None
        # messageContext names the MT replied to; reference is documented as
        # "a reference to an outgoing message that this message is a response to".
        return [], parse_inbound(body)

    def _keep_poison(self, route: str, body: bytes, exc: Exception) -> WebhookResult:
        digest = hashlib.sha256(body).hexdigest()[:32]
        log.error("poison CM %s callback %s kept: %s", route, digest, type(exc).__name__)
        now = self.ctx.now()
        self.uow.run(
            lambda s: orphan_table.keep(
                s, f"poison:{route}:{digest}", "poison", type(exc).__name__, now, now
            )
        )
        return WebhookResult(accepted=0, poison=1)
