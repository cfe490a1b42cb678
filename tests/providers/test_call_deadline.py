"""The call's own deadline (``CallContext.deadline``) bounds one attempt against a real
HTTP server on 127.0.0.1 that stops sending: the attempt ends when the call's time is up,
not after the read timeout or ``total_timeout``, so retries can never outlive the call."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import aclosing

import httpx
import pytest

from providers.base import CallContext, ChatRequest, ProviderConfig, TextDelta
from providers.errors import UpstreamTimeout
from providers.openai import OpenAIProvider
from tests.servers import FakeUpstream, Reply, recording_events, wait_for

REQ = ChatRequest(model="gpt-4o-mini", messages=[{"role": "user", "content": "Salut ?"}])
FIRST_TEXT = recording_events("openai_text.sse")[:2]  # the role chunk, then "Bon"
LEFT = 0.3


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    yield server

    # FakeUpstream.stop() closes the asyncio server from this thread while its loop may
    # still be detaching the last connection (a TypeError in asyncio's Server._wakeup):
    # close it on its own loop first; stop() then finds it closed.
    async def close() -> None:
        server._server.close()

    server.thread.run(close())
    server.stop()


@pytest.fixture
async def provider(fake: FakeUpstream) -> OpenAIProvider:
    # A read timeout and total_timeout far past the call's deadline: only it can end the
    # attempt in time. A transport of its own, so no pooled connection outlives the test.
    async with httpx.AsyncHTTPTransport() as transport:
        yield OpenAIProvider(ProviderConfig(name="up", kind="openai",
                                            base_url=fake.url + "/v1", read_timeout=60,
                                            total_timeout=600), transport)


async def stream(provider: OpenAIProvider, ctx: CallContext, seen: list[object]) -> None:
    async with aclosing(provider.stream_chat(REQ, ctx)) as chunks:
        async for chunk in chunks:
            seen.append(chunk)


async def test_a_stream_ends_when_the_calls_time_is_up(provider, fake) -> None:
    """Two events, then the upstream keeps the socket open and sends nothing more."""
    fake.script(Reply(pieces=[*FIRST_TEXT, b"never sent"], hang_after=2))
    seen: list[object] = []
    start = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="within the time left for the call") as info:
        await stream(provider, CallContext("r1", deadline=start + LEFT), seen)
    elapsed = time.monotonic() - start
    assert LEFT - 0.01 <= elapsed < LEFT + 0.7, elapsed
    assert seen == [TextDelta("Bon")]
    assert (info.value.status, info.value.code) == (504, "upstream_timeout")
    assert wait_for(lambda: fake.disconnects == 1)  # the attempt hung up, nothing leaks


async def test_a_whole_answer_ends_when_the_calls_time_is_up(provider, fake) -> None:
    """Headers, then nothing: the first byte of the body never comes."""
    fake.script(Reply(headers={"content-type": "application/json"}, pieces=[b"{}"],
                      hang_after=0))
    start = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="within the time left for the call"):
        await provider.complete_chat(REQ, CallContext("r2", deadline=start + LEFT))
    elapsed = time.monotonic() - start
    assert LEFT - 0.01 <= elapsed < LEFT + 0.7, elapsed
    assert wait_for(lambda: fake.disconnects == 1)


async def test_a_deadline_already_past_ends_the_attempt_at_once(provider, fake) -> None:
    fake.script(Reply(pieces=FIRST_TEXT, hang_after=0))
    start = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="within the time left for the call"):
        await stream(provider, CallContext("r3", deadline=start - 5), [])
    assert time.monotonic() - start < 0.5


async def test_total_timeout_still_binds_when_it_comes_first(fake) -> None:
    """A far call deadline changes nothing: the provider's own total_timeout ends it."""
    fake.script(Reply(pieces=[*FIRST_TEXT, b"never sent"], hang_after=2))
    async with httpx.AsyncHTTPTransport() as transport:
        provider = OpenAIProvider(ProviderConfig(name="up", kind="openai",
                                                 base_url=fake.url + "/v1",
                                                 total_timeout=0.2), transport)
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout) as info:
            await stream(provider, CallContext("r4", deadline=start + 60), [])
    assert time.monotonic() - start < 0.9
    assert wait_for(lambda: fake.disconnects == 1)
    assert info.value.message == ("upstream 'up' did not finish within its total_timeout "
                                  "(0.2 s)")
