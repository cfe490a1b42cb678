"""The offline demo model: no keys, no network, a deterministic streamed reply.

It exists so a fresh install can chat within a minute and so the gateway's own tests have
an upstream that needs no mocking. Token counts are whitespace-split words, reported as
exact (``estimated=False``) because for this model they are the definition.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, ClassVar

import httpx
import orjson

from providers.base import (
    CHAT,
    EMBEDDINGS,
    CallContext,
    ChatRequest,
    Chunk,
    EmbeddingRequest,
    EmbeddingResult,
    Finish,
    ProviderConfig,
    TextDelta,
    ToolCallDelta,
    Usage,
    embedding_items,
)
from providers.demo_embed import DIMENSIONS, demo_tokens, demo_vector
from providers.errors import UpstreamBadRequest
from providers.upstream import first_set

DEFAULT_DELAY_MS = 20.0
_PIECES = re.compile(r"\s*\S+|\s+")  # words with their leading space
_PLACE = re.compile(r"\b(?:in|for|at)\s+([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*)")
_ECHO_LIMIT = 300
EMBEDDING_MODEL = "gateway-demo-embed"  # the demo's upstream model that embeds (only)


def message_text(content: Any) -> str:
    """The text of an OpenAI message content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text") or "" for p in content
                        if isinstance(p, dict) and p.get("type") == "text")
    return ""


def count_words(texts: Iterable[str]) -> int:
    """The demo model's token count: whitespace-separated words."""
    return sum(len(text.split()) for text in texts)


def compose_reply(messages: list[dict[str, Any]]) -> str:
    """The deterministic answer to a conversation."""
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return (f"The tool answered: {message_text(last.get('content'))} "
                "(I'm the offline demo model, so I just pass that along.)")
    question = next((message_text(m.get("content")) for m in reversed(messages)
                     if m.get("role") == "user"), "").strip()
    intro = ("Hello! I'm the offline demo model: I run inside the gateway without any API "
             "key, so I can't really think, but I can show you streaming end to end.")
    if not question:
        return intro
    if len(question) > _ECHO_LIMIT:
        question = question[:_ECHO_LIMIT].rstrip() + "…"
    return (f"{intro} You asked: “{question}” Configure a real provider such as OpenAI, "
            "Anthropic or Together to get a real answer.")


class DemoProvider:
    """Streams a canned, question-echoing reply word by word; its ``gateway-demo-embed``
    model embeds offline (providers/demo_embed.py)."""

    kind: ClassVar[str] = "demo"
    supports_n: ClassVar[bool] = True

    def __init__(self, config: ProviderConfig,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self._delay = float(config.options.get("delay_ms", DEFAULT_DELAY_MS)) / 1000.0

    @staticmethod
    def capabilities(upstream: str) -> frozenset[str]:
        """The embedding model only embeds; every other demo model only chats."""
        return frozenset({EMBEDDINGS} if upstream == EMBEDDING_MODEL else {CHAT})

    @staticmethod
    def description(upstream: str) -> str:
        """What /v1/models says of each demo model: honest about what it is."""
        if upstream == EMBEDDING_MODEL:
            return (f"Offline demo embeddings: deterministic hashed word and character "
                    f"features, {DIMENSIONS} dimensions, L2-normalised. For testing the "
                    "wiring, not for semantic search.")
        return "Offline demo chat model: a canned, question-echoing reply, for testing."

    async def embed(self, req: EmbeddingRequest, ctx: CallContext) -> EmbeddingResult:
        """Hashed-feature vectors (not semantic: for wiring tests), words as tokens."""
        if req.model != EMBEDDING_MODEL:
            raise UpstreamBadRequest(f"the demo model {req.model!r} does not embed; use "
                                     f"{EMBEDDING_MODEL!r}", param="model")
        dimensions = DIMENSIONS if req.dimensions is None else req.dimensions
        if not 1 <= dimensions <= DIMENSIONS:
            raise UpstreamBadRequest(f"'dimensions' must be between 1 and {DIMENSIONS} for "
                                     f"{EMBEDDING_MODEL!r}; got {dimensions}",
                                     param="dimensions")
        items = embedding_items(req.input)
        return EmbeddingResult(vectors=[demo_vector(item, dimensions) for item in items],
                               prompt_tokens=sum(demo_tokens(item) for item in items))

    async def complete_chat(self, req: ChatRequest, ctx: CallContext) -> list[Chunk]:
        """The same reply, returned once it is all written (paced like the stream)."""
        return [chunk async for chunk in self.stream_chat(req, ctx)]

    async def stream_chat(self, req: ChatRequest, ctx: CallContext) -> AsyncIterator[Chunk]:
        """Yield the reply (or a tool call) with realistic pacing, then usage."""
        if req.model == EMBEDDING_MODEL:
            raise UpstreamBadRequest(f"{EMBEDDING_MODEL!r} is an embedding model; call "
                                     "/v1/embeddings with it", param="model")
        choices = range(int(req.params.get("n") or 1))
        prompt_tokens = count_words(message_text(m.get("content")) for m in req.messages)
        tool = self._tool_to_call(req)
        if tool is not None:
            name, arguments = tool
            call_id = "call_" + hashlib.sha256(arguments.encode()).hexdigest()[:24]
            half = len(arguments) // 2
            await self._pause()
            for i in choices:
                yield ToolCallDelta(0, id=call_id, name=name, index=i)
                yield ToolCallDelta(0, arguments=arguments[:half], index=i)
                yield ToolCallDelta(0, arguments=arguments[half:], index=i)
                yield Finish("tool_calls", i)
            completion = count_words([name, arguments]) * len(choices)
            yield Usage(prompt_tokens=prompt_tokens, completion_tokens=completion)
            return

        reply, reason = compose_reply(req.messages), "stop"
        for stop in req.params.get("stop") or ():
            if stop and stop in reply:
                reply = reply[:reply.index(stop)]
        pieces = _PIECES.findall(reply)
        limit = first_set(req, "max_completion_tokens", "max_tokens")
        if limit is not None and len(pieces) > limit:
            pieces, reason = pieces[:limit], "length"
        for piece in pieces:
            await self._pause()
            for i in choices:
                yield TextDelta(piece, i)
        for i in choices:
            yield Finish(reason, i)
        yield Usage(prompt_tokens=prompt_tokens, completion_tokens=len(pieces) * len(choices))

    async def aclose(self) -> None:
        """Nothing to release."""

    async def _pause(self) -> None:
        if self._delay > 0:
            await asyncio.sleep(self._delay)

    def _tool_to_call(self, req: ChatRequest) -> tuple[str, str] | None:
        """(name, arguments) when the demo should call a tool instead of answering."""
        tools = [t["function"] for t in req.params.get("tools") or ()
                 if isinstance(t, dict) and isinstance(t.get("function"), dict)]
        choice = req.params.get("tool_choice")
        last = req.messages[-1] if req.messages else {}
        if not tools or choice == "none" or last.get("role") != "user":
            return None
        question = message_text(last.get("content"))
        if isinstance(choice, dict):
            wanted = (choice.get("function") or {}).get("name")
            tools = [t for t in tools if t.get("name") == wanted] or tools
        elif choice != "required" and "weather" not in question.lower():
            return None
        tool = next((t for t in tools if "weather" in str(t.get("name")).lower()), tools[0])
        place = _PLACE.search(question)
        return str(tool.get("name")), orjson.dumps(
            {_first_property(tool.get("parameters")): place.group(1) if place else "Paris"}
        ).decode()


def _first_property(schema: Any) -> str:
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(properties, Mapping) or not properties:
        return "location"
    return "location" if "location" in properties else next(iter(properties))
