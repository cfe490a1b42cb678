"""A client that leaves: the upstream call is cancelled, the slot freed, the row stored as
cancelled, and the log says so in one INFO line (no ERROR, no traceback), streamed or not."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from gateway.app import create_app
from gateway.http import CancelOnDisconnect
from storage.models import InferenceRequest
from tests.conftest import ONE_TRY, Account, make_settings, register, set_plan
from tests.servers import FakeUpstream, GatewayServer, Reply, running, wait_for

MESSAGES = [{"role": "user", "content": "Say hello in French"}]


@pytest.fixture(scope="module")
def gateway(database_url: str, upstream: FakeUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """A gateway whose upstream may stay silent for 30 s: whatever ends a call here within
    a second is the client leaving, not the read timeout."""
    providers = {"fake-openai": {"kind": "openai", "base_url": upstream.url + "/v1",
                                 "api_key": "sk-up", "models": ["gpt-4o-mini"],
                                 "read_timeout": 30.0, **ONE_TRY}}
    settings = make_settings(tmp_path_factory.mktemp("disconnects"), database_url,
                             providers=providers)
    with running(create_app(settings)) as server:
        yield server


@pytest.fixture
def account(gateway: GatewayServer) -> Account:
    acct = register(gateway.url)
    set_plan(gateway, acct.user_id, "enterprise")
    return acct


class Records(logging.Handler):
    """Every record of the loggers a disconnect could write to, INFO and up."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self) -> list[tuple[str, str]]:
        return [(r.levelname, r.getMessage()) for r in self.records]


@pytest.fixture
def logs() -> Iterator[Records]:
    # uvicorn's "Exception in ASGI application" goes to uvicorn.error, which does not
    # propagate to the root logger (pytest's caplog): listen on the loggers themselves.
    handler = Records()
    gateway_log = logging.getLogger("gateway")
    level = gateway_log.level
    gateway_log.setLevel(logging.INFO)
    loggers = [gateway_log, logging.getLogger("uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        gateway_log.setLevel(level)


def send_request(gateway: GatewayServer, account: Account, body: dict) -> socket.socket:
    """A raw POST /v1/chat/completions whose connection the test closes when it likes."""
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\n"
                 + f"Authorization: Bearer {account.api_key}\r\n"
                   f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return sock


def in_use(gateway: GatewayServer, account: Account) -> int:
    r = httpx.get(gateway.url + "/rate-limit", headers={"X-API-Key": account.api_key})
    assert r.status_code == 200
    return r.json()["concurrent"]["in_use"]


def last_status(gateway: GatewayServer, account: Account) -> str | None:
    async def run() -> str | None:
        await gateway.state.writer.flush()
        async with gateway.state.engine.connect() as conn:
            result = await conn.execute(
                sa.select(InferenceRequest.status)
                .where(InferenceRequest.user_id == uuid.UUID(account.user_id))
                .order_by(InferenceRequest.created_at.desc()).limit(1))
            return result.scalar_one_or_none()
    return gateway.run(run())


def leave_and_check(gateway: GatewayServer, account: Account, upstream: FakeUpstream,
                    logs: Records, sock: socket.socket) -> None:
    """Close the client's connection; within a second the upstream connection is closed
    and the slot free."""
    # A cancelled call counts its tokens with tiktoken, whose first use loads its table
    # (~1 s, blocking the loop): load it now, so the figure is the disconnect's own.
    gateway.state.tokens.text("warm up")
    assert wait_for(lambda: len(upstream.received) == 1), "the call never reached upstream"
    assert in_use(gateway, account) == 1
    sock.close()
    left = time.monotonic()
    assert wait_for(lambda: upstream.disconnects == 1, timeout=1.0), \
        "the upstream call outlived its client"
    assert time.monotonic() - left < 1.0
    assert wait_for(lambda: in_use(gateway, account) == 0, timeout=1.0)
    assert wait_for(lambda: last_status(gateway, account) == "cancelled")
    assert wait_for(lambda: bool(logs.records))
    assert logs.lines() == [("INFO", logs.records[0].getMessage())], logs.lines()
    assert logs.records[0].getMessage().startswith(
        "client disconnected: POST /v1/chat/completions req_")


@pytest.mark.parametrize("stream", [False, True])
def test_client_leaving_while_upstream_is_silent(gateway: GatewayServer, account: Account,
                                                upstream: FakeUpstream, logs: Records,
                                                stream: bool) -> None:
    """No byte from upstream yet: a plain call waiting for its body, or a stream waiting for
    its first chunk."""
    if stream:
        upstream.script(Reply.by_event("openai_text.sse", hang_after=0))
    else:
        upstream.script(Reply.recording("openai_text.json", hang_after=0))
    sock = send_request(gateway, account, {"model": "gpt-4o-mini", "messages": MESSAGES,
                                           "stream": stream})
    leave_and_check(gateway, account, upstream, logs, sock)


def test_client_leaving_mid_stream(gateway: GatewayServer, account: Account,
                                   upstream: FakeUpstream, logs: Records) -> None:
    """The web UI's Stop: events have gone out, then the client leaves."""
    upstream.script(Reply.by_event("openai_text.sse", hang_after=3))
    sock = send_request(gateway, account, {"model": "gpt-4o-mini", "messages": MESSAGES,
                                           "stream": True})
    seen = b""
    sock.settimeout(5)
    while seen.count(b"data: ") < 2:  # chunked: each event has its own chunk
        piece = sock.recv(65536)
        assert piece, seen
        seen += piece
    assert seen.startswith(b"HTTP/1.1 200")
    leave_and_check(gateway, account, upstream, logs, sock)


async def test_a_server_cancellation_still_propagates() -> None:
    """Only the cancellation the disconnect caused is ours to end; a shutdown's is not."""
    never = asyncio.Event()

    async def receive() -> dict:
        await never.wait()
        return {"type": "http.disconnect"}

    entered = asyncio.Event()

    async def block() -> None:
        with CancelOnDisconnect({"method": "GET", "path": "/"}, receive):
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(block())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_disconnect_ends_the_block_quietly() -> None:
    async def receive() -> dict:
        return {"type": "http.disconnect"}

    with CancelOnDisconnect({"method": "GET", "path": "/"}, receive) as watch:
        await asyncio.sleep(3600)
    assert watch.disconnected
    await asyncio.sleep(0)  # and the task is not left cancelled


async def test_a_delayed_watch_costs_no_receive_for_a_quick_block() -> None:
    """``after``: a block over sooner never starts the watch; a longer one is still cut
    short by a client already gone."""
    calls = 0

    async def receive() -> dict:
        nonlocal calls
        calls += 1
        return {"type": "http.disconnect"}

    scope = {"method": "POST", "path": "/v1/chat/completions"}
    with CancelOnDisconnect(scope, receive, after=0.05) as watch:
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)  # past ``after``: the timer was cancelled with the block
    assert calls == 0 and not watch.disconnected

    loop = asyncio.get_running_loop()
    start = loop.time()
    with CancelOnDisconnect(scope, receive, after=0.05) as watch:
        await asyncio.sleep(3600)
    assert watch.disconnected and calls == 1
    assert 0.05 <= loop.time() - start < 1.0


def test_a_finished_stream_is_not_a_disconnect(gateway: GatewayServer, account: Account,
                                               upstream: FakeUpstream, logs: Records) -> None:
    """After the last message the server reports ``http.disconnect`` for every request: a
    stream read to the end logs nothing and is stored as completed."""
    upstream.script(Reply.recording("openai_text.sse", split=50))
    r = httpx.post(gateway.url + "/v1/chat/completions",
                   headers={"Authorization": f"Bearer {account.api_key}"},
                   json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True})
    assert r.status_code == 200 and r.content.endswith(b"data: [DONE]\n\n")
    assert wait_for(lambda: last_status(gateway, account) == "completed")
    assert logs.lines() == []
