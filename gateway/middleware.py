"""Pure ASGI middleware: response headers (request id, security) and the body-size limit."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import APIError

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


class ResponseHeadersMiddleware:
    """Headers every response carries: its request id (a sane incoming ``x-request-id`` is
    honoured) and what helmet sets (no sniffing, no framing, no referrer, a CSP, HSTS
    under TLS). One send wrapper for both: it runs for every streamed event."""

    CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
           "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; "
           "object-src 'none'")

    def __init__(self, app: ASGIApp, *, trust_forwarded: bool = False) -> None:
        self.app = app
        self.trust_forwarded = trust_forwarded
        self._common = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"content-security-policy", self.CSP.encode()),
        ]
        self._tls = [*self._common,
                     (b"strict-transport-security", b"max-age=31536000; includeSubDomains")]

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
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _SANE_REQUEST_ID.match(candidate):
                    rid = candidate
                break
        if rid is None:
            rid = "req_" + uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        extra = [(b"x-request-id", rid.encode()),
                 *(self._tls if self._is_tls(scope) else self._common)]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodySizeLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413, by Content-Length or while streaming in."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> APIError:
        return APIError(413, f"Request body is larger than {self.max_bytes} bytes.",
                        code="request_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_bytes:
                    await self._too_large().response()(scope, receive, send)
                    return
                break
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            # Routes read the whole body before they answer, so nothing was sent yet.
            await self._too_large().response()(scope, receive, send)


class _BodyTooLarge(Exception):
    pass
