"""A row the database refuses costs nobody else their rows: the batch is split, every other
row (and its usage and audit rows) is stored, the refused row is stored without its payload
and marked; a database that is down is waited out, not dropped."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import sqlalchemy as sa

from storage.engine import build_engine
from storage.migrate import upgrade
from storage.models import AuditLog, InferenceRequest, UsageDaily, User, utcnow
from storage.writer import RequestWriter
from tests.conftest import register
from tests.servers import GatewayServer
from tests.storage.test_writer import _values, until


def _deep(levels: int) -> object:
    value: object = "x"
    for _ in range(levels):
        value = [value]
    return value


def refused_rows(dialect: str, user_id: uuid.UUID) -> dict[str, dict]:
    """One row per way a row can be unstorable on this database."""
    rows = {"deep": {**_values(user_id, 1), "messages": [{"role": "user", "content": _deep(300)}]},
            "int": {**_values(user_id, 2), "total_tokens": 2**70}}
    if dialect == "postgresql":
        rows["nul"] = {**_values(user_id, 3), "response": "a\x00b"}
        rows["long"] = {**_values(user_id, 4), "request_id": "r" * 100}
        rows["nul_json"] = {**_values(user_id, 5), "parameters": {"stop": "\x00"}}
    return rows


def _audit(user_id: uuid.UUID, i: int) -> dict:
    return {"id": uuid.uuid4(), "user_id": user_id, "action": "test.writer",
            "resource_type": None, "resource_id": str(i), "ip": "127.0.0.1",
            "user_agent": "t", "request_id": f"req_a{i}", "details": {"i": i},
            "created_at": utcnow()}


def test_a_refused_row_does_not_cost_the_batch_its_other_rows(gateway: GatewayServer) -> None:
    alice = uuid.UUID(register(gateway.url).user_id)
    bob = uuid.UUID(register(gateway.url).user_id)
    writer = gateway.state.writer
    dialect = gateway.state.engine.dialect.name
    refused = refused_rows(dialect, alice)
    good = [_values(alice, 10 + i) for i in range(20)] + [_values(bob, 40 + i) for i in range(3)]
    audits = [_audit(bob, i) for i in range(2)]
    items = ([("request", r) for r in good[:12]] + [("request", r) for r in refused.values()]
             + [("audit", a) for a in audits] + [("request", r) for r in good[12:]])
    before = (writer.stats.stripped, writer.stats.dropped)

    async def write_and_read() -> tuple[dict, dict, int]:
        for kind, row in items:  # no await in between: one batch
            assert writer._put(kind, row)
        await writer.flush()
        async with gateway.state.engine.connect() as conn:
            stored = {r.id: r for r in await conn.execute(
                sa.select(InferenceRequest).where(InferenceRequest.user_id.in_([alice, bob])))}
            usage = {r.user_id: r for r in await conn.execute(
                sa.select(UsageDaily).where(UsageDaily.user_id.in_([alice, bob])))}
            audited = await conn.scalar(sa.select(sa.func.count()).select_from(AuditLog)
                                        .where(AuditLog.id.in_([a["id"] for a in audits])))
        return stored, usage, audited

    stored, usage, audited = gateway.run(write_and_read())
    for row in good:
        assert stored[row["id"]].response == row["response"]
        assert stored[row["id"]].error is None
    assert audited == 2
    for name, row in refused.items():
        kept = stored[row["id"]]
        assert kept.error.startswith("[payload not stored: "), (name, kept.error)
        assert kept.messages == [] and kept.parameters == {}, name
        assert kept.status == row["status"] and kept.prompt_tokens == row["prompt_tokens"]
    if dialect == "postgresql":
        assert stored[refused["nul"]["id"]].response == "ab"
        assert stored[refused["long"]["id"]].request_id == "r" * 64
    assert stored[refused["int"]["id"]].total_tokens == 2**31 - 1
    # The refused rows' calls still count in their user's usage.
    assert usage[alice].requests == 20 + len(refused)
    assert usage[alice].prompt_tokens == 3 * (20 + len(refused))
    assert usage[bob].requests == 3
    assert (writer.stats.stripped - before[0], writer.stats.dropped - before[1]) == (
        len(refused), 0)


def test_a_database_that_is_down_is_waited_out_not_dropped(tmp_path: Path) -> None:
    # The database file's directory does not exist yet: every connection fails, as when
    # the database is down; it "comes back" once the directory is created and migrated.
    url = f"sqlite+aiosqlite:///{tmp_path / 'later' / 'gateway.db'}"
    user_id = uuid.uuid4()

    async def scenario() -> tuple[int, int, int]:
        engine = build_engine(url)
        writer = RequestWriter(engine, retries=1, flush_seconds=0.01)
        writer.start()
        for i in range(5):
            assert writer._put("request", _values(user_id, i))
        await until(lambda: writer.stats.unavailable >= 3)
        assert writer.stats.dropped == 0 and writer.stats.written == 0
        # It comes back whole (schema and the rows' user at once): a database the writer
        # could reach between the migration and the user would refuse the rows for good.
        staging = tmp_path / "staging"
        staging.mkdir()
        staged = f"sqlite+aiosqlite:///{staging / 'gateway.db'}"
        await asyncio.to_thread(upgrade, staged)
        setup = build_engine(staged)
        async with setup.begin() as conn:
            await conn.execute(sa.insert(User.__table__).values(
                id=user_id, email="down@example.com", password_hash="x",
                created_at=utcnow(), updated_at=utcnow()))
        await setup.dispose()
        staging.rename(tmp_path / "later")
        await asyncio.wait_for(writer.flush(), 30)
        await writer.stop()
        async with engine.connect() as conn:
            stored = await conn.scalar(sa.select(sa.func.count()).select_from(InferenceRequest))
        await engine.dispose()
        return stored, writer.stats.dropped, writer.stats.stripped

    assert asyncio.run(scenario()) == (5, 0, 0)
