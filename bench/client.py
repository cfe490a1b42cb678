"""A minimal raw asyncio HTTP/1.1 keep-alive client that times every SSE event it reads.

It decodes chunked and Content-Length bodies incrementally and never parses JSON, so on
uvloop it costs a few microseconds per read: cheap enough to share a core with the mock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

now = time.perf_counter


def build_request(path: str, body: Mapping[str, Any], *, port: int,
                  headers: Mapping[str, str] | None = None) -> bytes:
    """The bytes of one ``POST path`` with a JSON body."""
    payload = orjson.dumps(body)
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
             "Content-Type: application/json", f"Content-Length: {len(payload)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def build_get(path: str, *, port: int) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


@dataclass(slots=True)
class Result:
    """One exchange. Times are ``perf_counter`` seconds; ``first`` is the first SSE event."""

    start: float
    status: int = 0
    first: float | None = None
    end: float = 0.0
    events: int = 0
    done: bool = False  # saw ``[DONE]`` (OpenAI) or ``message_stop`` (Anthropic)
    gaps: list[float] = field(default_factory=list)
    body: bytes | None = None
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.start


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._fut: asyncio.Future[Result] | None = None
        self._res: Result | None = None
        self._keep_body = False
        self._track_gaps = False
        self._reset()

    def _reset(self) -> None:
        self._buf = b""
        self._head = True
        self._chunked = False
        self._remaining = 0  # Content-Length left, or bytes left of the current chunk
        self._chunk_crlf = 0  # CRLF bytes still to skip after a chunk's data
        self._last_lf = False
        self._last_event = 0.0
        self._parts: list[bytes] = []

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(cls, host, port)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)
        self._finish(error=f"connection lost: {exc or 'closed by peer'}")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    @property
    def usable(self) -> bool:
        return self.transport is not None and self._fut is None

    def send(self, raw: bytes, *, start: float | None = None, keep_body: bool = False,
             track_gaps: bool = False) -> asyncio.Future[Result]:
        """Write one request; the future resolves when the whole response has arrived."""
        assert self.transport is not None and self._fut is None, "connection busy or closed"
        self._reset()
        self._keep_body = keep_body
        self._track_gaps = track_gaps
        self._res = Result(start=now() if start is None else start)
        self._fut = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return self._fut

    def _finish(self, error: str | None = None) -> None:
        fut, res = self._fut, self._res
        self._fut = self._res = None
        if fut is None or res is None or fut.done():
            return
        res.end = now()
        res.error = error
        if self._keep_body:
            res.body = b"".join(self._parts)
        fut.set_result(res)

    def data_received(self, data: bytes) -> None:
        if self._res is None:
            return  # bytes after an aborted exchange
        if self._head:
            data = self._buf + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._buf = data
                return
            self._parse_head(data[:end])
            data = data[end + 4:]
            self._head = False
        if self._chunked:
            self._feed_chunked(data)
        else:
            self._body(data[:self._remaining])
            self._remaining -= min(len(data), self._remaining)
            if self._remaining == 0:
                self._finish()

    def _parse_head(self, head: bytes) -> None:
        assert self._res is not None
        lines = head.split(b"\r\n")
        self._res.status = int(lines[0].split(b" ", 2)[1])
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                self._remaining = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True

    def _feed_chunked(self, data: bytes) -> None:
        while data:
            if self._chunk_crlf:
                skip = min(self._chunk_crlf, len(data))
                self._chunk_crlf -= skip
                data = data[skip:]
                continue
            if self._remaining:
                take = data[:self._remaining]
                self._body(take)
                self._remaining -= len(take)
                data = data[len(take):]
                if not self._remaining:
                    self._chunk_crlf = 2
                continue
            data = self._buf + data
            self._buf = b""
            eol = data.find(b"\r\n")
            if eol < 0:
                self._buf = data
                return
            size = int(data[:eol].split(b";", 1)[0], 16)
            data = data[eol + 2:]
            if size == 0:
                self._finish()  # trailers are never sent by the servers measured here
                return
            self._remaining = size

    def _body(self, piece: bytes) -> None:
        if not piece:
            return
        res = self._res
        assert res is not None
        if self._keep_body:
            self._parts.append(piece)
        events = piece.count(b"\n\n") + (self._last_lf and piece[:1] == b"\n")
        self._last_lf = piece[-1:] == b"\n"
        if b"[DONE]" in piece or b"message_stop" in piece:
            res.done = True
        if not events:
            return
        t = now()
        res.events += events
        if res.first is None:
            res.first = t
        elif self._track_gaps:
            res.gaps.append(t - self._last_event)
        if self._track_gaps and events > 1:
            res.gaps.extend([0.0] * (events - 1))  # arrived together with the one before
        self._last_event = t


async def fetch(host: str, port: int, raw: bytes, *, wait_s: float = 30.0) -> Result:
    """One request on a fresh connection, body kept (setup and checks, not load)."""
    conn = await HttpConnection.open(host, port)
    try:
        return await asyncio.wait_for(conn.send(raw, keep_body=True), wait_s)
    finally:
        conn.close()
