"""OpenAI wire encoding: ``chat.completion.chunk`` SSE events and ``chat.completion`` bodies."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import APIError
from providers.base import Chunk, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage

DONE = b"data: [DONE]\n\n"


def usage_body(usage: Usage) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt_tokens": usage.prompt_tokens,
                            "completion_tokens": usage.completion_tokens,
                            "total_tokens": usage.total_tokens}
    if usage.cached_tokens is not None:
        body["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.reasoning_tokens is not None:
        body["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return body


class ChunkEncoder:
    """Encodes chunks of one call as SSE events; the id/created/model head is built once."""

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        head = orjson.dumps({"id": completion_id, "object": "chat.completion.chunk",
                             "created": created, "model": model, "system_fingerprint": None})
        self._head = b"data: " + head[:-1] + b',"choices":['
        self._tail = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"
        self._include_usage = include_usage
        self._started: set[int] = set()

    def _event(self, index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._head + orjson.dumps(choice) + self._tail

    def encode(self, chunk: Chunk) -> bytes:
        """The SSE bytes for one chunk (with the role event first for each choice)."""
        index = chunk.index if not isinstance(chunk, Usage) else 0
        prefix = b""
        if index not in self._started and not isinstance(chunk, Usage):
            self._started.add(index)
            prefix = self._event(index, {"role": "assistant", "content": "", "refusal": None})
        if isinstance(chunk, TextDelta):
            return prefix + self._event(index, {"content": chunk.text})
        if isinstance(chunk, ReasoningDelta):  # DeepSeek's and LiteLLM's convention
            return prefix + self._event(index, {"reasoning_content": chunk.text})
        if isinstance(chunk, ToolCallDelta):
            call: dict[str, Any] = {"index": chunk.call_index}
            if chunk.id is not None or chunk.name is not None:
                call.update(id=chunk.id, type="function",
                            function={"name": chunk.name, "arguments": chunk.arguments})
            else:
                call["function"] = {"arguments": chunk.arguments}
            return prefix + self._event(index, {"tool_calls": [call]})
        if isinstance(chunk, Finish):
            return prefix + self._event(index, {}, chunk.reason)
        return b""  # usage goes out once, at the end, via ``usage()``

    def usage(self, usage: Usage) -> bytes:
        if not self._include_usage:
            return b""
        return (self._head + b'],"usage":' + orjson.dumps(usage_body(usage)) + b"}\n\n")

    @staticmethod
    def error(error: APIError) -> bytes:
        """An error after the first byte: the same body an HTTP error would carry."""
        return b"data: " + orjson.dumps(error.body()) + b"\n\n"
