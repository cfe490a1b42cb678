"""POST /v1/messages and /v1/messages/count_tokens end to end: the official ``anthropic``
SDK (by ``base_url`` alone) through the running gateway to the offline demo model and to
OpenAI and Anthropic upstreams replaying recorded bytes; the stream's raw event bytes;
Anthropic-shaped errors on every path; the stored row, /history and /stats."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from gateway.app import create_app
from gateway.tokens import TokenCounter
from tests.conftest import ONE_TRY, Account, make_settings, register, set_plan
from tests.gateway.test_openai_protocol import _limits, stored
from tests.servers import FIXTURES, FakeUpstream, GatewayServer, Reply, wait_for

WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object",
                            "properties": {"location": {"type": "string"}},
                            "required": ["location"]}}
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAA"
         "AABJRU5ErkJggg==")


def sdk(gw: GatewayServer, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=20)


def post(gw: GatewayServer, key: str | None, body: Any, path: str = "/v1/messages",
         **headers: str) -> httpx.Response:
    auth = {"x-api-key": key} if key else {}
    return httpx.post(gw.url + path, json=body, timeout=20,
                      headers={**auth, "anthropic-version": "2023-06-01", **headers})


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for chunk in raw.split(b"\n\n"):
        if chunk:
            kind, data = chunk.split(b"\n")
            assert kind.startswith(b"event: ") and data.startswith(b"data: ")
            out.append((kind[7:].decode(), json.loads(data[6:])))
    return out


def openai_deltas(name: str) -> list[str]:
    out = []
    for line in (FIXTURES / name).read_text().splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                if choice["delta"].get("content"):
                    out.append(choice["delta"]["content"])
    return out


def event(kind: str, data: dict[str, Any]) -> bytes:
    return (f"event: {kind}\ndata: ".encode()
            + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n")


# -- the demo model ------------------------------------------------------------------------

def test_demo_plain_stream_and_tools_through_the_sdk(gateway: GatewayServer,
                                                     account: Account) -> None:
    client = sdk(gateway, account.api_key)
    msg = client.messages.create(model="gateway-demo", max_tokens=200, system="Be brief.",
                                 messages=[{"role": "user", "content": "Hello there"}])
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "gateway-demo"
    assert msg.stop_reason == "end_turn" and msg.content[0].type == "text"
    assert "Hello there" in msg.content[0].text
    assert msg.usage.output_tokens > 0 and msg.usage.input_tokens > 0

    with client.messages.stream(model="gateway-demo", max_tokens=200, system=[
            {"type": "text", "text": "Be brief."}],
            messages=[{"role": "user", "content": "Hello there"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == msg.content[0].text == final.content[0].text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == msg.usage.output_tokens

    asked = [{"role": "user", "content": "What is the weather in Lyon?"}]
    call = client.messages.create(model="gateway-demo", max_tokens=100, tools=[WEATHER],
                                  messages=asked)
    assert call.stop_reason == "tool_use"
    (use,) = call.content
    assert use.type == "tool_use" and use.name == "get_weather"
    assert use.input == {"location": "Lyon"}  # a JSON object, not a string
    with client.messages.stream(model="gateway-demo", max_tokens=100, tools=[WEATHER],
                                tool_choice={"type": "any"}, messages=asked) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in streamed.content] == [
        ("tool_use", "get_weather", {"location": "Lyon"})]

    # The tool's result goes back as a tool_result block; the demo answers from it.
    answer = client.messages.create(model="gateway-demo", max_tokens=100, tools=[WEATHER],
                                    messages=[*asked,
                                              {"role": "assistant", "content": call.content},
                                              {"role": "user", "content": [
                                                  {"type": "tool_result", "tool_use_id": use.id,
                                                   "content": "18 degrees, sunny"}]}])
    assert answer.stop_reason == "end_turn"
    assert "18 degrees, sunny" in answer.content[0].text


def test_rows_history_and_stats(gateway: GatewayServer, account: Account) -> None:
    client = sdk(gateway, account.api_key)
    # Newer SDKs take sampling parameters through extra_body only.
    client.messages.create(model="gateway-demo", max_tokens=50, extra_body={"temperature": 0.5},
                           messages=[{"role": "user", "content": "first question"}])
    with client.messages.stream(model="gateway-demo", max_tokens=50,
                                messages=[{"role": "user", "content": "second one"}]) as s:
        s.until_done()
    first, second = stored(gateway, account.user_id)
    assert (first.source, first.status, first.model, first.provider) == (
        "messages", "completed", "gateway-demo", "demo")
    assert first.prompt == "first question" and first.response
    assert first.parameters == {"max_tokens": 50, "temperature": 0.5}
    assert first.messages == [{"role": "user", "content": "first question"}]
    assert second.source == "messages" and second.status == "completed"
    assert second.time_to_first_token_ms is not None
    auth = {"Authorization": f"Bearer {account.api_key}"}
    listed = httpx.get(gateway.url + "/history", params={"source": "messages"},
                       headers=auth).json()
    assert [item["id"] for item in listed["data"]] == [str(second.id), str(first.id)]
    assert {item["source"] for item in listed["data"]} == {"messages"}
    stats = httpx.get(gateway.url + "/stats", headers=auth).json()
    demo = {m["model"]: m for m in stats["by_model"]}["gateway-demo"]
    assert demo["requests"] == 2 and demo["succeeded"] == 2
    assert demo["total_tokens"] == first.total_tokens + second.total_tokens


# -- an OpenAI upstream: translated both ways ----------------------------------------------

def test_openai_upstream_plain_translated_both_ways(gateway: GatewayServer, account: Account,
                                                    upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_text.json", split=50))
    msg = sdk(gateway, account.api_key).messages.create(
        model="gpt-4o-mini", max_tokens=300, system="Be brief.",
        extra_body={"temperature": 0.2, "top_p": 0.9}, stop_sequences=["END"],
        metadata={"user_id": "u-7"},
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PIXEL}}]}])
    recorded = json.loads((FIXTURES / "openai_text.json").read_bytes())
    assert msg.content[0].text == recorded["choices"][0]["message"]["content"]
    assert msg.stop_reason == "end_turn" and msg.model == "gpt-4o-mini"
    # OpenAI counts cached tokens inside prompt_tokens; Anthropic beside input_tokens.
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens,
            msg.usage.output_tokens) == (2061 - 1920, 1920, 22)
    sent = json.loads(upstream.received[-1].body)
    assert upstream.received[-1].path == "/v1/chat/completions"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]}]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["stop"],
            sent["user"]) == (300, 0.2, 0.9, ["END"], "u-7")


def test_openai_upstream_tools_round_trip(gateway: GatewayServer, account: Account,
                                          upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_tools.sse", split=300))
    client = sdk(gateway, account.api_key)
    asked = [{"role": "user", "content": "Weather in Paris?"}]
    with client.messages.stream(model="gpt-4o-mini", max_tokens=100, tools=[WEATHER],
                                tool_choice={"type": "tool", "name": "get_weather",
                                             "disable_parallel_tool_use": True},
                                messages=asked) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    (use,) = final.content
    assert use.type == "tool_use" and use.id == "call_Xk4pQ2rB7tNw9yHc3LmVs8eZ"
    assert use.name == "get_weather" and isinstance(use.input, dict)
    assert use.input["location"].startswith("Paris")
    assert final.usage.input_tokens == 84 and final.usage.output_tokens == 19
    sent = json.loads(upstream.received[-1].body)
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": WEATHER["input_schema"]}}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False and sent["stream"] is True

    # The result goes back: tool_use → an assistant tool call (arguments as JSON text),
    # tool_result → a tool message ahead of the user's other blocks.
    upstream.script(Reply.recording("openai_text.json"))
    client.messages.create(model="gpt-4o-mini", max_tokens=100, tools=[WEATHER], messages=[
        *asked, {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                                  use.model_dump(exclude_none=True)]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": use.id, "content": [
                {"type": "text", "text": "18C"}]},
            {"type": "text", "text": "And tomorrow?"}]}])
    sent = json.loads(upstream.received[-1].body)
    assert sent["messages"][1:] == [
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": use.id, "type": "function",
             "function": {"name": "get_weather",
                          "arguments": json.dumps(use.input, separators=(",", ":"))}}]},
        {"role": "tool", "tool_call_id": use.id, "content": "18C"},
        {"role": "user", "content": "And tomorrow?"}]


def test_stream_bytes_follow_anthropics_event_sequence(gateway: GatewayServer,
                                                       account: Account,
                                                       upstream: FakeUpstream) -> None:
    upstream.script(Reply.by_event("openai_text.sse"))
    messages = [{"role": "user", "content": "Say hello in French"}]
    r = post(gateway, account.api_key, {"model": "gpt-4o-mini", "max_tokens": 100,
                                        "messages": messages, "stream": True},
             **{"x-request-id": "req_bytes1"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-ratelimit-limit-requests"]
    deltas = openai_deltas("openai_text.sse")
    prompt = TokenCounter().messages(messages)
    expected = (
        event("message_start", {"type": "message_start", "message": {
            "id": "msg_bytes1", "type": "message", "role": "assistant", "model": "gpt-4o-mini",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": 0}}})
        + event("ping", {"type": "ping"})
        + event("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}})
        + b"".join(event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                 "delta": {"type": "text_delta", "text": d}})
                   for d in deltas)
        + event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    assert r.content.startswith(expected)
    tail = sse_events(r.content[len(expected):])
    assert [kind for kind, _ in tail] == ["message_delta", "message_stop"]
    usage = tail[0][1]["usage"]
    assert tail[0][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert usage["output_tokens"] > 0 and tail[1][1] == {"type": "message_stop"}
    row = stored(gateway, account.user_id)[-1]
    assert row.response == "".join(deltas) and row.status == "completed"
    assert row.completion_tokens == usage["output_tokens"]


def test_tool_stream_events(gateway: GatewayServer, account: Account,
                            upstream: FakeUpstream) -> None:
    upstream.script(Reply.by_event("openai_tools.sse"))
    r = post(gateway, account.api_key, {"model": "gpt-4o-mini", "max_tokens": 100,
                                        "tools": [WEATHER], "stream": True,
                                        "messages": [{"role": "user", "content": "Paris?"}]})
    events = sse_events(r.content)
    kinds = [k for k, _ in events]
    assert kinds[:3] == ["message_start", "ping", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[3:-3]) == {"content_block_delta"}
    block = events[2][1]["content_block"]
    assert block == {"type": "tool_use", "id": "call_Xk4pQ2rB7tNw9yHc3LmVs8eZ",
                     "name": "get_weather", "input": {}}
    partial = "".join(e["delta"]["partial_json"] for k, e in events
                      if k == "content_block_delta")
    assert all(e["delta"]["type"] == "input_json_delta" for k, e in events
               if k == "content_block_delta")
    assert json.loads(partial)["location"].startswith("Paris")
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


# -- an Anthropic upstream -----------------------------------------------------------------

def test_anthropic_upstream_is_a_pass_through(gateway: GatewayServer, account: Account,
                                             upstream: FakeUpstream) -> None:
    """The caller's body goes up as it is (only ``model`` is the upstream's): fields the
    translation could not carry (thinking, cache_control on system blocks, unknown ones)
    too; the answer comes back byte for byte."""
    upstream.script(Reply.recording("anthropic_tools.json", split=64))
    body = {"model": "claude-haiku", "max_tokens": 256, "tools": [WEATHER], "top_k": 5,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "future_field": {"kept": True},
            "system": [{"type": "text", "text": "Be brief.",
                        "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris?",
                 "cache_control": {"type": "ephemeral"}}]}]}
    r = post(gateway, account.api_key, body)
    assert r.status_code == 200 and r.content == (FIXTURES / "anthropic_tools.json").read_bytes()
    assert r.headers["x-gateway-served-by"] == "fake-anthropic/claude-haiku-4-5"
    sent = upstream.received[-1]
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == "sk-ant"
    assert json.loads(sent.body) == {**body, "model": "claude-haiku-4-5", "stream": False}
    row = stored(gateway, account.user_id)[-1]
    assert (row.source, row.status, row.provider, row.prompt_tokens, row.completion_tokens,
            row.finish_reason) == ("messages", "completed", "fake-anthropic", 612, 86,
                                   "tool_calls")
    assert not row.tokens_estimated and row.tool_calls[0]["function"]["name"] == "get_weather"

    # Through the SDK: the recorded message as Anthropic sent it.
    upstream.script(Reply.recording("anthropic_tools.json"))
    msg = sdk(gateway, account.api_key).messages.create(
        model="claude-haiku", max_tokens=256, tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in Paris?"}])
    recorded = json.loads((FIXTURES / "anthropic_tools.json").read_bytes())
    assert [b.model_dump(exclude_none=True) for b in msg.content] == recorded["content"]
    assert msg.stop_reason == "tool_use" and msg.usage.input_tokens == 612


def test_anthropic_upstream_stream_is_relayed(gateway: GatewayServer, account: Account,
                                              upstream: FakeUpstream) -> None:
    upstream.script(Reply.by_event("anthropic_text.sse"))
    body = {"model": "claude-haiku", "max_tokens": 100, "stream": True,
            "messages": [{"role": "user", "content": "Bonjour"}]}
    r = post(gateway, account.api_key, body)
    assert r.status_code == 200
    assert r.content == (FIXTURES / "anthropic_text.sse").read_bytes()  # ping included
    assert json.loads(upstream.received[-1].body) == {**body, "model": "claude-haiku-4-5"}
    row = stored(gateway, account.user_id)[-1]
    assert (row.source, row.status, row.prompt_tokens, row.completion_tokens) == (
        "messages", "completed", 9 + 1850, 31)
    assert row.response and row.time_to_first_token_ms is not None

    upstream.script(Reply.by_event("anthropic_text.sse"))
    with sdk(gateway, account.api_key).messages.stream(
            model="claude-haiku", max_tokens=100,
            messages=[{"role": "user", "content": "Bonjour"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == row.response and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens,
            final.usage.output_tokens) == (9, 1850, 31)


def test_mid_stream_error_is_an_error_event(gateway: GatewayServer, account: Account,
                                            upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("anthropic_error_overloaded.sse"))
    r = post(gateway, account.api_key, {"model": "claude-haiku", "max_tokens": 50,
                                        "stream": True,
                                        "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200
    events = sse_events(r.content)
    assert events[-1] == ("error", {"type": "error", "error": {
        "type": "overloaded_error", "message": events[-1][1]["error"]["message"]}})
    assert "Overloaded" in events[-1][1]["error"]["message"]
    assert [k for k, _ in events].count("error") == 1
    assert "message_stop" not in [k for k, _ in events]
    assert stored(gateway, account.user_id)[-1].status == "failed"
    # The SDK raises it.
    upstream.script(Reply.recording("anthropic_error_overloaded.sse"))
    with pytest.raises(anthropic.APIStatusError), sdk(gateway, account.api_key).messages.stream(
            model="claude-haiku", max_tokens=50,
            messages=[{"role": "user", "content": "Hi"}]) as stream:
        stream.until_done()


# -- errors: Anthropic's shape and status on every path --------------------------------------

def assert_error(r: httpx.Response, status: int, kind: str, *words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == kind
    assert all(w in body["error"]["message"] for w in words), body


def test_errors(gateway: GatewayServer, account: Account, upstream: FakeUpstream) -> None:
    ok = {"model": "gpt-4o-mini", "max_tokens": 10,
          "messages": [{"role": "user", "content": "Hi"}]}
    before = len(stored(gateway, account.user_id))
    assert_error(post(gateway, None, ok), 401, "authentication_error")
    assert_error(post(gateway, "sk-nope", ok), 401, "authentication_error")
    assert_error(post(gateway, account.api_key, {**ok, "max_tokens": None}), 400,
                 "invalid_request_error", "max_tokens")
    assert_error(post(gateway, account.api_key, {**ok, "messages": [
        {"role": "system", "content": "x"}]}), 400, "invalid_request_error",
        "messages.0.role")
    assert_error(post(gateway, account.api_key, {**ok, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}]}),
        400, "invalid_request_error", "messages.0.content.0.source")
    assert_error(post(gateway, account.api_key, {**ok, "messages": [
        {"role": "user", "content": [{"type": {}}]}]}), 400, "invalid_request_error",
        "messages.0.content.0.type")
    assert_error(post(gateway, account.api_key, {**ok, "tools": [WEATHER],
                                                 "tool_choice": {"type": {}}}),
                 400, "invalid_request_error", "tool_choice")
    assert_error(post(gateway, account.api_key, {**ok, "temperature": 1.5}), 400,
                 "invalid_request_error", "temperature")
    assert_error(post(gateway, account.api_key, {**ok, "tool_choice": {"type": "any"}}), 400,
                 "invalid_request_error", "tool_choice")
    assert_error(post(gateway, account.api_key, {**ok, "model": "no-such-model"}), 404,
                 "not_found_error", "no-such-model")
    assert len(stored(gateway, account.user_id)) == before  # nothing stored half-way

    upstream.script(Reply.error(429, "openai_error_429.json", retry_after="7"))
    r = post(gateway, account.api_key, ok)
    assert_error(r, 429, "rate_limit_error")
    assert r.headers["retry-after"] == "7"
    with pytest.raises(anthropic.RateLimitError):
        sdk(gateway, account.api_key).messages.create(**ok)

    upstream.script(Reply.error(503, "openai_error_503.json"))
    assert_error(post(gateway, account.api_key, ok), 529, "overloaded_error", "overloaded")
    upstream.script(Reply.error(503, "openai_error_503.json"))
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        sdk(gateway, account.api_key).messages.create(**{**ok, "stream": True})
    assert overloaded.value.status_code == 529

    # An upstream's 5xx leaves it unavailable for now: the gateway's 503, so 529 here.
    upstream.script(Reply.error(500, "openai_error_500.json"))
    assert_error(post(gateway, account.api_key, ok), 529, "overloaded_error")
    # The upstream refusing the gateway's own key is the gateway's failure, not the caller's.
    upstream.script(Reply.error(401, "openai_error_401.json"))
    assert_error(post(gateway, account.api_key, ok), 502, "api_error")
    rows = stored(gateway, account.user_id)[before:]
    assert [row.status for row in rows] == ["failed"] * len(rows) and len(rows) == 6

    # A model that only embeds: the upstream's refusal, as Anthropic's 400.
    assert_error(post(gateway, account.api_key, {**ok, "model": "gateway-demo-embed"}), 400,
                 "invalid_request_error", "embedding model")


def test_plan_limit_is_a_rate_limit_error(gateway: GatewayServer) -> None:
    acct = register(gateway.url)  # the free plan
    body = {"model": "gateway-demo", "max_tokens": 10_000_000,
            "messages": [{"role": "user", "content": "Hi"}]}
    r = post(gateway, acct.api_key, body)
    assert_error(r, 429, "rate_limit_error")
    assert int(r.headers["retry-after"]) >= 1
    assert "x-ratelimit-limit-tokens" in r.headers


# -- count_tokens --------------------------------------------------------------------------

def test_count_tokens(gateway: GatewayServer, account: Account) -> None:
    client = sdk(gateway, account.api_key)
    messages = [{"role": "user", "content": "Say hello in French"}]
    counted = client.messages.count_tokens(model="gpt-4o-mini", messages=messages)
    assert counted.input_tokens == TokenCounter().messages(messages)
    with_system = client.messages.count_tokens(model="gateway-demo", messages=messages,
                                               system="Be brief.", tools=[WEATHER])
    assert with_system.input_tokens > counted.input_tokens
    assert_error(post(gateway, account.api_key, {"model": "nope", "messages": messages},
                      path="/v1/messages/count_tokens"), 404, "not_found_error")
    assert_error(post(gateway, account.api_key, {"model": "gpt-4o-mini", "messages": []},
                      path="/v1/messages/count_tokens"), 400, "invalid_request_error",
                 "messages")
    assert_error(post(gateway, None, {"model": "gpt-4o-mini", "messages": messages},
                      path="/v1/messages/count_tokens"), 401, "authentication_error")


# -- routing: a fallback of another dialect --------------------------------------------------

@pytest.fixture(scope="module")
def fallback_gw(database_url: str, upstream: FakeUpstream,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """A route on the Anthropic upstream whose fallback is an OpenAI model."""
    providers = {
        "fake-openai": {"kind": "openai", "base_url": upstream.url + "/v1", "api_key": "sk-up",
                        "models": ["gpt-4o-mini"], "read_timeout": 2.0, **ONE_TRY},
        "fake-anthropic": {"kind": "anthropic", "base_url": upstream.url, "api_key": "sk-ant",
                           "models": {"claude-haiku": "claude-haiku-4-5"}, "read_timeout": 2.0,
                           **ONE_TRY},
    }
    models = {"claude-first": {"provider": "fake-anthropic", "upstream": "claude-haiku-4-5",
                               "fallbacks": ["gpt-4o-mini"]}}
    settings = make_settings(tmp_path_factory.mktemp("messages"), database_url,
                             providers=providers, models=models)
    server = GatewayServer(create_app(settings))
    yield server
    server.stop()


def test_overloaded_anthropic_falls_back_to_a_translated_model(
        fallback_gw: GatewayServer, upstream: FakeUpstream) -> None:
    account = register(fallback_gw.url)
    set_plan(fallback_gw, account.user_id, "enterprise")
    upstream.script(Reply.recording("openai_text.sse"))
    upstream.script_model("claude-haiku-4-5", Reply.error(529, "anthropic_error_529.json"))
    r = post(fallback_gw, account.api_key, {"model": "claude-first", "max_tokens": 50,
                                            "stream": True, "top_k": 3,
                                            "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200
    assert r.headers["x-gateway-attempts"] == "2"
    assert r.headers["x-gateway-served-by"] == "fake-openai/gpt-4o-mini"
    events = sse_events(r.content)
    # Translated, since the OpenAI model answered: the gateway's own event sequence.
    assert events[0][1]["message"]["model"] == "gpt-4o-mini"
    assert [k for k, _ in events][-2:] == ["message_delta", "message_stop"]
    assert "".join(e["delta"]["text"] for k, e in events if k == "content_block_delta") == \
        "".join(openai_deltas("openai_text.sse"))
    first, second = (json.loads(x.body) for x in upstream.received)
    assert first["model"] == "claude-haiku-4-5" and first["top_k"] == 3  # passed through
    assert second["model"] == "gpt-4o-mini" and second["messages"] == [
        {"role": "user", "content": "Hi"}]
    row = stored(fallback_gw, account.user_id)[-1]
    assert (row.source, row.status, row.attempts, row.served_by) == (
        "messages", "completed", 2, "fake-openai/gpt-4o-mini")


@pytest.mark.parametrize(("model", "recording"), [("claude-haiku", "anthropic_text.sse"),
                                                  ("gpt-4o-mini", "openai_text.sse")])
def test_client_leaving_cancels_the_upstream_call(gateway: GatewayServer, account: Account,
                                                  upstream: FakeUpstream, model: str,
                                                  recording: str) -> None:
    """Relayed or translated, a client that leaves mid-stream cancels the upstream call,
    frees its slot and leaves a cancelled row."""
    upstream.script(Reply.by_event(recording, hang_after=4))
    with httpx.stream("POST", gateway.url + "/v1/messages",
                      headers={"x-api-key": account.api_key},
                      json={"model": model, "max_tokens": 50, "stream": True,
                            "messages": [{"role": "user", "content": "Hi"}]}) as r:
        seen = b""
        for piece in r.iter_bytes():
            seen += piece
            if b"content_block_delta" in seen:
                break
    assert wait_for(lambda: upstream.disconnects == 1), "the upstream call was not cancelled"

    def cancelled() -> bool:
        rows = stored(gateway, account.user_id)
        return bool(rows) and rows[-1].status == "cancelled"
    assert wait_for(cancelled)
    row = stored(gateway, account.user_id)[-1]
    assert row.source == "messages" and row.response
    status = gateway.run(gateway.state.limiter.status(account.user_id,
                                                      _limits(gateway, account)))
    assert status.concurrent_in_use == 0
