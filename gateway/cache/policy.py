"""Which chat calls the cache answers, and under which key.

A call uses the cache when it says ``x-gateway-cache: on``, or when its model has
``cache = true`` and the call does not say ``off``. The key is a sha256 of the canonical
request (sorted-key JSON of the route, the model, the messages and every parameter that
changes the answer; not ``stream``/``stream_options``, which only change its framing),
scoped to the user: the user's id is in the hash and in the key.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from typing import Protocol

import orjson

from gateway.cache.entry import CachedAnswer
from gateway.catalog import Route
from gateway.chat.request import ParsedChat
from gateway.errors import invalid
from providers.base import ChatRequest

log = logging.getLogger("gateway")

HEADER = "x-gateway-cache"
CHAT_ROUTE = "/v1/chat/completions"


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


def chat_key(user_id: uuid.UUID, model: str, request: ChatRequest) -> str:
    """The cache key of a chat call of ``user_id`` to the public ``model``."""
    canonical = orjson.dumps(
        {"route": CHAT_ROUTE, "user": str(user_id), "model": model,
         "messages": request.messages, "params": dict(request.params),
         "extra": dict(request.extra)},
        option=orjson.OPT_SORT_KEYS)
    return f"gw:cache:{user_id}:{hashlib.sha256(canonical).hexdigest()}"


class ResponseCache:
    """Built once in the lifespan over one store."""

    def __init__(self, store: CacheStore, *, default_ttl: float) -> None:
        self.store = store
        self.default_ttl = default_ttl

    def slot(self, header: str | None, route: Route, user_id: uuid.UUID,
             parsed: ParsedChat) -> CacheSlot | None:
        """The call's slot, or None when the cache does not apply to it: it said ``off``,
        its model does not cache by default, or it asks for several choices (``n`` > 1,
        whose answers are not kept)."""
        if header is None:
            wanted = route.cache
        else:
            value = header.strip().lower()
            if value not in ("on", "off"):
                raise invalid(HEADER, f"the '{HEADER}' header must be 'on' or 'off'; "
                              f"got {header!r}")
            wanted = value == "on"
        if not wanted or parsed.n != 1:
            return None
        ttl = route.cache_ttl if route.cache_ttl is not None else self.default_ttl
        return CacheSlot(chat_key(user_id, route.public, parsed.request), ttl)

    async def get(self, slot: CacheSlot) -> CachedAnswer | None:
        data = await self.store.get(slot.key)
        if data is None:
            return None
        answer = CachedAnswer.decode(data)
        if answer is None:
            log.warning("response cache: entry %s is not readable; treated as a miss",
                        slot.key)
        return answer

    async def put(self, slot: CacheSlot, answer: CachedAnswer) -> None:
        await self.store.put(slot.key, answer.encode(), slot.ttl)

    async def aclose(self) -> None:
        await self.store.aclose()
