"""Fixtures for the fuzz tests: one real gateway per module (SQLite, the offline demo model
and an OpenAI-style upstream), a fuzzing client, and a well-behaved bystander user."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from storage.migrate import upgrade
from tests.conftest import ONE_TRY, make_settings, register, run_sync, set_plan
from tests.fuzz.support import Bystander, Fuzzer
from tests.servers import FakeUpstream, GatewayServer, Reply

UPSTREAM_MODEL = "gpt-4o-mini"
# Every logger of ours that logs exceptions, and uvicorn's.
ERROR_LOGGERS = ("gateway", "gateway.jobs", "gateway.ratelimit", "gateway.writer",
                 "providers.registry", "uvicorn.error")


class ExceptionsOnOneLine(logging.Filter):
    """Logs an exception as its type, message and innermost frame instead of a traceback.

    On Python 3.11 formatting a traceback parses source (``ast``) for its ``^^^`` markers,
    and ``ast`` keeps one recursion counter per interpreter: the gateway's thread logging a
    crash while pytest parses the test's source to report a failure made pytest stop with
    "SystemError: AST constructor recursion depth mismatch" (INTERNALERROR).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            tb = exc.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            where = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else ""
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}{where}"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


class WireUpstream(FakeUpstream):
    """Answers each request in the form it asked for: a recorded SSE stream when the
    gateway streams, the recorded JSON completion otherwise (fuzzed bodies come in any
    order, so a fixed script of replies would not fit)."""

    def _next(self, model: str | None = None) -> Reply:
        try:
            streamed = json.loads(self.received[-1].body).get("stream") is True
        except (ValueError, AttributeError):
            streamed = False
        if streamed:
            return Reply.recording("openai_text.sse", split=64)
        return Reply.recording("openai_text.json")


@pytest.fixture(scope="module")
def fuzz_upstream() -> Iterator[WireUpstream]:
    server = WireUpstream()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(request: pytest.FixtureRequest, fuzz_upstream: WireUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """A gateway of the module's own on SQLite; a module may set ``GATEWAY_SETTINGS``."""
    tmp = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite+aiosqlite:///{tmp / 'gateway.db'}"
    run_sync(upgrade, url)
    providers = {"fake-openai": {
        "kind": "openai", "base_url": fuzz_upstream.url + "/v1", "api_key": "sk-up",
        "models": {UPSTREAM_MODEL: UPSTREAM_MODEL}, "read_timeout": 5.0, **ONE_TRY}}
    overrides: dict[str, Any] = getattr(request.module, "GATEWAY_SETTINGS", {})
    settings = make_settings(tmp, url, providers=providers, **overrides)
    one_line = ExceptionsOnOneLine()
    for name in ERROR_LOGGERS:
        logging.getLogger(name).addFilter(one_line)
    server = GatewayServer(create_app(settings))
    yield server
    server.stop()
    for name in ERROR_LOGGERS:
        logging.getLogger(name).removeFilter(one_line)


@pytest.fixture(scope="module")
def bystander(gateway: GatewayServer) -> Iterator[Bystander]:
    """A second user whose calls run alongside the fuzzing, in a thread of their own."""
    account = register(gateway.url)
    set_plan(gateway, account.user_id, "enterprise")
    helper = Bystander(gateway.url, account.api_key)
    helper.start()
    yield helper
    helper.finish()


@pytest.fixture(scope="module")
def fuzzer(gateway: GatewayServer, bystander: Bystander) -> Iterator[Fuzzer]:
    """The fuzzing user (enterprise plan, so plan limits rarely answer first)."""
    account = register(gateway.url)
    set_plan(gateway, account.user_id, "enterprise")
    # A connection per request: after an unhandled error uvicorn closes the connection,
    # and the next example must not fail for the previous one's sake.
    with httpx.Client(base_url=gateway.url, timeout=30,
                      limits=httpx.Limits(max_keepalive_connections=0)) as client:
        yield Fuzzer(client, account.api_key, bystander)


@pytest.fixture(autouse=True)
def stays_healthy(gateway: GatewayServer) -> Iterator[None]:
    """After each batch of examples the process still answers, database included."""
    yield
    assert httpx.get(gateway.url + "/health", timeout=10).status_code == 200
    ready = httpx.get(gateway.url + "/ready", timeout=10)
    assert ready.status_code == 200, ready.text
