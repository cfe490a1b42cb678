"""OpenAI's ``POST /embeddings`` wire format: the body sent and the answer read back.

The caller's fields pass through as they came (unknown ones included). An answer's
vectors are kept as the upstream sent them: floats as a list, base64 (little-endian
float32, what ``encoding_format: "base64"`` asks for) as the untouched string, so
nothing is decoded and re-encoded on the way to a caller who asked for base64.
"""

from __future__ import annotations

import binascii
import math
from typing import Any

from providers.base import EmbeddingRequest, EmbeddingResult


def embeddings_body(req: EmbeddingRequest) -> dict[str, Any]:
    """The upstream request: the known fields that were set, then the unknown ones."""
    body: dict[str, Any] = {"model": req.model, "input": req.input}
    if req.encoding_format is not None:
        body["encoding_format"] = req.encoding_format
    if req.dimensions is not None:
        body["dimensions"] = req.dimensions
    if req.user is not None:
        body["user"] = req.user
    for name, value in req.extra.items():
        body.setdefault(name, value)
    return body


def parse_embeddings(payload: dict[str, Any], count: int) -> EmbeddingResult:
    """The vectors of an answer, in input order; ``ValueError`` (or ``TypeError``,
    ``KeyError``) for an answer of another shape or with another number of vectors."""
    data = payload["data"]
    if not isinstance(data, list) or len(data) != count:
        raise ValueError(f"expected {count} embeddings")
    vectors: list[list[float] | str | None] = [None] * count
    for position, item in enumerate(data):
        index = item.get("index", position)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise ValueError("embedding index out of range")
        if vectors[index] is not None:
            raise ValueError("embedding index repeated")
        vectors[index] = _vector(item["embedding"])
    usage = payload.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        tokens = None  # some compatible servers (Together) report no usage
    return EmbeddingResult(vectors=vectors, prompt_tokens=tokens)  # type: ignore[arg-type]


def _vector(value: Any) -> list[float] | str:
    if isinstance(value, str):
        # Checked, not converted: a caller's SDK decodes it as float32s.
        if len(binascii.a2b_base64(value, strict_mode=True)) % 4:
            raise ValueError("a base64 embedding must hold whole float32 values")
        return value
    if not isinstance(value, list) or not value:
        raise ValueError("an embedding must be a non-empty list of numbers or base64")
    for x in value:
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            raise ValueError("an embedding must hold finite numbers")
    return value
