"""The Responses API's wire shapes: output items built from a call's chunks, the
``response`` object, and the stream's events (``event:`` lines, ``sequence_number``s).

``Output`` is the one place output items come from, streamed or not: each chunk opens,
fills or closes an item (reasoning, message, one function call per call index) and says
which events that was, so the stream and the whole answer cannot disagree.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.errors import APIError
from providers.base import Chunk, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage

Event = dict[str, Any]
# Chat finish reasons that cut an answer short → the Responses ``incomplete_details.reason``.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def usage_body(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    # Chat usage counts cached tokens inside prompt_tokens, as the Responses API does.
    return {"input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens or 0,
                                     "cache_write_tokens": usage.cache_creation_tokens or 0},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens}


@dataclass
class ResponseState:
    """What a ``response`` object says; the same for create, stream events and retrieve."""

    id: str
    created_at: int
    model: str
    echo: dict[str, Any]
    instructions: str | None = None
    previous_response_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    store: bool = True
    status: str = "in_progress"
    output: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    incomplete_reason: str | None = None
    error: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": self.status, "background": False, "error": self.error,
            "incomplete_details": ({"reason": self.incomplete_reason}
                                   if self.incomplete_reason else None),
            "instructions": self.instructions, "model": self.model, "output": self.output,
            "previous_response_id": self.previous_response_id, "store": self.store,
            "usage": self.usage, "metadata": self.metadata, **self.echo,
        }


class Output:
    """The output items of one answer, built chunk by chunk; ``add`` says what events
    each chunk makes (without sequence numbers: the stream numbers them as it sends)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.finish: str | None = None
        self._open: tuple[str, int] | None = None  # ("reasoning"|"message"|"tool", n)
        self._texts: list[str] = []  # the open item's pieces, joined when it closes

    @property
    def status(self) -> str:
        return "incomplete" if self.finish in INCOMPLETE else "completed"

    @property
    def incomplete_reason(self) -> str | None:
        return INCOMPLETE.get(self.finish or "")

    def _where(self) -> dict[str, Any]:
        index = len(self.items) - 1
        return {"item_id": self.items[index]["id"], "output_index": index}

    def _begin(self, key: tuple[str, int], item: dict[str, Any]) -> list[Event]:
        events = self.close()
        self._open = key
        self._texts = []
        self.items.append(item)
        events.append({"type": "response.output_item.added", "output_index":
                       len(self.items) - 1, "item": dict(item)})
        part = ({"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                if key[0] == "message" else
                {"type": "reasoning_text", "text": ""} if key[0] == "reasoning" else None)
        if part is not None:
            item["content"] = [part]
            events.append({"type": "response.content_part.added", **self._where(),
                           "content_index": 0, "part": dict(part)})
        return events

    def add(self, chunk: Chunk) -> list[Event]:
        if isinstance(chunk, TextDelta):
            events = [] if self._open == ("message", 0) else self._begin(
                ("message", 0), {"id": item_id("msg"), "type": "message",
                                 "status": "in_progress", "role": "assistant", "content": []})
            self._texts.append(chunk.text)
            events.append({"type": "response.output_text.delta", **self._where(),
                           "content_index": 0, "delta": chunk.text, "logprobs": []})
            return events
        if isinstance(chunk, ReasoningDelta):
            events = [] if self._open == ("reasoning", 0) else self._begin(
                ("reasoning", 0), {"id": item_id("rs"), "type": "reasoning", "summary": [],
                                   "status": "in_progress"})
            self._texts.append(chunk.text)
            events.append({"type": "response.reasoning_text.delta", **self._where(),
                           "content_index": 0, "delta": chunk.text})
            return events
        if isinstance(chunk, ToolCallDelta):
            key = ("tool", chunk.call_index)
            events = [] if self._open == key else self._begin(key, {
                "id": item_id("fc"), "type": "function_call", "status": "in_progress",
                "call_id": chunk.id or item_id("call"), "name": chunk.name or "",
                "arguments": ""})
            if chunk.arguments:
                self._texts.append(chunk.arguments)
                events.append({"type": "response.function_call_arguments.delta",
                               **self._where(), "delta": chunk.arguments})
            return events
        if isinstance(chunk, Finish) and chunk.index == 0:
            self.finish = chunk.reason
        return []

    def close(self) -> list[Event]:
        """Close the open item: its text is final, its ``.done`` events go out."""
        if self._open is None:
            return []
        kind = self._open[0]
        self._open = None
        item, where = self.items[-1], self._where()
        text = "".join(self._texts)
        item["status"] = "incomplete" if self.finish in INCOMPLETE else "completed"
        events: list[Event] = []
        if kind == "tool":
            item["arguments"] = text
            events.append({"type": "response.function_call_arguments.done", **where,
                           "name": item["name"], "arguments": text})
        else:
            part = item["content"][0]
            part["text"] = text
            if kind == "message":
                events.append({"type": "response.output_text.done", **where,
                               "content_index": 0, "text": text, "logprobs": []})
            else:
                events.append({"type": "response.reasoning_text.done", **where,
                               "content_index": 0, "text": text})
            events.append({"type": "response.content_part.done", **where,
                           "content_index": 0, "part": dict(part)})
        events.append({"type": "response.output_item.done",
                       "output_index": where["output_index"], "item": item})
        return events


def event_bytes(event: Event, sequence: int) -> bytes:
    """One SSE event as OpenAI sends it: an ``event:`` line naming the type, then the data
    with its ``sequence_number``."""
    event["sequence_number"] = sequence
    return (b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event)
            + b"\n\n")


def error_code(error: APIError) -> str:
    """A gateway error as a Responses ``error.code`` (the API's closed list)."""
    return "rate_limit_exceeded" if error.status == 429 else "server_error"


class EventStream:
    """Numbers and encodes one stream's events, the first being 0."""

    def __init__(self) -> None:
        self._next = 0

    def encode(self, events: list[Event]) -> bytes:
        out = b""
        for event in events:
            out += event_bytes(event, self._next)
            self._next += 1
        return out
