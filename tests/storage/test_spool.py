"""The writer's spool: replay is idempotent (twice, or after the rows were committed, counts
once), calls the dead process never finished are stored as failed, a live process's spool
is never replayed, a committed spool is emptied."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import httpx
import openai
import pytest
import sqlalchemy as sa

from storage.models import AuditLog, InferenceRequest, UsageDaily, utcnow
from storage.spool import STOPPED, Spool, dead_spools
from storage.writer import RequestWriter
from tests.conftest import register
from tests.processes import GatewayProcess, gateway_env
from tests.servers import GatewayServer
from tests.storage.test_unstorable import _audit
from tests.storage.test_writer import _values, until


def _spool_rows(directory: Path, items: list) -> int:
    """Leave ``items`` in a spool as a killed process would: written, never committed."""
    spool = Spool(directory, sync_seconds=0.01)
    spool.open()
    for item in items:
        spool.append(item)
    return spool.close()  # closing drops the lock, as the kernel does on kill


def test_replay_stores_each_row_once_however_often_it_runs(gateway: GatewayServer,
                                                            tmp_path: Path) -> None:
    user_id = uuid.UUID(register(gateway.url).user_id)
    engine = gateway.state.engine
    rows = [_values(user_id, i) for i in range(1, 4)]
    audit = _audit(user_id, 0)
    items = [("request", r) for r in rows] + [("audit", audit)] + [
        ("touch", {"id": uuid.uuid4(), "at": utcnow()})]
    spool_dir = tmp_path / "spool"
    assert _spool_rows(spool_dir, items) == len(items)
    backup = tmp_path / "backup"
    shutil.copytree(spool_dir, backup)

    async def replay() -> int:
        return await RequestWriter(engine, spool=Spool(spool_dir)).replay()

    async def stored() -> tuple[int, int, int, int]:
        async with engine.connect() as conn:
            requests = await conn.scalar(sa.select(sa.func.count()).select_from(
                InferenceRequest).where(InferenceRequest.user_id == user_id))
            usage = (await conn.execute(sa.select(UsageDaily.requests, UsageDaily.failed)
                                        .where(UsageDaily.user_id == user_id))).one()
            audits = await conn.scalar(sa.select(sa.func.count()).select_from(AuditLog)
                                       .where(AuditLog.id == audit["id"]))
        return requests, usage.requests, usage.failed, audits

    async def scenario() -> list[tuple]:
        # The first row reached the database before the crash, the spool still has it.
        writer = RequestWriter(engine)
        writer.start()
        assert writer._put("request", rows[0])
        await writer.stop()
        before = await stored()
        first = await replay()
        after_first = await stored()
        assert not any(spool_dir.iterdir())  # replayed spools are removed
        shutil.copytree(backup, spool_dir, dirs_exist_ok=True)
        second = await replay()
        return [before, first, after_first, second, await stored()]

    before, first, after_first, second, after_second = gateway.run(scenario())
    assert before == (1, 1, 0, 0)
    assert first == second == 5  # every item read both times...
    assert after_first == after_second == (3, 3, 0, 1)  # ...stored and counted once


def _started(row: dict) -> dict:
    keys = ("id", "user_id", "api_key_id", "request_id", "source", "model", "provider",
            "upstream_model", "prompt", "created_at")
    return {k: row[k] for k in keys}


def test_replay_stores_calls_the_dead_process_never_finished_as_failed(
        gateway: GatewayServer, tmp_path: Path) -> None:
    user_id = uuid.UUID(register(gateway.url).user_id)
    engine = gateway.state.engine
    running, finished, committed = (_values(user_id, i) for i in (1, 2, 3))
    spool_dir = tmp_path / "spool"
    left = _spool_rows(spool_dir, [
        ("started", _started(running)), ("started", _started(finished)),
        ("started", _started(committed)), ("request", finished)])
    assert left == 3  # finished's row, and two calls that never ended

    async def scenario() -> tuple[int, dict, tuple]:
        writer = RequestWriter(engine)
        writer.start()
        assert writer._put("request", committed)  # stored before the crash, not spooled
        await writer.stop()
        replayed = await RequestWriter(engine, spool=Spool(spool_dir)).replay()
        async with engine.connect() as conn:
            rows = {r.id: r for r in await conn.execute(
                sa.select(InferenceRequest).where(InferenceRequest.user_id == user_id))}
            usage = (await conn.execute(sa.select(UsageDaily.requests, UsageDaily.failed)
                                        .where(UsageDaily.user_id == user_id))).one()
        return replayed, rows, tuple(usage)

    replayed, rows, usage = gateway.run(scenario())
    assert replayed == 3  # finished's row, and running and committed as unfinished
    assert len(rows) == 3 and usage == (3, 1)
    lost = rows[running["id"]]
    assert (lost.status, lost.error, lost.prompt, lost.request_id) == (
        "failed", STOPPED, running["prompt"], running["request_id"])
    assert rows[finished["id"]].status == rows[committed["id"]].status == "completed"
    assert rows[committed["id"]].error is None


def test_a_live_process_spool_is_never_replayed(tmp_path: Path) -> None:
    live = Spool(tmp_path, sync_seconds=0.01)
    live.open()
    live.append(("request", {"id": str(uuid.uuid4())}))
    assert list(dead_spools(tmp_path)) == []
    live.close()
    dead = list(dead_spools(tmp_path))
    assert len(dead) == 1 and len(dead[0].items()) == 1
    assert list(dead_spools(tmp_path)) == []  # locked by us while we replay it
    dead[0].remove()
    assert list(tmp_path.iterdir()) == []


def test_the_spool_is_emptied_once_its_rows_are_committed(gateway: GatewayServer,
                                                          tmp_path: Path) -> None:
    user_id = uuid.UUID(register(gateway.url).user_id)
    spool_dir = tmp_path / "spool"

    def spooled_bytes() -> int:
        return sum(p.stat().st_size for p in spool_dir.glob("*.jsonl"))

    async def scenario() -> tuple[int, list[Path]]:
        # The database writer waits 2 s for a batch, the spool syncs within 10 ms.
        writer = RequestWriter(gateway.state.engine, flush_seconds=2,
                               spool=Spool(spool_dir, sync_seconds=0.01))
        writer.start()
        for i in range(10):
            assert writer._put("request", _values(user_id, i))
        await until(lambda: spooled_bytes() > 0)  # on disk before the database has them
        await writer.flush()
        await until(lambda: spooled_bytes() == 0)  # truncated once committed
        written = writer.stats.written
        await writer.stop()
        return written, list(spool_dir.iterdir())

    assert gateway.run(scenario()) == (10, [])


def test_a_process_killed_right_after_answering_keeps_every_answered_call(
        tmp_path: Path) -> None:
    """SIGKILL the instant the answers arrived (a plain call, then a stream read to
    [DONE]): the rows were written to the spool before the answers' last bytes left, so
    the next start stores them as completed, with their answers. The spool's thread and the
    writer are held off (10 s, an hour), so only the write on the call's path can save them."""
    data = tmp_path / "data"
    env = gateway_env(data, GATEWAY_WRITER_FLUSH_SECONDS="3600",
                      GATEWAY_WRITER_SPOOL_FSYNC_MS="10000")
    proc = GatewayProcess(env, tmp_path / "gw.log").wait_ready()
    try:
        r = httpx.post(proc.url + "/auth/register",
                       json={"email": "killed@example.com", "password": "correct horse 42"})
        assert r.status_code == 201, r.text
        client = openai.OpenAI(base_url=proc.url + "/v1", api_key=r.json()["apiKey"],
                               max_retries=0)
        messages = [{"role": "user", "content": "hello"}]
        plain = client.chat.completions.create(model="gateway-demo", messages=messages)
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in
                           client.chat.completions.create(model="gateway-demo",
                                                          messages=messages, stream=True)
                           if chunk.choices)
    finally:
        proc.kill()
    again = GatewayProcess(env, tmp_path / "gw2.log").wait_ready()  # replays the spool
    try:
        history = httpx.get(again.url + "/history", headers={"X-API-Key": client.api_key})
        assert history.status_code == 200, history.text
        rows = {item["id"]: item for item in history.json()["data"]}
        assert sorted(item["status"] for item in rows.values()) == ["completed", "completed"]
        answers = sorted(httpx.get(f"{again.url}/history/{row_id}",
                                   headers={"X-API-Key": client.api_key}).json()["response"]
                         for row_id in rows)
        assert answers == sorted([plain.choices[0].message.content, streamed])
    finally:
        again.stop()


def test_replay_keeps_each_call_cost_and_counts_it_once(gateway: GatewayServer,
                                                        tmp_path: Path) -> None:
    """A spooled row's cost survives the JSON of the spool, is stored as it was, and
    reaches usage_daily once however often the spool is replayed; a call the dead process
    never finished cost nothing that is known."""
    user_id = uuid.UUID(register(gateway.url).user_id)
    engine = gateway.state.engine
    rows = [_values(user_id, i) for i in (1, 2)]
    rows[0]["cost_usd"], rows[1]["cost_usd"] = 0.000377125, 1.5e-07
    unfinished = _values(user_id, 3)
    spool_dir = tmp_path / "spool"
    _spool_rows(spool_dir, [("request", rows[0]), ("request", rows[1]),
                            ("started", _started(unfinished))])
    backup = tmp_path / "backup"
    shutil.copytree(spool_dir, backup)

    async def scenario() -> tuple[dict, list[float]]:
        spent = []
        for _ in range(2):
            await RequestWriter(engine, spool=Spool(spool_dir)).replay()
            shutil.copytree(backup, spool_dir, dirs_exist_ok=True)
            async with engine.connect() as conn:
                spent.append(await conn.scalar(sa.select(sa.func.sum(UsageDaily.cost_usd))
                                               .where(UsageDaily.user_id == user_id)))
        async with engine.connect() as conn:
            costs = {r.id: (r.cost_usd, r.cached) for r in await conn.execute(
                sa.select(InferenceRequest).where(InferenceRequest.user_id == user_id))}
        return costs, spent

    costs, spent = gateway.run(scenario())
    assert costs == {rows[0]["id"]: (0.000377125, False), rows[1]["id"]: (1.5e-07, False),
                     unfinished["id"]: (0.0, False)}
    assert spent == [pytest.approx(0.000377275, rel=1e-12)] * 2
