"""A Server-Sent Events response that does the least work per event.

Events arrive pre-encoded (``data: …\\n\\n``) and each is one ASGI send. Next to the stream
run two small tasks: one watches for the client's disconnect (and then cancels the stream,
which cancels the upstream call; gateway.http.CancelOnDisconnect), one sends a keep-alive
comment only after a long silence.
sse-starlette did the same with a task group, a ping on a fixed schedule and a cancel scope
around every send; this cost ~10 µs more CPU per event, 11 times ours (bench/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping

from starlette.types import Receive, Scope, Send

from gateway.http import CancelOnDisconnect

PING = b": keep-alive\n\n"


class EventStreamResponse:
    """``text/event-stream`` from an async generator of encoded events."""

    def __init__(self, events: AsyncGenerator[bytes, None], *,
                 headers: Mapping[str, str] | None = None, ping_seconds: float = 15.0) -> None:
        self.events = events
        self.ping_seconds = ping_seconds
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8"),
                            (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        self.raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                             for k, v in (headers or {}).items()
                             if k.lower() not in ("cache-control", "x-accel-buffering")]
        self._last_send = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        self._last_send = loop.time()
        # The client's disconnect cancels the stream (and with it the upstream call); that
        # cancellation ends here, quietly. One scope per stream, nothing per event.
        with CancelOnDisconnect(scope, receive) as watch:
            pinger = loop.create_task(self._keep_alive(send))
            try:
                async for data in self.events:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                    self._last_send = loop.time()
                # After the last message the server reports a disconnect: not a client leaving.
                watch.stop()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                pinger.cancel()
                # A disconnect may cancel us while the generator waits at ``yield``: close
                # it so its own cleanup (release the slot, record the row) runs now.
                await self.events.aclose()

    async def _keep_alive(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            while True:
                await asyncio.sleep(self._last_send + self.ping_seconds - loop.time())
                if loop.time() - self._last_send >= self.ping_seconds:
                    await send({"type": "http.response.body", "body": PING, "more_body": True})
                    self._last_send = loop.time()
