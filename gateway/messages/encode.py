"""Anthropic wire encoding of a call's chunks: the ``message`` body, the stream's events
(message_start, content_block_start / _delta / _stop, message_delta, message_stop, ping,
in Anthropic's order) and errors in Anthropic's shape.

Reasoning (``ReasoningDelta``) becomes ``thinking`` blocks. Their ``signature`` is empty:
only Anthropic signs thinking, and an Anthropic upstream's answer is relayed, not encoded
here; a client that sends such a block back gets it dropped on the way to the upstream."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from gateway.chat.transcript import Transcript
from gateway.errors import APIError
from providers.anthropic_format import FINISH_REASONS, anthropic_usage, tool_input
from providers.base import Chunk, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage

# The gateway's status → Anthropic's error type. 503 (every upstream unavailable, or paused
# by its breaker) is answered as Anthropic's 529 overloaded_error: what Anthropic's SDKs
# retry on, and what its clients show as "overloaded".
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
               409: "invalid_request_error", 413: "request_too_large",
               415: "invalid_request_error", 422: "invalid_request_error",
               429: "rate_limit_error", 500: "api_error", 504: "timeout_error",
               529: "overloaded_error"}
OVERLOADED = 529


def error_status(error: APIError) -> int:
    return OVERLOADED if error.status == 503 else error.status


def error_body(error: APIError) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` for a gateway error."""
    kind = ERROR_TYPES.get(error_status(error), "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def error_response(error: APIError) -> Response:
    return Response(orjson.dumps(error_body(error)), status_code=error_status(error),
                    headers=error.headers, media_type="application/json")


def stop_reason(finish: str | None) -> str:
    return FINISH_REASONS.get(finish or "stop", "end_turn")


def usage_fields(usage: Usage) -> dict[str, int]:
    return anthropic_usage(usage.prompt_tokens, usage.completion_tokens,
                           usage.cached_tokens, usage.cache_creation_tokens)


def message_body(message_id: str, model: str, transcript: Transcript,
                 usage: Usage) -> dict[str, Any]:
    """A whole ``message`` answer: its thinking block, its text block, then its tool_use
    blocks."""
    content: list[dict[str, Any]] = []
    if reasoning := transcript.reasoning():
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if text := transcript.text():
        content.append({"type": "text", "text": text})
    for call in transcript.tool_calls():
        arguments = tool_input(call["function"]["arguments"])
        content.append({"type": "tool_use", "id": call["id"], "name": call["function"]["name"],
                        "input": arguments if isinstance(arguments, dict) else {}})
    return {"id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason(transcript.finish_reason()),
            "stop_sequence": None, "usage": usage_fields(usage)}


def event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


PING = event("ping", {"type": "ping"})


class EventEncoder:
    """Turns one call's chunks into Anthropic stream events: one content block at a time
    (thinking, text, or one tool_use per tool call), each opened, filled and closed in
    order."""

    def __init__(self, message_id: str, model: str, input_tokens: int) -> None:
        self._message_id = message_id
        self._model = model
        self._input_tokens = input_tokens
        self._index = -1  # the open content block's index
        self._open: tuple[str, int] | None = None  # ("text", 0) or ("tool", call_index)
        self._finish: str | None = None

    def start(self) -> bytes:
        """message_start (usage as estimated so far), then a ping, as Anthropic sends."""
        message = {"id": self._message_id, "type": "message", "role": "assistant",
                   "model": self._model, "content": [], "stop_reason": None,
                   "stop_sequence": None,
                   "usage": {"input_tokens": self._input_tokens, "output_tokens": 0}}
        return event("message_start", {"type": "message_start", "message": message}) + PING

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _begin(self, key: tuple[str, int], block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = key
        return out + event("content_block_start", {"type": "content_block_start",
                                                   "index": self._index,
                                                   "content_block": block})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event("content_block_delta", {"type": "content_block_delta",
                                             "index": self._index, "delta": delta})

    def encode(self, chunk: Chunk) -> bytes:
        if isinstance(chunk, TextDelta):
            out = b""
            if self._open != ("text", 0):
                out = self._begin(("text", 0), {"type": "text", "text": ""})
            return out + self._delta({"type": "text_delta", "text": chunk.text})
        if isinstance(chunk, ReasoningDelta):
            out = b""
            if self._open != ("thinking", 0):
                out = self._begin(("thinking", 0),
                                  {"type": "thinking", "thinking": "", "signature": ""})
            return out + self._delta({"type": "thinking_delta", "thinking": chunk.text})
        if isinstance(chunk, ToolCallDelta):
            out = b""
            key = ("tool", chunk.call_index)
            if self._open != key:
                out = self._begin(key, {"type": "tool_use", "id": chunk.id or "",
                                        "name": chunk.name or "", "input": {}})
            if chunk.arguments:
                out += self._delta({"type": "input_json_delta",
                                    "partial_json": chunk.arguments})
            return out
        if isinstance(chunk, Finish):
            self._finish = chunk.reason
        return b""

    def end(self, usage: Usage) -> bytes:
        """The open block's stop, message_delta (stop reason, usage) and message_stop."""
        return (self._close()
                + event("message_delta", {"type": "message_delta",
                                          "delta": {"stop_reason": stop_reason(self._finish),
                                                    "stop_sequence": None},
                                          "usage": usage_fields(usage)})
                + event("message_stop", {"type": "message_stop"}))

    @staticmethod
    def error(error: APIError) -> bytes:
        """A mid-stream error: Anthropic's ``error`` event."""
        return event("error", error_body(error))
