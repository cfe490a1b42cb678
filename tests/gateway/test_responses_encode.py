"""The Responses stream encoder (gateway/responses/encode.py) against the ``openai`` SDK's
own types: every event validates as the SDK's ``ResponseStreamEvent``, and the SDK's stream
state rebuilds the same output as the final event carries. Reasoning is covered here: no
provider on this branch produces ``ReasoningDelta`` chunks yet, so no recording can."""

from __future__ import annotations

import json

from openai import NOT_GIVEN
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.responses.encode import EventStream, Output, ResponseState, usage_body
from gateway.responses.request import parse_response
from providers.base import Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage

EVENTS: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)


def stream_of(chunks: list[object]) -> tuple[list[dict], ResponseState]:
    answer = ResponseState(id="resp_1", created_at=1, model="m",
                           echo=parse_response({"model": "m", "input": "Hi"}).echo)
    output = Output()
    events = [{"type": "response.created", "response": answer.body()}]
    for chunk in chunks:
        events += output.add(chunk)  # type: ignore[arg-type]
    events += output.close()
    answer.output, answer.status = output.items, output.status
    answer.incomplete_reason = output.incomplete_reason
    answer.usage = usage_body(Usage(prompt_tokens=5, completion_tokens=7))
    events.append({"type": f"response.{answer.status}", "response": answer.body()})
    raw = EventStream().encode(events)
    return [json.loads(block.split(b"\ndata: ")[1]) for block in raw.split(b"\n\n")
            if block], answer


def test_reasoning_text_and_tool_call_items_as_the_sdk_reads_them() -> None:
    events, answer = stream_of([
        ReasoningDelta("Lyon is "), ReasoningDelta("in France."), TextDelta("Checking"),
        TextDelta("."), ToolCallDelta(0, id="call_1", name="get_weather"),
        ToolCallDelta(0, arguments='{"location"'), ToolCallDelta(0, arguments=': "Lyon"}'),
        Finish("tool_calls")])
    assert [e["type"] for e in events] == [
        "response.created",
        "response.output_item.added", "response.content_part.added",
        "response.reasoning_text.delta", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    reasoning, message, call = answer.output
    assert reasoning["type"] == "reasoning" and reasoning["summary"] == []
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Lyon is in France."}]
    assert message["content"][0]["text"] == "Checking."
    assert (call["call_id"], call["name"], call["arguments"]) == (
        "call_1", "get_weather", '{"location": "Lyon"}')
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] \
        == [0, 1, 2]

    state: ResponseStreamState[object] = ResponseStreamState(input_tools=NOT_GIVEN,
                                                             text_format=NOT_GIVEN)
    for event in events:
        state.handle_event(EVENTS.validate_python(event))  # the SDK's own event types
    final = state._completed_response
    assert final is not None and final.status == "completed"
    assert final.output_text == "Checking."
    assert final.output[0].type == "reasoning"
    assert final.output[0].content is not None
    assert final.output[0].content[0].text == "Lyon is in France."
    assert final.output[2].type == "function_call"
    assert final.output[2].arguments == '{"location": "Lyon"}'


def test_length_cut_makes_the_items_and_response_incomplete() -> None:
    events, answer = stream_of([TextDelta("Bonj"), Finish("length")])
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert answer.status == "incomplete" and answer.output[0]["status"] == "incomplete"
    EVENTS.validate_python(events[-1])
