"""Bounded upstream reads at the provider boundary: body and event caps, error bodies read
only in part, and the per-call total_timeout (connect + first byte + the whole body)."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing

import httpx
import pytest

from providers.anthropic import AnthropicProvider
from providers.base import CallContext, ChatRequest, Finish, ProviderConfig, TextDelta
from providers.errors import UpstreamRateLimited, UpstreamResponseTooLarge, UpstreamTimeout
from providers.openai import OpenAIProvider
from providers.reading import MAX_ERROR_BODY_BYTES, Deadline
from tests.providers.conftest import TrickleStream

URL = "https://up.example/v1/chat/completions"
REQ = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
JSON = {"content-type": "application/json"}
SSE = {"content-type": "text/event-stream"}
ANSWER = (b'{"choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"stop"}],'
          b'"usage":{"prompt_tokens":3,"completion_tokens":1}}')


def make(transport: httpx.AsyncBaseTransport, **config: object) -> OpenAIProvider:
    return OpenAIProvider(ProviderConfig(name="up", kind="openai",
                                         base_url="https://up.example/v1",
                                         **config), transport)  # type: ignore[arg-type]


async def collect(provider: OpenAIProvider, ctx: CallContext) -> list[object]:
    async with aclosing(provider.stream_chat(REQ, ctx)) as stream:
        return [chunk async for chunk in stream]


async def test_a_body_over_max_response_bytes_is_refused_while_reading(upstream, transport,
                                                                      ctx) -> None:
    body = TrickleStream(b'{"choices": "' + b"x" * 1_000_000, (4096,))
    upstream.post(URL).mock(return_value=httpx.Response(200, stream=body, headers=JSON))
    provider = make(transport, max_response_bytes=64 * 1024)
    with pytest.raises(UpstreamResponseTooLarge) as info:
        await provider.complete_chat(REQ, ctx)
    assert info.value.message == ("upstream 'up' sent a body over 65536 bytes; raise its "
                                  "max_response_bytes if such answers are expected")
    assert (info.value.status, info.value.code) == (502, "upstream_response_too_large")
    assert body.served <= 64 * 1024 + 4096 and body.closed


async def test_a_declared_content_length_over_the_cap_is_refused_unread(upstream, transport,
                                                                       ctx) -> None:
    body = TrickleStream(ANSWER)
    upstream.post(URL).mock(return_value=httpx.Response(
        200, stream=body, headers={**JSON, "content-length": str(10**12)}))
    with pytest.raises(UpstreamResponseTooLarge):
        await make(transport, max_response_bytes=1024).complete_chat(REQ, ctx)
    assert body.served == 0 and body.closed


@pytest.mark.parametrize("length", ["abc", "-5", "1e3", "12 34", ""])
async def test_a_nonsense_content_length_is_ignored(upstream, transport, ctx,
                                                    length: str) -> None:
    upstream.post(URL).mock(return_value=httpx.Response(
        200, stream=TrickleStream(ANSWER), headers={**JSON, "content-length": length}))
    chunks = await make(transport).complete_chat(REQ, ctx)
    assert chunks[:2] == [TextDelta("hi"), Finish("stop")]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_huge_error_body_is_read_in_part_and_keeps_its_status(
        upstream, transport, ctx, stream: bool) -> None:
    page = b"<html>" + b"<p>busy</p>" * 500_000
    body = TrickleStream(page, (8192,))
    upstream.post(URL).mock(return_value=httpx.Response(
        429, stream=body, headers={"content-type": "text/html", "retry-after": "3"}))
    provider = make(transport)
    with pytest.raises(UpstreamRateLimited) as info:
        if stream:
            await collect(provider, ctx)
        else:
            await provider.complete_chat(REQ, ctx)
    assert info.value.retry_after == 3.0
    assert info.value.message == "upstream 'up': answered HTTP 429 with a non-JSON body"
    assert body.served <= MAX_ERROR_BODY_BYTES + 8192 and body.closed


async def test_an_anthropic_event_over_the_cap(upstream, transport, ctx) -> None:
    provider = AnthropicProvider(ProviderConfig(name="claude", kind="anthropic",
                                                base_url="https://a.example",
                                                max_event_bytes=4096), transport)
    body = TrickleStream(b"event: content_block_delta\ndata: {" + b'"x":1,' * 100_000,
                         (1000,))
    upstream.post("https://a.example/v1/messages").mock(
        return_value=httpx.Response(200, stream=body, headers=SSE))
    with pytest.raises(UpstreamResponseTooLarge, match="max_event_bytes"):
        async with aclosing(provider.stream_chat(REQ, ctx)) as stream:
            async for _ in stream:
                pass
    assert body.served <= 4096 + 1000 and body.closed


FIRST = b'data: {"choices":[{"index":0,"delta":{"content":"Bon"},"finish_reason":null}]}\n\n'


async def test_total_timeout_ends_a_stream_that_never_finishes(upstream, transport,
                                                               ctx) -> None:
    """The body keeps the read timeout happy forever; only total_timeout ends it."""
    body = TrickleStream(FIRST, hang=True)
    upstream.post(URL).mock(return_value=httpx.Response(200, stream=body, headers=SSE))
    provider = make(transport, total_timeout=0.3)
    seen = []
    start = time.monotonic()
    with pytest.raises(UpstreamTimeout) as info:
        async with aclosing(provider.stream_chat(REQ, ctx)) as stream:
            async for chunk in stream:
                seen.append(chunk)
    assert 0.3 <= time.monotonic() - start < 2
    assert seen == [TextDelta("Bon")]
    assert info.value.message == "upstream 'up' did not finish within its total_timeout (0.3 s)"
    assert (info.value.status, info.value.code) == (504, "upstream_timeout")
    assert body.closed


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_total_timeout_covers_waiting_for_the_response(upstream, transport, ctx,
                                                             stream: bool) -> None:
    async def never(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    upstream.post(URL).mock(side_effect=never)
    provider = make(transport, total_timeout=0.2)
    with pytest.raises(UpstreamTimeout, match="total_timeout"):
        if stream:
            await collect(provider, ctx)
        else:
            await provider.complete_chat(REQ, ctx)


async def test_total_timeout_covers_a_slow_body(upstream, transport, ctx) -> None:
    upstream.post(URL).mock(return_value=httpx.Response(
        200, stream=TrickleStream(b"{", hang=True), headers=JSON))
    with pytest.raises(UpstreamTimeout, match="total_timeout"):
        await make(transport, total_timeout=0.2).complete_chat(REQ, ctx)


async def test_the_deadline_expiring_while_draining_does_not_fail_a_finished_stream(
        upstream, transport, ctx, monkeypatch) -> None:
    """After [DONE] the answer is complete: an upstream that then idles only costs the
    connection, even when the total deadline runs out meanwhile."""
    monkeypatch.setattr("providers.upstream.DRAIN_TIMEOUT", 5.0)
    done = FIRST + b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    upstream.post(URL).mock(return_value=httpx.Response(
        200, stream=TrickleStream(done + b"data: [DONE]\n\n", hang=True), headers=SSE))
    start = time.monotonic()
    chunks = await collect(make(transport, total_timeout=0.2), ctx)
    assert chunks == [TextDelta("Bon"), Finish("stop")]
    assert time.monotonic() - start < 2


async def test_the_deadline_tells_its_own_cancellation_from_others() -> None:
    """A cancellation from elsewhere (a client gone) stays a cancellation even when the
    deadline fires at the same moment; the deadline's own becomes UpstreamTimeout."""
    deadline = Deadline(0.05, "up", read_timeout=60)
    with pytest.raises(UpstreamTimeout):
        await deadline.wait(asyncio.Event().wait())
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    deadline = Deadline(0.05, "up", read_timeout=60)
    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await deadline.wait(asyncio.Event().wait())

    task = asyncio.create_task(waits())
    await started.wait()
    task.cancel()  # before the deadline: a plain cancellation
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline.cancel()


async def test_only_reads_near_the_end_need_the_timers_interrupt() -> None:
    """A read that starts more than read_timeout before the end is bounded by the
    transport's read timeout, so it goes unwrapped; later ones are guarded."""
    async def read() -> bytes:
        return b"chunk"

    far = Deadline(10, "up", read_timeout=1)
    coro = read()
    assert far.read(coro) is coro
    assert await coro == b"chunk"
    far.cancel()
    near = Deadline(0.5, "up", read_timeout=1)
    coro = read()
    guarded = near.read(coro)
    assert guarded is not coro
    assert await guarded == b"chunk"
    near.cancel()


async def test_an_expired_deadline_refuses_the_next_read_at_once() -> None:
    deadline = Deadline(0.01, "up", read_timeout=60)
    ready = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, ready.set)
    await ready.wait()  # the deadline passed while nobody was reading
    assert deadline.expired

    async def read() -> bytes:
        return b"never awaited"

    coro = read()
    with pytest.raises(UpstreamTimeout):
        await deadline.wait(coro)
    coro.close()



def test_the_bounds_are_provider_options_in_toml(tmp_path, monkeypatch) -> None:
    from gateway.app import provider_configs
    from gateway.settings import ConfigError, load_settings

    config = tmp_path / "gateway.toml"
    config.write_text('[providers.local]\nkind = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
                      'models = ["m"]\nread_timeout = 30\ntotal_timeout = 120.5\n'
                      'max_event_bytes = 65536\nmax_response_bytes = 1048576\n'
                      '[providers.plain]\nkind = "openai"\nmodels = ["p"]\n')
    monkeypatch.setenv("GATEWAY_CONFIG", str(config))
    configs = {c.name: c for c in provider_configs(load_settings(data_dir=tmp_path))}
    local, plain = configs["local"], configs["plain"]
    assert (local.read_timeout, local.total_timeout, local.max_event_bytes,
            local.max_response_bytes) == (30, 120.5, 65536, 1048576)
    assert (plain.total_timeout, plain.max_event_bytes, plain.max_response_bytes) == (
        600, 1 << 20, 32 << 20)

    config.write_text('[providers.local]\nkind = "openai"\ntotal_timeout = 0\n')
    with pytest.raises(ConfigError, match=r"providers\.local\.total_timeout"):
        load_settings(data_dir=tmp_path)
