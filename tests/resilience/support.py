"""Helpers for the end-to-end resilience tests: a hand-driven clock, gateways with routes,
calls by the SDK and by raw HTTP, and the stored row of a call as ``/history`` shows it."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai

from gateway.app import create_app
from tests.conftest import Account, make_settings
from tests.servers import (
    FIXTURES,
    FakeUpstream,
    GatewayServer,
    Reply,
    free_socket,
    recorded_openai,
    recording_events,
    running,
)

MESSAGES = [{"role": "user", "content": "Say hello in French"}]
# The answer both recordings carry (openai_text.json is the non-streamed openai_text.sse).
TEXT, USAGE = recorded_openai("openai_text.sse")
# Retries without waiting: backoff is not what these tests measure (except retry-after).
FAST_BACKOFF = {"retry_backoff_base_seconds": 0.001, "retry_backoff_max_seconds": 8.0}


class FakeClock:
    """Monotonic seconds that move only when the test says so (the breakers' clock)."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


def ok_json() -> Reply:
    return Reply.recording("openai_text.json")


def ok_stream(**kw: Any) -> Reply:
    return Reply.by_event("openai_text.sse", **kw)


def ok_for(stream: bool) -> Reply:
    return ok_stream() if stream else ok_json()


def down(status: int = 503) -> Reply:
    """An upstream failure that a gateway should retry (OpenAI's recorded 503 or 500 body)."""
    name = "openai_error_503.json" if status == 503 else "openai_error_500.json"
    return Reply.error(status, name)


def refused_url() -> str:
    """A loopback base URL with nothing listening: connecting is refused."""
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/v1"


def provider(upstream: FakeUpstream | str, **kw: Any) -> dict[str, Any]:
    """An OpenAI-kind provider on a fake upstream (or a base URL), exposing no models of
    its own: the routes in ``models`` name what each test calls."""
    base = upstream if isinstance(upstream, str) else upstream.url + "/v1"
    return {"kind": "openai", "base_url": base, "api_key": "sk-up", "models": [],
            "read_timeout": 5.0, **kw}


@contextlib.contextmanager
def resilient_gateway(tmp_path: Path, database_url: str | None, *,
                      providers: dict[str, Any], models: dict[str, Any],
                      clock: FakeClock | None = None,
                      **settings: Any) -> Iterator[GatewayServer]:
    """The real app under uvicorn with these providers and routes, breakers on ``clock``."""
    values = {**FAST_BACKOFF, **settings}
    config = make_settings(tmp_path, database_url, providers=providers, models=models, **values)
    with running(create_app(config, clock=clock)) as server:
        yield server


def sdk(gateway: GatewayServer, key: str) -> openai.OpenAI:
    # max_retries=0: the SDK's own retries would hide the gateway's.
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=20)


# One client for the raw calls: a new httpx.Client per call costs more (its TLS context)
# than the call itself. Thread-safe, so calls from a worker thread may share it.
_client = httpx.Client(timeout=20)


def chat(gateway: GatewayServer, key: str, model: str, *, stream: bool = False,
         **body: Any) -> httpx.Response:
    """One raw call (the whole body read, streamed or not)."""
    return _client.post(gateway.url + "/v1/chat/completions",
                        headers={"Authorization": f"Bearer {key}"},
                        json={"model": model, "messages": MESSAGES, "stream": stream, **body})


def sse_payloads(body: bytes) -> list[Any]:
    """The ``data:`` payloads of an SSE body, JSON-decoded ("[DONE]" kept as a string)."""
    out: list[Any] = []
    for event in body.split(b"\n\n"):
        if not event.strip():
            continue
        assert event.startswith(b"data: "), event
        data = event[len(b"data: "):].decode()
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def streamed_text(payloads: list[Any]) -> str:
    return "".join(choice["delta"].get("content") or ""
                   for p in payloads if isinstance(p, dict) and "choices" in p
                   for choice in p["choices"])


def latest_row(gateway: GatewayServer, account: Account) -> dict[str, Any]:
    """The caller's newest stored call, in full (``GET /history/{id}``)."""
    gateway.flush()
    headers = {"Authorization": f"Bearer {account.token}"}
    listing = _client.get(gateway.url + "/history", params={"limit": 1}, headers=headers)
    assert listing.status_code == 200, listing.text
    items = listing.json()["data"]
    assert items, "no stored row"
    detail = _client.get(f"{gateway.url}/history/{items[0]['id']}", headers=headers)
    assert detail.status_code == 200, detail.text
    return {**detail.json(), "listed": items[0]}


def attempt_statuses(row: dict[str, Any]) -> list[tuple[str, str, int | None, bool]]:
    """(target, model, upstream status, failed) for each upstream attempt of a stored row;
    also checks each entry has the contract's fields and types."""
    out = []
    for entry in row["upstream_attempts"]:
        assert set(entry) >= {"target", "model", "status", "code", "ms"}, entry
        assert isinstance(entry["ms"], int) and entry["ms"] >= 0, entry
        out.append((entry["target"], entry["model"], entry["status"], entry["code"] is not None))
    return out


__all__ = ["FIXTURES", "MESSAGES", "TEXT", "USAGE", "FakeClock", "attempt_statuses", "chat",
           "down", "latest_row", "ok_for", "ok_json", "ok_stream", "provider", "recording_events",
           "refused_url", "resilient_gateway", "sdk", "sse_payloads", "streamed_text"]
