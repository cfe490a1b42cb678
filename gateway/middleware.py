"""The ASGI layers around the Starlette app: what every response carries, the body limit,
and the dispatch of the hot route.

Pure-ASGI wrappers instead of a middleware stack: each layer of coroutines is walked
again every time a request resumes (each upstream read, each streamed event), and on the
one route that carries the traffic, ``POST /v1/chat/completions``, Starlette's router and
exception wrappers cost more than the route's own work (see bench/README.md). That route
is therefore called directly (``FastRoutes``) and answers its own errors; every other
request goes through the Starlette app.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from itertools import count

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import APIError

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; "
       "object-src 'none'")
_COMMON = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"content-security-policy", CSP.encode()),
)
NO_STORE_PREFIX = "/auth/"
_TLS = (*_COMMON, (b"strict-transport-security", b"max-age=31536000; includeSubDomains"))


class RequestIds:
    """``req_`` + a random per-process prefix + a counter: unique across processes and
    restarts without a syscall per request (``uuid4`` reads the OS random source)."""

    def __init__(self) -> None:
        self._prefix = "req_" + secrets.token_hex(8)
        self._next = count(1).__next__

    def __call__(self) -> str:
        return f"{self._prefix}{self._next():012x}"


def body_too_large(max_bytes: int) -> APIError:
    return APIError(413, f"Request body is larger than {max_bytes} bytes.",
                    code="request_too_large")


class FastRoutes:
    """Sends the ``(method, path)`` pairs of ``fast`` straight to their endpoint (which
    answers its own errors), everything else to the Starlette ``app``."""

    def __init__(self, app: ASGIApp, fast: Mapping[tuple[str, str], ASGIApp]) -> None:
        self.app = app
        self.fast = dict(fast)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.fast.get((scope["method"], scope["path"]))
            if endpoint is not None:
                scope["app"] = self.app  # what Request.app reads: the state lives there
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Envelope:
    """Request id (a sane incoming ``x-request-id`` is honoured), the headers helmet sets
    (no sniffing, no framing, no referrer, a CSP, HSTS under TLS; no-store under /auth/),
    and the body-size limit (413 by Content-Length or while the body streams in)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int,
                 trust_forwarded: bool = False) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.trust_forwarded = trust_forwarded
        self.request_ids = RequestIds()

    def _is_tls(self, scope: Scope) -> bool:
        if scope.get("scheme") == "https":
            return True
        if self.trust_forwarded:
            for name, value in scope["headers"]:
                if name == b"x-forwarded-proto":
                    return value.split(b",")[0].strip() == b"https"
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        declared = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _SANE_REQUEST_ID.match(candidate):
                    rid = candidate
            elif name == b"content-length":
                declared = value
        rid = rid or self.request_ids()
        scope.setdefault("state", {})["request_id"] = rid
        extra = ((b"x-request-id", rid.encode()), *(_TLS if self._is_tls(scope) else _COMMON))
        if scope["path"].startswith(NO_STORE_PREFIX):
            # Tokens, keys and their errors (413s included) must never sit in a cache.
            extra = (*extra, (b"cache-control", b"no-store"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        limit = self.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await body_too_large(limit).response()(scope, receive, send_with_headers)
            return
        received = 0

        async def limited_receive() -> Message:
            # Routes read the whole body before they answer: the 413 is an ordinary error.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise body_too_large(limit)
            return message

        await self.app(scope, limited_receive, send_with_headers)
