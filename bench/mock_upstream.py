"""A fast mock upstream: raw asyncio (uvloop) HTTP/1.1 keep-alive, OpenAI and Anthropic.

``POST .../chat/completions`` answers like OpenAI, ``POST .../messages`` like Anthropic,
``stream: true`` as SSE (chunked transfer encoding, as real providers do) and
``stream: false`` as one JSON body. The model name carries the shape of the answer, so
the same knobs work through any gateway route: ``mock-c20-d1.5`` streams 20 content
chunks with 1.5 ms between them (``c`` defaults to 4, ``d`` to 0). With no delay the
whole answer is pre-encoded once and sent with one write; with a delay the first write
carries the headers, the role event and the first content chunk together, so the time to
the first event means the same thing whether a client calls the mock or a proxy of it.

Run alone: ``python -m bench.mock_upstream --port 9100``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
from dataclasses import dataclass
from functools import lru_cache

import orjson

_MODEL_RE = re.compile(r"-(c|d)(\d+(?:\.\d+)?)")
PROMPT_TOKENS = 10
WORD = " hello"


@dataclass(frozen=True, slots=True)
class Shape:
    """What to answer: ``chunks`` content chunks, ``delay`` seconds between them."""

    chunks: int = 4
    delay: float = 0.0


@lru_cache(maxsize=256)
def shape_of(model: str) -> Shape:
    chunks, delay = 4, 0.0
    for key, value in _MODEL_RE.findall(model):
        if key == "c":
            chunks = max(1, int(float(value)))
        else:
            delay = float(value) / 1000.0
    return Shape(chunks, delay)


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(obj: object, event: str | None = None) -> bytes:
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + orjson.dumps(obj) + b"\n\n"


_SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
             b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n")
_END = b"0\r\n\r\n"


def _json_response(status: int, obj: object) -> bytes:
    body = orjson.dumps(obj)
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(status, b"Error")
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: keep-alive\r\n\r\n%s" % (status, reason, len(body), body))


class OpenAIFormat:
    """``chat.completion.chunk`` events, usage last (as with ``include_usage``)."""

    @staticmethod
    def _event(model: str, delta: dict, finish: str | None = None) -> bytes:
        return _sse({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1,
                     "model": model, "system_fingerprint": None,
                     "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                  "finish_reason": finish}]})

    @classmethod
    def first(cls, model: str) -> bytes:
        return (cls._event(model, {"role": "assistant", "content": ""})
                + cls._event(model, {"content": WORD}))

    @classmethod
    def middle(cls, model: str) -> bytes:
        return cls._event(model, {"content": WORD})

    @classmethod
    def last(cls, model: str, chunks: int) -> bytes:
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": chunks,
                 "total_tokens": PROMPT_TOKENS + chunks}
        return (cls._event(model, {}, "stop")
                + _sse({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1,
                        "model": model, "choices": [], "usage": usage})
                + b"data: [DONE]\n\n")

    @staticmethod
    def whole(model: str, chunks: int) -> object:
        return {"id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant",
                                                     "content": WORD * chunks},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": chunks,
                          "total_tokens": PROMPT_TOKENS + chunks}}


class AnthropicFormat:
    """Messages API stream events."""

    @staticmethod
    def first(model: str) -> bytes:
        message = {"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 1}}
        return (_sse({"type": "message_start", "message": message}, "message_start")
                + _sse({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}}, "content_block_start")
                + AnthropicFormat.middle(model))

    @staticmethod
    def middle(model: str) -> bytes:
        return _sse({"type": "content_block_delta", "index": 0,
                     "delta": {"type": "text_delta", "text": WORD}}, "content_block_delta")

    @staticmethod
    def last(model: str, chunks: int) -> bytes:
        return (_sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
                + _sse({"type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": chunks}}, "message_delta")
                + _sse({"type": "message_stop"}, "message_stop"))

    @staticmethod
    def whole(model: str, chunks: int) -> object:
        return {"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": WORD * chunks}],
                "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": chunks}}


Format = type[OpenAIFormat] | type[AnthropicFormat]


@lru_cache(maxsize=1024)
def whole_stream(fmt: Format, model: str, chunks: int) -> bytes:
    """A complete streamed answer (headers included), for one write."""
    body = fmt.first(model) + fmt.middle(model) * (chunks - 1) + fmt.last(model, chunks)
    return _SSE_HEAD + _chunk(body) + _END


@lru_cache(maxsize=1024)
def whole_json(fmt: Format, model: str, chunks: int) -> bytes:
    return _json_response(200, fmt.whole(model, chunks))


@lru_cache(maxsize=1024)
def stream_parts(fmt: Format, model: str, chunks: int) -> tuple[bytes, bytes, bytes]:
    """First write (headers, role and first chunk), each later chunk, and the end."""
    return (_SSE_HEAD + _chunk(fmt.first(model)), _chunk(fmt.middle(model)),
            _chunk(fmt.last(model, chunks)) + _END)


_HEALTH = _json_response(200, {"status": "ok"})
_NOT_FOUND = _json_response(404, {"error": {"message": "not found", "type": "not_found"}})


class MockProtocol(asyncio.Protocol):
    """One client connection: requests are answered in order, keep-alive always."""

    stats = {"requests": 0, "streams_open": 0}

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.task is None:
            self._process()

    def _process(self) -> None:
        while self.transport is not None and self.task is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            self._answer(head.split(b" ", 2), body)

    def _answer(self, request_line: list[bytes], body: bytes) -> None:
        assert self.transport is not None
        MockProtocol.stats["requests"] += 1
        method, path = request_line[0], request_line[1] if len(request_line) > 1 else b"/"
        if method == b"GET" and path.endswith(b"/health"):
            self.transport.write(_HEALTH)
            return
        if method == b"GET" and path.endswith(b"/stats"):
            self.transport.write(_json_response(200, MockProtocol.stats))
            return
        fmt: Format
        if path.endswith(b"/chat/completions"):
            fmt = OpenAIFormat
        elif path.endswith(b"/messages"):
            fmt = AnthropicFormat
        else:
            self.transport.write(_NOT_FOUND)
            return
        try:
            req = orjson.loads(body)
            model = str(req.get("model", "mock"))
            stream = bool(req.get("stream", False))
        except (orjson.JSONDecodeError, AttributeError):
            self.transport.write(_json_response(400, {"error": {"message": "bad json"}}))
            return
        shape = shape_of(model)
        if not stream:
            self.transport.write(whole_json(fmt, model, shape.chunks))
        elif shape.delay <= 0:
            self.transport.write(whole_stream(fmt, model, shape.chunks))
        else:
            self.task = asyncio.get_running_loop().create_task(
                self._paced(fmt, model, shape))

    async def _paced(self, fmt: Format, model: str, shape: Shape) -> None:
        first, middle, last = stream_parts(fmt, model, shape.chunks)
        MockProtocol.stats["streams_open"] += 1
        try:
            assert self.transport is not None
            self.transport.write(first)
            for _ in range(shape.chunks - 1):
                await asyncio.sleep(shape.delay)
                if self.transport is None:
                    return
                self.transport.write(middle)
            await asyncio.sleep(shape.delay)
            if self.transport is not None:
                self.transport.write(last)
        finally:
            MockProtocol.stats["streams_open"] -= 1
            self.task = None
            if self.transport is not None and self.buffer:
                self._process()


async def serve(host: str, port: int) -> None:
    """Serve until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MockProtocol, host, port, backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fast mock OpenAI/Anthropic upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args(argv)
    from bench.procs import raise_nofile

    raise_nofile()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is in the bench extra
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.host, args.port))


if __name__ == "__main__":
    main()
