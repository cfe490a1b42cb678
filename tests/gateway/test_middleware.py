"""Request ids, security headers, CORS and the body-size limit, on a running gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from tests.conftest import make_settings
from tests.servers import GatewayServer, running


@pytest.fixture(scope="module")
def small_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    tmp: Path = tmp_path_factory.mktemp("mw")
    settings = make_settings(tmp, migrate_on_start=True, max_body_bytes=2048,
                             cors_origins=["https://app.example.com"])
    with running(create_app(settings)) as server:
        yield server


def test_request_id_generated_and_honoured(small_gateway: GatewayServer) -> None:
    r = httpx.get(small_gateway.url + "/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert r.headers["x-request-id"].startswith("req_")
    r = httpx.get(small_gateway.url + "/health", headers={"x-request-id": "client-abc.123"})
    assert r.headers["x-request-id"] == "client-abc.123"
    r = httpx.get(small_gateway.url + "/health", headers={"x-request-id": "bad id\twith spaces"})
    assert r.headers["x-request-id"].startswith("req_")


def test_security_headers(small_gateway: GatewayServer) -> None:
    r = httpx.get(small_gateway.url + "/health")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "strict-transport-security" not in r.headers  # plain HTTP here


def test_cors_allow_list(small_gateway: GatewayServer) -> None:
    pre = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,content-type"}
    r = httpx.options(small_gateway.url + "/v1/chat/completions", headers=pre)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    r = httpx.options(small_gateway.url + "/v1/chat/completions",
                      headers={**pre, "Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in r.headers
    # The web UI renames conversations with PATCH and names them in a header of its own.
    r = httpx.options(small_gateway.url + "/conversations/x",
                      headers={**pre, "Access-Control-Request-Method": "PATCH"})
    assert r.status_code == 200 and "PATCH" in r.headers["access-control-allow-methods"]
    r = httpx.options(small_gateway.url + "/v1/chat/completions", headers={
        **pre, "Access-Control-Request-Headers": "authorization,x-gateway-conversation"})
    assert r.status_code == 200


def test_body_size_limit(small_gateway: GatewayServer) -> None:
    r = httpx.post(small_gateway.url + "/auth/register", content=b"x" * 5000,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        for _ in range(10):
            yield b"x" * 1000

    r = httpx.post(small_gateway.url + "/auth/register", content=chunks(),
                   headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_ready_checks_database(small_gateway: GatewayServer) -> None:
    r = httpx.get(small_gateway.url + "/ready")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok"}


def test_unknown_route_is_openai_shaped_404(small_gateway: GatewayServer) -> None:
    r = httpx.get(small_gateway.url + "/v1/nothing-here")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_hot_route_gets_the_same_envelope(small_gateway: GatewayServer) -> None:
    """POST /v1/chat/completions skips Starlette's layers, not the envelope's duties."""
    url = small_gateway.url + "/v1/chat/completions"
    r = httpx.post(url, json={"model": "gateway-demo", "messages": []},
                   headers={"x-request-id": "client-hot-1", "Origin": "https://app.example.com"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert r.headers["x-request-id"] == "client-hot-1"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"

    r = httpx.post(url, content=b"x" * 5000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert r.headers["x-request-id"].startswith("req_")


def test_request_ids_are_unique_and_per_process() -> None:
    from gateway.middleware import RequestIds

    one, two = RequestIds(), RequestIds()
    ids = {one() for _ in range(1000)} | {two() for _ in range(1000)}
    assert len(ids) == 2000 and all(len(i) == 4 + 16 + 12 for i in ids)


def _hot_route(monkeypatch: pytest.MonkeyPatch, error: Exception) -> Any:
    """The app's hot-route dispatch with ``POST /x`` → the chat endpoint, whose handler
    raises ``error``."""
    from gateway.middleware import Envelope, FastRoutes
    from gateway.routes import chat

    async def broken(request):
        raise error

    monkeypatch.setattr(chat, "chat_completions", broken)
    routed = FastRoutes(None, {("POST", "/x"): chat.endpoint})  # type: ignore[arg-type]
    return Envelope(routed, max_body_bytes=100)


async def test_unexpected_error_on_hot_route_is_openai_shaped_500(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    envelope = _hot_route(monkeypatch, RuntimeError("boom"))
    await envelope({"type": "http", "method": "POST", "path": "/x", "headers": []},
                   receive, send)
    assert sent[0]["status"] == 500
    assert b'"code":"internal_error"' in sent[1]["body"]
    assert any(name == b"x-request-id" for name, _ in sent[0]["headers"])


async def test_client_gone_mid_body_on_hot_route_is_not_an_error(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from starlette.requests import ClientDisconnect

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    envelope = _hot_route(monkeypatch, ClientDisconnect())
    await envelope({"type": "http", "method": "POST", "path": "/x", "headers": []},
                   None, send)
    assert sent == [] and "unhandled" not in caplog.text
