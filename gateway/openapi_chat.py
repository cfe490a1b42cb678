"""The OpenAPI schemas of the OpenAI-shaped bodies: chat completions (request and answer)
and embeddings, their limits taken from the modules that enforce them
(``gateway.chat.request``, ``gateway.embeddings.request``). gateway/openapi.py puts them
in the document."""

from __future__ import annotations

from gateway.chat.request import PART_TYPES, REASONING_EFFORTS, ROLES
from gateway.embeddings.request import (
    ENCODINGS,
    MAX_CHARS,
    MAX_DIMENSIONS,
    MAX_INPUTS,
    MAX_TOKEN_ID,
)
from gateway.openapi_build import BOOL, INT, NUM, OBJ, STR, array, null, obj

TOKENS = {"type": "integer", "minimum": 1, "maximum": 10_000_000}
CONTENT_PART = obj({"type": {"enum": sorted(PART_TYPES)}},
                   {"text": STR, "image_url": obj({"url": STR})})
TOOL_CALL = obj({"id": STR, "type": {"const": "function"},
                 "function": obj({"name": STR}, {"arguments": STR})})
MESSAGE = obj({"role": {"enum": sorted(ROLES)}}, {
    "content": {"anyOf": [STR, array(CONTENT_PART), {"type": "null"}],
                "description": "Required except on an assistant message with tool_calls."},
    "name": STR, "tool_calls": array(TOOL_CALL),
    "tool_call_id": {**STR, "description": "Required on tool messages."}})
TOOL = obj({"type": {"const": "function"},
            "function": obj({"name": STR}, {"description": STR, "parameters": OBJ})})
TOOL_CHOICE = {"anyOf": [{"enum": ["none", "auto", "required"]},
                         obj({"type": {"const": "function"}, "function": obj({"name": STR})})]}
STOP = {"anyOf": [{"type": "string", "minLength": 1},
                  array({"type": "string", "minLength": 1}, maxItems=4)]}
SAMPLING = {"temperature": null({"type": "number", "minimum": 0, "maximum": 2}),
            "top_p": null({"type": "number", "minimum": 0, "maximum": 1}),
            "max_tokens": null(TOKENS), "stop": null(STOP),
            "seed": null({"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1})}
CHAT_REQUEST = {
    **obj({"model": {"type": "string", "minLength": 1}, "messages": array(MESSAGE, minItems=1)},
          {"stream": null(BOOL),
           "stream_options": {**null(obj({}, {"include_usage": null(BOOL)})),
                              "description": "Only with stream: true."},
           **SAMPLING, "max_completion_tokens": null(TOKENS),
           "n": null({"type": "integer", "minimum": 1, "maximum": 128}),
           "tools": null(array(TOOL)), "tool_choice": null(TOOL_CHOICE),
           "parallel_tool_calls": null(BOOL),
           "response_format": null(obj({"type": {"enum": ["text", "json_object",
                                                          "json_schema"]}})),
           "user": null(STR),
           "reasoning_effort": {
               **null({"enum": list(REASONING_EFFORTS)}),
               "description": "On Anthropic models: extended thinking with budget_tokens "
                              "1024 (minimal), 2048 (low), 8192 (medium), 16384 (high); none: "
                              "no thinking. The reasoning comes back as reasoning_content."},
           "logprobs": null(BOOL),
           "top_logprobs": null({"type": "integer", "minimum": 0, "maximum": 20}),
           "presence_penalty": null({"type": "number", "minimum": -2, "maximum": 2}),
           "frequency_penalty": null({"type": "number", "minimum": -2, "maximum": 2}),
           "logit_bias": null({"type": "object", "additionalProperties":
                               {"type": "number", "minimum": -100, "maximum": 100}})}),
    # Fields the gateway does not know are passed to the provider untouched.
    "additionalProperties": True,
}
USAGE = obj({"prompt_tokens": INT, "completion_tokens": INT, "total_tokens": INT},
            {"prompt_tokens_details": obj({"cached_tokens": INT}),
             "completion_tokens_details": obj({"reasoning_tokens": INT})})
REASONING = {**STR, "description": "The model's reasoning (Anthropic's thinking), never part "
                                   "of content; on stream deltas too."}
CHAT_COMPLETION = obj({
    "id": STR, "object": {"const": "chat.completion"}, "created": INT, "model": STR,
    "choices": array(obj({"index": INT, "finish_reason": STR, "logprobs": {"type": "null"},
                          "message": obj({"role": {"const": "assistant"},
                                          "content": null(STR), "refusal": null(STR)},
                                         {"tool_calls": array(TOOL_CALL),
                                          "reasoning_content": REASONING})})),
    "usage": USAGE, "system_fingerprint": {"type": "null"}})

TOKEN_IDS = array({"type": "integer", "minimum": 0, "maximum": MAX_TOKEN_ID}, minItems=1)
EMBEDDINGS_REQUEST = {
    **obj({"model": {"type": "string", "minLength": 1},
           "input": {"anyOf": [
               {"type": "string", "minLength": 1, "maxLength": MAX_CHARS},
               array({"type": "string", "minLength": 1}, minItems=1, maxItems=MAX_INPUTS),
               TOKEN_IDS, array(TOKEN_IDS, minItems=1, maxItems=MAX_INPUTS)]}},
          {"encoding_format": null({"enum": list(ENCODINGS)}),
           "dimensions": null({"type": "integer", "minimum": 1, "maximum": MAX_DIMENSIONS}),
           "user": null(STR)}),
    "additionalProperties": True,  # passed to the provider untouched
}
EMBEDDINGS = obj({"object": {"const": "list"}, "model": STR,
                  "data": array(obj({"object": {"const": "embedding"}, "index": INT,
                                     "embedding": {"anyOf": [array(NUM), STR],
                                                   "description": "Floats, or base64 of "
                                                   "little-endian float32 values."}})),
                  "usage": obj({"prompt_tokens": INT, "total_tokens": INT})})
