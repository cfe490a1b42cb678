"""AnthropicProvider streams: recorded Messages API events in, OpenAI-shaped chunks out."""

from __future__ import annotations

import json
from contextlib import aclosing

import httpcore
import httpx
import pytest

from providers.anthropic import AnthropicProvider
from providers.base import (
    CallContext,
    ChatRequest,
    Finish,
    ProviderConfig,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from providers.errors import (
    ProviderError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)

URL = "https://api.anthropic.com/v1/messages"
REQ = ChatRequest(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "Salut ?"}])
SPLITS = ["whole", "bytewise", "awkward"]


@pytest.fixture
def provider(transport: httpx.AsyncBaseTransport) -> AnthropicProvider:
    config = ProviderConfig(name="anthropic", kind="anthropic", api_key="sk-ant-test")
    return AnthropicProvider(config, transport)


def sse(*events: tuple[str, dict]) -> bytes:
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n"
                   for name, data in events).encode()


START = ("message_start", {"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude",
    "usage": {"input_tokens": 5, "output_tokens": 1}}})


@pytest.mark.parametrize("split", SPLITS)
async def test_text_stream(provider, upstream, replay, collect, split) -> None:
    response, body = replay("anthropic_text.sse", split)
    route = upstream.post(URL).mock(return_value=response)
    chunks = await collect(provider, REQ)
    text = ["Bonjour ! Ça va ?", " En japonais : こんにちは", "（日本語）👋🏽",
            " À bientôt — café ☕."]
    assert chunks == [*(TextDelta(t) for t in text), Finish("stop"),
                      Usage(prompt_tokens=9 + 1850, completion_tokens=31, cached_tokens=1850,
                            cache_creation_tokens=0)]
    assert body.closed and body.served == len(body.data)
    request = route.calls.last.request
    assert request.headers["x-api-key"] == "sk-ant-test"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers


@pytest.mark.parametrize("split", SPLITS)
async def test_tool_use_stream(provider, upstream, replay, collect, split) -> None:
    upstream.post(URL).mock(return_value=replay("anthropic_tools.sse", split)[0])
    chunks = await collect(provider, REQ)
    assert chunks == [
        TextDelta("I'll check the current"), TextDelta(" weather in Paris for you."),
        ToolCallDelta(0, id="toolu_01A9sXkP4vWq7HdZ2mTcN8Ry", name="get_weather", arguments=""),
        *(ToolCallDelta(0, arguments=a) for a in
          ['{"location": "P', 'aris, Fr', 'ance"', ', "unit": "celsius"}']),
        Finish("tool_calls"),
        Usage(prompt_tokens=612, completion_tokens=86, cached_tokens=0, cache_creation_tokens=0),
    ]


@pytest.mark.parametrize("split", SPLITS)
async def test_parallel_tool_use_numbers_calls_from_zero(provider, upstream, replay, collect,
                                                         split) -> None:
    upstream.post(URL).mock(return_value=replay("anthropic_parallel_tools.sse", split)[0])
    chunks = await collect(provider, REQ)
    assert chunks == [
        TextDelta("Let me look up both for you."),
        ToolCallDelta(0, id="toolu_01Pq3WzM8kNc5VxT1bHs6LgD", name="get_weather"),
        ToolCallDelta(0, arguments='{"locat'),
        ToolCallDelta(0, arguments='ion": "東京"}'),
        ToolCallDelta(1, id="toolu_01Rt7YcK2mQw9ZbN4xVs3HjF", name="get_current_time"),
        ToolCallDelta(1, arguments="{}"),  # a tool without arguments still gets a JSON object
        Finish("tool_calls"),
        Usage(prompt_tokens=423 + 1268, completion_tokens=97, cached_tokens=0,
              cache_creation_tokens=1268),
    ]


@pytest.mark.parametrize("split", SPLITS)
async def test_overloaded_error_mid_stream(provider, upstream, replay, split) -> None:
    response, body = replay("anthropic_error_overloaded.sse", split)
    upstream.post(URL).mock(return_value=response)
    received = []
    with pytest.raises(UpstreamUnavailable) as info:
        async with aclosing(provider.stream_chat(REQ, CallContext("r"))) as stream:
            async for chunk in stream:
                received.append(chunk)
    assert received == [TextDelta("Sure, here"), TextDelta(" is a longer")]
    assert info.value.status == 503
    assert "Overloaded" in info.value.message
    assert body.closed


@pytest.mark.parametrize(("error_type", "cls"), [
    ("overloaded_error", UpstreamUnavailable),
    ("rate_limit_error", UpstreamRateLimited),
    ("invalid_request_error", UpstreamBadRequest),
    ("authentication_error", UpstreamAuthError),
    ("permission_error", UpstreamAuthError),
    ("not_found_error", UpstreamNotFound),
    ("api_error", ProviderError),
    ("timeout_error", UpstreamTimeout),
    ("brand_new_error", ProviderError),
])
async def test_in_stream_error_types(provider, upstream, replay, collect, error_type,
                                     cls) -> None:
    data = sse(START, ("error", {"type": "error",
                                 "error": {"type": error_type, "message": "nope"}}))
    upstream.post(URL).mock(return_value=replay(data)[0])
    with pytest.raises(cls) as info:
        await collect(provider, REQ)
    assert type(info.value) is cls
    assert info.value.upstream_code == error_type


@pytest.mark.parametrize(("status", "fixture", "headers", "cls", "retry_after"), [
    (400, "anthropic_error_400.json", {}, UpstreamBadRequest, None),
    (401, "anthropic_error_401.json", {}, UpstreamAuthError, None),
    (429, "anthropic_error_429.json", {"retry-after": "17"}, UpstreamRateLimited, 17.0),
    (529, "anthropic_error_529.json", {}, UpstreamUnavailable, None),
    (500, "anthropic_error_529.json", {}, UpstreamUnavailable, None),
    (504, "anthropic_error_529.json", {}, UpstreamTimeout, None),
])
async def test_http_errors(provider, upstream, fixture_bytes, collect, status, fixture, headers,
                           cls, retry_after) -> None:
    upstream.post(URL).mock(return_value=httpx.Response(
        status, content=fixture_bytes(fixture),
        headers={"content-type": "application/json", **headers}))
    with pytest.raises(cls) as info:
        await collect(provider, REQ)
    assert type(info.value) is cls
    assert info.value.retry_after == retry_after
    assert info.value.upstream_status == status


async def test_http_400_message_is_relayed(provider, upstream, fixture_bytes, collect) -> None:
    upstream.post(URL).mock(return_value=httpx.Response(
        400, content=fixture_bytes("anthropic_error_400.json")))
    with pytest.raises(UpstreamBadRequest, match="max_tokens: 100000 > 64000"):
        await collect(provider, REQ)


async def test_ping_and_unknown_events_are_ignored_thinking_is_reasoning(provider, upstream, replay,
                                                            collect) -> None:
    data = sse(
        START,
        ("ping", {"type": "ping"}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "thinking", "thinking": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "signature_delta", "signature": "abc"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("future_event", {"type": "future_event", "whatever": 1}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "text_delta", "text": "ok"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"},
                           "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"}),
    )
    upstream.post(URL).mock(return_value=replay(data)[0])
    # Thinking is reasoning, apart from the text; its signature goes nowhere.
    assert await collect(provider, REQ) == [
        ReasoningDelta("hmm"), TextDelta("ok"), Finish("length"),
        Usage(prompt_tokens=5, completion_tokens=9)]


@pytest.mark.parametrize(("stop_reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"),
    ("max_tokens", "length"), ("tool_use", "tool_calls"), ("refusal", "content_filter"),
])
async def test_stop_reasons(provider, upstream, replay, collect, stop_reason, finish) -> None:
    data = sse(START, ("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": stop_reason},
                                         "usage": {"output_tokens": 3}}),
               ("message_stop", {"type": "message_stop"}))
    upstream.post(URL).mock(return_value=replay(data)[0])
    assert (await collect(provider, REQ))[0] == Finish(finish)


async def test_truncated_stream_is_a_protocol_error(provider, upstream, replay, collect) -> None:
    data = sse(START, ("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}}))
    upstream.post(URL).mock(return_value=replay(data)[0])
    with pytest.raises(UpstreamProtocolError):
        await collect(provider, REQ)


async def test_read_timeout_mid_stream(provider, upstream, replay, collect) -> None:
    response, body = replay("anthropic_text.sse", "awkward", fail_at=900,
                            error=httpcore.ReadTimeout("timed out"))
    upstream.post(URL).mock(return_value=response)
    with pytest.raises(UpstreamTimeout):
        await collect(provider, REQ)
    assert body.closed


async def test_connect_error(provider, upstream, collect) -> None:
    upstream.post(URL).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(UpstreamUnavailable, match="unreachable"):
        await collect(provider, REQ)


async def test_closing_early_closes_the_response(provider, upstream, replay) -> None:
    response, body = replay("anthropic_text.sse", "bytewise")
    upstream.post(URL).mock(return_value=response)
    async with aclosing(provider.stream_chat(REQ, CallContext("r"))) as stream:
        assert await anext(stream) == TextDelta("Bonjour ! Ça va ?")
    assert body.closed
    assert body.served < len(body.data)


def test_n_is_not_supported() -> None:
    assert AnthropicProvider.kind == "anthropic"
    assert AnthropicProvider.supports_n is False
