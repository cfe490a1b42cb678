"""Small request/response helpers shared by the routes: JSON in and out, client facts, the
client's disconnect."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from gateway.errors import APIError, invalid

log = logging.getLogger("gateway")


class JSONResponse(Response):
    """A JSON response encoded with orjson (UUIDs and datetimes included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def aware(value: datetime | None) -> datetime | None:
    """UTC-aware timestamps (SQLite hands them back naive): every timestamp an answer
    carries has its offset, as RFC 3339 (and the OpenAPI document's date-time) demand."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


# Query parameters. An integer: ASCII digits only, and few of them (int() would take
# "1_0", "٣" or 4,000 digits).
INTEGER = re.compile(r"[+-]?[0-9]{1,12}")


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    """An integer query parameter from ``lo`` to ``hi``; ``default`` when absent."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not INTEGER.fullmatch(raw):
        raise invalid(name, f"'{name}' must be an integer between {lo} and {hi}")
    value = int(raw)
    if not lo <= value <= hi:
        raise invalid(name, f"'{name}' must be between {lo} and {hi}; got {value}")
    return value


def text_param(request: Request, name: str, max_chars: int) -> str | None:
    """A free-text filter: bounded, and without NUL (PostgreSQL refuses it in text)."""
    raw = request.query_params.get(name) or None
    if raw is None:
        return None
    if len(raw) > max_chars:
        raise invalid(name, f"'{name}' must be at most {max_chars} characters")
    if "\x00" in raw:
        raise invalid(name, f"'{name}' must not contain NUL characters")
    return raw


def choices_param(request: Request, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated query parameter whose every value is one of ``allowed``."""
    values = tuple(v for v in (request.query_params.get(name) or "").split(",") if v)
    for value in values:
        if value not in allowed:
            raise invalid(name, f"'{name}' must be one of {', '.join(allowed)} "
                          "(comma-separated for several)")
    return values


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it (including a
    value nested deeper than ``max_json_depth``, which the writer could not store)."""
    ctype = request.headers.get("content-type", "")
    if ctype and "json" not in ctype:
        raise APIError(415, "Send the body as JSON with 'Content-Type: application/json'.",
                       code="unsupported_media_type")
    body = await request.body()
    if not body:
        raise invalid("body", "The request body is empty; send a JSON object.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid("body", f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid("body", "The request body must be a JSON object.")
    limit = request.app.state.settings.max_json_depth
    if path := too_deep(data, limit):
        raise invalid(path, f"'{path}' is nested more than {limit} levels deep; "
                            "send a flatter value.", code="too_deep")
    return data


def too_deep(data: dict[str, Any], limit: int) -> str | None:
    """The field holding a value nested more than ``limit`` containers deep (the body itself
    is level 1), as ``messages[0].content[0].z``; ``None`` when nothing is that deep.

    Level by level and without recursion, so any depth orjson accepts (1024) is safe. Its
    cost follows the number of values, not bytes: a chat body of a few long messages is a
    handful of type checks (tests/gateway/test_json_depth.py measures it against parsing).
    """
    level: list[Any] = [data]
    for _ in range(limit):
        deeper = []
        for node in level:
            # orjson builds exact dicts and lists: ``type() is`` is enough, and cheapest.
            for value in (node.values() if type(node) is dict else node):
                if type(value) is dict or type(value) is list:
                    deeper.append(value)
        if not deeper:
            return None
        level = deeper
    return _offender(data, limit)


def _offender(data: dict[str, Any], limit: int) -> str:
    """The path to a value below level ``limit`` (only for bodies that have one)."""
    # Entries: (container, its level, link); a link is (parent link, key or index), turned
    # into a path only for the offender.
    stack: list[tuple[Any, int, Any]] = [(data, 1, None)]
    while stack:
        node, depth, link = stack.pop()
        for key, value in (node.items() if isinstance(node, dict) else enumerate(node)):
            if isinstance(value, dict | list):
                if depth == limit:
                    return _path((link, key))
                stack.append((value, depth + 1, (link, key)))
    raise AssertionError("too_deep found a value below the limit; _offender must too")


def _path(link: tuple[Any, Any]) -> str:
    """``a[0].b`` for the link chain; list indices after the last key are left out, so the
    path names the field a caller wrote rather than the 65th level inside it."""
    keys: list[Any] = []
    while link is not None:
        link, key = link
        keys.append(key)
    keys.reverse()
    while len(keys) > 1 and isinstance(keys[-1], int):
        keys.pop()
    out = ""
    for key in keys:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else key)
    return out


def client_ip(request: Request) -> str | None:
    if request.app.state.settings.trust_forwarded:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            return forwarded.split(",")[0].strip()[:64]
    return request.client.host if request.client else None


def request_id(request: Request) -> str:
    return request.scope.get("state", {}).get("request_id", "")


class CancelOnDisconnect:
    """Cancels the block it wraps when the client disconnects (``http.disconnect``).

    A client leaving is normal (the web UI's Stop): the cancellation this causes ends the
    block quietly with one INFO line, and ``disconnected`` tells the caller not to answer.
    Any other cancellation (the server shutting down) propagates as usual, and shielded
    cleanup inside the block (``ChatCall.close``) is not interrupted: anyio's cancel scope
    does both. Call ``stop`` before sending a response's last message: from then on the
    server reports ``http.disconnect`` for every request.

    With ``after`` the watching task starts only once the block has run that long: a block
    that is over sooner (most upstream calls) costs a timer instead of a task. A client
    gone meanwhile is still seen, when the watch starts.
    """

    __slots__ = ("_cancel", "_receive", "_scope", "_start", "_watcher")

    def __init__(self, scope: Scope, receive: Receive, *, after: float = 0.0) -> None:
        self._scope = scope
        self._receive = receive
        self._cancel = anyio.CancelScope()
        self._watcher: asyncio.Task[None] | asyncio.TimerHandle | None = None
        self._start = after

    @property
    def disconnected(self) -> bool:
        """The client left and the block was cancelled for it."""
        return self._cancel.cancelled_caught

    def __enter__(self) -> CancelOnDisconnect:
        self._cancel.__enter__()
        loop = asyncio.get_running_loop()
        if self._start > 0:
            self._watcher = loop.call_later(self._start, self._watch_now)
        else:
            self._watch_now()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        self.stop()
        swallowed = bool(self._cancel.__exit__(exc_type, exc, tb))
        if self._cancel.cancelled_caught:
            scope = self._scope
            log.info("client disconnected: %s %s %s", scope["method"], scope["path"],
                     scope.get("state", {}).get("request_id", ""))
        return swallowed

    def stop(self) -> None:
        """Stop watching: the response is complete, or about to be."""
        if self._watcher is not None:
            self._watcher.cancel()

    def _watch_now(self) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._cancel.cancel()
