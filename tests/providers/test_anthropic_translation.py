"""OpenAI-shaped requests → the exact Anthropic Messages body sent upstream."""

from __future__ import annotations

import json

import httpx
import pytest

from providers.anthropic import AnthropicProvider
from providers.anthropic_request import build_anthropic_body
from providers.base import ChatRequest, ProviderConfig
from providers.errors import UpstreamBadRequest

URL = "https://api.anthropic.com/v1/messages"
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5"
       "ErkJggg==")
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a place.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}}}
TIME_TOOL = {"type": "function", "function": {"name": "get_current_time"}}


@pytest.fixture
def provider(transport: httpx.AsyncBaseTransport) -> AnthropicProvider:
    config = ProviderConfig(name="claude", kind="anthropic", api_key="k",
                            base_url="https://proxy.example/anthropic/")
    return AnthropicProvider(config, transport)


async def sent_body(provider, upstream, replay, collect, req: ChatRequest) -> dict:
    route = upstream.post("https://proxy.example/anthropic/v1/messages").mock(
        return_value=replay("anthropic_text.sse")[0])
    await collect(provider, req)
    return json.loads(route.calls.last.request.content)


async def test_full_conversation_translation(provider, upstream, replay, collect) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {"role": "user", "content": "Weather in Paris and Tokyo?"},
        {"role": "user", "content": [
            {"type": "text", "text": "Also, what is in these pictures?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg",
                                                "detail": "high"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_current_time", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18°C, sunny"},
        {"role": "tool", "tool_call_id": "call_2",
         "content": [{"type": "text", "text": "09:30"}]},
        {"role": "assistant", "content": "Paris: 18°C. Anything else?"},
        {"role": "user", "content": "No, merci."},
    ]
    req = ChatRequest(model="claude-sonnet-4-5", messages=messages, params={
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 300, "stop": ["END", "\n\nHuman:"],
        "tools": [WEATHER_TOOL, TIME_TOOL], "tool_choice": "auto", "parallel_tool_calls": False,
        "user": "user-42", "n": 1, "seed": 3},
        extra={"top_k": 40, "frequency_penalty": 0.5, "logprobs": True})

    assert await sent_body(provider, upstream, replay, collect, req) == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 300,
        "system": "You are terse.\n\nUse metric units.",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris and Tokyo?"},
                {"type": "text", "text": "Also, what is in these pictures?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": PNG}},
                {"type": "image", "source": {"type": "url",
                                             "url": "https://example.com/cat.jpg"}}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather",
                 "input": {"location": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_current_time", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18°C, sunny"},
                {"type": "tool_result", "tool_use_id": "call_2",
                 "content": [{"type": "text", "text": "09:30"}]}]},
            {"role": "assistant", "content": "Paris: 18°C. Anything else?"},
            {"role": "user", "content": "No, merci."},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END", "\n\nHuman:"],
        "tools": [
            {"name": "get_weather", "description": "Current weather for a place.",
             "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                              "required": ["location"]}},
            {"name": "get_current_time", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "user-42"},
        "top_k": 40,
        "stream": True,
    }


async def test_minimal_request_defaults_max_tokens(provider, upstream, replay, collect) -> None:
    req = ChatRequest(model="claude-haiku-4-5", messages=[{"role": "user", "content": "Hi"}])
    assert await sent_body(provider, upstream, replay, collect, req) == {
        "model": "claude-haiku-4-5", "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Hi"}], "stream": True}


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    req = ChatRequest(model="m", messages=[{"role": "user", "content": "Hi"}],
                      params={"max_tokens": 10}, extra={"max_completion_tokens": 20})
    body = build_anthropic_body(req)
    assert body["max_tokens"] == 20
    assert "max_completion_tokens" not in body


def test_default_max_tokens_is_configurable() -> None:
    req = ChatRequest(model="m", messages=[{"role": "user", "content": "Hi"}])
    assert build_anthropic_body(req, default_max_tokens=1024)["max_tokens"] == 1024


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    ("auto", None, {"type": "auto"}),
    ("required", None, {"type": "any"}),
    ("none", None, {"type": "none"}),
    ("none", False, {"type": "none"}),
    ({"type": "function", "function": {"name": "get_weather"}}, None,
     {"type": "tool", "name": "get_weather"}),
    ({"type": "function", "function": {"name": "get_weather"}}, False,
     {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    (None, True, None),
])
def test_tool_choice(choice, parallel, expected) -> None:
    params = {"tools": [WEATHER_TOOL]}
    if choice is not None:
        params["tool_choice"] = choice
    if parallel is not None:
        params["parallel_tool_calls"] = parallel
    body = build_anthropic_body(ChatRequest(model="m", messages=[], params=params))
    assert body.get("tool_choice") == expected


async def test_temperature_above_one_is_rejected_before_any_call(provider, upstream,
                                                                 collect) -> None:
    route = upstream.post("https://proxy.example/anthropic/v1/messages")
    req = ChatRequest(model="m", messages=[{"role": "user", "content": "Hi"}],
                      params={"temperature": 1.4})
    with pytest.raises(UpstreamBadRequest) as info:
        await collect(provider, req)
    assert info.value.param == "temperature"
    assert info.value.status == 400
    assert not route.called


@pytest.mark.parametrize(("messages", "params", "param"), [
    ([{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}],
     {}, "messages[0].tool_calls[0].function.arguments"),
    ([{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}],
     {}, "messages[0].tool_calls[0].function.arguments"),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
     {}, "messages[0].content[0].type"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}],
     {}, "messages[0].content[0].image_url.url"),
    ([{"role": "user", "content": [{"type": "image_url",
                                    "image_url": {"url": "data:image/png,notbase64"}}]}],
     {}, "messages[0].content[0].image_url.url"),
    ([{"role": "function", "name": "f", "content": "x"}], {}, "messages[0].role"),
    ([{"role": "user", "content": "x"}], {"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ([{"role": "user", "content": "x"}], {"temperature": -0.1}, "temperature"),
])
def test_untranslatable_requests_name_the_field(messages, params, param) -> None:
    with pytest.raises(UpstreamBadRequest) as info:
        build_anthropic_body(ChatRequest(model="m", messages=messages, params=params))
    assert info.value.param == param


def test_empty_text_is_dropped_and_cache_control_kept() -> None:
    req = ChatRequest(model="m", messages=[
        {"role": "system", "content": "Long prompt"},
        {"role": "user", "content": [
            {"type": "text", "text": ""},
            {"type": "text", "text": "Doc", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}])
    assert build_anthropic_body(req)["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "Doc", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "c", "name": "f", "input": {}}]}]


def test_tool_result_followed_by_user_text_share_one_message() -> None:
    req = ChatRequest(model="m", messages=[
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "user", "content": "Thanks, and now?"}])
    assert build_anthropic_body(req)["messages"] == [
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "42"},
            {"type": "text", "text": "Thanks, and now?"}]}]
