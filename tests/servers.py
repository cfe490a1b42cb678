"""Real servers for tests: the gateway under uvicorn in a thread, and a scripted fake upstream.

The fake upstream is a plain asyncio HTTP/1.1 server that replays byte-exact recordings,
split into the chunks the test asks for, so the gateway's real network path is exercised.
One fake can stand for several upstream models at once (``script_model``), each failing or
answering in its own way, which is what retries, fallbacks and load balancing need.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this; without it each small response waits ~40 ms
    # for the peer's delayed ACK (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class LoopThread:
    """An event loop in a daemon thread; ``run`` executes a coroutine on it and waits."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_rest(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class GatewayServer:
    """The real app under uvicorn on a loopback port, in its own loop thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sock = free_socket()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False,
                                timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = LoopThread("gateway")
        self._serving = asyncio.run_coroutine_threadsafe(
            self.server.serve(sockets=[self.sock]), self.thread.loop)
        deadline = time.monotonic() + 30
        while not self.server.started:
            if self._serving.done():
                self._serving.result()  # raises the startup error
            if time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.01)

    @property
    def state(self) -> Any:
        return self.app.state

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        """Run a coroutine on the gateway's loop (database reads, writer flushes)."""
        return self.thread.run(coro, timeout)

    def flush(self) -> None:
        self.run(self.state.writer.flush())

    def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            self._serving.result(15)
        self.thread.stop()
        self.sock.close()


@dataclass
class Reply:
    """One scripted upstream answer: status, headers, and body pieces sent with a delay."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {
        "content-type": "text/event-stream"})
    pieces: list[bytes] = field(default_factory=list)
    delay: float = 0.0
    hang_after: int | None = None  # stop sending (but keep the socket) after N pieces
    # After ``pieces``, send this piece again and again (``delay`` apart) until the client
    # hangs up or ``repeat_bytes`` went out: an endless line, body or trickle, bounded.
    repeat: bytes | None = None
    repeat_bytes: int = 64 * 1024 * 1024
    # Close the connection after N pieces, without the chunked body's end: the upstream
    # dying mid-answer, as the client sees it.
    drop_after: int | None = None
    # With ``hang_after``: the held pieces go out once the test sets this event (a call the
    # test keeps in flight, then lets finish), instead of never.
    gate: threading.Event | None = None

    @classmethod
    def recording(cls, name: str, *, split: int | None = None, status: int = 200,
                  content_type: str | None = None, **kw: Any) -> Reply:
        data = (FIXTURES / name).read_bytes()
        pieces = [data] if split is None else [data[i:i + split]
                                                for i in range(0, len(data), split)]
        ctype = content_type or ("text/event-stream" if name.endswith(".sse")
                                 else "application/json")
        return cls(status=status, headers={"content-type": ctype}, pieces=pieces, **kw)

    @classmethod
    def by_event(cls, name: str, **kw: Any) -> Reply:
        """A recorded stream sent one SSE event per piece (``hang_after`` counts events)."""
        return cls(pieces=recording_events(name), **kw)

    @classmethod
    def json(cls, status: int, body: bytes, headers: dict[str, str] | None = None) -> Reply:
        return cls(status=status, headers={"content-type": "application/json", **(headers or {})},
                   pieces=[body])

    @classmethod
    def error(cls, status: int, name: str, *, retry_after: str | None = None,
              retry_after_ms: str | None = None) -> Reply:
        """A recorded error body (``openai_error_500.json``…) with ``status`` and, when
        given, the upstream's ``retry-after`` / ``retry-after-ms`` headers."""
        headers = {}
        if retry_after is not None:
            headers["retry-after"] = retry_after
        if retry_after_ms is not None:
            headers["retry-after-ms"] = retry_after_ms
        return cls.json(status, (FIXTURES / name).read_bytes(), headers)


def recording_events(name: str) -> list[bytes]:
    """A recorded SSE stream split into its events, each with its blank line."""
    data = (FIXTURES / name).read_bytes()
    return [event + b"\n\n" for event in data.split(b"\n\n") if event.strip()]


def recorded_openai(name: str) -> tuple[str, dict]:
    """The assistant text and usage a recorded OpenAI stream carries, read independently."""
    text, usage = [], {}
    for event in recording_events(name):
        payload = event.decode().removeprefix("data: ").strip()
        if payload == "[DONE]":
            continue
        chunk = json.loads(payload)
        for choice in chunk.get("choices", []):
            text.append(choice["delta"].get("content") or "")
        usage = chunk.get("usage") or usage
    return "".join(text), usage


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    model: str | None = None  # the JSON body's "model", when it has one


def body_model(body: bytes) -> str | None:
    """The upstream model a request body names (OpenAI and Anthropic both say "model")."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None


class FakeUpstream:
    """Replays scripted replies in order (the last one repeats); records what it received.

    ``script_model`` gives one upstream model a script of its own (chosen by the request
    body's ``model``); requests for any other model take the default ``script``.
    """

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.model_replies: dict[str, list[Reply]] = {}
        self.dropped = 0
        self.received: list[Received] = []
        self.disconnects = 0
        self.completed = 0
        self.repeated_bytes = 0
        self.thread = LoopThread("fake-upstream")
        self.sock = free_socket()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread.run(self._start())

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, sock=self.sock)

    def script(self, *replies: Reply) -> None:
        """Start afresh: these default replies, no per-model scripts, counters at zero."""
        self.received.clear()
        self.replies = list(replies)
        self.model_replies = {}
        self.disconnects = 0
        self.completed = 0
        self.repeated_bytes = 0
        self.dropped = 0

    def script_model(self, model: str, *replies: Reply) -> None:
        """Replies, in order (the last repeats), for requests naming upstream ``model``.

        Replaces that model's earlier script; the request counts (``hits``) go on."""
        self.model_replies[model] = list(replies)

    def hits(self, model: str | None = None) -> int:
        """Requests received since the last ``script``, all or for one upstream model."""
        return sum(1 for r in list(self.received) if model is None or r.model == model)

    def _next(self, model: str | None = None) -> Reply:
        replies = self.model_replies.get(model, self.replies) if model else self.replies
        if len(replies) > 1:
            return replies.pop(0)
        return replies[0] if replies else Reply(status=500, pieces=[b"unscripted"])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                model = body_model(body)
                self.received.append(Received(method, path, headers, body, model))
                if not await self._reply(self._next(model), reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _wait_or_eof(self, reader: asyncio.StreamReader, seconds: float) -> None:
        """Sleep, but notice the client hanging up meanwhile."""
        try:
            data = await asyncio.wait_for(reader.read(1), seconds)
        except TimeoutError:
            return
        if not data:
            raise ConnectionResetError("client went away")

    async def _wait_for_gate(self, reader: asyncio.StreamReader, gate: threading.Event) -> None:
        # The event is set from the test's thread; look at it often, and notice a client
        # that hangs up meanwhile.
        while not gate.is_set():
            await self._wait_or_eof(reader, 0.005)

    async def _reply(self, reply: Reply, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bool:
        """Send one reply; False when the connection was dropped on purpose."""
        head = [f"HTTP/1.1 {reply.status} X", "transfer-encoding: chunked"]
        head += [f"{k}: {v}" for k, v in reply.headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            for i, piece in enumerate(reply.pieces):
                if reply.drop_after is not None and i >= reply.drop_after:
                    break
                if reply.hang_after is not None and i >= reply.hang_after:
                    if reply.gate is not None:
                        await self._wait_for_gate(reader, reply.gate)
                    else:
                        await self._wait_or_eof(reader, 3600)
                if reply.delay:
                    await self._wait_or_eof(reader, reply.delay)
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                await writer.drain()
            if reply.drop_after is not None:
                await writer.drain()
                self.dropped += 1
                return False  # the caller closes the socket: no final chunk
            if reply.repeat:
                await self._repeat(reply, reader, writer)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            self.completed += 1
            return True
        except (ConnectionError, asyncio.CancelledError):
            self.disconnects += 1
            raise ConnectionResetError from None

    async def _repeat(self, reply: Reply, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        assert reply.repeat is not None
        frame = f"{len(reply.repeat):x}\r\n".encode() + reply.repeat + b"\r\n"
        sent = 0
        while sent < reply.repeat_bytes:
            if reply.delay:
                await self._wait_or_eof(reader, reply.delay)
            writer.write(frame)
            await writer.drain()  # backpressure: never ahead of what the client reads
            sent += len(reply.repeat)
            self.repeated_bytes += len(reply.repeat)

    def stop(self) -> None:
        self._server.close()
        self.thread.stop()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@contextlib.contextmanager
def running(app: Any) -> Iterator[GatewayServer]:
    server = GatewayServer(app)
    try:
        yield server
    finally:
        server.stop()
