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


class SSEDecoder:
    """Feed it raw bytes as they arrive; it returns the events each feed completed."""

    __slots__ = ("_buffer", "_data", "_event", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._buffer = b""
        self._skip_lf = False  # the last read ended in "\r"; a leading "\n" belongs to it
        self._started = False
        self._event = ""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk`` and return the events it completed (often none or several)."""
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if self._buffer:
            chunk = self._buffer + chunk
            self._buffer = b""
        if not chunk:
            return []
        lines = chunk.splitlines(keepends=True)
        last = lines[-1]
        if last[-1:] not in (b"\n", b"\r"):
            self._buffer = lines.pop()  # an incomplete line waits for the next read
        elif last[-2:] != b"\r\n" and last[-1:] == b"\r":
            self._skip_lf = True
        events: list[SSEEvent] = []
        for line in lines:
            self._process_line(line.rstrip(b"\r\n"), events)
        return events

    def flush(self) -> list[SSEEvent]:
        """End of stream: dispatch what is pending.

        The spec discards an unterminated final event; we keep it because some upstreams
        close right after ``data: [DONE]`` without the blank line.
        """
        events: list[SSEEvent] = []
        if self._buffer:
            self._process_line(self._buffer.rstrip(b"\r\n"), events)
            self._buffer = b""
        self._process_line(b"", events)
        return events

    def _process_line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not self._started:
            self._started = True
            if line.startswith(_BOM):
                line = line[len(_BOM):]
        if not line:
            if self._data:
                data = b"\n".join(self._data).decode("utf-8", "replace")
                events.append(SSEEvent(self._event or "message", data))
                self._data = []
            self._event = ""
            return
        if line[0] == 0x3A:  # ":" starts a comment (keep-alives)
            return
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        # "id" and "retry" only matter for browser reconnection; upstream calls never resume.


async def aiter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[SSEEvent]:
    """Parse an async byte stream (e.g. ``response.aiter_bytes()``) into SSE events."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.flush():
        yield event
