"""The request line: one log record per HTTP request, written when its response is over.

It names the request (id, method, path without the query, status, duration, client
address) and, for a chat call, the user, the model and the tokens. It never holds a
header, a body or a query string: keys, passwords, JWTs and prompts stay out of the log.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.logs import ACCESS_LOGGER
from storage.records import CallRecord

log = logging.getLogger(ACCESS_LOGGER)

# The fields of the request being served. A context variable rather than the scope: the
# call that fills them (gateway/chat/call.py) does not hold the scope, and tasks started
# while serving the request (a stream's) see the same dictionary. Jobs run in tasks of the
# lifespan, where there is none: their calls belong to no request line.
_CURRENT: ContextVar[dict[str, Any] | None] = ContextVar("gateway_request_log", default=None)


def note_call(record: CallRecord) -> None:
    """Add a finished chat call's user, model and token counts to its request's line."""
    fields = _CURRENT.get()
    if fields is not None:
        fields.update(user_id=str(record.user_id), model=record.model,
                      prompt_tokens=record.prompt_tokens,
                      completion_tokens=record.completion_tokens,
                      total_tokens=record.total_tokens, call_status=record.status)


def logs_requests() -> bool:
    """Whether request lines are wanted: the ``gateway.access`` logger's own level says so
    (``gateway serve --access-log`` sets it). A root logger at INFO, configured for other
    lines, does not turn them on. When off, no layer is installed and requests pay nothing."""
    return log.level != logging.NOTSET and log.isEnabledFor(logging.INFO)


class RequestLog:
    """Pure-ASGI layer writing the request line of each HTTP request it serves."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0  # no answer sent: the client left first
        fields: dict[str, Any] = {}
        token = _CURRENT.set(fields)
        started = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            status = status or 500  # what the server answers for an error that escaped
            raise
        finally:
            _CURRENT.reset(token)
            write(scope, status, time.perf_counter() - started, fields)


def write(scope: Scope, status: int, seconds: float, fields: dict[str, Any]) -> None:
    """Log one request line: readable as text, every value also a field of its own."""
    client = scope.get("client")
    line = {"request_id": scope.get("state", {}).get("request_id"),
            "method": scope["method"], "path": scope["path"], "status": status,
            "duration_ms": round(seconds * 1000, 1),
            "client": client[0] if client else None, **fields}
    text = " ".join(f"{k}={v}" for k, v in line.items()
                    if v is not None and k not in ("method", "path", "status"))
    log.info("%s %s %s %s", line["method"], line["path"], status, text, extra=line)
