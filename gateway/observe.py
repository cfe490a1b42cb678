"""What each HTTP request is observed by: its metrics and its request line, in one layer.

``RequestObserver`` is the outermost layer. For every request it sets one ``Observation``
that the call path fills in (``note_model`` when a route resolves a model, ``note_call``
when a call finishes), watches the status and times the answer; when the answer is over it
counts and times the request by its route template (gateway/metrics.py) and, when request
lines are on (``gateway serve --access-log``), writes one line naming the request.

The line holds the request id, method, path without the query, status, duration, client
address and, for a call, the user, the model and the tokens. Never a header, a body or a
query string: keys, passwords, JWTs and prompts stay out of the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any

from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.logs import ACCESS_LOGGER
from storage.records import CallRecord

log = logging.getLogger(ACCESS_LOGGER)
CLIENT_LEFT = 499


class Observation:
    """What the call path learns about the request being served."""

    __slots__ = ("call", "model")

    def __init__(self) -> None:
        self.model = ""  # the resolved public model: the metrics' ``model`` label
        self.call: CallRecord | None = None  # the finished call, for the request line


# The request being served. A context variable rather than the scope: the call path does
# not hold the scope, and tasks started while serving the request (a stream's) see the
# same object. Jobs run in tasks of the lifespan, where there is none (None): their calls
# belong to no request.
_CURRENT: ContextVar[Observation | None] = ContextVar("gateway_observation", default=None)


def note_model(model: str) -> None:
    """Label the request being served with its (resolved, public) model."""
    observation = _CURRENT.get()
    if observation is not None:
        observation.model = model


def note_call(record: CallRecord) -> None:
    """Add a finished call (its user, model and tokens) to its request's line."""
    observation = _CURRENT.get()
    if observation is not None:
        observation.call = record


def logs_requests() -> bool:
    """Whether request lines are wanted: the ``gateway.access`` logger's own level says so
    (``gateway serve --access-log`` sets it). A root logger at INFO, configured for other
    lines, does not turn them on."""
    return log.level != logging.NOTSET and log.isEnabledFor(logging.INFO)


class RequestObserver:
    """Pure-ASGI layer: each request counted and timed by its route (requests no API route
    takes, such as the web UI's files, are not counted), and its request line written."""

    def __init__(self, app: ASGIApp, *, state: Any, fast: Iterable[tuple[str, str]],
                 log_lines: bool | None = None) -> None:
        """``state``: the Starlette app's state, where the lifespan puts ``metrics``;
        ``fast``: the ``(method, path)`` pairs dispatched ahead of the router;
        ``log_lines``: write request lines (default: as the access logger is configured)."""
        self.app = app
        self.state = state
        self.fast: Mapping[tuple[str, str], str] = {key: key[1] for key in fast}
        self.log_lines = logs_requests() if log_lines is None else log_lines

    def _template(self, scope: Scope) -> str | None:
        route = scope.get("route")  # the Starlette router puts the matched route here
        if isinstance(route, Route):
            return route.path
        return self.fast.get((scope["method"], scope["path"]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        observation = Observation()
        token = _CURRENT.set(observation)
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        except Exception:
            status = status or 500  # what uvicorn answers for an error that escaped
            raise
        finally:
            _CURRENT.reset(token)
            # No answer at all: the client left first (499, nginx's "client closed request").
            status = status or CLIENT_LEFT
            seconds = time.perf_counter() - started
            route = self._template(scope)
            metrics = getattr(self.state, "metrics", None)
            if route is not None and metrics is not None:
                metrics.request(route, observation.model, status, seconds)
            if self.log_lines:
                write_line(scope, status, seconds, observation)


def write_line(scope: Scope, status: int, seconds: float, observation: Observation) -> None:
    """Log one request line: readable as text, every value also a field of its own."""
    client = scope.get("client")
    line: dict[str, Any] = {
        "request_id": scope.get("state", {}).get("request_id"),
        "method": scope["method"], "path": scope["path"], "status": status,
        "duration_ms": round(seconds * 1000, 1), "client": client[0] if client else None}
    call = observation.call
    if call is not None:
        line.update(user_id=str(call.user_id), model=call.model,
                    prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
                    total_tokens=call.total_tokens, call_status=call.status)
    text = " ".join(f"{k}={v}" for k, v in line.items()
                    if v is not None and k not in ("method", "path", "status"))
    log.info("%s %s %s %s", line["method"], line["path"], status, text, extra=line)
