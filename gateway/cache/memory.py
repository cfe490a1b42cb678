"""The in-process cache store: bounded by bytes, least recently used out first, with TTL."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

# What one entry costs beyond its key and value (the dict slot, the tuple, two objects):
# counted so that many tiny entries cannot outgrow the bound.
OVERHEAD_BYTES = 200


class MemoryStore:
    """Entries of one process; ``clock`` is monotonic seconds (injected by tests)."""

    def __init__(self, max_bytes: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _size(key: str, value: bytes) -> int:
        return len(key) + len(value) + OVERHEAD_BYTES

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self.bytes -= self._size(key, value)

    async def get(self, key: str) -> bytes | None:
        item = self._entries.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        if key in self._entries:
            self._drop(key)
        size = self._size(key, value)
        if size > self.max_bytes:
            return  # larger than the whole cache: kept nowhere rather than emptying it
        while self.bytes + size > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
        self._entries[key] = (self._clock() + ttl, value)
        self.bytes += size

    async def aclose(self) -> None:
        self._entries.clear()
        self.bytes = 0
