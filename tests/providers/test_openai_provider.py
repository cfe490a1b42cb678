"""OpenAIProvider against recorded OpenAI streams, replayed at the HTTP boundary."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing

import httpcore
import httpx
import pytest

from providers.base import (
    CallContext,
    ChatRequest,
    Finish,
    ModelInfo,
    ProviderConfig,
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
from providers.openai import OpenAIProvider

URL = "https://api.openai.com/v1/chat/completions"
CONFIG = ProviderConfig(name="openai", kind="openai", api_key="sk-test")
REQ = ChatRequest(model="gpt-4o-mini", messages=[{"role": "user", "content": "Salut ?"}])
SPLITS = ["whole", "bytewise", "awkward"]

TEXT = ["Bon", "jour", " !", " Ça", " va", " ?", " En", " japonais", " :", " こんにちは", "（",
        "日本", "語", "）", " 👋", "🏽", " À", " bientôt", " —", " café", " ☕", "."]


@pytest.fixture
def provider(transport: httpx.AsyncBaseTransport) -> OpenAIProvider:
    return OpenAIProvider(CONFIG, transport)


@pytest.mark.parametrize("split", SPLITS)
async def test_text_stream(provider, upstream, replay, collect, split) -> None:
    response, body = replay("openai_text.sse", split)
    upstream.post(URL).mock(return_value=response)
    chunks = await collect(provider, REQ)
    assert chunks == [*(TextDelta(t) for t in TEXT), Finish("stop"),
                      Usage(prompt_tokens=2061, completion_tokens=22, cached_tokens=1920)]
    # Read to the end (so the connection can be reused), then closed.
    assert body.served == len(body.data)
    assert body.closed


async def test_upstream_idling_after_done_does_not_delay_the_end(
        provider, upstream, replay, collect, monkeypatch) -> None:
    monkeypatch.setattr("providers.upstream.DRAIN_TIMEOUT", 0.01)
    response, body = replay("openai_text.sse", hang=True)
    upstream.post(URL).mock(return_value=response)
    chunks = await asyncio.wait_for(collect(provider, REQ), 1)
    assert chunks[-1] == Usage(prompt_tokens=2061, completion_tokens=22, cached_tokens=1920)
    assert body.closed


@pytest.mark.parametrize("split", SPLITS)
async def test_tool_call_stream(provider, upstream, replay, collect, split) -> None:
    upstream.post(URL).mock(return_value=replay("openai_tools.sse", split)[0])
    chunks = await collect(provider, REQ)
    fragments = ['{"', 'location', '":"', 'Paris', ',', ' France', '","', 'unit', '":"', 'c',
                 'elsius', '"}']
    assert chunks == [
        ToolCallDelta(0, id="call_Xk4pQ2rB7tNw9yHc3LmVs8eZ", name="get_weather", arguments=""),
        *(ToolCallDelta(0, arguments=f) for f in fragments),
        Finish("tool_calls"),
        Usage(prompt_tokens=84, completion_tokens=19, cached_tokens=0),
    ]


@pytest.mark.parametrize("split", SPLITS)
async def test_parallel_tool_calls(provider, upstream, replay, collect, split) -> None:
    upstream.post(URL).mock(return_value=replay("openai_parallel_tools.sse", split)[0])
    chunks = await collect(provider, REQ)
    expected = []
    for i, (call_id, city) in enumerate([("call_2bVn8QwLz5Xc1RtYk7HmJp4s", "Paris"),
                                         ("call_9fGh3KsLq6WeP2zAx8NcVb1m", "東京")]):
        expected.append(ToolCallDelta(i, id=call_id, name="get_weather"))
        expected += [ToolCallDelta(i, arguments=a) for a in ['{"lo', 'cation', '":"', city, '"}']]
    assert chunks == [*expected, Finish("tool_calls"),
                      Usage(prompt_tokens=107, completion_tokens=52, cached_tokens=0)]


async def test_choices_are_kept_apart_by_index(provider, upstream, replay, collect) -> None:
    def chunk(index: int, delta: dict, reason: str | None = None) -> str:
        return "data: " + json.dumps({"choices": [
            {"index": index, "delta": delta, "finish_reason": reason}]}) + "\n\n"
    data = (chunk(0, {"role": "assistant", "content": "A"}) + chunk(1, {"content": "B"})
            + chunk(1, {}, "length") + chunk(0, {}, "stop") + "data: [DONE]\n\n")
    upstream.post(URL).mock(return_value=replay(data.encode())[0])
    assert await collect(provider, REQ) == [TextDelta("A", 0), TextDelta("B", 1),
                                            Finish("length", 1), Finish("stop", 0)]


async def test_request_body_and_headers(transport, upstream, replay, collect) -> None:
    config = ProviderConfig(name="local", kind="openai", base_url="http://vllm.internal:8000/v1/",
                            api_key="sk-local", connect_timeout=2.5, read_timeout=30.0,
                            headers={"OpenAI-Organization": "org-1", "Accept": "*/*"})
    route = upstream.post("http://vllm.internal:8000/v1/chat/completions").mock(
        return_value=replay("openai_text.sse")[0])
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    req = ChatRequest(model="llama-3", messages=messages,
                      params={"temperature": 1.5, "stop": ["\n\n"], "n": 2, "seed": 7},
                      extra={"logit_bias": {"50256": -100}, "guided_json": {"type": "object"},
                             "stream_options": {"include_obfuscation": False}, "stream": False})
    await collect(OpenAIProvider(config, transport), req)

    request = route.calls.last.request
    assert json.loads(request.content) == {
        "model": "llama-3", "messages": messages, "temperature": 1.5, "stop": ["\n\n"], "n": 2,
        "seed": 7, "logit_bias": {"50256": -100}, "guided_json": {"type": "object"},
        "stream": True, "stream_options": {"include_obfuscation": False, "include_usage": True},
    }
    assert request.headers["authorization"] == "Bearer sk-local"
    assert request.headers["openai-organization"] == "org-1"
    assert request.headers.get_list("accept") == ["*/*"]  # configured headers win
    assert request.headers["x-client-request-id"] == "req_test_1"
    assert request.headers["content-type"] == "application/json"
    assert request.extensions["timeout"] == {"connect": 2.5, "read": 30.0, "write": 30.0,
                                             "pool": 2.5}


async def test_no_api_key_sends_no_authorization(transport, upstream, replay, collect) -> None:
    route = upstream.post("http://localhost:11434/v1/chat/completions").mock(
        return_value=replay("openai_text.sse")[0])
    config = ProviderConfig(name="ollama", kind="openai", base_url="http://localhost:11434/v1")
    await collect(OpenAIProvider(config, transport), REQ)
    assert "authorization" not in route.calls.last.request.headers


async def test_upstream_without_usage_yields_no_usage(provider, upstream, replay, collect) -> None:
    data = (b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
            b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
            b"data: [DONE]\n\n")
    upstream.post(URL).mock(return_value=replay(data)[0])
    assert await collect(provider, REQ) == [TextDelta("hi"), Finish("stop")]


async def test_missing_done_after_finish_is_accepted(provider, upstream, replay, collect) -> None:
    data = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n'
    upstream.post(URL).mock(return_value=replay(data)[0])
    assert await collect(provider, REQ) == [TextDelta("hi"), Finish("stop")]


async def test_truncated_stream_is_a_protocol_error(provider, upstream, replay, collect) -> None:
    data = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
    upstream.post(URL).mock(return_value=replay(data)[0])
    with pytest.raises(UpstreamProtocolError):
        await collect(provider, REQ)


async def test_unparsable_event_is_a_protocol_error(provider, upstream, replay, collect) -> None:
    upstream.post(URL).mock(return_value=replay(b"data: {not json\n\n")[0])
    with pytest.raises(UpstreamProtocolError):
        await collect(provider, REQ)


@pytest.mark.parametrize(("status", "fixture", "headers", "cls", "param", "retry_after"), [
    (400, "openai_error_400.json", {}, UpstreamBadRequest, "temperature", None),
    (401, "openai_error_401.json", {}, UpstreamAuthError, None, None),
    (403, "openai_error_401.json", {}, UpstreamAuthError, None, None),
    (404, "openai_error_404.json", {}, UpstreamNotFound, None, None),
    (422, "openai_error_400.json", {}, UpstreamBadRequest, "temperature", None),
    (429, "openai_error_429.json", {"retry-after": "3"}, UpstreamRateLimited, None, 3.0),
    (429, "openai_error_429.json", {"retry-after-ms": "161", "retry-after": "1"},
     UpstreamRateLimited, None, 0.161),
    (500, "openai_error_500.json", {}, UpstreamUnavailable, None, None),
    (502, "openai_error_500.json", {}, UpstreamUnavailable, None, None),
    (503, "openai_error_500.json", {}, UpstreamUnavailable, None, None),
    (529, "openai_error_500.json", {}, UpstreamUnavailable, None, None),
    (504, "openai_error_500.json", {}, UpstreamTimeout, None, None),
])
async def test_http_errors_are_typed(provider, upstream, fixture_bytes, collect, status, fixture,
                                     headers, cls, param, retry_after) -> None:
    upstream.post(URL).mock(return_value=httpx.Response(
        status, content=fixture_bytes(fixture),
        headers={"content-type": "application/json", **headers}))
    with pytest.raises(cls) as info:
        await collect(provider, REQ)
    error = info.value
    assert type(error) is cls
    assert error.param == param
    assert error.retry_after == pytest.approx(retry_after)
    assert error.upstream_status == status


async def test_auth_error_does_not_leak_the_upstream_message(provider, upstream, fixture_bytes,
                                                             collect) -> None:
    upstream.post(URL).mock(return_value=httpx.Response(
        401, content=fixture_bytes("openai_error_401.json")))
    with pytest.raises(UpstreamAuthError) as info:
        await collect(provider, REQ)
    assert "sk-proj" not in info.value.message
    assert "api_key" in info.value.message


async def test_retry_after_as_http_date(provider, upstream, collect) -> None:
    upstream.post(URL).mock(return_value=httpx.Response(
        429, headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, text="slow down"))
    with pytest.raises(UpstreamRateLimited) as info:
        await collect(provider, REQ)
    assert info.value.retry_after == 0.0  # a date in the past means "now"


async def test_html_error_page_still_maps_by_status(provider, upstream, collect) -> None:
    upstream.post(URL).mock(return_value=httpx.Response(
        502, html="<html><body>502 Bad Gateway<script>alert(1)</script></body></html>"))
    with pytest.raises(UpstreamUnavailable) as info:
        await collect(provider, REQ)
    assert info.value.message == "upstream 'openai': answered HTTP 502 with a non-JSON body"


async def test_json_error_with_200_status(provider, upstream, collect) -> None:
    upstream.post(URL).mock(return_value=httpx.Response(
        200, json={"error": {"message": "model overloaded", "type": "server_error"}}))
    with pytest.raises(UpstreamUnavailable, match="model overloaded"):
        await collect(provider, REQ)


@pytest.mark.parametrize(("error", "cls"), [
    ({"message": "The server had an error", "type": "server_error", "param": None, "code": None},
     UpstreamUnavailable),
    ({"message": "Rate limit", "type": "tokens", "param": None, "code": "rate_limit_exceeded"},
     UpstreamRateLimited),
    ({"message": "bad", "type": "invalid_request_error", "param": "tools", "code": None},
     UpstreamBadRequest),
    ({"object": "error", "message": "context too long", "type": "BadRequestError",
      "param": None, "code": 400}, UpstreamBadRequest),
    ({"message": "something odd", "type": "weird_error"}, ProviderError),
])
async def test_in_stream_error_event(provider, upstream, replay, collect, error, cls) -> None:
    data = ('data: {"choices":[{"index":0,"delta":{"content":"par"},"finish_reason":null}]}\n\n'
            f"data: {json.dumps({'error': error})}\n\n").encode()
    upstream.post(URL).mock(return_value=replay(data)[0])
    received = []
    with pytest.raises(cls) as info:
        async with aclosing(provider.stream_chat(REQ, CallContext("r"))) as stream:
            async for chunk in stream:
                received.append(chunk)
    assert type(info.value) is cls
    assert received == [TextDelta("par")]
    if cls is UpstreamBadRequest and error.get("param"):
        assert info.value.param == "tools"
    # Only a string "code" is the upstream's own code (vLLM's 400 there is a status).
    code = error.get("code")
    assert info.value.upstream_code == (code if isinstance(code, str) else None)


@pytest.mark.parametrize(("exc", "cls"), [
    (httpx.ConnectError("connection refused"), UpstreamUnavailable),
    (httpx.ConnectTimeout("connect timed out"), UpstreamTimeout),
    (httpx.ReadTimeout("no first byte"), UpstreamTimeout),
    (httpx.PoolTimeout("pool exhausted"), UpstreamTimeout),
    (httpx.UnsupportedProtocol("ftp?"), ProviderError),
])
async def test_transport_errors_before_the_first_byte(provider, upstream, collect, exc,
                                                      cls) -> None:
    upstream.post(URL).mock(side_effect=exc)
    with pytest.raises(cls) as info:
        await collect(provider, REQ)
    assert type(info.value) is cls
    assert info.value.__cause__ is exc


@pytest.mark.parametrize(("exc", "cls", "cause"), [
    (httpcore.ReadTimeout("read timed out"), UpstreamTimeout, httpx.ReadTimeout),
    (httpcore.ReadError("connection reset"), UpstreamUnavailable, httpx.ReadError),
    (httpcore.RemoteProtocolError("peer closed connection"), UpstreamUnavailable,
     httpx.RemoteProtocolError),
])
async def test_transport_errors_mid_stream(provider, upstream, replay, exc, cls, cause) -> None:
    response, body = replay("openai_text.sse", "awkward", fail_at=1200, error=exc)
    upstream.post(URL).mock(return_value=response)
    received = []
    with pytest.raises(cls) as info:
        async with aclosing(provider.stream_chat(REQ, CallContext("r"))) as stream:
            async for chunk in stream:
                received.append(chunk)
    assert received[:2] == [TextDelta("Bon"), TextDelta("jour")]
    assert isinstance(info.value.__cause__, cause)
    assert body.closed


async def test_closing_the_stream_early_closes_the_response(provider, upstream, replay) -> None:
    response, body = replay("openai_text.sse", "awkward")
    upstream.post(URL).mock(return_value=response)
    async with aclosing(provider.stream_chat(REQ, CallContext("r"))) as stream:
        assert await anext(stream) == TextDelta("Bon")
    assert body.closed
    assert body.served < len(body.data)


async def test_cancelling_the_consumer_closes_the_response(provider, upstream, replay) -> None:
    response, body = replay(
        b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n',
        hang=True)
    upstream.post(URL).mock(return_value=response)
    first = asyncio.Event()

    async def consume() -> None:
        async with aclosing(provider.stream_chat(REQ, CallContext("r"))) as stream:
            async for _ in stream:
                first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert body.closed


async def test_list_models(provider, upstream) -> None:
    upstream.get("https://api.openai.com/v1/models").mock(return_value=httpx.Response(200, json={
        "object": "list", "data": [
            {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
            {"id": "gpt-4.1", "object": "model", "created": 1744316542, "owned_by": "system"}]}))
    assert await provider.list_models() == [ModelInfo("gpt-4o-mini", "system"),
                                            ModelInfo("gpt-4.1", "system")]


async def test_list_models_error(provider, upstream, fixture_bytes) -> None:
    upstream.get("https://api.openai.com/v1/models").mock(
        return_value=httpx.Response(401, content=fixture_bytes("openai_error_401.json")))
    with pytest.raises(UpstreamAuthError):
        await provider.list_models()
