"""complete_chat: one non-streamed upstream call, replayed at the HTTP boundary (respx).

The recorded ``*.json`` answers carry the same content as the ``*.sse`` ones, so besides
the exact chunks each provider returns, the non-streamed and streamed paths must describe
the same answer and raise the same typed errors.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any

import httpcore
import httpx
import pytest

from providers.anthropic import AnthropicProvider
from providers.base import (
    CallContext,
    ChatRequest,
    Chunk,
    Finish,
    ProviderConfig,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from providers.demo import DemoProvider
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
from providers.together import TogetherProvider
from providers.upstream import HTTPStreamProvider

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
TOGETHER_URL = "https://api.together.xyz/v1/chat/completions"
URLS = {"openai": OPENAI_URL, "anthropic": ANTHROPIC_URL, "together": TOGETHER_URL}

REQS = {
    "openai": ChatRequest(model="gpt-4o-mini",
                          messages=[{"role": "user", "content": "Salut ?"}]),
    "anthropic": ChatRequest(model="claude-sonnet-4-5",
                             messages=[{"role": "user", "content": "Salut ?"}]),
    "together": ChatRequest(model="meta-llama/Llama-3.3-70B-Instruct-Turbo",
                            messages=[{"role": "user", "content": "Bonjour ?"}],
                            params={"n": 1}),
}
SPLITS = ["whole", "bytewise", "awkward"]
JSON = {"content-type": "application/json"}

# The exact chunks for each recorded non-streamed answer.
RECORDED: dict[str, tuple[str, list[Chunk]]] = {
    "openai_text": ("openai", [
        TextDelta("Bonjour ! Ça va ? En japonais : こんにちは（日本語） 👋🏽 À bientôt — café ☕."),
        Finish("stop"),
        Usage(prompt_tokens=2061, completion_tokens=22, cached_tokens=1920),
    ]),
    "openai_tools": ("openai", [
        ToolCallDelta(0, id="call_Xk4pQ2rB7tNw9yHc3LmVs8eZ", name="get_weather",
                      arguments='{"location":"Paris, France","unit":"celsius"}'),
        Finish("tool_calls"),
        Usage(prompt_tokens=84, completion_tokens=19, cached_tokens=0),
    ]),
    "anthropic_text": ("anthropic", [
        TextDelta("Bonjour ! Ça va ? En japonais : こんにちは（日本語）👋🏽 À bientôt — café ☕."),
        Finish("stop"),
        # Cache reads count into prompt tokens, as OpenAI counts them (and the stream does).
        Usage(prompt_tokens=9 + 1850, completion_tokens=31, cached_tokens=1850,
              cache_creation_tokens=0),
    ]),
    "anthropic_tools": ("anthropic", [
        TextDelta("I'll check the current weather in Paris for you."),
        ToolCallDelta(0, id="toolu_01A9sXkP4vWq7HdZ2mTcN8Ry", name="get_weather",
                      arguments='{"location":"Paris, France","unit":"celsius"}'),
        Finish("tool_calls"),  # Anthropic's stop_reason "tool_use"
        Usage(prompt_tokens=612, completion_tokens=86, cached_tokens=0,
              cache_creation_tokens=0),
    ]),
    "together_text": ("together", [
        TextDelta("Bonjour ! Ça va ? 日本語 👋🏽"),
        Finish("stop"),  # Together's finish_reason "eos"
        Usage(prompt_tokens=47, completion_tokens=11, cached_tokens=0),  # flat cached_tokens
    ]),
}


@pytest.fixture
def providers(transport: httpx.AsyncBaseTransport) -> dict[str, HTTPStreamProvider]:
    return {
        "openai": OpenAIProvider(ProviderConfig(name="openai", kind="openai",
                                                api_key="sk-test"), transport),
        "anthropic": AnthropicProvider(ProviderConfig(name="anthropic", kind="anthropic",
                                                      api_key="sk-ant-test"), transport),
        "together": TogetherProvider(ProviderConfig(name="together", kind="together",
                                                    api_key="tg-key"), transport),
    }


@pytest.fixture
def complete(ctx: CallContext) -> Callable[..., Any]:
    """``await complete(provider, req)``: the non-streamed call with the shared context."""
    async def run(provider: Any, req: ChatRequest) -> list[Chunk]:
        return await provider.complete_chat(req, ctx)
    return run


def answer(chunks: list[Chunk]) -> dict[str, Any]:
    """What a list of chunks says, however it was cut: text and tool calls per choice
    (arguments parsed: Anthropic streams them spaced, its JSON body holds an object),
    finishes and usage in order."""
    text: dict[int, str] = {}
    calls: dict[tuple[int, int], dict[str, Any]] = {}
    finishes: list[Finish] = []
    usage: list[Usage] = []
    for chunk in chunks:
        if isinstance(chunk, TextDelta):
            text[chunk.index] = text.get(chunk.index, "") + chunk.text
        elif isinstance(chunk, ToolCallDelta):
            call = calls.setdefault((chunk.index, chunk.call_index),
                                    {"id": None, "name": None, "arguments": ""})
            for key in ("id", "name"):
                value = getattr(chunk, key)
                if value is not None:
                    assert call[key] is None, f"{key} sent twice"
                    call[key] = value
            call["arguments"] += chunk.arguments
        elif isinstance(chunk, Finish):
            finishes.append(chunk)
        else:
            usage.append(chunk)
    for call in calls.values():
        call["arguments"] = json.loads(call["arguments"])
    return {"text": text, "tool_calls": calls, "finishes": finishes, "usage": usage}


def same_headers_but_accept(a: httpx.Request, b: httpx.Request) -> bool:
    def rest(request: httpx.Request) -> list[tuple[str, str]]:
        return [(k, v) for k, v in request.headers.multi_items()
                if k not in ("accept", "content-length")]
    return rest(a) == rest(b)


def fresh(status: int, content: bytes, headers: dict[str, str] | None = None
          ) -> Callable[[httpx.Request], httpx.Response]:
    """A respx side effect answering every call with a new response (bodies read once)."""
    return lambda request: httpx.Response(status, content=content, headers=headers or {})


# ---------------------------------------------------------------------------------------
# 1. Recorded answers: exact chunks, and the same answer as the streamed recording


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("recording", list(RECORDED))
async def test_recorded_answer_chunks(providers, upstream, replay, complete, recording,
                                      split) -> None:
    kind, expected = RECORDED[recording]
    response, body = replay(f"{recording}.json", split, headers=JSON)
    route = upstream.post(URLS[kind]).mock(return_value=response)
    chunks = await complete(providers[kind], REQS[kind])
    assert chunks == expected
    assert route.call_count == 1
    assert body.served == len(body.data)  # read to the end, then closed
    assert body.closed


@pytest.mark.parametrize("recording", list(RECORDED))
async def test_recorded_answer_matches_the_stream(providers, upstream, replay, complete,
                                                  collect, recording) -> None:
    kind, _ = RECORDED[recording]
    provider, req = providers[kind], REQS[kind]
    upstream.post(URLS[kind]).mock(side_effect=[
        replay(f"{recording}.json", headers=JSON)[0], replay(f"{recording}.sse")[0]])
    whole = await complete(provider, req)
    streamed = await collect(provider, req)
    assert answer(whole) == answer(streamed)
    # Usage comes last on both paths, exactly once.
    assert [type(c) for c in whole].count(Usage) == 1
    assert whole[-1] == streamed[-1]
    assert isinstance(whole[-1], Usage)


async def test_anthropic_parallel_tools_match_the_stream(providers, upstream, replay, complete,
                                                         collect) -> None:
    """The non-streamed form of anthropic_parallel_tools.sse: two tool_use blocks, the
    second without arguments (``{}`` on both paths), cache creation counted as prompt."""
    payload = {
        "model": "claude-sonnet-4-5-20250929", "id": "msg_01Vb6TnQ2wLx9KcR4zHpMf7J",
        "type": "message", "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look up both for you."},
            {"type": "tool_use", "id": "toolu_01Pq3WzM8kNc5VxT1bHs6LgD",
             "name": "get_weather", "input": {"location": "東京"}},
            {"type": "tool_use", "id": "toolu_01Rt7YcK2mQw9ZbN4xVs3HjF",
             "name": "get_current_time", "input": {}},
        ],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 423, "cache_creation_input_tokens": 1268,
                  "cache_read_input_tokens": 0, "output_tokens": 97},
    }
    upstream.post(ANTHROPIC_URL).mock(side_effect=[
        httpx.Response(200, json=payload), replay("anthropic_parallel_tools.sse")[0]])
    whole = await complete(providers["anthropic"], REQS["anthropic"])
    assert whole == [
        TextDelta("Let me look up both for you."),
        ToolCallDelta(0, id="toolu_01Pq3WzM8kNc5VxT1bHs6LgD", name="get_weather",
                      arguments='{"location":"東京"}'),
        ToolCallDelta(1, id="toolu_01Rt7YcK2mQw9ZbN4xVs3HjF", name="get_current_time",
                      arguments="{}"),
        Finish("tool_calls"),
        Usage(prompt_tokens=423 + 1268, completion_tokens=97, cached_tokens=0,
              cache_creation_tokens=1268),
    ]
    assert answer(whole) == answer(await collect(providers["anthropic"], REQS["anthropic"]))


async def test_anthropic_ignores_thinking_and_joins_text_blocks(providers, upstream,
                                                                complete) -> None:
    payload = {"type": "message", "role": "assistant", "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "abc"},
        {"type": "text", "text": "Deux "},
        {"type": "redacted_thinking", "data": "xyz"},
        {"type": "text", "text": "blocs."},
    ], "stop_reason": "max_tokens", "usage": {"input_tokens": 5, "output_tokens": 9}}
    upstream.post(ANTHROPIC_URL).mock(return_value=httpx.Response(200, json=payload))
    assert await complete(providers["anthropic"], REQS["anthropic"]) == [
        TextDelta("Deux blocs."), Finish("length"), Usage(prompt_tokens=5, completion_tokens=9)]


@pytest.mark.parametrize(("stop_reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"),
    ("max_tokens", "length"), ("model_context_window_exceeded", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter"), ("brand_new_reason", "stop"),
])
async def test_anthropic_stop_reasons(providers, upstream, complete, stop_reason,
                                      finish) -> None:
    payload = {"type": "message", "content": [], "stop_reason": stop_reason,
               "usage": {"input_tokens": 5, "output_tokens": 3}}
    upstream.post(ANTHROPIC_URL).mock(return_value=httpx.Response(200, json=payload))
    assert await complete(providers["anthropic"], REQS["anthropic"]) == [
        Finish(finish), Usage(prompt_tokens=5, completion_tokens=3)]


async def test_anthropic_without_usage_or_stop_reason(providers, upstream, complete) -> None:
    payload = {"type": "message", "content": [{"type": "text", "text": "ok"}]}
    upstream.post(ANTHROPIC_URL).mock(return_value=httpx.Response(200, json=payload))
    assert await complete(providers["anthropic"], REQS["anthropic"]) == [TextDelta("ok")]


@pytest.mark.parametrize(("reason", "finish"), [
    ("stop", "stop"), ("length", "length"), ("tool_calls", "tool_calls"),
    ("content_filter", "content_filter"), ("function_call", "tool_calls"),
    ("something_new", "stop"),
])
async def test_openai_finish_reasons(providers, upstream, complete, reason, finish) -> None:
    payload = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"},
                            "finish_reason": reason}]}
    upstream.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=payload))
    assert await complete(providers["openai"], REQS["openai"]) == [TextDelta("x"),
                                                                   Finish(finish)]


async def test_openai_choices_are_kept_apart_by_index(providers, upstream, complete) -> None:
    payload = {"object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "A"}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "f", "arguments": '{"a":1}'}},
            {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": ""}},
        ]}, "finish_reason": "tool_calls"},
    ], "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}}
    upstream.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=payload))
    assert await complete(providers["openai"], REQS["openai"]) == [
        TextDelta("A", 0), Finish("stop", 0),
        ToolCallDelta(0, id="call_1", name="f", arguments='{"a":1}', index=1),
        ToolCallDelta(1, id="call_2", name="g", arguments="", index=1),
        Finish("tool_calls", 1),
        Usage(prompt_tokens=10, completion_tokens=4),
    ]


async def test_openai_without_usage_yields_no_usage(providers, upstream, complete) -> None:
    payload = {"choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}],
               "usage": None}
    upstream.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=payload))
    assert await complete(providers["openai"], REQS["openai"]) == [TextDelta("hi"),
                                                                   Finish("stop")]


async def test_together_older_shapes(providers, upstream, complete) -> None:
    """Completion-style ``text`` choices and a top-level ``finish_reason``."""
    payload = {"choices": [{"index": 0, "text": "Hi"}], "finish_reason": "eos",
               "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    upstream.post(TOGETHER_URL).mock(return_value=httpx.Response(200, json=payload))
    assert await complete(providers["together"], REQS["together"]) == [
        TextDelta("Hi"), Finish("stop"), Usage(prompt_tokens=3, completion_tokens=1)]


@pytest.mark.parametrize("split", SPLITS)
async def test_upstream_that_gzips_anyway(providers, upstream, replay, fixture_bytes, complete,
                                          split) -> None:
    """We ask for identity; an upstream that compresses regardless is still decoded."""
    response, body = replay(gzip.compress(fixture_bytes("openai_text.json")), split,
                            headers={**JSON, "content-encoding": "gzip"})
    upstream.post(OPENAI_URL).mock(return_value=response)
    assert await complete(providers["openai"], REQS["openai"]) == RECORDED["openai_text"][1]
    assert body.closed


async def test_undecodable_body_is_a_protocol_error(providers, upstream, replay,
                                                    complete) -> None:
    upstream.post(OPENAI_URL).mock(return_value=replay(
        b"not gzip at all", headers={**JSON, "content-encoding": "gzip"})[0])
    with pytest.raises(UpstreamProtocolError) as info:
        await complete(providers["openai"], REQS["openai"])
    assert isinstance(info.value.__cause__, httpx.DecodingError)


# ---------------------------------------------------------------------------------------
# 2. The request sent upstream


async def test_openai_request(transport, upstream, replay, complete, collect) -> None:
    config = ProviderConfig(name="local", kind="openai", base_url="http://vllm.internal:8000/v1/",
                            api_key="sk-local", connect_timeout=2.5, read_timeout=30.0,
                            headers={"OpenAI-Organization": "org-1"})
    provider = OpenAIProvider(config, transport)
    route = upstream.post("http://vllm.internal:8000/v1/chat/completions").mock(side_effect=[
        replay("openai_text.json", headers=JSON)[0], replay("openai_text.sse")[0]])
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    req = ChatRequest(model="llama-3", messages=messages,
                      params={"temperature": 1.5, "stop": ["\n\n"], "n": 2, "seed": 7},
                      extra={"logit_bias": {"50256": -100},
                             "stream_options": {"include_obfuscation": False}, "stream": True})
    await complete(provider, req)
    await collect(provider, req)
    whole, streamed = (call.request for call in route.calls)

    # stream false, and no stream_options even though the client sent some.
    assert json.loads(whole.content) == {
        "model": "llama-3", "messages": messages, "temperature": 1.5, "stop": ["\n\n"], "n": 2,
        "seed": 7, "logit_bias": {"50256": -100}, "stream": False}
    assert b'"stream":false' in whole.content
    assert whole.method == streamed.method == "POST"
    assert whole.url == streamed.url == "http://vllm.internal:8000/v1/chat/completions"
    assert whole.headers.get_list("accept") == ["application/json"]
    assert whole.headers["content-type"] == "application/json"
    assert whole.headers["authorization"] == "Bearer sk-local"
    assert whole.headers["openai-organization"] == "org-1"
    assert whole.headers["x-client-request-id"] == "req_test_1"
    assert whole.headers["accept-encoding"] == "identity"
    assert whole.headers["user-agent"] == "llm-gateway"
    assert whole.extensions["timeout"] == streamed.extensions["timeout"] == {
        "connect": 2.5, "read": 30.0, "write": 30.0, "pool": 2.5}
    # Only accept differs from the streamed call's headers (and the body's length).
    assert streamed.headers.get_list("accept") == ["text/event-stream"]
    assert same_headers_but_accept(whole, streamed)
    assert json.loads(streamed.content)["stream"] is True


async def test_openai_configured_accept_wins(transport, upstream, replay, complete) -> None:
    config = ProviderConfig(name="o", kind="openai", api_key="k", headers={"Accept": "*/*"})
    route = upstream.post(OPENAI_URL).mock(
        return_value=replay("openai_text.json", headers=JSON)[0])
    await complete(OpenAIProvider(config, transport), REQS["openai"])
    assert route.calls.last.request.headers.get_list("accept") == ["*/*"]


async def test_openai_stream_options_disabled_and_no_key(transport, upstream, replay,
                                                         complete) -> None:
    config = ProviderConfig(name="ollama", kind="openai", base_url="http://localhost:11434/v1",
                            options={"stream_options": False})
    route = upstream.post("http://localhost:11434/v1/chat/completions").mock(
        return_value=replay("openai_text.json", headers=JSON)[0])
    await complete(OpenAIProvider(config, transport), REQS["openai"])
    request = route.calls.last.request
    assert json.loads(request.content) == {
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Salut ?"}],
        "stream": False}
    assert "authorization" not in request.headers


async def test_together_request(providers, upstream, replay, complete, collect) -> None:
    route = upstream.post(TOGETHER_URL).mock(side_effect=[
        replay("together_text.json", headers=JSON)[0], replay("together_text.sse")[0]])
    await complete(providers["together"], REQS["together"])
    await collect(providers["together"], REQS["together"])
    whole, streamed = (call.request for call in route.calls)
    assert json.loads(whole.content) == {
        "model": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "messages": [{"role": "user", "content": "Bonjour ?"}], "n": 1, "stream": False}
    assert whole.url == streamed.url == TOGETHER_URL
    assert whole.headers.get_list("accept") == ["application/json"]
    assert whole.headers["authorization"] == "Bearer tg-key"
    assert whole.headers["x-client-request-id"] == "req_test_1"
    assert whole.headers["accept-encoding"] == "identity"
    assert whole.headers["user-agent"] == "llm-gateway"


async def test_anthropic_request(providers, upstream, replay, complete, collect) -> None:
    route = upstream.post(ANTHROPIC_URL).mock(side_effect=[
        replay("anthropic_text.json", headers=JSON)[0], replay("anthropic_text.sse")[0]])
    req = ChatRequest(model="claude-sonnet-4-5",
                      messages=[{"role": "system", "content": "Sois bref."},
                                {"role": "user", "content": "Salut ?"}],
                      params={"temperature": 0.5, "max_tokens": 100},
                      extra={"stream_options": {"include_usage": True}, "stream": True,
                             "top_k": 5})
    await complete(providers["anthropic"], req)
    await collect(providers["anthropic"], req)
    whole, streamed = (call.request for call in route.calls)
    assert json.loads(whole.content) == {
        "model": "claude-sonnet-4-5", "max_tokens": 100, "system": "Sois bref.",
        "messages": [{"role": "user", "content": "Salut ?"}], "temperature": 0.5,
        "top_k": 5, "stream": False}
    assert {**json.loads(streamed.content), "stream": False} == json.loads(whole.content)
    assert whole.method == streamed.method == "POST"
    assert whole.url == streamed.url == ANTHROPIC_URL
    assert whole.headers.get_list("accept") == ["application/json"]
    assert whole.headers["content-type"] == "application/json"
    assert whole.headers["x-api-key"] == "sk-ant-test"
    assert whole.headers["anthropic-version"] == "2023-06-01"
    assert whole.headers["accept-encoding"] == "identity"
    assert whole.headers["user-agent"] == "llm-gateway"
    assert "authorization" not in whole.headers
    assert streamed.headers.get_list("accept") == ["text/event-stream"]
    assert same_headers_but_accept(whole, streamed)


async def test_anthropic_bad_input_sends_nothing(providers, upstream, complete) -> None:
    route = upstream.post(ANTHROPIC_URL)
    req = ChatRequest(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "x"}],
                      params={"temperature": 1.5})
    with pytest.raises(UpstreamBadRequest) as info:
        await complete(providers["anthropic"], req)
    assert info.value.param == "temperature"
    assert not route.called


# ---------------------------------------------------------------------------------------
# 3. Errors: the same typed errors as the streaming path


ERROR_CASES = [
    # (provider, status, recording, headers, class, param, retry_after)
    ("openai", 400, "openai_error_400.json", {}, UpstreamBadRequest, "temperature", None),
    ("openai", 401, "openai_error_401.json", {}, UpstreamAuthError, None, None),
    ("openai", 403, "openai_error_401.json", {}, UpstreamAuthError, None, None),
    ("openai", 404, "openai_error_404.json", {}, UpstreamNotFound, None, None),
    ("openai", 422, "openai_error_400.json", {}, UpstreamBadRequest, "temperature", None),
    ("openai", 429, "openai_error_429.json", {"retry-after": "3"}, UpstreamRateLimited, None,
     3.0),
    ("openai", 429, "openai_error_429.json", {"retry-after-ms": "161", "retry-after": "1"},
     UpstreamRateLimited, None, 0.161),
    ("openai", 500, "openai_error_500.json", {}, UpstreamUnavailable, None, None),
    ("openai", 502, "openai_error_500.json", {}, UpstreamUnavailable, None, None),
    ("openai", 503, "openai_error_500.json", {}, UpstreamUnavailable, None, None),
    ("openai", 529, "openai_error_500.json", {}, UpstreamUnavailable, None, None),
    ("openai", 504, "openai_error_500.json", {}, UpstreamTimeout, None, None),
    ("anthropic", 400, "anthropic_error_400.json", {}, UpstreamBadRequest, None, None),
    ("anthropic", 401, "anthropic_error_401.json", {}, UpstreamAuthError, None, None),
    ("anthropic", 429, "anthropic_error_429.json", {"retry-after": "17"}, UpstreamRateLimited,
     None, 17.0),
    ("anthropic", 529, "anthropic_error_529.json", {}, UpstreamUnavailable, None, None),
    ("anthropic", 500, "anthropic_error_529.json", {}, UpstreamUnavailable, None, None),
    ("anthropic", 504, "anthropic_error_529.json", {}, UpstreamTimeout, None, None),
    ("together", 404, "together_error_404.json", {}, UpstreamNotFound, None, None),
]


def same_error(a: ProviderError, b: ProviderError) -> None:
    assert type(a) is type(b)
    assert (a.message, a.param, a.retry_after, a.upstream_status, a.status, a.code) == (
        b.message, b.param, b.retry_after, b.upstream_status, b.status, b.code)


@pytest.mark.parametrize(("kind", "status", "recording", "headers", "cls", "param",
                          "retry_after"), ERROR_CASES)
async def test_http_errors_are_typed_like_the_stream(providers, upstream, fixture_bytes,
                                                     complete, collect, kind, status,
                                                     recording, headers, cls, param,
                                                     retry_after) -> None:
    upstream.post(URLS[kind]).mock(side_effect=fresh(status, fixture_bytes(recording),
                                                     {**JSON, **headers}))
    with pytest.raises(cls) as whole:
        await complete(providers[kind], REQS[kind])
    error = whole.value
    assert type(error) is cls
    assert error.param == param
    assert error.retry_after == pytest.approx(retry_after)
    assert error.upstream_status == status
    assert error.message.startswith(f"upstream {kind!r}")
    with pytest.raises(cls) as streamed:
        await collect(providers[kind], REQS[kind])
    same_error(error, streamed.value)


@pytest.mark.parametrize(("kind", "recording", "relayed"), [
    ("openai", "openai_error_400.json", "Invalid type for 'temperature'"),
    ("anthropic", "anthropic_error_400.json", "max_tokens: 100000 > 64000"),
    ("together", "together_error_404.json", "Unable to access model"),
])
async def test_http_error_messages_are_relayed(providers, upstream, fixture_bytes, complete,
                                               kind, recording, relayed) -> None:
    status = 404 if "404" in recording else 400
    upstream.post(URLS[kind]).mock(return_value=httpx.Response(
        status, content=fixture_bytes(recording), headers=JSON))
    with pytest.raises(ProviderError) as info:
        await complete(providers[kind], REQS[kind])
    assert relayed in info.value.message


@pytest.mark.parametrize(("kind", "recording"), [
    ("openai", "openai_error_401.json"), ("anthropic", "anthropic_error_401.json")])
async def test_auth_error_does_not_leak_the_upstream_message(providers, upstream,
                                                             fixture_bytes, complete, kind,
                                                             recording) -> None:
    upstream.post(URLS[kind]).mock(return_value=httpx.Response(
        401, content=fixture_bytes(recording), headers=JSON))
    with pytest.raises(UpstreamAuthError) as info:
        await complete(providers[kind], REQS[kind])
    assert "sk-proj" not in info.value.message
    assert "invalid x-api-key" not in info.value.message
    assert "api_key" in info.value.message


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_html_error_page_still_maps_by_status(providers, upstream, complete,
                                                    kind) -> None:
    upstream.post(URLS[kind]).mock(return_value=httpx.Response(
        502, html="<html><body>502 Bad Gateway</body></html>"))
    with pytest.raises(UpstreamUnavailable, match="502 Bad Gateway") as info:
        await complete(providers[kind], REQS[kind])
    assert info.value.upstream_status == 502


# A 200 whose JSON body is an error object: typed by the error's own type / code.
ERRORS_WITH_200 = [
    ("openai", b'{"error": {"message": "model overloaded", "type": "server_error"}}',
     UpstreamUnavailable, "model overloaded"),
    ("openai", b'{"error": {"message": "Rate limit", "type": "tokens",'
     b' "code": "rate_limit_exceeded"}}', UpstreamRateLimited, "Rate limit"),
    ("openai", b'{"error": {"object": "error", "message": "context too long",'
     b' "type": "BadRequestError", "param": null, "code": 400}}',
     UpstreamBadRequest, "context too long"),
    ("openai", b'{"error": "plain text error"}', ProviderError, "plain text error"),
    ("together", b'{"error": {"message": "bad", "type": "invalid_request_error",'
     b' "param": "tools"}}', UpstreamBadRequest, "bad"),
    ("anthropic", b'{"type": "error", "error": {"type": "overloaded_error",'
     b' "message": "Overloaded"}}', UpstreamUnavailable, "Overloaded"),
    ("anthropic", b'{"type": "error", "error": {"type": "rate_limit_error",'
     b' "message": "slow down"}}', UpstreamRateLimited, "slow down"),
    ("anthropic", b'{"type": "error", "error": {"type": "invalid_request_error",'
     b' "message": "nope"}}', UpstreamBadRequest, "nope"),
]


@pytest.mark.parametrize(("kind", "body", "cls", "message"), ERRORS_WITH_200)
async def test_json_error_with_200_status(providers, upstream, complete, collect, kind, body,
                                          cls, message) -> None:
    upstream.post(URLS[kind]).mock(side_effect=fresh(200, body, JSON))
    with pytest.raises(cls, match=message) as whole:
        await complete(providers[kind], REQS[kind])
    assert type(whole.value) is cls
    with pytest.raises(cls) as streamed:  # the stream path sees the same JSON answer
        await collect(providers[kind], REQS[kind])
    same_error(whole.value, streamed.value)


@pytest.mark.parametrize(("kind", "recording", "cls"), [
    ("openai", "openai_error_400.json", UpstreamBadRequest),
    ("openai", "openai_error_429.json", UpstreamRateLimited),
    ("openai", "openai_error_500.json", UpstreamUnavailable),
    ("anthropic", "anthropic_error_400.json", UpstreamBadRequest),
    ("anthropic", "anthropic_error_401.json", UpstreamAuthError),
    ("anthropic", "anthropic_error_429.json", UpstreamRateLimited),
    ("anthropic", "anthropic_error_529.json", UpstreamUnavailable),
])
async def test_recorded_error_bodies_with_200_status(providers, upstream, fixture_bytes,
                                                     complete, kind, recording, cls) -> None:
    upstream.post(URLS[kind]).mock(return_value=httpx.Response(
        200, content=fixture_bytes(recording), headers=JSON))
    with pytest.raises(cls) as info:
        await complete(providers[kind], REQS[kind])
    assert type(info.value) is cls
    assert info.value.upstream_status is None


NOT_AN_ANSWER = {
    "not json": b"not json",
    "empty": b"",
    "html": b"<html><body>Welcome to nginx!</body></html>",
    "array": b'[{"choices": []}]',
    "string": b'"hello"',
    "null": b"null",
    "number": b"42",
    "truncated": b'{"id": "chatcmpl-1", "choices": [',
}


@pytest.mark.parametrize("kind", ["openai", "anthropic", "together"])
@pytest.mark.parametrize("body", list(NOT_AN_ANSWER.values()), ids=list(NOT_AN_ANSWER))
async def test_200_that_is_not_a_json_object(providers, upstream, complete, kind,
                                             body) -> None:
    upstream.post(URLS[kind]).mock(return_value=httpx.Response(200, content=body,
                                                               headers=JSON))
    with pytest.raises(UpstreamProtocolError) as info:
        await complete(providers[kind], REQS[kind])
    assert type(info.value) is UpstreamProtocolError
    assert info.value.message.startswith(f"upstream {kind!r}: expected a JSON object")


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_an_event_stream_instead_of_json(providers, upstream, replay, complete,
                                               kind) -> None:
    """An upstream that ignores ``stream: false`` and streams anyway."""
    upstream.post(URLS[kind]).mock(return_value=replay(f"{kind}_text.sse")[0])
    with pytest.raises(UpstreamProtocolError):
        await complete(providers[kind], REQS[kind])


@pytest.mark.parametrize("kind", ["openai", "together"])
@pytest.mark.parametrize("payload", [
    {"id": "chatcmpl-1", "object": "chat.completion"},
    {"choices": None},
    {"choices": {"index": 0}},
    {"object": "error", "message": "flat vLLM error with 200", "code": 400},
], ids=["no choices", "null choices", "object choices", "flat error"])
async def test_openai_body_without_choices(providers, upstream, complete, kind,
                                           payload) -> None:
    upstream.post(URLS[kind]).mock(return_value=httpx.Response(200, json=payload))
    with pytest.raises(UpstreamProtocolError, match="without choices"):
        await complete(providers[kind], REQS[kind])


@pytest.mark.parametrize("payload", [
    {"id": "msg_1", "role": "assistant", "content": [{"type": "text", "text": "hi"}]},
    {"type": "completion", "content": [{"type": "text", "text": "hi"}]},
    {"type": "message", "content": "hi"},
    {"type": "message"},
], ids=["no type", "other type", "string content", "no content"])
async def test_anthropic_body_that_is_not_a_message(providers, upstream, complete,
                                                    payload) -> None:
    upstream.post(ANTHROPIC_URL).mock(return_value=httpx.Response(200, json=payload))
    with pytest.raises(UpstreamProtocolError, match="expected a message"):
        await complete(providers["anthropic"], REQS["anthropic"])


@pytest.mark.parametrize(("kind", "recording"), [
    ("openai", "anthropic_text.json"), ("together", "anthropic_tools.json"),
    ("anthropic", "openai_text.json"), ("anthropic", "together_text.json"),
])
async def test_the_other_apis_answer_is_a_protocol_error(providers, upstream, fixture_bytes,
                                                         complete, kind, recording) -> None:
    """A base_url pointing at the wrong kind of upstream."""
    upstream.post(URLS[kind]).mock(return_value=httpx.Response(
        200, content=fixture_bytes(recording), headers=JSON))
    with pytest.raises(UpstreamProtocolError):
        await complete(providers[kind], REQS[kind])


@pytest.mark.parametrize("kind", ["openai", "anthropic", "together"])
@pytest.mark.parametrize(("exc", "cls"), [
    (httpx.ConnectError("connection refused"), UpstreamUnavailable),
    (httpx.ConnectTimeout("connect timed out"), UpstreamTimeout),
    (httpx.ReadTimeout("no first byte"), UpstreamTimeout),
    (httpx.PoolTimeout("pool exhausted"), UpstreamTimeout),
    (httpx.RemoteProtocolError("server disconnected"), UpstreamUnavailable),
    (httpx.UnsupportedProtocol("ftp?"), ProviderError),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None)
async def test_transport_errors(providers, upstream, complete, kind, exc, cls) -> None:
    upstream.post(URLS[kind]).mock(side_effect=exc)
    with pytest.raises(cls) as info:
        await complete(providers[kind], REQS[kind])
    assert type(info.value) is cls
    assert info.value.__cause__ is exc
    assert URLS[kind] not in info.value.message  # base URLs can be internal


@pytest.mark.parametrize("kind", ["openai", "anthropic", "together"])
@pytest.mark.parametrize(("exc", "cls", "cause"), [
    (httpcore.ReadTimeout("read timed out"), UpstreamTimeout, httpx.ReadTimeout),
    (httpcore.ReadError("connection reset"), UpstreamUnavailable, httpx.ReadError),
    (httpcore.RemoteProtocolError("peer closed connection"), UpstreamUnavailable,
     httpx.RemoteProtocolError),
], ids=["ReadTimeout", "ReadError", "RemoteProtocolError"])
async def test_transport_errors_while_reading_the_body(providers, upstream, replay, complete,
                                                       kind, exc, cls, cause) -> None:
    response, body = replay(f"{kind}_text.json", "awkward", headers=JSON, fail_at=100,
                            error=exc)
    upstream.post(URLS[kind]).mock(return_value=response)
    with pytest.raises(cls) as info:
        await complete(providers[kind], REQS[kind])
    assert type(info.value) is cls
    assert isinstance(info.value.__cause__, cause)
    assert body.closed


async def test_transport_error_while_reading_an_error_body(providers, upstream, replay,
                                                           complete) -> None:
    response, body = replay("openai_error_429.json", "awkward", status=429, headers=JSON,
                            fail_at=10,
                            error=httpcore.ReadError("reset"))
    upstream.post(OPENAI_URL).mock(return_value=response)
    with pytest.raises(UpstreamUnavailable):
        await complete(providers["openai"], REQS["openai"])
    assert body.closed


# ---------------------------------------------------------------------------------------
# 4. The demo provider: the same chunks as its stream


@pytest.fixture
def demo() -> DemoProvider:
    return DemoProvider(ProviderConfig(name="demo", kind="demo", options={"delay_ms": 0}), None)


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}


@pytest.mark.parametrize(("text", "params"), [
    ("What is a gateway?", {}),
    ("Hi", {"max_tokens": 3}),
    ("Hi", {"stop": ["demo"]}),
    ("Hi", {"n": 2, "max_tokens": 2}),
    ("What's the weather in San Francisco?", {"tools": [WEATHER_TOOL]}),
    ("What's the weather in Lyon?", {"tools": [WEATHER_TOOL], "n": 2}),
    ("weather?", {"tools": [WEATHER_TOOL], "tool_choice": "none"}),
], ids=["text", "max_tokens", "stop", "n", "tool", "tool n", "tool_choice none"])
async def test_demo_complete_is_its_stream(demo, complete, collect, text, params) -> None:
    req = ChatRequest(model="demo", messages=[{"role": "system", "content": "Be nice."},
                                              {"role": "user", "content": text}],
                      params=params)
    whole = await complete(demo, req)
    assert whole == await collect(demo, req)
    assert isinstance(whole[-1], Usage)
    assert not whole[-1].estimated


async def test_demo_complete_exact_chunks(demo, complete) -> None:
    req = ChatRequest(model="demo", messages=[{"role": "user", "content": "Hi"}],
                      params={"max_tokens": 3})
    assert await complete(demo, req) == [
        TextDelta("Hello!"), TextDelta(" I'm"), TextDelta(" the"), Finish("length"),
        Usage(prompt_tokens=1, completion_tokens=3)]


@pytest.mark.parametrize("body", [
    b'{"choices":[null]}',
    b'{"choices":[{"index":0,"message":"text","finish_reason":"stop"}]}',
    b'{"choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"stop"}],"usage":7}',
])
async def test_malformed_openai_shapes_are_protocol_errors(upstream, transport, ctx,
                                                           body: bytes) -> None:
    from providers.errors import UpstreamProtocolError
    from providers.openai import OpenAIProvider

    provider = OpenAIProvider(ProviderConfig(name="up", kind="openai",
                                             base_url="https://up.example/v1"), transport)
    upstream.post("https://up.example/v1/chat/completions").mock(
        return_value=httpx.Response(200, content=body,
                                    headers={"content-type": "application/json"}))
    with pytest.raises(UpstreamProtocolError, match="unexpected completion body"):
        await provider.complete_chat(ChatRequest(model="m", messages=[
            {"role": "user", "content": "hi"}]), ctx)
