"""The OpenAPI description of OpenAI's Responses API routes (``/v1/responses`` and one
stored response): what the gateway takes, refuses (gateway/responses/request.py says why)
and answers."""

from __future__ import annotations

from typing import Any

from gateway.openapi_build import (
    BOOL,
    INT,
    NUM,
    OBJ,
    RATE_LIMIT_HEADERS,
    REQUEST_ID,
    STR,
    UPSTREAM,
    Schema,
    array,
    headers,
    json_response,
    null,
    obj,
    operation,
    path_param,
)
from gateway.responses.request import EFFORTS, MAX_TOKENS, REFUSED, ROLES

OPEN = {"additionalProperties": True}
PART = {**obj({"type": {"enum": ["input_text", "input_image", "input_file", "output_text",
                                 "refusal"]}}), **OPEN}
ITEM = {"anyOf": [
    {**obj({"role": {"enum": sorted(ROLES)}, "content": {"anyOf": [STR, array(PART)]}},
           {"type": {"const": "message"}}), **OPEN},
    {**obj({"type": {"const": "function_call"}, "call_id": STR, "name": STR,
            "arguments": STR}), **OPEN},
    {**obj({"type": {"const": "function_call_output"}, "call_id": STR,
            "output": {"anyOf": [STR, array(PART)]}}), **OPEN},
    {**obj({"type": {"const": "reasoning"}}), **OPEN}]}
TOOL = {**obj({"type": {"const": "function"}, "name": STR},
              {"description": null(STR), "parameters": null(OBJ), "strict": null(BOOL)}),
        **OPEN}
TOOL_CHOICE = {"anyOf": [{"enum": ["auto", "none", "required"]},
                         obj({"type": {"const": "function"}, "name": STR})]}
REQUEST = {**obj({"model": {"type": "string", "minLength": 1},
                  "input": {"anyOf": [STR, array(ITEM, minItems=1)]}}, {
    "instructions": null(STR),
    "max_output_tokens": null({"type": "integer", "minimum": 1, "maximum": MAX_TOKENS}),
    "temperature": null({"type": "number", "minimum": 0, "maximum": 2}),
    "top_p": null({"type": "number", "minimum": 0, "maximum": 1}),
    "tools": null(array(TOOL)),
    "tool_choice": null(TOOL_CHOICE),
    "parallel_tool_calls": null(BOOL),
    "text": null({**obj({}, {"format": OBJ}), "description":
                  "`format`: text, json_object or json_schema (name, schema, strict): the "
                  "chat route's `response_format`."}),
    "reasoning": null(obj({}, {"effort": null({"enum": sorted(EFFORTS)}),
                               "summary": null(STR)})),
    "metadata": null({"type": "object", "additionalProperties": STR, "maxProperties": 16}),
    "user": null(STR),
    "store": null({**BOOL, "description": "Keep the answer for retrieve and "
                   "previous_response_id (default true)."}),
    "stream": null(BOOL),
    "previous_response_id": null({**STR, "description": "Continue from this stored "
                                  "response: its chain's turns are sent upstream, up to "
                                  "GATEWAY_RESPONSES_MAX_CHAIN answers deep."}),
    "truncation": null({"const": "disabled"}),
    **{name: {"description": f"Refused with a 400 unless empty: {why}."}
       for name, why in REFUSED.items()},
}), "description": "Built-in tools (web_search, file_search, code_interpreter, computer "
    "use, ...) and unknown parameters are refused with a 400 naming them."}
USAGE = obj({"input_tokens": INT, "input_tokens_details": obj({"cached_tokens": INT}),
             "output_tokens": INT, "output_tokens_details": obj({"reasoning_tokens": INT}),
             "total_tokens": INT})
RESPONSE = {**obj({
    "id": STR, "object": {"const": "response"}, "created_at": INT,
    "status": {"enum": ["completed", "incomplete", "failed", "in_progress"]},
    "error": null(obj({"code": STR, "message": STR})),
    "incomplete_details": null(obj({"reason": {"enum": ["max_output_tokens",
                                                         "content_filter"]}})),
    "instructions": null(STR), "model": STR,
    "output": array({**obj({"type": {"enum": ["message", "function_call", "reasoning"]},
                            "id": STR}), **OPEN}),
    "previous_response_id": null(STR), "store": BOOL, "usage": null(USAGE),
    "metadata": {"type": "object", "additionalProperties": STR},
    "temperature": NUM, "top_p": NUM, "tools": array(OBJ), "parallel_tool_calls": BOOL,
    "tool_choice": {"anyOf": [STR, OBJ]}}), **OPEN}
# One server-sent event as schemathesis reads it: its ``event:`` line (the data's ``type``)
# and its ``data:``, a JSON object with a ``sequence_number``.
EVENT = {**obj({"event": {"type": "string", "pattern": "^response\\.[a-z_.]+$"},
                "data": {**STR, "contentMediaType": "application/json"}}), **OPEN}
RESPONSE_ID = [path_param("response_id", STR, "The response's id (resp_…).")]
CREATED: dict[int, Any] = {200: {
    "description": "The response; with `stream: true` server-sent events with `event:` "
                   "lines and `sequence_number`s (response.created ... response.completed, "
                   "response.incomplete or response.failed).",
    "headers": {**REQUEST_ID, **headers(RATE_LIMIT_HEADERS, required=True)},
    "content": {"application/json": {"schema": RESPONSE},
                "text/event-stream": {"schema": EVENT}}}}

RESPONSES_PATHS: dict[str, dict[str, Schema]] = {
    "/v1/responses": {"post": operation(
        "responses", "Create a response, OpenAI's Responses API (plain or streamed), for "
        "any model", CREATED, errors=UPSTREAM, body=REQUEST)},
    "/v1/responses/{response_id}": {
        "get": operation("responses", "A stored response (its owner's only)",
                         {200: json_response("The response", RESPONSE)}, errors=(404,),
                         parameters=RESPONSE_ID),
        "delete": operation("responses", "Delete a stored response",
                            {200: json_response("Deleted", obj({
                                "id": STR, "object": {"const": "response"},
                                "deleted": {"const": True}}))},
                            errors=(404,), parameters=RESPONSE_ID)},
}
