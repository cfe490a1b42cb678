"""Which calls the cache answers, and under which key.

A call (chat, or embeddings) uses the cache when it says ``x-gateway-cache: on``, or when
its model has ``cache = true`` and the call does not say ``off``. The key is a sha256 of
the canonical request (sorted-key JSON of the route, the model, the messages or inputs and
every parameter that changes the answer; not ``stream``/``stream_options`` nor
``encoding_format``, which only change its framing), scoped to the user: the user's id is
in the hash and in the key.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import orjson

from gateway.cache.entry import CachedAnswer, CachedEmbeddings
from gateway.catalog import Route
from gateway.chat.request import ParsedChat
from gateway.errors import invalid
from providers.base import ChatRequest, EmbeddingRequest

log = logging.getLogger("gateway")

HEADER = "x-gateway-cache"
CHAT_ROUTE = "/v1/chat/completions"
EMBEDDINGS_ROUTE = "/v1/embeddings"
T = TypeVar("T")


class CacheStore(Protocol):
    """Where entries live: bytes by key, each kept ``ttl`` seconds at most."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CacheSlot:
    """Where one call's answer is looked up and, on a miss, kept."""

    key: str
    ttl: float


def _key(user_id: uuid.UUID, canonical: dict[str, object]) -> str:
    data = orjson.dumps({**canonical, "user": str(user_id)}, option=orjson.OPT_SORT_KEYS)
    return f"gw:cache:{user_id}:{hashlib.sha256(data).hexdigest()}"


def chat_key(user_id: uuid.UUID, model: str, request: ChatRequest) -> str:
    """The cache key of a chat call of ``user_id`` to the public ``model``."""
    return _key(user_id, {"route": CHAT_ROUTE, "model": model, "messages": request.messages,
                          "params": dict(request.params), "extra": dict(request.extra)})


def embeddings_key(user_id: uuid.UUID, model: str, request: EmbeddingRequest) -> str:
    """The cache key of an embeddings call; not its ``encoding_format``, which only says
    how the same vectors are written."""
    return _key(user_id, {"route": EMBEDDINGS_ROUTE, "model": model, "input": request.input,
                          "dimensions": request.dimensions, "end_user": request.user,
                          "extra": dict(request.extra)})


class ResponseCache:
    """Built once in the lifespan over one store."""

    def __init__(self, store: CacheStore, *, default_ttl: float) -> None:
        self.store = store
        self.default_ttl = default_ttl

    def ttl(self, header: str | None, route: Route) -> float | None:
        """How long the call's answer is kept, or None when the cache does not apply: the
        call said ``off``, or said nothing and its model does not cache by default."""
        if header is None:
            wanted = route.cache
        else:
            value = header.strip().lower()
            if value not in ("on", "off"):
                raise invalid(HEADER, f"the '{HEADER}' header must be 'on' or 'off'; "
                              f"got {header!r}")
            wanted = value == "on"
        if not wanted:
            return None
        return route.cache_ttl if route.cache_ttl is not None else self.default_ttl

    def slot(self, header: str | None, route: Route, user_id: uuid.UUID,
             parsed: ParsedChat) -> CacheSlot | None:
        """A chat call's slot, or None when the cache does not apply to it (``ttl``) or
        it asks for several choices (``n`` > 1, whose answers are not kept)."""
        ttl = self.ttl(header, route)
        if ttl is None or parsed.n != 1:
            return None
        return CacheSlot(chat_key(user_id, route.public, parsed.request), ttl)

    def embeddings_slot(self, header: str | None, route: Route, user_id: uuid.UUID,
                        request: EmbeddingRequest) -> CacheSlot | None:
        """An embeddings call's slot, or None when the cache does not apply to it."""
        ttl = self.ttl(header, route)
        if ttl is None:
            return None
        return CacheSlot(embeddings_key(user_id, route.public, request), ttl)

    async def get(self, slot: CacheSlot) -> CachedAnswer | None:
        """The chat answer kept in ``slot``, if any."""
        return self._decoded(slot, CachedAnswer.decode, await self.store.get(slot.key))

    async def get_embeddings(self, slot: CacheSlot) -> CachedEmbeddings | None:
        """The embeddings kept in ``slot``, if any."""
        return self._decoded(slot, CachedEmbeddings.decode, await self.store.get(slot.key))

    @staticmethod
    def _decoded(slot: CacheSlot, decode: Callable[[bytes], T | None],
                 data: bytes | None) -> T | None:
        if data is None:
            return None
        found = decode(data)
        if found is None:
            log.warning("response cache: entry %s is not readable; treated as a miss",
                        slot.key)
        return found

    async def put(self, slot: CacheSlot, answer: CachedAnswer | CachedEmbeddings) -> None:
        await self.store.put(slot.key, answer.encode(), slot.ttl)

    async def aclose(self) -> None:
        await self.store.aclose()
