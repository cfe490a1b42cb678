"""A cached answer as the chunks the upstream produced, free of any wire framing.

Chunks, not SSE bytes nor a ``chat.completion`` body: a hit is replayed through the same
encoder a live call uses, so an answer cached from a stream can be served whole and the
other way round, and a streamed replay has the very deltas of the live stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from providers.base import (
    Chunk,
    EmbeddingResult,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)

VERSION = 1  # an entry of another version (an older gateway's) is a miss


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """The chunks of a complete answer (usage among them when the upstream gave it) and
    the deployment that produced it, named on the cached call's history row."""

    chunks: list[Chunk]
    provider: str
    upstream: str

    def encode(self) -> bytes:
        return orjson.dumps({"v": VERSION, "provider": self.provider,
                             "upstream": self.upstream,
                             "chunks": [_pack(c) for c in self.chunks]})

    @classmethod
    def decode(cls, data: bytes) -> CachedAnswer | None:
        """The answer stored as ``data``; None when it is not one this gateway wrote."""
        try:
            body = orjson.loads(data)
            if body.get("v") != VERSION:
                return None
            return cls(chunks=[_unpack(c) for c in body["chunks"]],
                       provider=body["provider"], upstream=body["upstream"])
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError,
                IndexError):  # not ours: JSON of another shape, or chunks of another kind
            return None


@dataclass(frozen=True, slots=True)
class CachedEmbeddings:
    """An embeddings answer as the upstream gave it (vectors as floats or its base64), and
    the deployment that produced it."""

    result: EmbeddingResult
    provider: str
    upstream: str

    def encode(self) -> bytes:
        return orjson.dumps({"v": VERSION, "provider": self.provider,
                             "upstream": self.upstream, "vectors": self.result.vectors,
                             "prompt_tokens": self.result.prompt_tokens})

    @classmethod
    def decode(cls, data: bytes) -> CachedEmbeddings | None:
        """The embeddings stored as ``data``; None when they are not ones this gateway
        wrote."""
        try:
            body = orjson.loads(data)
            if body.get("v") != VERSION or not isinstance(body["vectors"], list):
                return None
            tokens = body["prompt_tokens"]
            if tokens is not None and not isinstance(tokens, int):
                return None
            return cls(EmbeddingResult(vectors=body["vectors"], prompt_tokens=tokens),
                       provider=body["provider"], upstream=body["upstream"])
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            return None


def _pack(chunk: Chunk) -> list[Any]:
    if isinstance(chunk, TextDelta):
        return ["t", chunk.text, chunk.index]
    if isinstance(chunk, ToolCallDelta):
        return ["c", chunk.call_index, chunk.id, chunk.name, chunk.arguments, chunk.index]
    if isinstance(chunk, Finish):
        return ["f", chunk.reason, chunk.index]
    if isinstance(chunk, ReasoningDelta):
        return ["r", chunk.text, chunk.index]
    return ["u", chunk.prompt_tokens, chunk.completion_tokens, chunk.cached_tokens,
            chunk.cache_creation_tokens, chunk.estimated, chunk.reasoning_tokens]


# Each packed chunk is its kind's letter, then the fields in the order the class takes them.
_KINDS: dict[str, type] = {"t": TextDelta, "c": ToolCallDelta, "f": Finish,
                           "r": ReasoningDelta, "u": Usage}


def _unpack(item: list[Any]) -> Chunk:
    return _KINDS[item[0]](*item[1:])
