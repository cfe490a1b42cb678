"""The response cache: identical chat (and embeddings) calls of one user answered once
(issue 16).

``ResponseCache`` (gateway/cache/policy.py) decides which calls it applies to and keys
them; the answer is kept in a form free of wire framing (gateway/cache/entry.py) in Redis
when ``REDIS_URL`` is set (gateway/cache/redis_store.py), else in a bounded in-process
store (gateway/cache/memory.py).
"""

from gateway.cache.entry import CachedAnswer, CachedEmbeddings
from gateway.cache.memory import MemoryStore
from gateway.cache.policy import (
    HEADER,
    CacheSlot,
    CacheStore,
    ResponseCache,
    chat_key,
    embeddings_key,
)

__all__ = ["HEADER", "CacheSlot", "CacheStore", "CachedAnswer", "CachedEmbeddings",
           "MemoryStore", "ResponseCache", "chat_key", "embeddings_key"]
