"""The offline demo embedding model: deterministic hashed features, for wiring tests only.

Each input becomes a bag of features (its lower-cased words and character trigrams, or
its token ids and id pairs), each hashed (BLAKE2b) to one of 256 buckets with a sign, the
"hashing trick"; the sum is L2-normalised. The same text always gives the same vector,
texts that share words or spellings point somewhat the same way, and nothing about it is
semantic: it is meant for checking that embeddings flow through the gateway, not for
search. ``dimensions`` below 256 keeps the first values and renormalises, as OpenAI's
text-embedding-3 models do.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

DIMENSIONS = 256


def _features(item: str | list[int]) -> Iterator[bytes]:
    if isinstance(item, str):
        text = item.lower()
        for word in text.split():
            yield b"w:" + word.encode()
        padded = f" {text} "
        for i in range(len(padded) - 2):
            yield b"c:" + padded[i:i + 3].encode()
    else:
        for i, token in enumerate(item):
            yield b"t:%d" % token
            if i:
                yield b"p:%d:%d" % (item[i - 1], token)


def demo_vector(item: str | list[int], dimensions: int = DIMENSIONS) -> list[float]:
    """The vector of one input, ``dimensions`` (1 to 256) long, of unit length."""
    full = [0.0] * DIMENSIONS
    for feature in _features(item):
        digest = hashlib.blake2b(feature, digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        full[value % DIMENSIONS] += 1.0 if value >> 63 else -1.0
    vector = full[:dimensions]
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:  # no feature landed in the kept buckets: a fixed unit vector
        return [1.0] + [0.0] * (dimensions - 1)
    return [x / norm for x in vector]


def demo_tokens(item: str | list[int]) -> int:
    """The demo model's token count of one input: words (as its chat counts), or ids."""
    return len(item.split()) if isinstance(item, str) else len(item)
