"""What a provider's upstream call costs on our side of the transport, without sockets:
``OpenAIProvider.complete_chat`` and ``stream_chat`` (request built, sent, the answer read
and parsed) through a transport that answers at once with the mock's bytes, so what is
measured is the provider, httpx's ``Request``/``Response`` objects and the reading code,
not aiohttp or the network. Run: ``python -m bench.upstream_cost`` (with ``PYTHONPATH``
set to another tree to compare two versions of the code side by side).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import httpx
import orjson

from bench.harness import openai_body
from bench.mock_upstream import OpenAIFormat
from providers.base import CallContext, ChatRequest, ProviderConfig
from providers.openai import OpenAIProvider

CALLS = 5_000


class _Stream(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


class Canned(httpx.AsyncBaseTransport):
    """Answers every request at once: the mock's JSON body, or its SSE events one chunk
    each (as a socket read would bring them one by one, 1 ms apart)."""

    def __init__(self, chunks: int) -> None:
        self.json = orjson.dumps(OpenAIFormat.whole("mock-c4", 4))
        self.events = [OpenAIFormat.first("mock-c20"),
                       *[OpenAIFormat.middle("mock-c20")] * (chunks - 1),
                       OpenAIFormat.last("mock-c20", chunks)]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        stream = b'"stream":true' in request.content
        kind = b"text/event-stream" if stream else b"application/json"
        return httpx.Response(200, headers=[(b"content-type", kind)],
                              stream=_Stream(self.events if stream else [self.json]),
                              request=request, extensions={"http_version": b"HTTP/1.1"})


async def _calls(provider: OpenAIProvider, stream: bool, calls: int) -> float:
    """CPU µs per call over ``calls`` calls."""
    body = openai_body("mock-c4", stream)
    req = ChatRequest(model="mock-c4", messages=body["messages"],
                      params={"max_tokens": body["max_tokens"]})
    t0 = time.process_time()
    for n in range(calls):
        ctx = CallContext(request_id=f"req_{n}", user_id="u",
                          deadline=time.monotonic() + 600)
        if stream:
            async for _ in provider.stream_chat(req, ctx):
                pass
        else:
            await provider.complete_chat(req, ctx)
    return (time.process_time() - t0) * 1e6 / calls


async def measure(calls: int, repeats: int) -> dict[str, list[float]]:
    config = ProviderConfig(name="mock", kind="openai", base_url="http://127.0.0.1:9/v1",
                            api_key="x")
    provider = OpenAIProvider(config, Canned(20))
    out: dict[str, list[float]] = {"plain": [], "stream (20 chunks)": []}
    await _calls(provider, False, calls // 10)  # warm-up
    for _ in range(repeats):
        out["plain"].append(await _calls(provider, False, calls))
        out["stream (20 chunks)"].append(await _calls(provider, True, calls // 4))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        import uvloop

        results = uvloop.run(measure(args.calls, args.repeats))
    except ImportError:  # pragma: no cover
        results = asyncio.run(measure(args.calls, args.repeats))
    for name, values in results.items():
        print(f"{name}: {min(values):.1f} µs CPU per call (best of {len(values)}; median "
              f"{statistics.median(values):.1f})")


if __name__ == "__main__":
    main()
