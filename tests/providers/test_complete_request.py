"""complete_chat: the request each provider sends upstream for a non-streamed call."""

from __future__ import annotations

import json

import pytest

from providers.base import (
    ChatRequest,
    ProviderConfig,
)
from providers.errors import (
    UpstreamBadRequest,
)
from providers.openai import OpenAIProvider
from tests.providers.completion import (
    ANTHROPIC_URL,
    JSON,
    OPENAI_URL,
    REQS,
    TOGETHER_URL,
    same_headers_but_accept,
)


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
