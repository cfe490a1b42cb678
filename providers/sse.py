"""Incremental Server-Sent Events parser for upstream streams (the hot path).

Lines are split on bytes, never on decoded text: CR and LF are ASCII and can never occur
inside a multi-byte UTF-8 sequence, so a complete line is always complete UTF-8 no matter
how the network split it. Splitting uses ``bytes.splitlines`` (C speed), which recognises
exactly SSE's three line endings: ``\\r\\n``, ``\\n`` and ``\\r``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import NamedTuple

_BOM = b"\xef\xbb\xbf"


class SSEEvent(NamedTuple):
    """One dispatched event: ``event`` is ``"message"`` unless the stream named it."""

    event: str
    data: str


class EventTooLarge(ValueError):
    """A line, or the data lines of one event together, went over ``max_event_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"an SSE line or event over {limit} bytes")
        self.limit = limit


class SSEDecoder:
    """Feed it raw bytes as they arrive; it returns the events each feed completed.

    Memory is bounded by ``max_event_bytes``: an upstream that never ends a line, or
    sends data lines without ever ending the event, raises ``EventTooLarge`` instead of
    growing a buffer until the process runs out of memory.
    """

    __slots__ = ("_data", "_data_size", "_event", "_limit", "_over", "_partial",
                 "_partial_size", "_skip_lf", "_started")

    def __init__(self, max_event_bytes: int = 1 << 20) -> None:
        self._limit = max_event_bytes
        # The pieces of an unfinished line, joined only once its end arrives: joining on
        # every read made a long line cost quadratic time while it trickled in.
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._skip_lf = False  # the last read ended in "\r"; a leading "\n" belongs to it
        self._started = False
        self._event = ""
        self._data: list[bytes] = []
        self._data_size = 0
        self._over = False  # over the cap, raised once the events before it went out

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk`` and return the events it completed (often none or several).

        Raises ``EventTooLarge`` when a line or an event passes the cap: at once if this
        read completed no event, otherwise on the next call (those events go out first).
        """
        if self._over:
            raise EventTooLarge(self._limit)
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if not chunk:
            return []
        if self._partial:
            if b"\n" not in chunk and b"\r" not in chunk:
                self._hold(chunk)
                if self._partial_size > self._limit:
                    raise EventTooLarge(self._limit)
                return []
            self._partial.append(chunk)
            chunk = b"".join(self._partial)
            self._partial = []
            self._partial_size = 0
        lines = chunk.splitlines(keepends=True)
        last = lines[-1]
        if last[-1:] not in (b"\n", b"\r"):
            self._hold(lines.pop())  # an incomplete line waits for the next read
        elif last[-2:] != b"\r\n" and last[-1:] == b"\r":
            self._skip_lf = True
        events: list[SSEEvent] = []
        try:
            for line in lines:
                self._process_line(line.rstrip(b"\r\n"), events)
            if self._partial_size > self._limit:
                raise EventTooLarge(self._limit)
        except EventTooLarge:
            if not events:
                raise
            self._over = True
        return events

    def _hold(self, piece: bytes) -> None:
        self._partial_size += len(piece)
        self._partial.append(piece)

    def flush(self) -> list[SSEEvent]:
        """End of stream: dispatch what is pending.

        The spec discards an unterminated final event; we keep it because some upstreams
        close right after ``data: [DONE]`` without the blank line.
        """
        if self._over:
            raise EventTooLarge(self._limit)
        events: list[SSEEvent] = []
        if self._partial:
            self._process_line(b"".join(self._partial).rstrip(b"\r\n"), events)
            self._partial = []
            self._partial_size = 0
        self._process_line(b"", events)
        return events

    def _process_line(self, line: bytes, events: list[SSEEvent]) -> None:
        if len(line) > self._limit:  # a whole line in one read can still be too long
            raise EventTooLarge(self._limit)
        if not self._started:
            self._started = True
            if line.startswith(_BOM):
                line = line[len(_BOM):]
        if not line:
            if self._data:
                data = b"\n".join(self._data).decode("utf-8", "replace")
                events.append(SSEEvent(self._event or "message", data))
                self._data = []
                self._data_size = 0
            self._event = ""
            return
        if line[0] == 0x3A:  # ":" starts a comment (keep-alives)
            return
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            # Many short data lines add up to one event: the cap is on the data as
            # dispatched (lines joined by "\n").
            self._data_size += len(value) + (1 if self._data else 0)
            if self._data_size > self._limit:
                raise EventTooLarge(self._limit)
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        # "id" and "retry" only matter for browser reconnection; upstream calls never resume.


async def aiter_sse(chunks: AsyncIterable[bytes],
                    max_event_bytes: int = 1 << 20) -> AsyncIterator[SSEEvent]:
    """Parse an async byte stream (e.g. ``response.aiter_bytes()``) into SSE events;
    raises ``EventTooLarge`` for a line or an event over ``max_event_bytes``."""
    decoder = SSEDecoder(max_event_bytes)
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.flush():
        yield event


def sse_bytes(event: SSEEvent) -> bytes:
    """One event as it is written on the wire: its ``event:`` line (when named), then its
    data lines, then the blank line that ends it."""
    head = f"event: {event.event}\n" if event.event else ""
    data = "".join(f"data: {line}\n" for line in event.data.split("\n"))
    return (head + data + "\n").encode()
