"""POST /v1/responses, GET and DELETE /v1/responses/{id} end to end: the official ``openai``
SDK (by ``base_url`` alone) through the running gateway to the offline demo model and to
OpenAI and Anthropic upstreams replaying recorded bytes; what reached the upstream; the
stream's raw event bytes and sequence numbers; the stored state and its owner; the call's
row, /history and /stats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.app import create_app
from tests.conftest import Account, make_settings, register, set_plan
from tests.gateway.test_openai_protocol import stored
from tests.servers import FIXTURES, FakeUpstream, GatewayServer, Reply, recorded_openai, running

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                          "required": ["location"]}}
PIXEL = "data:image/png;base64,iVBORw0KGgo="
EVENTS: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)


def sdk(gw: GatewayServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=20)


def post(gw: GatewayServer, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(gw.url + "/v1/responses", json=body, timeout=20,
                      headers={"Authorization": f"Bearer {key}"})


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    """Each event's data, after checking its ``event:`` line names the data's type."""
    out = []
    for chunk in raw.split(b"\n\n"):
        if chunk:
            kind, data = chunk.split(b"\n")
            assert kind.startswith(b"event: ") and data.startswith(b"data: ")
            payload = json.loads(data[6:])
            assert payload["type"] == kind[7:].decode()
            out.append(payload)
    return out


def sent(upstream: FakeUpstream) -> dict[str, Any]:
    return json.loads(upstream.received[-1].body)


def openai_json(finish: str = "stop", content: str | None = None) -> Reply:
    """The recorded non-streamed OpenAI answer, its finish reason or text changed."""
    body = json.loads((FIXTURES / "openai_text.json").read_bytes())
    body["choices"][0]["finish_reason"] = finish
    if content is not None:
        body["choices"][0]["message"]["content"] = content
    return Reply.json(200, json.dumps(body).encode())


# -- the demo model ------------------------------------------------------------------------

def test_demo_plain_stream_and_function_round_trip(gateway: GatewayServer,
                                                   account: Account) -> None:
    client = sdk(gateway, account.api_key)
    plain = client.responses.create(model="gateway-demo", input="Hello there",
                                    instructions="Be brief.")
    assert plain.id.startswith("resp_") and plain.object == "response"
    assert plain.status == "completed" and plain.model == "gateway-demo"
    assert plain.instructions == "Be brief." and plain.incomplete_details is None
    (message,) = plain.output
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "output_text" and "Hello there" in plain.output_text
    usage = plain.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens

    with client.responses.stream(model="gateway-demo", input="Hello there",
                                 instructions="Be brief.") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert len(deltas) > 1 and "".join(deltas) == final.output_text == plain.output_text
    assert final.status == "completed" and final.id != plain.id
    assert final.usage is not None and final.usage.output_tokens == usage.output_tokens

    # Function calling: the call, then its output sent back as an item; the answer uses it.
    asked = [{"role": "user", "content": "What is the weather in Lyon?"}]
    call = client.responses.create(model="gateway-demo", input=asked, tools=[WEATHER])
    (fc,) = call.output
    assert fc.type == "function_call" and fc.name == "get_weather"
    assert json.loads(fc.arguments) == {"location": "Lyon"} and fc.call_id
    with client.responses.stream(model="gateway-demo", input=asked, tools=[WEATHER],
                                 tool_choice="required") as stream:
        args = "".join(e.delta for e in stream
                       if e.type == "response.function_call_arguments.delta")
        streamed = stream.get_final_response()
    (sfc,) = streamed.output
    assert sfc.type == "function_call" and sfc.arguments == args == fc.arguments
    answer = client.responses.create(model="gateway-demo", tools=[WEATHER], input=[
        *asked, {"type": "function_call", "call_id": fc.call_id, "name": fc.name,
                 "arguments": fc.arguments},
        {"type": "function_call_output", "call_id": fc.call_id,
         "output": "18 degrees, sunny"}])
    assert answer.status == "completed" and "18 degrees, sunny" in answer.output_text


def test_rows_history_and_stats(gateway: GatewayServer, account: Account) -> None:
    client = sdk(gateway, account.api_key)
    client.responses.create(model="gateway-demo", input="first question",
                            temperature=0.5)
    with client.responses.stream(model="gateway-demo", input="second one") as s:
        s.until_done()
    first, second = stored(gateway, account.user_id)
    assert (first.source, first.status, first.model, first.provider) == (
        "responses", "completed", "gateway-demo", "demo")
    assert first.prompt == "first question" and first.response
    assert first.parameters == {"temperature": 0.5}
    assert second.source == "responses" and second.time_to_first_token_ms is not None
    auth = {"Authorization": f"Bearer {account.api_key}"}
    listed = httpx.get(gateway.url + "/history", params={"source": "responses"},
                       headers=auth).json()
    assert [item["id"] for item in listed["data"]] == [str(second.id), str(first.id)]
    stats = httpx.get(gateway.url + "/stats", headers=auth).json()
    demo = {m["model"]: m for m in stats["by_model"]}["gateway-demo"]
    assert demo["requests"] == 2 and demo["succeeded"] == 2
    assert demo["total_tokens"] == first.total_tokens + second.total_tokens


# -- an OpenAI upstream ----------------------------------------------------------------------

def test_openai_upstream_request_translated_and_answer_retrieved(
        gateway: GatewayServer, account: Account, upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_text.json", split=50))
    schema = {"type": "object", "properties": {"greeting": {"type": "string"}},
              "required": ["greeting"], "additionalProperties": False}
    client = sdk(gateway, account.api_key)
    created = client.responses.create(
        model="gpt-4o-mini", instructions="Be brief.", max_output_tokens=300,
        temperature=0.2, top_p=0.9, user="u-7", metadata={"ticket": "42"},
        reasoning={"effort": "low"},
        text={"format": {"type": "json_schema", "name": "greeting", "schema": schema,
                         "strict": True}},
        input=[{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": PIXEL, "detail": "low"}]}])
    body = sent(upstream)
    assert upstream.received[-1].path == "/v1/chat/completions"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}}]}]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["user"],
            body["reasoning_effort"]) == (300, 0.2, 0.9, "u-7", "low")
    # Structured output: the chat route's own response_format, for every provider.
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "greeting", "schema": schema, "strict": True}}
    recorded = json.loads((FIXTURES / "openai_text.json").read_bytes())
    assert created.output_text == recorded["choices"][0]["message"]["content"]
    assert created.usage is not None
    assert (created.usage.input_tokens, created.usage.input_tokens_details.cached_tokens,
            created.usage.output_tokens, created.usage.total_tokens) == (2061, 1920, 22, 2083)
    assert created.metadata == {"ticket": "42"} and created.max_output_tokens == 300
    assert created.temperature == 0.2 and created.text.format.type == "json_schema"
    # Stored before the answer went out: a retrieve right after finds the same object.
    again = httpx.get(gateway.url + f"/v1/responses/{created.id}",
                      headers={"Authorization": f"Bearer {account.api_key}"})
    assert again.status_code == 200
    assert Response.model_validate(again.json()).model_dump() == created.model_dump()
    row = stored(gateway, account.user_id)[-1]
    assert row.source == "responses" and row.upstream_model == "gpt-4o-mini"


def test_incomplete_when_cut_by_length(gateway: GatewayServer, account: Account,
                                       upstream: FakeUpstream) -> None:
    upstream.script(openai_json("length"))
    cut = sdk(gateway, account.api_key).responses.create(model="gpt-4o-mini", input="Hi",
                                                         max_output_tokens=22)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output[0].status == "incomplete"


def test_stream_bytes_and_sequence_numbers(gateway: GatewayServer, account: Account,
                                           upstream: FakeUpstream) -> None:
    upstream.script(Reply.by_event("openai_text.sse"))
    r = post(gateway, account.api_key, {"model": "gpt-4o-mini", "input": "Say hello",
                                        "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-ratelimit-limit-requests"]
    assert r.content.startswith(b"event: response.created\ndata: {")
    events = sse_events(r.content)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:  # strictly, as the SDK's types declare them
        EVENTS.validate_python(event)
    text, usage = recorded_openai("openai_text.sse")
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == text and len(deltas) > 1
    kinds = [e["type"] for e in events]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added",
                     *["response.output_text.delta"] * len(deltas),
                     "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.completed"]
    created, added, part = events[0]["response"], events[2], events[3]
    assert created["status"] == "in_progress" and created["output"] == []
    item_id = added["item"]["id"]
    assert added["item"] == {"id": item_id, "type": "message", "status": "in_progress",
                             "role": "assistant", "content": []}
    assert part == {"type": "response.content_part.added", "item_id": item_id,
                    "output_index": 0, "content_index": 0, "sequence_number": 3,
                    "part": {"type": "output_text", "text": "", "annotations": [],
                             "logprobs": []}}
    done = events[-1]["response"]
    assert done["id"] == created["id"] and done["status"] == "completed"
    assert done["output"] == [{"id": item_id, "type": "message", "status": "completed",
                               "role": "assistant", "content": [
                                   {"type": "output_text", "text": text, "annotations": [],
                                    "logprobs": []}]}]
    assert done["usage"]["input_tokens"] == usage["prompt_tokens"]
    assert done["usage"]["output_tokens"] == usage["completion_tokens"]
    assert events[-4]["text"] == text
    assert not r.content.endswith(b"[DONE]\n\n")
    row = stored(gateway, account.user_id)[-1]
    assert row.source == "responses" and row.response == text and row.status == "completed"


def test_parallel_tool_calls_are_items_of_their_own(gateway: GatewayServer, account: Account,
                                                   upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_parallel_tools.sse", split=61))
    r = post(gateway, account.api_key, {"model": "gpt-4o-mini", "input": "Paris and Tokyo?",
                                        "tools": [WEATHER], "stream": True})
    events = sse_events(r.content)
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    assert [(i["type"], i["call_id"], i["arguments"]) for i in added] == [
        ("function_call", "call_2bVn8QwLz5Xc1RtYk7HmJp4s", ""),
        ("function_call", "call_9fGh3KsLq6WeP2zAx8NcVb1m", "")]
    final = events[-1]["response"]
    assert [(i["call_id"], i["name"], i["arguments"], i["status"])
            for i in final["output"]] == [
        ("call_2bVn8QwLz5Xc1RtYk7HmJp4s", "get_weather", '{"location":"Paris"}', "completed"),
        ("call_9fGh3KsLq6WeP2zAx8NcVb1m", "get_weather", '{"location":"東京"}', "completed")]
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [(e["output_index"], e["arguments"]) for e in done] == [
        (0, '{"location":"Paris"}'), (1, '{"location":"東京"}')]
    assert sent(upstream)["tools"] == [{"type": "function", "function": {
        k: WEATHER[k] for k in ("name", "description", "parameters")}}]


# -- an Anthropic upstream ------------------------------------------------------------------

def test_anthropic_upstream_streamed_tools(gateway: GatewayServer, account: Account,
                                           upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("anthropic_tools.sse", split=97))
    client = sdk(gateway, account.api_key)
    with client.responses.stream(model="claude-haiku", input="Weather in Paris?",
                                 tools=[WEATHER], max_output_tokens=200) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    body = sent(upstream)
    assert upstream.received[-1].path == "/v1/messages"
    assert body["tools"] == [{"name": "get_weather", "description": "The weather in a city",
                              "input_schema": WEATHER["parameters"]}]
    assert body["max_tokens"] == 200
    message, call = final.output
    assert message.type == "message" and final.output_text == text and text
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments)["location"].startswith("Paris")
    assert final.status == "completed" and final.usage is not None


def test_anthropic_upstream_mid_stream_failure(gateway: GatewayServer, account: Account,
                                               upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("anthropic_error_overloaded.sse"))
    r = post(gateway, account.api_key, {"model": "claude-haiku", "input": "Hi",
                                        "stream": True})
    events = sse_events(r.content)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.failed"
    EVENTS.validate_python(events[-1])
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert failed["error"]["message"]
    row = stored(gateway, account.user_id)[-1]
    assert row.status == "failed" and row.source == "responses"
    kept = sdk(gateway, account.api_key).responses.retrieve(failed["id"])
    assert kept.status == "failed"


# -- state: previous_response_id, retrieve, delete, ownership -------------------------------

def test_three_turn_chain_sends_the_whole_conversation(
        gateway: GatewayServer, account: Account, upstream: FakeUpstream) -> None:
    upstream.script(openai_json(content="One."), openai_json(content="Two."),
                    openai_json(content="Three."))
    client = sdk(gateway, account.api_key)
    first = client.responses.create(model="gpt-4o-mini", input="Count: first",
                                    instructions="Old instructions.")
    second = client.responses.create(model="gpt-4o-mini", input="second",
                                     previous_response_id=first.id)
    # The third turn goes to another provider: the gateway, not the upstream, keeps state.
    upstream.script(Reply.recording("anthropic_text.json"))
    third = client.responses.create(model="claude-haiku", input="third",
                                    instructions="Be brief.", previous_response_id=second.id)
    assert (second.previous_response_id, third.previous_response_id) == (first.id, second.id)
    body = sent(upstream)
    assert upstream.received[-1].path == "/v1/messages"
    # Instructions are not carried over from earlier turns, as OpenAI's are not.
    assert body["system"] == "Be brief."
    assert body["messages"] == [
        {"role": "user", "content": "Count: first"},
        {"role": "assistant", "content": "One."},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "Two."},
        {"role": "user", "content": "third"}]
    assert third.output_text and third.status == "completed"


def test_chain_with_function_calls(gateway: GatewayServer, account: Account,
                                   upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_tools.json"), openai_json(content="Sunny."))
    client = sdk(gateway, account.api_key)
    first = client.responses.create(model="gpt-4o-mini", input="Weather in Paris?",
                                    tools=[WEATHER])
    (fc,) = first.output
    assert fc.type == "function_call"
    answer = client.responses.create(model="gpt-4o-mini", previous_response_id=first.id,
                                     tools=[WEATHER], input=[{
                                         "type": "function_call_output",
                                         "call_id": fc.call_id, "output": "18C"}])
    assert answer.output_text == "Sunny."
    assert sent(upstream)["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": fc.call_id, "type": "function",
             "function": {"name": "get_weather", "arguments": fc.arguments}}]},
        {"role": "tool", "tool_call_id": fc.call_id, "content": "18C"}]


def test_retrieve_delete_store_false_and_ownership(gateway: GatewayServer, account: Account,
                                                    upstream: FakeUpstream) -> None:
    upstream.script(openai_json(content="Kept."))
    client = sdk(gateway, account.api_key)
    kept = client.responses.create(model="gpt-4o-mini", input="keep me")
    other = register(gateway.url)
    set_plan(gateway, other.user_id, "enterprise")
    stranger = sdk(gateway, other.api_key)
    # Another user's response does not exist for them: retrieve, delete and chain alike.
    with pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(kept.id)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.delete(kept.id)
    hits = upstream.hits()
    with pytest.raises(openai.NotFoundError) as caught:
        stranger.responses.create(model="gpt-4o-mini", input="leak?",
                                  previous_response_id=kept.id)
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert "Kept." not in caught.value.response.text and upstream.hits() == hits
    assert client.responses.retrieve(kept.id).output_text == "Kept."

    # store: false keeps no state: it cannot be retrieved or continued.
    unkept = client.responses.create(model="gpt-4o-mini", input="forget me", store=False)
    assert unkept.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unkept.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-4o-mini", input="and?",
                                previous_response_id=unkept.id)

    r = httpx.delete(gateway.url + f"/v1/responses/{kept.id}",
                     headers={"Authorization": f"Bearer {account.api_key}"})
    assert r.status_code == 200
    assert r.json() == {"id": kept.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(kept.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(kept.id)


def test_chain_deeper_than_the_limit_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, migrate_on_start=True, responses_max_chain=2)
    with running(create_app(settings)) as gw:
        acct = register(gw.url)
        set_plan(gw, acct.user_id, "enterprise")
        client = sdk(gw, acct.api_key)
        previous = None
        for turn in range(3):  # the third continues a chain of two: at the limit
            previous = client.responses.create(model="gateway-demo", input=f"turn {turn}",
                                               previous_response_id=previous).id
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model="gateway-demo", input="one too many",
                                    previous_response_id=previous)
        assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
        assert "GATEWAY_RESPONSES_MAX_CHAIN" in caught.value.message
        gw.flush()
        assert len(stored(gw, acct.user_id)) == 3  # nothing admitted for the refused call


# -- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "param"), [
    ({"input": "Hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "Hi", "tools": [WEATHER, {"type": "file_search"}]}, "tools[1].type"),
    ({"input": "Hi", "background": True}, "background"),
    ({"input": "Hi", "conversation": "conv_1"}, "conversation"),
    ({"input": "Hi", "prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"input": "Hi", "include": ["reasoning.encrypted_content"]}, "include"),
    ({"input": "Hi", "truncation": "auto"}, "truncation"),
    ({"input": "Hi", "frobnicate": 1}, "frobnicate"),
    ({"input": []}, "input"),
    ({"input": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                {"role": "user", "content": 7}]}, "input[2].content"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].image_url"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
     "input[0].arguments"),
    ({"input": "Hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "Hi", "temperature": 3}, "temperature"),
    ({"input": "Hi", "text": {"format": {"type": "json_schema", "name": "x"}}},
     "text.format.schema"),
    ({"input": "Hi", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"input": "Hi", "tool_choice": {"type": "web_search"}, "tools": [WEATHER]},
     "tool_choice"),
    ({"input": "Hi", "metadata": {"k": 1}}, "metadata"),
    ({"input": [{"role": {}, "content": "a"}]}, "input[0].role"),
    ({"input": "Hi", "reasoning": {"effort": {}}}, "reasoning.effort"),
    ({"input": "Hi", "tools": [{**WEATHER, "description": 7}]}, "tools[0].description"),
])
def test_invalid_requests_name_the_field(gateway: GatewayServer, account: Account,
                                         body: dict[str, Any], param: str) -> None:
    r = post(gateway, account.api_key, {"model": "gateway-demo", **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"]


def test_unknown_model_and_auth(gateway: GatewayServer, account: Account) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(gateway, account.api_key).responses.create(model="no-such-model", input="Hi")
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        sdk(gateway, "sk-wrong").responses.create(model="gateway-demo", input="Hi")
    r = httpx.get(gateway.url + "/v1/responses/resp_nope",
                  headers={"Authorization": f"Bearer {account.api_key}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
