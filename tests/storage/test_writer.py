"""The background writer on both databases: big and small batches, usage counters, drops."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa

from storage.models import InferenceRequest, UsageDaily, utcnow
from storage.records import CallRecord
from storage.writer import RequestWriter
from tests.conftest import register
from tests.servers import GatewayServer


def _row(user_id: uuid.UUID, i: int) -> CallRecord:
    now = utcnow()
    return CallRecord(
        id=uuid.uuid4(), user_id=user_id, api_key_id=None, request_id=f"req_w{i}",
        source="v1", model="writer-test", provider="p", upstream_model="u",
        messages=[{"role": "user", "content": "x"}], parameters={}, prompt="x",
        response=f"answer {i}", tool_calls=None, finish_reason="stop",
        status="completed" if i % 10 else "failed", prompt_tokens=3,
        completion_tokens=i % 7, total_tokens=3 + i % 7, tokens_estimated=False,
        processing_time_ms=5, time_to_first_token_ms=2, error=None, attempts=1,
        served_by="p/u", created_at=now, started_at=now,
        completed_at=now + timedelta(milliseconds=5), updated_at=now)


def _values(user_id: uuid.UUID, i: int) -> dict:
    """``_row`` as the writer's queue holds it (a column → value dict)."""
    return _row(user_id, i).values()


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Yield to the loop until ``condition`` holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


def test_big_and_small_batches_are_all_written(gateway: GatewayServer) -> None:
    user_id = uuid.UUID(register(gateway.url).user_id)
    writer = gateway.state.writer

    async def submit_and_count(rows: list[CallRecord]) -> tuple[int, tuple]:
        for row in rows:  # no await in between: one batch, split into statements
            assert writer._put("request", row.values())
        await writer.flush()
        async with gateway.state.engine.connect() as conn:
            stored = await conn.scalar(sa.select(sa.func.count()).select_from(
                InferenceRequest).where(InferenceRequest.user_id == user_id))
            usage = (await conn.execute(
                sa.select(UsageDaily.requests, UsageDaily.failed, UsageDaily.completion_tokens)
                .where(UsageDaily.user_id == user_id))).one()
        return stored, tuple(usage)

    big = [_row(user_id, i) for i in range(1000)]
    assert gateway.run(submit_and_count(big)) == (1000, (1000, 100, sum(i % 7 for i in
                                                                         range(1000))))
    small = [_row(user_id, 1000 + i) for i in range(37)]  # 16 + 16 + 5 rows
    stored, usage = gateway.run(submit_and_count(small))
    assert stored == 1037 and usage[0] == 1037


def test_a_full_queue_makes_calls_wait_not_drop(gateway: GatewayServer) -> None:
    user_id = uuid.UUID(register(gateway.url).user_id)

    async def overfill() -> tuple[list[bool], int, int]:
        writer = RequestWriter(gateway.state.engine, queue_size=5, backpressure_seconds=5)
        submits = [asyncio.ensure_future(writer.submit_request(_row(user_id, i)))
                   for i in range(8)]
        await until(lambda: writer._queue.full() and writer._waiting == 3)
        waiting = sum(not s.done() for s in submits)  # no writer yet: three wait for room
        writer.start()
        results = await asyncio.gather(*submits)
        await writer.stop()
        assert writer.stats.waits == waiting == 3
        return results, writer.stats.dropped, writer.stats.written

    assert gateway.run(overfill()) == ([True] * 8, 0, 8)


def test_a_queue_full_for_too_long_drops_and_counts(gateway: GatewayServer) -> None:
    user_id = uuid.UUID(register(gateway.url).user_id)

    async def stuck() -> tuple[list[bool], int]:
        writer = RequestWriter(gateway.state.engine, queue_size=2, backpressure_seconds=0.05)
        results = [await writer.submit_request(_row(user_id, i)) for i in range(3)]
        return results, writer.stats.dropped  # never started: nothing makes room

    assert gateway.run(stuck()) == ([True, True, False], 1)


def test_a_backed_up_queue_is_written_in_whole_batches(gateway: GatewayServer) -> None:
    user_id = uuid.UUID(register(gateway.url).user_id)

    async def backlog() -> tuple[int, list[int]]:
        writer = RequestWriter(gateway.state.engine, batch_size=100)
        statements: list[int] = []
        write = writer._write

        async def spy(batch, rows_per_statement, idempotent=False):
            statements.append(rows_per_statement or len(batch))
            await write(batch, rows_per_statement, idempotent)

        writer._write = spy  # type: ignore[method-assign]
        for i in range(350):
            writer._put("request", _row(user_id, i).values())
        writer.start()
        await writer.stop()
        async with gateway.state.engine.connect() as conn:
            stored = await conn.scalar(sa.select(sa.func.count()).select_from(
                InferenceRequest).where(InferenceRequest.user_id == user_id))
        return stored, statements

    stored, statements = gateway.run(backlog())
    # Behind after the first full batch: it takes everything queued, as one statement.
    assert stored == 350 and statements == [350]


def test_calls_waiting_for_room_are_served_first_come_first_served(
        gateway: GatewayServer) -> None:
    user_id = uuid.UUID(register(gateway.url).user_id)

    async def order() -> list[str]:
        writer = RequestWriter(gateway.state.engine, queue_size=1, backpressure_seconds=5)
        await writer.submit_request(_row(user_id, 0))
        first = asyncio.ensure_future(writer.submit_request(_row(user_id, 1)))
        await until(lambda: writer._waiting == 1)  # waiting for room
        writer._queue.get_nowait()  # the writer makes room; the waiter has not run yet
        second = asyncio.ensure_future(writer.submit_request(_row(user_id, 2)))
        await until(lambda: writer._queue.full())  # one of them took the room
        queued = writer._queue.get_nowait()[1]["request_id"]
        await asyncio.gather(first, second)
        return [queued, writer._queue.get_nowait()[1]["request_id"]]

    assert gateway.run(order()) == ["req_w1", "req_w2"]
