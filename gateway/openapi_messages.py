"""The OpenAPI description of Anthropic's Messages API routes (``/v1/messages`` and its
``count_tokens``): their errors have Anthropic's shape, not the shared OpenAI one, so
their answers are described here rather than from gateway/openapi_build.py's table."""

from __future__ import annotations

from typing import Any

from gateway.messages.encode import ERROR_TYPES, OVERLOADED
from gateway.messages.request import BLOCK_TYPES, MAX_TOKENS, TOOL_CHOICES
from gateway.openapi_build import (
    BEARER,
    BOOL,
    ERRORS,
    INT,
    OBJ,
    RATE_LIMIT_HEADERS,
    RETRY_HEADERS,
    SSE_EVENT,
    STR,
    Schema,
    array,
    headers,
    json_response,
    null,
    obj,
)

TEXT_BLOCK = obj({"type": {"const": "text"}, "text": STR})
BLOCK = {**obj({"type": {"enum": sorted(BLOCK_TYPES)}}), "additionalProperties": True}
MESSAGE = obj({"role": {"enum": ["user", "assistant"]},
               "content": {"anyOf": [STR, array(BLOCK)]}})
TOOL = {**obj({"name": STR, "input_schema": OBJ}, {"description": STR}),
        "additionalProperties": True}
REQUEST_FIELDS = {
    "system": {"anyOf": [STR, array(TEXT_BLOCK)]},
    "temperature": null({"type": "number", "minimum": 0, "maximum": 1}),
    "top_p": null({"type": "number", "minimum": 0, "maximum": 1}),
    "stop_sequences": null(array({"type": "string", "minLength": 1})),
    "tools": null(array(TOOL)),
    "tool_choice": null({**obj({"type": {"enum": sorted(TOOL_CHOICES)}}, {"name": STR}),
                         "description": "`name` is required with type `tool`."}),
    "metadata": null(obj({}, {"user_id": null(STR)})),
}
TOKENS = {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS}
# Fields the gateway does not translate (top_k, thinking, ...) are sent on to the provider.
MESSAGES_REQUEST = {**obj({"model": {"type": "string", "minLength": 1}, "max_tokens": TOKENS,
                           "messages": array(MESSAGE, minItems=1)},
                          {"stream": null(BOOL), **REQUEST_FIELDS}),
                    "additionalProperties": True}
COUNT_REQUEST = {**obj({"model": {"type": "string", "minLength": 1},
                        "messages": array(MESSAGE, minItems=1)},
                       {"max_tokens": TOKENS, **REQUEST_FIELDS}),
                 "additionalProperties": True}
USAGE = obj({"input_tokens": INT, "output_tokens": INT, "cache_read_input_tokens": INT,
             "cache_creation_input_tokens": INT})
MESSAGE_ANSWER = obj({
    "id": STR, "type": {"const": "message"}, "role": {"const": "assistant"}, "model": STR,
    "content": array({**obj({"type": {"enum": ["text", "tool_use"]}}),
                      "additionalProperties": True}),
    "stop_reason": STR, "stop_sequence": {"type": "null"}, "usage": USAGE})
ERROR = obj({"type": {"const": "error"},
             "error": obj({"type": {"enum": sorted(set(ERROR_TYPES.values()))},
                           "message": STR})})
REQUEST_ID = {"x-request-id": {"schema": STR, "required": True,
                               "description": "The request's id."}}


def _error(status: int, text: str) -> Schema:
    extra: dict[str, Any] = {}
    if status in (429, OVERLOADED):
        extra = headers(RETRY_HEADERS, required=False)
    return {"description": text, "headers": {**REQUEST_ID, **extra},
            "content": {"application/json": {"schema": ERROR}}}


ANTHROPIC_ERRORS = {
    400: "invalid_request_error: the message names the field.",
    401: "authentication_error: the key (x-api-key or Authorization) is missing or wrong.",
    403: "permission_error.",
    404: "not_found_error: no such model, or not on the caller's plan.",
    429: "rate_limit_error: a plan limit or the upstream's; `retry-after` says when.",
    500: "api_error: the gateway hit an internal error.",
    502: "api_error: the upstream failed or answered something unusable.",
    504: "timeout_error: the upstream did not answer in time.",
    OVERLOADED: "overloaded_error: every upstream is unavailable (the gateway's 503, "
                "answered as Anthropic's 529).",
}
# Answered before the route runs, by the app's shared layers: OpenAI's shape.
SHARED = (405, 413, 415)


def _operation(summary: str, ok: Schema, body: Schema) -> Schema:
    responses: dict[str, Any] = {"200": ok}
    for status, text in ANTHROPIC_ERRORS.items():
        responses[str(status)] = _error(status, text)
    for status in SHARED:
        responses[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    return {"tags": ["messages"], "summary": summary, "security": BEARER,
            "responses": responses,
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": body}}}}


MESSAGES_PATHS: dict[str, dict[str, Schema]] = {
    "/v1/messages": {"post": _operation(
        "Create a message, Anthropic's Messages API (plain or streamed), for any model",
        {"description": "The message; with `stream: true` Anthropic's server-sent events "
                        "(message_start ... message_stop).",
         "headers": {**REQUEST_ID, **headers(RATE_LIMIT_HEADERS, required=True)},
         "content": {"application/json": {"schema": MESSAGE_ANSWER},
                     "text/event-stream": {"schema": SSE_EVENT}}},
        MESSAGES_REQUEST)},
    "/v1/messages/count_tokens": {"post": _operation(
        "Count a Messages request's input tokens (tiktoken's estimate)",
        json_response("The count", obj({"input_tokens": INT})), COUNT_REQUEST)},
}
