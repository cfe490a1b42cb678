"""The cache stores on their own: the in-process one's byte bound, LRU order and TTL on an
injected clock; the Redis one's TTL on the real server; answers' encoding round trip."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from gateway.cache import CachedAnswer, CachedEmbeddings, MemoryStore
from gateway.cache.memory import OVERHEAD_BYTES
from gateway.cache.redis_store import RedisStore
from providers.base import (
    EmbeddingResult,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from tests.conftest import REDIS_URL, skip_or_fail


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def size(key: str, value: bytes) -> int:
    return len(key) + len(value) + OVERHEAD_BYTES


def test_memory_byte_bound_evicts_least_recently_used() -> None:
    value = b"x" * 100
    store = MemoryStore(3 * size("k0", value), clock=Clock())

    async def run() -> None:
        for key in ("k0", "k1", "k2"):
            await store.put(key, value, 60)
        assert len(store) == 3 and store.bytes == store.max_bytes
        assert await store.get("k0") == value  # k0 is now the most recently used
        await store.put("k3", value, 60)  # over the bound: k1, the least recent, goes
        assert await store.get("k1") is None
        assert [await store.get(k) for k in ("k0", "k2", "k3")] == [value] * 3
        await store.put("k4", b"y" * 250, 60)  # a bigger one pushes out two
        assert len(store) == 2 and store.bytes <= store.max_bytes
        assert await store.get("k4") == b"y" * 250
        # Larger than the whole cache: not kept, and nothing else evicted for it.
        await store.put("huge", b"z" * store.max_bytes, 60)
        assert await store.get("huge") is None and len(store) == 2
        # Replacing an entry counts its bytes once.
        before = store.bytes
        await store.put("k4", b"y" * 250, 60)
        assert store.bytes == before

    asyncio.run(run())


def test_memory_ttl_on_injected_clock() -> None:
    clock = Clock()
    store = MemoryStore(1 << 20, clock=clock)

    async def run() -> None:
        await store.put("short", b"a", 10)
        await store.put("long", b"b", 100)
        clock.now = 9.999
        assert await store.get("short") == b"a"
        clock.now = 10.0
        assert await store.get("short") is None
        assert len(store) == 1 and store.bytes == size("long", b"b")
        clock.now = 99.0
        assert await store.get("long") == b"b"
        clock.now = 100.0
        assert await store.get("long") is None and store.bytes == 0

    asyncio.run(run())


def test_redis_entries_expire_by_px() -> None:
    if not REDIS_URL:
        skip_or_fail("Redis not available: set GATEWAY_TEST_REDIS_URL")
    from redis.asyncio import Redis

    async def run() -> None:
        redis = Redis.from_url(REDIS_URL)
        store = RedisStore(redis)
        key = f"gw:cache:test:{time.time_ns()}"
        try:
            await store.put(key, b"answer", 0.3)
            assert await store.get(key) == b"answer"
            assert 0 < await redis.pttl(key) <= 300
            deadline = time.monotonic() + 5
            while await store.get(key) is not None:  # polled, not slept for
                assert time.monotonic() < deadline, "the entry did not expire"
                await asyncio.sleep(0.02)
            assert not store.down
        finally:
            await redis.delete(key)
            await redis.aclose()

    asyncio.run(run())


@pytest.mark.parametrize("chunks", [
    [TextDelta("Bon"), TextDelta("jour"), Finish("stop"), Usage(3, 2, cached_tokens=1)],
    [ReasoningDelta("hm"), ToolCallDelta(0, id="call_1", name="f"),
     ToolCallDelta(0, arguments='{"a":1}'), Finish("tool_calls"),
     Usage(5, 7, cache_creation_tokens=4, estimated=True)],
    [TextDelta("a", index=1), Finish("length", index=1)],
])
def test_answer_round_trip(chunks: list) -> None:
    answer = CachedAnswer(chunks, provider="p", upstream="u")
    assert CachedAnswer.decode(answer.encode()) == answer


def test_embeddings_round_trip() -> None:
    for result in (EmbeddingResult([[0.5, -1.25], [3.0, 0.0]], prompt_tokens=4),
                   EmbeddingResult(["AAAAPw=="], prompt_tokens=None)):
        kept = CachedEmbeddings(result, provider="p", upstream="u")
        assert CachedEmbeddings.decode(kept.encode()) == kept
    for data in (b"{}", b'{"v": 1, "vectors": 3, "prompt_tokens": 1, "provider": "p", '
                 b'"upstream": "u"}', b'{"v": 1, "vectors": [], "prompt_tokens": "x", '
                 b'"provider": "p", "upstream": "u"}'):
        assert CachedEmbeddings.decode(data) is None


def test_unreadable_entries_are_misses() -> None:
    for data in (b"not json", b"[]", b'{"v": 999}', b'{"v": 1, "chunks": [["?"]], '
                 b'"provider": "p", "upstream": "u"}', b'{"v": 1}'):
        assert CachedAnswer.decode(data) is None


class Flaky:
    """The real Redis client, broken on demand (as a network failure looks to it); counts
    the commands that reached it."""

    def __init__(self, redis: object) -> None:
        self.redis = redis
        self.broken = False
        self.calls = 0

    async def get(self, key: str) -> bytes | None:
        return await self._call("get", key)

    async def set(self, key: str, value: bytes, px: int) -> None:
        await self._call("set", key, value, px=px)

    async def _call(self, name: str, *args: object, **kw: object) -> object:
        self.calls += 1
        if self.broken:
            from redis.exceptions import ConnectionError

            raise ConnectionError("Connection refused")
        return await getattr(self.redis, name)(*args, **kw)


def test_redis_down_is_a_miss_tried_once_a_second(caplog: pytest.LogCaptureFixture) -> None:
    if not REDIS_URL:
        skip_or_fail("Redis not available: set GATEWAY_TEST_REDIS_URL")
    from redis.asyncio import Redis

    clock = Clock()

    async def run() -> None:
        redis = Redis.from_url(REDIS_URL)
        flaky = Flaky(redis)
        store = RedisStore(flaky, clock=clock)  # type: ignore[arg-type]
        key = f"gw:cache:test:{time.time_ns()}"
        try:
            await store.put(key, b"answer", 60)
            flaky.broken = True
            assert await store.get(key) is None and store.down and flaky.calls == 2
            await store.put(key, b"other", 60)  # within the second: not even tried
            assert await store.get(key) is None and flaky.calls == 2
            clock.now += 1.0
            assert await store.get(key) is None and flaky.calls == 3  # one try, failed
            flaky.broken = False
            clock.now += 1.0
            assert await store.get(key) == b"answer" and not store.down
        finally:
            await redis.delete(key)
            await redis.aclose()

    with caplog.at_level(logging.WARNING, logger="gateway"):
        asyncio.run(run())
    said = [r.getMessage() for r in caplog.records if "response cache" in r.getMessage()]
    assert len(said) == 2 and "unavailable" in said[0] and "back" in said[1]
