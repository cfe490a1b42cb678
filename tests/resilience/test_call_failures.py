"""A bug in a provider plugin, under the routing layer: the caller gets OpenAI's 500, the
call is stored as failed (not as cancelled, which is what a client leaving means), its
attempt says internal_error, and the target's breaker is not blamed for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from tests.conftest import Account, make_settings, register
from tests.resilience.support import chat, latest_row
from tests.servers import GatewayServer, running


class PluginBug(TypeError):
    pass


@pytest.fixture
def gateway(sqlite_url: str, tmp_path: Path) -> Iterator[GatewayServer]:
    with running(create_app(make_settings(tmp_path, sqlite_url))) as server:
        yield server


@pytest.fixture
def account(gateway: GatewayServer) -> Account:
    return register(gateway.url)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_provider_bug_is_a_500_and_a_failed_row(gateway: GatewayServer, account: Account,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  stream: bool) -> None:
    demo = gateway.state.providers.get("demo")

    async def broken_complete(*_: Any) -> list:
        raise PluginBug("a provider plugin's bug")

    async def broken_stream(*_: Any) -> Any:
        raise PluginBug("a provider plugin's bug")
        yield  # an async generator, like a real provider's stream_chat

    monkeypatch.setattr(demo, "complete_chat", broken_complete)
    monkeypatch.setattr(demo, "stream_chat", broken_stream)
    r = chat(gateway, account.api_key, "gateway-demo", stream=stream)
    assert r.status_code == 500, r.text
    assert r.json()["error"]["code"] == "internal_error"
    row = latest_row(gateway, account)
    assert (row["status"], row["error"]) == ("failed", "internal error: PluginBug")
    assert [(a["target"], a["status"], a["code"]) for a in row["upstream_attempts"]] == [
        ("demo/gateway-demo", None, "internal_error")]
    snapshot = {u["name"]: u for u in gateway.state.catalog.snapshot()["upstreams"]}
    assert snapshot["demo/gateway-demo"]["consecutive_failures"] == 0
    assert snapshot["demo/gateway-demo"]["in_flight"] == 0
