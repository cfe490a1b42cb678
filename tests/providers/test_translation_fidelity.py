"""Nothing that changes the answer is dropped silently (issue 18): structured output and
reasoning on Anthropic, thinking and DeepSeek-style reasoning back as ``ReasoningDelta``,
and what a provider drops named by ``dropped_params`` (or refused with a 400)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from providers.anthropic import AnthropicProvider
from providers.anthropic_request import THINKING_BUDGETS
from providers.base import (
    ChatRequest,
    Finish,
    ProviderConfig,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
    dropped_params,
)
from providers.errors import UpstreamBadRequest
from providers.openai import OpenAIProvider

URL = "https://api.anthropic.com/v1/messages"
OPENAI_URL = "https://api.openai.com/v1/chat/completions"
SPLITS = ["whole", "bytewise", "awkward"]
MESSAGES = [{"role": "user", "content": "Alice, Bob et Zoë vont à la fête vendredi."}]
SCHEMA = {"type": "object", "additionalProperties": False,
          "properties": {"name": {"type": "string"}, "date": {"type": "string"},
                         "participants": {"type": "array", "items": {"type": "string"}}},
          "required": ["name", "date", "participants"]}
JSON_SCHEMA = {"type": "json_schema",
               "json_schema": {"name": "CalendarEvent", "schema": SCHEMA, "strict": True}}
STRUCTURED = ChatRequest(model="claude-sonnet-4-5", messages=MESSAGES,
                         params={"response_format": JSON_SCHEMA})
# The pieces of the forced tool's input in anthropic_structured.sse, as they were cut.
PARTS = ['{"name": "F', 'ête de la sc', 'ience", "date": "vendr',
         'edi", "participants": ["Alice", "Bob", "Zo', 'ë"]}']
STRUCTURED_USAGE = Usage(prompt_tokens=486, completion_tokens=47, cached_tokens=0,
                         cache_creation_tokens=0)
THINKING = ["The user asks for 27 × 453. ", "27 × 453 = 27 × 400 + 27 × 53 = 10800 + 1431",
            " = 12231. Let me double-check: 453 × 27 = 12231. ✓"]
THINKING_USAGE = Usage(prompt_tokens=52, completion_tokens=118, cached_tokens=0,
                       cache_creation_tokens=0)


@pytest.fixture
def anthropic(transport: httpx.AsyncBaseTransport) -> AnthropicProvider:
    return AnthropicProvider(ProviderConfig(name="anthropic", kind="anthropic",
                                            api_key="sk-ant-test"), transport)


@pytest.fixture
def openai(transport: httpx.AsyncBaseTransport) -> OpenAIProvider:
    return OpenAIProvider(ProviderConfig(name="deepseek", kind="openai", api_key="sk-test"),
                          transport)


def sent(route: Any) -> dict[str, Any]:
    return json.loads(route.calls.last.request.content)


# -- structured output: a forced tool whose input is the answer ---------------------------

@pytest.mark.parametrize("split", SPLITS)
async def test_structured_output_stream(anthropic, upstream, replay, collect, split) -> None:
    route = upstream.post(URL).mock(return_value=replay("anthropic_structured.sse", split)[0])
    chunks = await collect(anthropic, STRUCTURED)
    # The tool's input_json_delta pieces are the content; a plain stop, no tool call.
    assert chunks == [*(TextDelta(p) for p in PARTS), Finish("stop"), STRUCTURED_USAGE]
    content = "".join(c.text for c in chunks if isinstance(c, TextDelta))
    assert json.loads(content) == {"name": "Fête de la science", "date": "vendredi",
                                   "participants": ["Alice", "Bob", "Zoë"]}
    body = sent(route)
    assert body["tools"] == [{"name": "CalendarEvent",
                              "description": "Respond with a JSON value matching this schema.",
                              "input_schema": SCHEMA}]
    assert body["tool_choice"] == {"type": "tool", "name": "CalendarEvent"}
    assert "response_format" not in body and "thinking" not in body


async def test_structured_output_whole(anthropic, upstream, fixture_bytes, complete) -> None:
    route = upstream.post(URL).mock(return_value=httpx.Response(
        200, content=fixture_bytes("anthropic_structured.json"),
        headers={"content-type": "application/json"}))
    chunks = await complete(anthropic, STRUCTURED)
    assert chunks == [TextDelta('{"name":"Fête de la science","date":"vendredi",'
                                '"participants":["Alice","Bob","Zoë"]}'),
                      Finish("stop"), STRUCTURED_USAGE]
    body = sent(route)
    assert body["stream"] is False
    assert body["tool_choice"] == {"type": "tool", "name": "CalendarEvent"}


async def test_json_object_is_an_open_object_tool(anthropic, upstream, replay,
                                                  collect) -> None:
    route = upstream.post(URL).mock(return_value=replay("anthropic_text.sse")[0])
    req = ChatRequest(model="claude", messages=MESSAGES,
                      params={"response_format": {"type": "json_object"}})
    await collect(anthropic, req)
    body = sent(route)
    assert body["tools"] == [{"name": "json_object", "description": "Respond with a JSON object.",
                              "input_schema": {"type": "object", "additionalProperties": True}}]
    assert body["tool_choice"] == {"type": "tool", "name": "json_object"}


async def test_text_response_format_changes_nothing(anthropic, upstream, replay,
                                                    collect) -> None:
    route = upstream.post(URL).mock(return_value=replay("anthropic_text.sse")[0])
    await collect(anthropic, ChatRequest(model="claude", messages=MESSAGES,
                                         params={"response_format": {"type": "text"}}))
    assert "tools" not in sent(route) and "tool_choice" not in sent(route)


async def test_a_caller_tool_is_still_a_tool_call_beside_no_schema(anthropic, upstream,
                                                                   replay, collect) -> None:
    # Without response_format, a tool named like a schema stays the caller's tool.
    upstream.post(URL).mock(return_value=replay("anthropic_structured.sse")[0])
    chunks = await collect(anthropic, ChatRequest(model="claude", messages=MESSAGES))
    assert chunks[0] == ToolCallDelta(0, id="toolu_01Jx8QmW3rT6yK2nV9cB5dLs",
                                      name="CalendarEvent")
    assert Finish("tool_calls") in chunks


# -- reasoning: extended thinking, back as ReasoningDelta ---------------------------------

@pytest.mark.parametrize("split", SPLITS)
async def test_thinking_stream(anthropic, upstream, replay, collect, split) -> None:
    route = upstream.post(URL).mock(return_value=replay("anthropic_thinking.sse", split)[0])
    req = ChatRequest(model="claude", messages=MESSAGES,
                      params={"reasoning_effort": "medium", "temperature": 0.2, "top_p": 0.5,
                              "max_tokens": 1000, "seed": 7})
    chunks = await collect(anthropic, req)
    # The signature_delta goes nowhere; reasoning never mixes into the text.
    assert chunks == [*(ReasoningDelta(t) for t in THINKING), TextDelta("27 × 453 = "),
                      TextDelta("**12 231**."), Finish("stop"), THINKING_USAGE]
    body = sent(route)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert body["max_tokens"] == 8192 + 1000  # above the budget, the answer's room kept
    for forbidden in ("temperature", "top_p", "top_k", "seed", "reasoning_effort"):
        assert forbidden not in body
    assert anthropic.dropped_params(req) == ("seed", "temperature", "top_p")


async def test_thinking_whole(anthropic, upstream, fixture_bytes, complete) -> None:
    upstream.post(URL).mock(return_value=httpx.Response(
        200, content=fixture_bytes("anthropic_thinking.json"),
        headers={"content-type": "application/json"}))
    req = ChatRequest(model="claude", messages=MESSAGES, params={"reasoning_effort": "low"})
    assert await complete(anthropic, req) == [
        ReasoningDelta("".join(THINKING)), TextDelta("27 × 453 = **12 231**."), Finish("stop"),
        THINKING_USAGE]


@pytest.mark.parametrize(("effort", "max_tokens", "sent_max", "thinking"), [
    ("minimal", None, 4096, {"type": "enabled", "budget_tokens": 1024}),
    ("low", 2048, 4096, {"type": "enabled", "budget_tokens": 2048}),
    ("medium", 20000, 20000, {"type": "enabled", "budget_tokens": 8192}),
    ("high", None, 16384 + 4096, {"type": "enabled", "budget_tokens": 16384}),
    ("none", 300, 300, None),
])
async def test_thinking_budgets(anthropic, upstream, replay, collect, effort, max_tokens,
                                sent_max, thinking) -> None:
    route = upstream.post(URL).mock(return_value=replay("anthropic_text.sse")[0])
    params: dict[str, Any] = {"reasoning_effort": effort, "temperature": 1, "top_p": 0.97}
    if max_tokens:
        params["max_completion_tokens"] = max_tokens
    req = ChatRequest(model="claude", messages=MESSAGES, params=params)
    await collect(anthropic, req)
    body = sent(route)
    assert body.get("thinking") == thinking
    assert body["max_tokens"] == sent_max
    # What thinking allows is sent: temperature 1, top_p from 0.95 up.
    assert (body["temperature"], body["top_p"]) == (1, 0.97)
    assert anthropic.dropped_params(req) == ()
    assert min(THINKING_BUDGETS.values()) >= 1024


async def test_callers_own_thinking_wins_and_its_limits_apply(anthropic, upstream, replay,
                                                              collect) -> None:
    route = upstream.post(URL).mock(return_value=replay("anthropic_text.sse")[0])
    req = ChatRequest(model="claude", messages=MESSAGES,
                      params={"reasoning_effort": "high", "temperature": 0.5},
                      extra={"thinking": {"type": "enabled", "budget_tokens": 3000},
                             "top_k": 5})
    await collect(anthropic, req)
    body = sent(route)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 3000}
    assert "top_k" not in body and "temperature" not in body
    assert anthropic.dropped_params(req) == ("reasoning_effort", "temperature", "top_k")

    # Thinking turned off by the caller's own setting: reasoning_effort is not used either.
    req = ChatRequest(model="claude", messages=MESSAGES, params={"reasoning_effort": "high"},
                      extra={"thinking": {"type": "disabled"}})
    route.mock(return_value=replay("anthropic_text.sse")[0])
    await collect(anthropic, req)
    assert sent(route)["thinking"] == {"type": "disabled"}
    assert anthropic.dropped_params(req) == ("reasoning_effort",)


# -- refused, with the parameter named -----------------------------------------------------

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {}}}}


@pytest.mark.parametrize(("params", "extra", "param"), [
    ({"tools": [TOOL], "response_format": JSON_SCHEMA}, {}, "response_format"),
    ({"reasoning_effort": "low", "tools": [TOOL], "tool_choice": "required"}, {},
     "reasoning_effort"),
    ({"reasoning_effort": "high", "response_format": {"type": "json_object"}}, {},
     "reasoning_effort"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
     {"thinking": {"type": "enabled", "budget_tokens": 2000}}, "thinking"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "n", "schema": {"type": "array"}}}}, {}, "response_format.json_schema.schema"),
    ({}, {"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
    ({}, {"modalities": ["text", "audio"]}, "modalities"),
    ({}, {"functions": [{"name": "f"}]}, "functions"),
    ({}, {"function_call": "auto"}, "function_call"),
    ({}, {"web_search_options": {}}, "web_search_options"),
])
async def test_refused_before_sending(anthropic, upstream, collect, params, extra,
                                      param) -> None:
    route = upstream.post(URL)
    with pytest.raises(UpstreamBadRequest) as caught:
        await collect(anthropic, ChatRequest(model="claude", messages=MESSAGES,
                                             params=params, extra=extra))
    assert caught.value.param == param
    assert not route.called


# -- dropped, and named --------------------------------------------------------------------

async def test_dropped_params_are_named_in_a_stable_order(anthropic, openai, upstream, replay,
                                                          collect) -> None:
    route = upstream.post(URL).mock(return_value=replay("anthropic_text.sse")[0])
    req = ChatRequest(model="claude", messages=MESSAGES,
                      params={"seed": 1, "top_logprobs": 2, "logprobs": True,
                              "presence_penalty": 0.5, "frequency_penalty": 0.1,
                              "logit_bias": {"50256": -100}, "temperature": 0.3},
                      extra={"store": True, "service_tier": "auto"})
    await collect(anthropic, req)
    body = sent(route)
    assert body["temperature"] == 0.3  # no thinking: kept
    for name in ("seed", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty",
                 "logit_bias", "store", "service_tier"):
        assert name not in body
    assert dropped_params(anthropic, req) == (
        "frequency_penalty", "logit_bias", "logprobs", "presence_penalty", "seed",
        "service_tier", "store", "top_logprobs")
    assert dropped_params(anthropic, ChatRequest(model="claude", messages=MESSAGES)) == ()
    assert dropped_params(openai, req) == ()  # an OpenAI-compatible upstream takes them all


# -- DeepSeek-style reasoning_content from an OpenAI-compatible upstream -------------------

DEEPSEEK_STREAM = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":""},'
    b'"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner",'
    b'"choices":[{"index":0,"delta":{"content":null,"reasoning_content":"Hmm, 2+2"},'
    b'"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner",'
    b'"choices":[{"index":0,"delta":{"content":" is 4.","reasoning_content":null},'
    b'"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner",'
    b'"choices":[{"index":0,"delta":{"content":"","reasoning_content":null},"logprobs":null,'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":20,'
    b'"total_tokens":30,"completion_tokens_details":{"reasoning_tokens":15}}}\n\n'
    b"data: [DONE]\n\n")


@pytest.mark.parametrize("split", SPLITS)
async def test_openai_compatible_reasoning_content(openai, upstream, replay, collect,
                                                   split) -> None:
    upstream.post(OPENAI_URL).mock(return_value=replay(DEEPSEEK_STREAM, split)[0])
    chunks = await collect(openai, ChatRequest(model="deepseek-reasoner", messages=MESSAGES))
    assert chunks == [ReasoningDelta("Hmm, 2+2"), TextDelta(" is 4."), Finish("stop"),
                      Usage(prompt_tokens=10, completion_tokens=20, reasoning_tokens=15)]


async def test_openai_compatible_reasoning_content_whole(openai, upstream, complete) -> None:
    upstream.post(OPENAI_URL).mock(return_value=httpx.Response(200, json={
        "id": "c1", "object": "chat.completion", "created": 1, "model": "deepseek-reasoner",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "4.",
                                             "reasoning_content": "2+2..."},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                  "completion_tokens_details": {"reasoning_tokens": 3}}}))
    req = ChatRequest(model="deepseek-reasoner", messages=MESSAGES)
    assert await complete(openai, req) == [
        ReasoningDelta("2+2..."), TextDelta("4."), Finish("stop"),
        Usage(prompt_tokens=10, completion_tokens=5, reasoning_tokens=3)]
