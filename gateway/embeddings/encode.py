"""Vectors as the caller asked for them, and the ``/v1/embeddings`` answer."""

from __future__ import annotations

import array
import base64
import sys
from typing import Any

from providers.base import Usage


def to_base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: the values as little-endian float32, base64-encoded."""
    values = array.array("f", vector)
    if sys.byteorder != "little":
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def from_base64(text: str) -> list[float]:
    """The float32 values of a base64 vector (an upstream that answered base64 unasked)."""
    values = array.array("f", base64.b64decode(text))
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()


def encoded(vector: list[float] | str, encoding: str | None) -> list[float] | str:
    """``vector`` in the caller's encoding; an upstream's base64 stays untouched."""
    if encoding == "base64":
        return vector if isinstance(vector, str) else to_base64(vector)
    return from_base64(vector) if isinstance(vector, str) else vector


def embeddings_body(vectors: list[list[float] | str], encoding: str | None, model: str,
                    usage: Usage) -> dict[str, Any]:
    """OpenAI's ``CreateEmbeddingResponse``, naming the public model."""
    return {"object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encoded(v, encoding)}
                     for i, v in enumerate(vectors)],
            "model": model,
            "usage": {"prompt_tokens": usage.prompt_tokens,
                      "total_tokens": usage.prompt_tokens}}
