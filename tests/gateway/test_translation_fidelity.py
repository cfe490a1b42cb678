"""Translation fidelity end to end (issue 18): the running gateway between the official
``openai`` SDK (strict response validation) and recorded Anthropic / OpenAI-compatible
answers. Structured output and reasoning on Anthropic routes, thinking kept out of the
content and the stored response, refusals, the ``x-gateway-dropped-params`` header (the
target that answered decides) and the 400s naming what cannot be honoured."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from gateway.app import create_app
from tests.conftest import ONE_TRY, Account, make_settings, register, set_plan
from tests.gateway.test_messages import post as post_messages
from tests.gateway.test_messages import sse_events
from tests.gateway.test_openai_protocol import sdk, stored
from tests.providers.test_translation_fidelity import DEEPSEEK_STREAM, PARTS, THINKING
from tests.servers import FIXTURES, FakeUpstream, GatewayServer, Reply

HEADER = "x-gateway-dropped-params"
ASK = [{"role": "user", "content": "Alice, Bob et Zoë vont à la fête vendredi."}]
EVENT = {"name": "Fête de la science", "date": "vendredi",
         "participants": ["Alice", "Bob", "Zoë"]}
SIGNATURE = json.loads((FIXTURES / "anthropic_thinking.json").read_bytes())[
    "content"][0]["signature"]


class CalendarEvent(BaseModel):
    name: str
    date: str
    participants: list[str]


def chat(gw: GatewayServer, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=20,
                      headers={"authorization": f"Bearer {key}"})


def chunks(raw: bytes) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of an SSE answer (up to ``[DONE]``)."""
    out = []
    for event in raw.split(b"\n\n"):
        if event.startswith(b"data: {"):
            out.append(json.loads(event[6:]))
    assert raw.endswith(b"data: [DONE]\n\n")
    return out


def deltas(raw: bytes) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks(raw) if c["choices"]]


def upstream_body(upstream: FakeUpstream) -> dict[str, Any]:
    return json.loads(upstream.received[-1].body)


# -- structured output on an Anthropic route ---------------------------------------------

def test_sdk_parse_reads_the_forced_tools_input_as_content(
        gateway: GatewayServer, account: Account, upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("anthropic_structured.json", split=7))
    client = sdk(gateway, account.api_key)
    completion = client.chat.completions.parse(model="claude-haiku", messages=ASK,
                                               response_format=CalendarEvent)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert choice.message.parsed == CalendarEvent(**EVENT)
    assert json.loads(choice.message.content) == EVENT
    # What reached Anthropic: the SDK's strict schema as the forced tool's input_schema.
    sent = upstream_body(upstream)
    (tool,) = sent["tools"]
    assert tool["name"] == "CalendarEvent"
    assert tool["input_schema"]["required"] == ["name", "date", "participants"]
    assert tool["input_schema"]["additionalProperties"] is False
    assert sent["tool_choice"] == {"type": "tool", "name": "CalendarEvent"}
    assert "response_format" not in sent and sent["stream"] is False
    row = stored(gateway, account.user_id)[-1]
    assert (row.status, row.finish_reason, row.tool_calls) == ("completed", "stop", None)
    assert json.loads(row.response) == EVENT


def test_streamed_structured_output_is_content_deltas(
        gateway: GatewayServer, account: Account, upstream: FakeUpstream) -> None:
    # Cut at 5 bytes: inside "ê", "ë", escaped quotes and the event boundaries.
    upstream.script(Reply.recording("anthropic_structured.sse", split=5))
    schema = {"type": "json_schema", "json_schema": {
        "name": "CalendarEvent", "strict": True,
        "schema": CalendarEvent.model_json_schema() | {"additionalProperties": False}}}
    r = chat(gateway, account.api_key, {"model": "claude-haiku", "messages": ASK,
                                        "stream": True, "response_format": schema})
    assert r.status_code == 200 and HEADER not in r.headers
    got = deltas(r.content)
    assert [d["content"] for d in got if d.get("content")] == PARTS
    assert not any("tool_calls" in d for d in got)
    assert [c["choices"][0]["finish_reason"] for c in chunks(r.content)][-1] == "stop"
    assert upstream_body(upstream)["tool_choice"] == {"type": "tool", "name": "CalendarEvent"}

    # The SDK's own streaming helper parses it too.
    upstream.script(Reply.recording("anthropic_structured.sse", split=5))
    with sdk(gateway, account.api_key).chat.completions.stream(
            model="claude-haiku", messages=ASK, response_format=CalendarEvent) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == CalendarEvent(**EVENT)
    assert final.choices[0].finish_reason == "stop"


# -- reasoning -----------------------------------------------------------------------------

def test_thinking_is_reasoning_content_never_content(
        gateway: GatewayServer, account: Account, upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("anthropic_thinking.json", split=9))
    r = chat(gateway, account.api_key, {"model": "claude-haiku", "messages": ASK,
                                        "reasoning_effort": "high", "temperature": 0.3,
                                        "seed": 5})
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    assert message["reasoning_content"] == "".join(THINKING)
    assert message["content"] == "27 × 453 = **12 231**."
    assert SIGNATURE.encode() not in r.content
    assert r.json()["usage"]["completion_tokens"] == 118  # thinking tokens included
    assert r.headers[HEADER] == "seed,temperature"
    sent = upstream_body(upstream)
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert sent["max_tokens"] > 16384
    assert "temperature" not in sent and "seed" not in sent
    row = stored(gateway, account.user_id)[-1]
    assert row.response == "27 × 453 = **12 231**."  # the reasoning is not stored
    assert row.completion_tokens == 118

    # The SDK in strict mode takes the extra field.
    upstream.script(Reply.recording("anthropic_thinking.json"))
    completion = sdk(gateway, account.api_key).chat.completions.create(
        model="claude-haiku", messages=ASK, reasoning_effort="low")
    assert completion.choices[0].message.content == "27 × 453 = **12 231**."
    assert completion.choices[0].message.reasoning_content == "".join(THINKING)


def test_streamed_thinking_is_reasoning_content_deltas(
        gateway: GatewayServer, account: Account, upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("anthropic_thinking.sse", split=3))
    r = chat(gateway, account.api_key, {"model": "claude-haiku", "messages": ASK,
                                        "stream": True, "reasoning_effort": "minimal",
                                        "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and HEADER not in r.headers
    got = deltas(r.content)
    assert [d["reasoning_content"] for d in got if "reasoning_content" in d] == THINKING
    assert "".join(d.get("content") or "" for d in got) == "27 × 453 = **12 231**."
    assert not any(d.get("content") and "reasoning_content" in d for d in got)
    assert SIGNATURE.encode() not in r.content
    assert chunks(r.content)[-1]["usage"]["completion_tokens"] == 118
    assert upstream_body(upstream)["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    row = stored(gateway, account.user_id)[-1]
    assert row.response == "27 × 453 = **12 231**." and row.finish_reason == "stop"


def test_openai_compatible_reasoning_content_and_reasoning_tokens(
        gateway: GatewayServer, account: Account, upstream: FakeUpstream) -> None:
    upstream.script(Reply(pieces=[DEEPSEEK_STREAM[i:i + 11]
                                  for i in range(0, len(DEEPSEEK_STREAM), 11)]))
    r = chat(gateway, account.api_key, {"model": "gpt-4o-mini", "messages": ASK,
                                        "stream": True, "reasoning_effort": "high",
                                        "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and HEADER not in r.headers
    got = deltas(r.content)
    assert [d["reasoning_content"] for d in got if "reasoning_content" in d] == ["Hmm, 2+2"]
    assert "".join(d.get("content") or "" for d in got) == " is 4."
    assert chunks(r.content)[-1]["usage"]["completion_tokens_details"] == {
        "reasoning_tokens": 15}
    assert upstream_body(upstream)["reasoning_effort"] == "high"  # passed as it is


# -- refusals -------------------------------------------------------------------------------

def test_anthropic_refusal_is_content_filter(gateway: GatewayServer, account: Account,
                                             upstream: FakeUpstream) -> None:
    def event(kind: str, data: dict[str, Any]) -> bytes:
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()
    upstream.script(Reply(pieces=[
        event("message_start", {"type": "message_start", "message": {
            "id": "msg_r", "type": "message", "role": "assistant", "content": [],
            "model": "claude-haiku-4-5", "usage": {"input_tokens": 7, "output_tokens": 1}}}),
        event("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}}),
        event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "text_delta", "text": "I can't"}}),
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "refusal"},
                                "usage": {"output_tokens": 3}}),
        event("message_stop", {"type": "message_stop"})]))
    r = chat(gateway, account.api_key, {"model": "claude-haiku", "messages": ASK,
                                        "stream": True})
    assert [c["choices"][0]["finish_reason"] for c in chunks(r.content)][-1] == "content_filter"
    assert stored(gateway, account.user_id)[-1].finish_reason == "content_filter"


# -- dropped parameters, named; refused ones, a 400 ----------------------------------------

def test_dropped_params_header(gateway: GatewayServer, account: Account,
                               upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("anthropic_text.json"))
    r = chat(gateway, account.api_key, {
        "model": "claude-haiku", "messages": ASK, "seed": 1, "logprobs": True,
        "top_logprobs": 2, "presence_penalty": 0.5, "frequency_penalty": 0.5,
        "logit_bias": {"1734": -100}, "store": False})
    assert r.status_code == 200
    assert r.headers[HEADER] == ("frequency_penalty,logit_bias,logprobs,presence_penalty,"
                                 "seed,store,top_logprobs")
    sent = upstream_body(upstream)
    assert not {"seed", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty",
                "logit_bias", "store"} & set(sent)

    upstream.script(Reply.recording("anthropic_text.json"))
    r = chat(gateway, account.api_key, {"model": "claude-haiku", "messages": ASK,
                                        "temperature": 0.2})
    assert r.status_code == 200 and HEADER not in r.headers

    # An OpenAI-compatible upstream takes them all, as they came.
    upstream.script(Reply.recording("openai_text.json"))
    r = chat(gateway, account.api_key, {"model": "gpt-4o-mini", "messages": ASK, "seed": 1,
                                        "logprobs": True, "top_logprobs": 2})
    assert r.status_code == 200 and HEADER not in r.headers
    sent = upstream_body(upstream)
    assert (sent["seed"], sent["logprobs"], sent["top_logprobs"]) == (1, True, 2)


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.mark.parametrize(("model", "extra", "param"), [
    ("claude-haiku", {"tools": TOOLS, "response_format": {"type": "json_object"}},
     "response_format"),
    ("claude-haiku", {"reasoning_effort": "low", "tools": TOOLS, "tool_choice": "required"},
     "reasoning_effort"),
    ("claude-haiku", {"reasoning_effort": "medium", "response_format": {"type": "json_object"}},
     "reasoning_effort"),
    ("claude-haiku", {"modalities": ["text", "audio"], "audio": {"voice": "alloy",
                                                                 "format": "wav"}}, "audio"),
    ("claude-haiku", {"functions": [{"name": "f", "parameters": {}}]}, "functions"),
    ("claude-haiku", {"n": 2}, "n"),
    ("gpt-4o-mini", {"reasoning_effort": "extreme"}, "reasoning_effort"),
    ("gpt-4o-mini", {"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ("gpt-4o-mini", {"presence_penalty": 3}, "presence_penalty"),
    ("gpt-4o-mini", {"logit_bias": {"1": 101}}, "logit_bias"),
    ("gpt-4o-mini", {"logprobs": "yes"}, "logprobs"),
    ("gpt-4o-mini", {"response_format": {"type": "json_schema", "json_schema": {
        "schema": {"type": "object"}}}}, "response_format.json_schema"),
])
def test_what_cannot_be_honoured_is_a_400_naming_it(gateway: GatewayServer, account: Account,
                                                    upstream: FakeUpstream, model: str,
                                                    extra: dict[str, Any], param: str) -> None:
    upstream.script(Reply.recording("openai_text.json"))
    r = chat(gateway, account.api_key, {"model": model, "messages": ASK, **extra})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert upstream.hits() == 0  # nothing went upstream


@pytest.fixture(scope="module")
def fallback_gw(database_url: str, upstream: FakeUpstream,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """Two routes, each falling back to the other dialect."""
    providers = {
        "fake-openai": {"kind": "openai", "base_url": upstream.url + "/v1", "api_key": "sk-up",
                        "models": {"gpt-4o-mini": "gpt-4o-mini"}, "read_timeout": 2.0,
                        **ONE_TRY},
        "fake-anthropic": {"kind": "anthropic", "base_url": upstream.url, "api_key": "sk-ant",
                           "models": {"claude-haiku": "claude-haiku-4-5"}, "read_timeout": 2.0,
                           **ONE_TRY},
    }
    models = {"claude-first": {"provider": "fake-anthropic", "upstream": "claude-haiku-4-5",
                               "fallbacks": ["gpt-4o-mini"]},
              "gpt-first": {"provider": "fake-openai", "upstream": "gpt-4o",
                            "fallbacks": ["claude-haiku"]}}
    settings = make_settings(tmp_path_factory.mktemp("fidelity"), database_url,
                             providers=providers, models=models)
    server = GatewayServer(create_app(settings))
    yield server
    server.stop()


def test_the_target_that_answered_decides_what_was_dropped(fallback_gw: GatewayServer,
                                                           upstream: FakeUpstream) -> None:
    account = register(fallback_gw.url)
    set_plan(fallback_gw, account.user_id, "enterprise")
    body = {"messages": ASK, "seed": 9, "stream": True}

    upstream.script(Reply.recording("openai_text.sse"))
    upstream.script_model("claude-haiku-4-5", Reply.error(529, "anthropic_error_529.json"))
    r = chat(fallback_gw, account.api_key, {**body, "model": "claude-first"})
    assert r.status_code == 200 and r.headers["x-gateway-attempts"] == "2"
    assert r.headers["x-gateway-served-by"] == "fake-openai/gpt-4o-mini"
    assert HEADER not in r.headers  # the OpenAI fallback sent the seed
    assert upstream_body(upstream)["seed"] == 9

    upstream.script(Reply.recording("anthropic_text.sse"))
    upstream.script_model("gpt-4o", Reply.error(503, "openai_error_503.json"))
    r = chat(fallback_gw, account.api_key, {**body, "model": "gpt-first"})
    assert r.status_code == 200 and r.headers["x-gateway-attempts"] == "2"
    assert r.headers["x-gateway-served-by"] == "fake-anthropic/claude-haiku-4-5"
    assert r.headers[HEADER] == "seed"
    assert "seed" not in upstream_body(upstream)


# -- the Messages API: thinking passed through, or encoded as thinking blocks ---------------

def test_messages_pass_through_relays_thinking_untouched(
        gateway: GatewayServer, account: Account, upstream: FakeUpstream) -> None:
    upstream.script(Reply.by_event("anthropic_thinking.sse"))
    body = {"model": "claude-haiku", "max_tokens": 20000, "stream": True,
            "thinking": {"type": "enabled", "budget_tokens": 16000},
            "messages": [{"role": "user", "content": "27 × 453?"}]}
    r = post_messages(gateway, account.api_key, body)
    assert r.status_code == 200 and HEADER not in r.headers
    assert r.content == (FIXTURES / "anthropic_thinking.sse").read_bytes()  # signature too
    assert json.loads(upstream.received[-1].body) == {**body, "model": "claude-haiku-4-5"}

    upstream.script(Reply.recording("anthropic_thinking.json"))
    r = post_messages(gateway, account.api_key, {**body, "stream": False})
    assert r.content == (FIXTURES / "anthropic_thinking.json").read_bytes()
    assert stored(gateway, account.user_id)[-1].response == "27 × 453 = **12 231**."


def test_messages_translated_reasoning_becomes_thinking_blocks(
        gateway: GatewayServer, account: Account, upstream: FakeUpstream) -> None:
    upstream.script(Reply(pieces=[DEEPSEEK_STREAM]))
    body = {"model": "gpt-4o-mini", "max_tokens": 200, "stream": True,
            "messages": [{"role": "user", "content": "2+2?"}]}
    r = post_messages(gateway, account.api_key, body)
    assert r.status_code == 200
    events = sse_events(r.content)
    starts = [e["content_block"] for k, e in events if k == "content_block_start"]
    assert starts == [{"type": "thinking", "thinking": "", "signature": ""},
                      {"type": "text", "text": ""}]
    assert [e["delta"] for k, e in events if k == "content_block_delta"] == [
        {"type": "thinking_delta", "thinking": "Hmm, 2+2"},
        {"type": "text_delta", "text": " is 4."}]

    upstream.script(Reply.json(200, json.dumps({
        "id": "c1", "object": "chat.completion", "created": 1, "model": "deepseek-reasoner",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "4.",
                                             "reasoning_content": "2+2..."},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode()))
    r = post_messages(gateway, account.api_key, {**body, "stream": False})
    assert r.json()["content"] == [{"type": "thinking", "thinking": "2+2...", "signature": ""},
                                   {"type": "text", "text": "4."}]
