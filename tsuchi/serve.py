"""The HTTP front door for the aggregator's webhooks, as a tiny pure-ASGI app.

The aggregator pushes status reports, replies and postbacks; something must
listen.  This module is that listener and nothing more: the routes, a body
cap enforced while reading, and the mapping of :class:`WebhookRejected` to
HTTP statuses.  What a webhook *means* is the ``handle`` callable's business
(typically :func:`~tsuchi.infrastructure.webhooks.read_status_webhook` then
the engine's ``handle_report``), so no web framework is needed.  ``handle``
is synchronous (database work) and runs in a worker thread.

Routes: ``POST /webhooks/status`` (tsuchi's own signed format), ``POST
/webhooks/cm/{token}/status|inbound|events`` (CM.com's callbacks, when a
``cm`` handler is given) and ``GET /healthz``; everything else is 404.  The
CM routes may be restricted to CIDR blocks (``cm_allow``), checked against
the peer address, or against ``X-Forwarded-For`` only when the peer is one
of ``trusted_proxies``.  A CM route never answers 5xx because of a body (the
handler keeps a poison callback and answers done); 503 means the database is
unavailable and CM should retry.  Nothing from a request body or header is
ever logged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import asdict
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from tsuchi.application.views import WebhookResult
from tsuchi.errors import InvalidInput, TransientError
from tsuchi.infrastructure.webhooks import MAX_BODY, WebhookRejected

log = logging.getLogger("tsuchi.serve")

Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATUS_PATH = "/webhooks/status"
HEALTH_PATH = "/healthz"
CM_PREFIX = "/webhooks/cm/"


Handler = Callable[[Mapping[str, str], bytes], WebhookResult]
CMHandler = Callable[[str, str, Mapping[str, str], bytes], WebhookResult]
"""``(route, token, headers, body)``: :meth:`tsuchi.engine.Engine.handle_cm_callback`."""
Network = IPv4Network | IPv6Network


class _TooLarge(Exception):
    pass


def create_app(
    handle: Handler,
    max_body: int = MAX_BODY,
    *,
    cm: CMHandler | None = None,
    cm_allow: Sequence[Network] = (),
    trusted_proxies: Sequence[Network] = (),
) -> ASGIApp:
    """An ASGI app that passes authenticated-or-not webhook requests to
    ``handle(headers, body)`` (header names lower-case), and CM.com callbacks
    to ``cm(route, token, headers, body)``, and answers with the
    :class:`WebhookResult` as JSON, or with the status of the
    :class:`WebhookRejected` raised."""
    if max_body < 1:
        raise InvalidInput("max_body", "must be at least 1 byte")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope.get("method", ""), scope.get("path", "")
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            await _json(send, 200, {"status": "ok"})
            return
        cm_route = _cm_route(path) if cm is not None else None
        if (path != STATUS_PATH and cm_route is None) or method != "POST":
            await _json(send, 404, {"error": "not found"})
            return
        headers = _headers(scope)
        if cm_route is not None and cm_allow:
            caller = _caller(scope, headers, trusted_proxies)
            if caller is None or not any(caller in net for net in cm_allow):
                log.warning("CM callback from a disallowed address refused")
                await _json(send, 403, {"error": "address not allowed"})
                return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or len(length) > 18):
            await _json(send, 400, {"error": "must be a number", "field": "content-length"})
            return
        if length is not None and int(length) > max_body:
            await _too_large(send, max_body)
            return
        try:
            body = await _read_body(receive, max_body)
        except _TooLarge:
            await _too_large(send, max_body)
            return
        if body is None:
            return  # client went away
        if cm_route is not None and cm is not None:
            route, token = cm_route

            def call(h: Mapping[str, str], b: bytes) -> WebhookResult:
                assert cm is not None
                return cm(route, token, h, b)

            status, payload = await _call(call, headers, body, never_5xx=True)
        else:
            status, payload = await _call(handle, headers, body)
        await _json(send, status, payload)

    return app


def _cm_route(path: str) -> tuple[str, str] | None:
    """``/webhooks/cm/{token}/{route}`` → (route, token)."""
    if not path.startswith(CM_PREFIX):
        return None
    parts = path[len(CM_PREFIX) :].split("/")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[1], parts[0]


def _caller(
    scope: Scope, headers: Mapping[str, str], trusted: Sequence[Network]
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The calling address: the peer, or, when the peer is a trusted proxy,
    the nearest address in ``X-Forwarded-For`` that is not one."""
    client = scope.get("client")
    try:
        peer = ipaddress.ip_address(client[0]) if client else None
    except ValueError:
        return None
    if peer is None or not any(peer in net for net in trusted):
        return peer
    hops = [h.strip() for h in headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return None
        if not any(address in net for net in trusted):
            return address
    return None


async def _call(
    handle: Handler, headers: Mapping[str, str], body: bytes, *, never_5xx: bool = False
) -> tuple[int, dict[str, Any]]:
    try:
        result = await asyncio.to_thread(handle, headers, body)
    except WebhookRejected as exc:
        return exc.status, {"error": exc.rule, "field": exc.field}
    except InvalidInput as exc:
        return 400, {"error": exc.rule, "field": exc.field}
    except TransientError as exc:
        log.warning("webhook handler busy (%s); sender will retry", type(exc).__name__)
        return 503, {"error": "temporarily unavailable"}
    except Exception as exc:
        # Only the type: messages of third-party errors may quote request data.
        log.error("webhook handler failed: %s", type(exc).__name__)
        if never_5xx:  # the handler keeps poison callbacks; this is a last resort
            return 200, {"error": "not applied"}
        return 500, {"error": "internal error"}
    return 200, asdict(result)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = bytes(raw_name).decode("latin-1").lower()
        value = bytes(raw_value).decode("latin-1")
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


async def _read_body(receive: Receive, max_body: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > max_body:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _too_large(send: Send, max_body: int) -> None:
    await _json(send, 413, {"error": f"must be at most {max_body} bytes", "field": "body"})


async def _json(send: Send, status: int, payload: Mapping[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 413:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def run(app: ASGIApp, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve ``app`` with uvicorn until interrupted."""
    import uvicorn

    # No access log: CM's callback URLs carry their token in the path.
    uvicorn.run(app, host=host, port=port, proxy_headers=False, access_log=False)


__all__ = ["ASGIApp", "CMHandler", "Handler", "WebhookResult", "create_app", "run"]
