"""The OpenAI protocol end to end: the official SDK and raw bytes against the running gateway,
with each provider faked at the HTTP boundary by byte-exact recordings."""

from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest
import sqlalchemy as sa

from gateway.ratelimit.base import Limits
from storage.models import InferenceRequest
from tests.conftest import Account, register
from tests.servers import (
    FIXTURES,
    FakeUpstream,
    GatewayServer,
    Reply,
    recorded_openai,
    recording_events,
    wait_for,
)


def sdk(gateway: GatewayServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0,
                         _strict_response_validation=True, timeout=20)


def recorded_anthropic_text(name: str) -> str:
    out = []
    for line in (FIXTURES / name).read_text().splitlines():
        if line.startswith("data: "):
            event = json.loads(line[6:])
            delta = event.get("delta", {})
            if delta.get("type") == "text_delta":
                out.append(delta["text"])
    return "".join(out)


def stored(gateway: GatewayServer, user_id: str) -> list[InferenceRequest]:
    async def run() -> list[InferenceRequest]:
        await gateway.state.writer.flush()
        async with gateway.state.sessions() as session:
            rows = await session.exec(
                sa.select(InferenceRequest).where(InferenceRequest.user_id == uuid.UUID(user_id))
                .order_by(InferenceRequest.created_at))
            return list(rows.scalars().all())
    return gateway.run(run())


MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello in French"}]


def test_models_list_follows_the_plan(gateway: GatewayServer, account: Account) -> None:
    ids = {m.id for m in sdk(gateway, account.api_key).models.list().data}
    assert {"gateway-demo", "gpt-4o", "gpt-4o-mini", "claude-haiku", "llama-3-8b"} <= ids
    free = register(gateway.url)
    client = sdk(gateway, free.api_key)
    free_ids = {m.id for m in client.models.list().data}
    assert "gpt-4o-mini" in free_ids and "gpt-4o" not in free_ids
    assert client.models.retrieve("gateway-demo").owned_by == "demo"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_plain_completion_through_openai_upstream(gateway: GatewayServer, account: Account,
                                                  upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_text.json", split=7))
    recorded = json.loads((FIXTURES / "openai_text.json").read_bytes())
    text, usage = recorded["choices"][0]["message"]["content"], recorded["usage"]
    assert (text, usage) == recorded_openai("openai_text.sse")  # the same answer, streamed
    out = sdk(gateway, account.api_key).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, temperature=0.2, seed=7)
    assert out.object == "chat.completion" and out.model == "gpt-4o-mini"
    assert out.choices[0].message.content == text
    assert out.choices[0].finish_reason == "stop"
    assert out.usage.prompt_tokens == usage["prompt_tokens"]
    assert out.usage.completion_tokens == usage["completion_tokens"]
    sent = json.loads(upstream.received[-1].body)
    assert upstream.received[-1].path == "/v1/chat/completions"
    assert upstream.received[-1].headers["authorization"] == "Bearer sk-up"
    # Not streamed to the caller, not streamed from the upstream: one body each way.
    assert sent["model"] == "gpt-4o-mini" and sent["stream"] is False
    assert "stream_options" not in sent
    assert upstream.received[-1].headers["accept"] == "application/json"
    assert out.usage.prompt_tokens_details.cached_tokens == 1920
    assert sent["temperature"] == 0.2 and sent["seed"] == 7 and sent["messages"] == MESSAGES
    row = stored(gateway, account.user_id)[-1]
    assert (row.status, row.source, row.response) == ("completed", "v1", text)
    assert row.prompt_tokens == usage["prompt_tokens"] and not row.tokens_estimated
    assert row.messages == MESSAGES and row.provider == "fake-openai"


def test_streaming_with_and_without_usage(gateway: GatewayServer, account: Account,
                                          upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_text.sse", split=5))
    text, usage = recorded_openai("openai_text.sse")
    client = sdk(gateway, account.api_key)
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == usage["total_tokens"]
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1

    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                 stream=True))
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_raw_sse_framing(gateway: GatewayServer, account: Account,
                         upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_text.sse", split=3))
    r = httpx.post(gateway.url + "/v1/chat/completions",
                   headers={"Authorization": f"Bearer {account.api_key}"},
                   json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True,
                         "stream_options": {"include_usage": True}})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache" and r.headers["x-accel-buffering"] == "no"
    assert r.headers["x-ratelimit-limit-requests"] == "3000"
    body = r.content
    assert b"\r" not in body and b"event:" not in body
    assert body.endswith(b"data: [DONE]\n\n")
    events = body.split(b"\n\n")
    assert events[-1] == b""
    payloads = []
    for event in events[:-2]:
        assert event.startswith(b"data: ") and b"\n" not in event
        payloads.append(json.loads(event[6:]))
    assert {(p["id"], p["created"]) for p in payloads} == {(payloads[0]["id"],
                                                            payloads[0]["created"])}
    assert all(p["object"] == "chat.completion.chunk" for p in payloads)
    assert all("usage" in p for p in payloads)
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize(("model", "recording"), [
    ("gpt-4o-mini", "openai_tools.sse"),
    ("gpt-4o-mini", "openai_parallel_tools.sse"),
    ("claude-haiku", "anthropic_tools.sse"),
    ("claude-haiku", "anthropic_parallel_tools.sse"),
])
def test_streamed_tool_calls_concatenate_to_json(gateway: GatewayServer, account: Account,
                                                 upstream: FakeUpstream, model: str,
                                                 recording: str) -> None:
    upstream.script(Reply.recording(recording, split=11))
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]
    stream = sdk(gateway, account.api_key).chat.completions.create(
        model=model, stream=True, tools=tools, tool_choice="auto",
        messages=[{"role": "user", "content": "Weather in Paris and Tokyo?"}])
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                call = calls.setdefault(tc.index, {"id": None, "name": None, "args": ""})
                if tc.id:
                    assert call["id"] is None  # id and name only on the first fragment
                    call["id"], call["name"] = tc.id, tc.function.name
                call["args"] += tc.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert sorted(calls) == list(range(len(calls)))
    expected = 2 if "parallel" in recording else 1
    assert len(calls) == expected
    for call in calls.values():
        assert call["id"] and call["name"]
        assert isinstance(json.loads(call["args"]), dict)
    row = stored(gateway, account.user_id)[-1]
    assert row.finish_reason == "tool_calls" and len(row.tool_calls) == expected
    assert [json.loads(c["function"]["arguments"]) for c in row.tool_calls] == [
        json.loads(calls[i]["args"]) for i in sorted(calls)]


def test_non_streamed_tool_call_has_null_content(gateway: GatewayServer, account: Account,
                                                 upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_tools.json"))
    out = sdk(gateway, account.api_key).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[{"type": "function", "function": {"name": "get_weather"}}])
    message = out.choices[0].message
    assert message.content is None and out.choices[0].finish_reason == "tool_calls"
    call = message.tool_calls[0]
    assert (call.id, call.type, call.function.name) == (
        "call_Xk4pQ2rB7tNw9yHc3LmVs8eZ", "function", "get_weather")
    assert json.loads(call.function.arguments) == {"location": "Paris, France",
                                                   "unit": "celsius"}
    row = stored(gateway, account.user_id)[-1]
    assert row.tool_calls[0]["function"]["name"] == "get_weather"
    assert row.finish_reason == "tool_calls" and row.completion_tokens == 19


def test_anthropic_and_together_text(gateway: GatewayServer, account: Account,
                                     upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("anthropic_text.json", split=9))
    out = sdk(gateway, account.api_key).chat.completions.create(
        model="claude-haiku", messages=MESSAGES, max_tokens=100, stop=["\n\n"])
    assert out.choices[0].message.content == recorded_anthropic_text("anthropic_text.sse")
    assert out.choices[0].finish_reason == "stop"
    # Cache reads count as prompt tokens, the OpenAI way: 9 + 1850.
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (1859, 31)
    sent = json.loads(upstream.received[-1].body)
    assert sent["stream"] is False
    assert upstream.received[-1].path == "/v1/messages"
    assert sent["system"] == "Be brief." and sent["max_tokens"] == 100
    assert sent["stop_sequences"] == ["\n\n"] and sent["model"] == "claude-haiku-4-5"
    assert upstream.received[-1].headers["x-api-key"] == "sk-ant"

    upstream.script(Reply.recording("together_text.sse", split=4))
    chunks = list(sdk(gateway, account.api_key).chat.completions.create(
        model="llama-3-8b", messages=MESSAGES, stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"  # Together says "eos"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)

    upstream.script(Reply.recording("together_text.json"))
    out = sdk(gateway, account.api_key).chat.completions.create(
        model="llama-3-8b", messages=MESSAGES)
    assert out.choices[0].message.content == streamed == "Bonjour ! Ça va ? 日本語 👋🏽"
    assert out.choices[0].finish_reason == "stop" and out.usage.total_tokens == 58


def test_error_classes(gateway: GatewayServer, account: Account,
                       upstream: FakeUpstream) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(gateway, "gw-" + "x" * 43).chat.completions.create(model="gateway-demo",
                                                               messages=MESSAGES)
    client = sdk(gateway, account.api_key)
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="gateway-demo", messages=MESSAGES, temperature=3)
    assert bad.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="claude-haiku", messages=MESSAGES, n=2)
    assert bad.value.param == "n"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="gateway-demo",
                                       messages=[{"role": "user", "content": 5}])
    assert bad.value.param == "messages[0].content"

    upstream.script(Reply.recording("openai_error_429.json", status=429,
                                    content_type="application/json"))
    upstream.replies[0].headers["retry-after"] = "7"
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert limited.value.response.headers["retry-after"] == "7"

    upstream.script(Reply.recording("openai_error_500.json", status=500,
                                    content_type="application/json"))
    with pytest.raises(openai.InternalServerError) as down:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert down.value.status_code in (502, 503)

    upstream.script(Reply.recording("anthropic_error_overloaded.sse"))
    stream = client.chat.completions.create(model="claude-haiku", messages=MESSAGES,
                                            stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    rows = stored(gateway, account.user_id)
    assert rows[-1].status == "failed" and rows[-1].error


def test_mid_stream_error_is_one_event_then_done(gateway: GatewayServer, account: Account,
                                                 upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("anthropic_error_overloaded.sse"))
    r = httpx.post(gateway.url + "/v1/chat/completions",
                   headers={"Authorization": f"Bearer {account.api_key}"},
                   json={"model": "claude-haiku", "messages": MESSAGES, "stream": True})
    assert r.status_code == 200
    events = [e for e in r.content.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    error = json.loads(events[-2][6:])["error"]
    assert error["type"] and error["message"]
    assert sum(b'"error"' in e for e in events) == 1
    row = stored(gateway, account.user_id)[-1]
    assert row.status == "failed"
    assert row.response == recorded_anthropic_text("anthropic_error_overloaded.sse")


def test_client_disconnect_cancels_upstream_and_keeps_partial(
        gateway: GatewayServer, account: Account, upstream: FakeUpstream) -> None:
    events = recording_events("openai_text.sse")
    upstream.script(Reply.by_event("openai_text.sse", hang_after=3))
    with httpx.stream("POST", gateway.url + "/v1/chat/completions",
                      headers={"Authorization": f"Bearer {account.api_key}"},
                      json={"model": "gpt-4o-mini", "messages": MESSAGES,
                            "stream": True}) as r:
        seen = b""
        for piece in r.iter_bytes():
            seen += piece
            if seen.count(b"\n\n") >= 3:
                break
    assert wait_for(lambda: upstream.disconnects == 1), "upstream request was not cancelled"
    partial = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content") or ""
                      for e in events[:3])

    def cancelled_row() -> bool:
        rows = stored(gateway, account.user_id)
        return bool(rows) and rows[-1].status == "cancelled"
    assert wait_for(cancelled_row)
    row = stored(gateway, account.user_id)[-1]
    assert row.response == partial and row.time_to_first_token_ms is not None
    status = gateway.run(gateway.state.limiter.status(
        account.user_id, _limits(gateway, account)))
    assert status.concurrent_in_use == 0


def test_upstream_stall_times_out(gateway: GatewayServer, account: Account,
                                  upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_text.sse", hang_after=0))
    with pytest.raises(openai.APIStatusError) as err:
        sdk(gateway, account.api_key).chat.completions.create(model="gpt-4o-mini",
                                                              messages=MESSAGES)
    assert err.value.status_code == 504
    status = gateway.run(gateway.state.limiter.status(
        account.user_id, _limits(gateway, account)))
    assert status.concurrent_in_use == 0
    assert stored(gateway, account.user_id)[-1].status == "failed"


def test_demo_model_counts_tokens_offline(gateway: GatewayServer, account: Account) -> None:
    out = sdk(gateway, account.api_key).chat.completions.create(
        model="gateway-demo", messages=[{"role": "user", "content": "Hello there"}])
    again = sdk(gateway, account.api_key).chat.completions.create(
        model="gateway-demo", messages=[{"role": "user", "content": "Hello there"}])
    assert out.choices[0].message.content == again.choices[0].message.content
    assert out.usage.prompt_tokens > 0 and out.usage.completion_tokens > 0


def _limits(gateway: GatewayServer, account: Account) -> Limits:
    return Limits(requests_per_minute=3000, tokens_per_minute=10_000_000,
                  concurrent_requests=100)
