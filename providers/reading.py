"""Bounded reads of upstream bodies: a time budget per call, a size cap per body.

An upstream can keep a call alive forever (a trickle that never ends) or send more than
memory holds (a line without a newline, an endless body). Every byte a provider reads
goes through here, so neither can happen: the call ends with a typed error instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import TypeVar

import httpx

from providers.errors import UpstreamResponseTooLarge, UpstreamTimeout

T = TypeVar("T")

# An error body is read for its message only; past this it is cut, not refused, so an
# upstream's 429 or 503 keeps its status even with a large HTML page attached.
MAX_ERROR_BODY_BYTES = 64 * 1024


class Deadline:
    """A whole call's time budget: one timer per call, which interrupts the read waiting
    when it fires.

    ``asyncio.timeout`` around every read would schedule and cancel a timer per chunk,
    and a stream reads hundreds of chunks (bench/README.md counts µs per event).

    ``read_timeout`` is the transport's bound on one read: a read that starts earlier
    than that before the end cannot outlive the budget, so ``read`` hands it over
    unwrapped (about 1.5 µs less per chunk); only the reads near the end need the
    timer's interrupt.
    """

    __slots__ = ("_handle", "_loop", "_message", "_unguarded_until", "_waiting", "expired")

    def __init__(self, seconds: float, upstream: str, read_timeout: float, *,
                 message: str | None = None) -> None:
        self.expired = False
        self._waiting: asyncio.Task[object] | None = None
        self._message = message or (f"upstream {upstream!r} did not finish within its "
                                    f"total_timeout ({seconds:g} s)")
        self._loop = asyncio.get_running_loop()
        self._unguarded_until = self._loop.time() + seconds - read_timeout
        self._handle = self._loop.call_later(seconds, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self._waiting is not None:
            self._waiting.cancel()

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable``; raise ``UpstreamTimeout`` once the budget is spent."""
        if self.expired:
            raise UpstreamTimeout(self._message)
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self._waiting = task
        try:
            return await awaitable
        except asyncio.CancelledError:
            # Ours only if nobody else cancelled too (the way asyncio.timeout decides).
            if self.expired and task.uncancel() <= cancelling:
                raise UpstreamTimeout(self._message) from None
            raise
        finally:
            self._waiting = None

    def read(self, awaitable: Awaitable[T]) -> Awaitable[T]:
        """One read bounded by the transport's read timeout, within the deadline."""
        if self._loop.time() < self._unguarded_until:
            return awaitable
        return self.wait(awaitable)

    def cancel(self) -> None:
        """The call is over: drop the timer."""
        self._handle.cancel()


def body_bytes(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as it arrives. We ask for ``identity`` (see ``upstream_headers``), so it is
    read raw, without httpx's per-chunk decoder and re-chunker; an upstream that encodes
    anyway goes through httpx's decoders."""
    if "content-encoding" in response.headers:
        return response.aiter_bytes()
    return aiter(response.stream)  # type: ignore[arg-type]


class TimedChunks:
    """``body_bytes`` with every read inside the call's deadline.

    An iterator class rather than an async generator: one frame less per chunk, and
    this runs once per chunk of every stream."""

    __slots__ = ("_chunks", "_deadline")

    def __init__(self, response: httpx.Response, deadline: Deadline) -> None:
        self._chunks = body_bytes(response)
        self._deadline = deadline

    def __aiter__(self) -> TimedChunks:
        return self

    def __anext__(self) -> Awaitable[bytes]:
        return self._deadline.read(anext(self._chunks))


def content_length(headers: Mapping[str, str]) -> int | None:
    """The declared body size, or None when absent or not a plain non-negative integer."""
    value = headers.get("content-length", "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


async def read_body(response: httpx.Response, deadline: Deadline, limit: int,
                    upstream: str) -> bytes:
    """The whole body, refused with ``UpstreamResponseTooLarge`` once it passes ``limit``
    (at once when the upstream declares a larger ``content-length``)."""
    declared = content_length(response.headers)
    if declared is not None and declared > limit:
        raise _too_large(upstream, limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in TimedChunks(response, deadline):
        size += len(chunk)
        if size > limit:
            raise _too_large(upstream, limit)
        parts.append(chunk)
    return b"".join(parts)


async def read_error_body(response: httpx.Response, deadline: Deadline, limit: int) -> bytes:
    """The start of an error body: at most ``limit`` bytes (and never more than
    ``MAX_ERROR_BODY_BYTES``); the rest is left unread."""
    limit = min(limit, MAX_ERROR_BODY_BYTES)
    parts: list[bytes] = []
    size = 0
    async for chunk in TimedChunks(response, deadline):
        parts.append(chunk[:limit - size])
        size += len(parts[-1])
        if size >= limit:
            break
    return b"".join(parts)


def _too_large(upstream: str, limit: int) -> UpstreamResponseTooLarge:
    return UpstreamResponseTooLarge(
        f"upstream {upstream!r} sent a body over {limit} bytes; raise its max_response_bytes "
        "if such answers are expected")
