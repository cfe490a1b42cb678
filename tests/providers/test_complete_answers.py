"""complete_chat answers, replayed at the HTTP boundary (respx): the exact chunks of each
recorded ``*.json`` answer, the same answer as its ``*.sse`` recording, and the demo
provider's answer equal to its stream."""

from __future__ import annotations

import gzip

import httpx
import pytest

from providers.base import (
    ChatRequest,
    Finish,
    ProviderConfig,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from providers.demo import DemoProvider
from providers.errors import (
    UpstreamProtocolError,
)
from tests.providers.completion import (
    ANTHROPIC_URL,
    JSON,
    OPENAI_URL,
    RECORDED,
    REQS,
    SPLITS,
    TOGETHER_URL,
    URLS,
    answer,
)


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


async def test_anthropic_thinking_is_reasoning_and_text_blocks_join(providers, upstream,
                                                                    complete) -> None:
    payload = {"type": "message", "role": "assistant", "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "abc"},
        {"type": "text", "text": "Deux "},
        {"type": "redacted_thinking", "data": "xyz"},
        {"type": "text", "text": "blocs."},
    ], "stop_reason": "max_tokens", "usage": {"input_tokens": 5, "output_tokens": 9}}
    upstream.post(ANTHROPIC_URL).mock(return_value=httpx.Response(200, json=payload))
    # The signature and the redacted thinking (opaque to anyone but Anthropic) go nowhere.
    assert await complete(providers["anthropic"], REQS["anthropic"]) == [
        ReasoningDelta("hmm"), TextDelta("Deux blocs."), Finish("length"),
        Usage(prompt_tokens=5, completion_tokens=9)]


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
