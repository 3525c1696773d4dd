"""The HTTP front door for the aggregator's webhooks, probes and metrics, on Starlette.

The aggregator pushes status reports, replies and postbacks; something must
listen, and operations must be able to probe and scrape it.  This module is
that listener and nothing more: the routes, the checks made before a byte
of a body is read, a body cap enforced while reading, a bound on concurrent
requests, and the mapping of :class:`WebhookRejected` to HTTP statuses.
What a webhook *means* is the handler's business (the engine's
``handle_webhook`` and ``handle_cm_callback``, framework-free functions a
host may call from its own web framework); handlers are synchronous
(database work) and run in a worker thread.

Routes (relative to wherever the app is mounted: ``Mount("/tsuchi",
app=engine_app(engine))`` in a host's Starlette or FastAPI app works as is):

- ``POST /webhooks/status``: tsuchi's own signed format.  A request without
  a well-formed signature header is refused (401) before its body is read.
- ``POST /webhooks/cm/{token}/status|inbound|events``: CM.com's callbacks.
  The peer address (``cm_allow``; ``X-Forwarded-For`` only from
  ``trusted_proxies``) and the token are checked before the body is read:
  403 and 404.  A CM route never answers 5xx because of a body (the
  handler keeps a poison callback and answers done); 503 means the database
  is unavailable or the process is overloaded, and CM retries.
- ``GET /healthz``: the process is alive (never bounded, never the database).
- ``GET /readyz``: the engine can work (database reachable, schema current,
  keys loaded), else 503 with a short reason.
- ``GET /metrics``: Prometheus' text format.

Everything else is 404.  More than ``max_concurrent`` requests at once are
answered 503 with ``Retry-After``; a body that does not arrive within
``body_timeout`` seconds, 408.  Nothing from a request body or header is
ever logged, and uvicorn's access log stays off: CM's URLs carry the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import asdict
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tsuchi.application.views import WebhookResult
from tsuchi.errors import InvalidInput, KeyMaterialError, TransientError
from tsuchi.infrastructure.metrics import CONTENT_TYPE_LATEST, Metrics
from tsuchi.infrastructure.webhooks import MAX_BODY, WebhookRejected, check_auth_headers

if TYPE_CHECKING:
    from tsuchi.engine import Engine

log = logging.getLogger("tsuchi.serve")

Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATUS_PATH = "/webhooks/status"
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"
CM_PREFIX = "/webhooks/cm/"
CM_ROUTES = ("status", "inbound", "events")
READY_TIMEOUT_S = 5.0
RETRY_AFTER_S = 5
DEFAULT_MAX_CONCURRENT = 32
BODY_TIMEOUT_S = 30.0
MIN_WEBHOOK_SECRET = 32
"""Bytes: a shorter ``webhook_secret`` is refused when the app is built."""

Handler = Callable[[Mapping[str, str], bytes], WebhookResult]
CMHandler = Callable[[str, str, Mapping[str, str], bytes], WebhookResult]
"""``(route, token, headers, body)``: :meth:`tsuchi.engine.Engine.handle_cm_callback`."""
CMCheck = Callable[[str, str], None]
"""``(route, token)``: raises :class:`WebhookRejected` (404) for a wrong one."""
HeaderCheck = Callable[[Mapping[str, str]], None]
"""Raises :class:`WebhookRejected` (401) for headers that cannot authenticate."""
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
    cm_check: CMCheck | None = None,
    check_headers: HeaderCheck | None = None,
    ready: Callable[[], str | None] | None = None,
    metrics: Metrics | None = None,
    max_concurrent: int = DEFAULT_MAX_CONCURRENT,
    body_timeout: float = BODY_TIMEOUT_S,
    on_shutdown: Sequence[Callable[[], None]] = (),
) -> ASGIApp:
    """An ASGI app that passes webhook requests to ``handle(headers, body)``
    (header names lower-case) and CM.com callbacks to ``cm(route, token,
    headers, body)``, and answers with the :class:`WebhookResult` as JSON, or
    with the status of the :class:`WebhookRejected` raised.

    ``cm_check(route, token)`` and ``check_headers(headers)`` refuse a request
    before its body is read; ``ready()`` answers ``/readyz`` (None: ready, or
    a short reason); ``metrics`` is served at ``/metrics`` and counts webhook
    requests; a body not received within ``body_timeout`` seconds is
    answered 408, so a slow sender cannot hold a slot of ``max_concurrent``;
    ``on_shutdown`` runs when the server stops (lifespan)."""
    if max_body < 1:
        raise InvalidInput("max_body", "must be at least 1 byte")
    if max_concurrent < 1:
        raise InvalidInput("max_concurrent", "must be at least 1")
    if not body_timeout > 0:
        raise InvalidInput("body_timeout", "must be positive")

    def count(route: str, status: int) -> None:
        if metrics is not None:
            metrics.webhook(route, status)

    async def own_webhook(request: Request) -> Response:
        if request.method != "POST":
            return _not_found()
        headers = _headers(request)
        if check_headers is not None:
            try:
                check_headers(headers)
            except WebhookRejected as exc:
                count("status", exc.status)
                return _rejected(exc)
        status, payload = await _receive_and_call(request, headers, max_body, body_timeout, handle)
        count("status", status)
        return _json(status, payload)

    async def cm_webhook(request: Request) -> Response:
        route, token = request.path_params["route"], request.path_params["token"]
        if cm is None or request.method != "POST":
            return _not_found()
        label = f"cm_{route}" if route in CM_ROUTES else "cm_other"
        headers = _headers(request)
        if cm_allow:
            caller = _caller(request.scope, headers, trusted_proxies)
            if caller is None or not any(caller in net for net in cm_allow):
                log.warning("CM callback from a disallowed address refused")
                count(label, 403)
                return _json(403, {"error": "address not allowed"})
        if cm_check is not None:
            try:
                cm_check(route, token)
            except (WebhookRejected, KeyMaterialError):
                count(label, 404)
                return _not_found()

        def call(h: Mapping[str, str], b: bytes) -> WebhookResult:
            assert cm is not None
            return cm(route, token, h, b)

        status, payload = await _receive_and_call(
            request, headers, max_body, body_timeout, call, never_5xx=True
        )
        count(label, status)
        return _json(status, payload)

    async def healthz(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _not_found()
        return _json(200, {"status": "ok"})

    async def readyz(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _not_found()
        if ready is None:
            return _json(200, {"status": "ready"})
        try:
            reason = await asyncio.wait_for(asyncio.to_thread(ready), READY_TIMEOUT_S)
        except TimeoutError:
            reason = "database timed out"
        except Exception as exc:  # only the type: messages may name hosts
            reason = f"check failed ({type(exc).__name__})"
        if reason is not None:
            log.warning("not ready: %s", reason)
            return _json(503, {"status": "unavailable", "reason": reason}, retry_after=True)
        return _json(200, {"status": "ready"})

    async def metrics_page(request: Request) -> Response:
        if metrics is None or request.method not in ("GET", "HEAD"):
            return _not_found()
        body = await asyncio.to_thread(metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _not_found()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for fn in on_shutdown:
            fn()

    any_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    routes = [
        Route(HEALTH_PATH, healthz, methods=any_method),
        Route(READY_PATH, readyz, methods=any_method),
        Route(METRICS_PATH, metrics_page, methods=any_method),
        Route(STATUS_PATH, own_webhook, methods=any_method),
        Route(CM_PREFIX + "{token}/{route}", cm_webhook, methods=any_method),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={404: not_found, 405: not_found},
        lifespan=lifespan,
    )
    return _Bounded(app, max_concurrent, count)


class _Bounded:
    """At most ``limit`` requests in flight (``/healthz`` aside); the next
    is answered 503 with ``Retry-After`` without reading its body."""

    def __init__(self, app: ASGIApp, limit: int, count: Callable[[str, int], None]) -> None:
        self.app = app
        self.limit = limit
        self.count = count
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _route_path(scope) == HEALTH_PATH:
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            label = _route_label(_route_path(scope))
            if label is not None:
                self.count(label, 503)
            log.warning("overloaded: %d requests in flight; answered 503", self.active)
            await _json(503, {"error": "overloaded"}, retry_after=True)(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def _route_path(scope: Scope) -> str:
    """The path below the mount point (Starlette's ``Mount`` sets ``root_path``)."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


def _route_label(path: str) -> str | None:
    """A webhook's route name for metrics (never the path: it holds the token)."""
    if path == STATUS_PATH:
        return "status"
    if path.startswith(CM_PREFIX):
        route = path.rsplit("/", 1)[-1]
        return f"cm_{route}" if route in CM_ROUTES else "cm_other"
    return None


async def _receive_and_call(
    request: Request,
    headers: Mapping[str, str],
    max_body: int,
    timeout: float,
    handle: Handler,
    *,
    never_5xx: bool = False,
) -> tuple[int, dict[str, Any]]:
    length = headers.get("content-length")
    if length is not None and (not length.isdigit() or len(length) > 18):
        return 400, {"error": "must be a number", "field": "content-length"}
    if length is not None and int(length) > max_body:
        return 413, _too_large(max_body)
    try:
        body = await asyncio.wait_for(_read_body(request, max_body), timeout)
    except TimeoutError:
        return 408, {"error": f"must arrive within {timeout:g} s", "field": "body"}
    except _TooLarge:
        return 413, _too_large(max_body)
    except ClientDisconnect:
        return 400, {"error": "client went away"}
    return await _call(handle, headers, body, never_5xx=never_5xx)


async def _read_body(request: Request, max_body: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


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


def _headers(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in request.scope.get("headers", []):
        name = bytes(raw_name).decode("latin-1").lower()
        value = bytes(raw_value).decode("latin-1")
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


def _too_large(max_body: int) -> dict[str, Any]:
    return {"error": f"must be at most {max_body} bytes", "field": "body"}


def _not_found() -> Response:
    return _json(404, {"error": "not found"})


def _rejected(exc: WebhookRejected) -> Response:
    return _json(exc.status, {"error": exc.rule, "field": exc.field})


def _json(status: int, payload: Mapping[str, Any], *, retry_after: bool = False) -> Response:
    headers: dict[str, str] = {}
    if status in (408, 413):
        headers["connection"] = "close"
    if retry_after:
        headers["retry-after"] = str(RETRY_AFTER_S)
    return JSONResponse(dict(payload), status_code=status, headers=headers)


# -- the engine's app, the tsuchi serve process ---------------------------------------------------
def engine_app(engine: Engine, *, close_engine: bool = False) -> ASGIApp:
    """The app for ``engine``, configured from its settings: tsuchi's own
    webhooks when ``webhook_secret`` is set, CM.com's callbacks when
    ``cm_webhook_token`` is, probes and the engine's metrics.
    ``close_engine``: close it when the server stops.  A webhook secret under
    32 bytes is refused (:class:`InvalidInput`)."""
    s = engine.settings
    if s.webhook_secret is not None and len(s.webhook_secret.encode()) < MIN_WEBHOOK_SECRET:
        raise InvalidInput("webhook_secret", f"must be at least {MIN_WEBHOOK_SECRET} bytes")

    def header_check(headers: Mapping[str, str]) -> None:
        check_auth_headers(headers, allow_token=s.webhook_allow_token)

    return create_app(
        engine.handle_webhook if s.webhook_secret else _no_own_webhooks,
        s.webhook_max_body,
        cm=engine.handle_cm_callback if s.cm_webhook_token else None,
        cm_allow=s.cm_webhook_allow,
        trusted_proxies=s.cm_trusted_proxies,
        cm_check=engine.services.callbacks.check_token,
        check_headers=header_check if s.webhook_secret else None,
        ready=engine.readiness,
        metrics=engine.metrics,
        max_concurrent=s.max_concurrent_requests,
        on_shutdown=[engine.close] if close_engine else [],
    )


def _no_own_webhooks(headers: Mapping[str, str], body: bytes) -> WebhookResult:
    """/webhooks/status without TSUCHI_WEBHOOK_SECRET: there is no such route."""
    raise WebhookRejected(404, "path", "no such route (TSUCHI_WEBHOOK_SECRET is not set)")


def app_from_environment() -> ASGIApp:
    """The app of one ``tsuchi serve --workers N`` process: an engine from the
    ``TSUCHI_*`` environment, closed when the process stops (a uvicorn factory)."""
    from tsuchi.engine import Engine
    from tsuchi.settings import Settings

    logging.getLogger("tsuchi").setLevel(logging.INFO)
    return engine_app(Engine(Settings()), close_engine=True)


def run(
    app: ASGIApp | str,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    workers: int = 1,
    graceful_seconds: int = 30,
) -> None:
    """Serve ``app`` with uvicorn until SIGTERM or SIGINT, then finish the
    requests in flight (at most ``graceful_seconds``) and return.  ``app``
    is an import string of a factory when ``workers`` > 1."""
    import signal

    import uvicorn

    # uvicorn re-raises the stop signal once drained; answered here, so the
    # process ends with 0 after a clean stop instead of dying by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: log.info("signal %d: stopped", signum))
    log.info("serving on http://%s:%d (pid %d, %d workers)", host, port, os.getpid(), workers)
    # No access log: CM's callback URLs carry their token in the path.
    uvicorn.run(
        app,
        host=host,
        port=port,
        proxy_headers=False,
        access_log=False,
        workers=workers,
        factory=isinstance(app, str),
        timeout_graceful_shutdown=graceful_seconds,
        lifespan="on",
    )


__all__ = [
    "ASGIApp",
    "CMHandler",
    "Handler",
    "WebhookResult",
    "app_from_environment",
    "create_app",
    "engine_app",
    "run",
]
