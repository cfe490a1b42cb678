"""Wrong methods: every API path answers 405 with its real Allow list, in OpenAI's error
shape; the web UI's page and assets (mounted at /) are served as before."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from gateway.app import create_app
from tests.conftest import make_settings
from tests.servers import GatewayServer, running

ID = "3f2b8c1e-0000-4000-8000-000000000001"

# (method, path) → Allow: every API route, each with methods it does not serve.
WRONG = [
    ("GET", "/v1/chat/completions", "POST"),
    ("PUT", "/v1/chat/completions", "POST"),
    ("DELETE", "/v1/chat/completions", "POST"),
    ("PATCH", "/v1/chat/completions", "POST"),
    ("GET", "/v1/embeddings", "POST"),
    ("GET", "/v1/messages", "POST"),
    ("PUT", "/v1/messages/count_tokens", "POST"),
    ("GET", "/v1/responses", "POST"),
    ("PATCH", "/v1/responses/resp_1", "GET, HEAD, DELETE"),
    ("POST", "/v1/models", "GET, HEAD"),
    ("DELETE", "/v1/models/gpt-4o", "GET, HEAD"),
    ("POST", "/health", "GET, HEAD"),
    ("PUT", "/ready", "GET, HEAD"),
    ("GET", "/auth/register", "POST"),
    ("GET", "/auth/login", "POST"),
    ("POST", "/auth/me", "GET, HEAD"),
    ("GET", "/auth/forgot-password", "POST"),
    ("PUT", "/auth/reset-password", "POST"),
    ("DELETE", "/auth/keys", "GET, HEAD, POST"),
    ("GET", f"/auth/keys/{ID}/regenerate", "POST"),
    ("GET", f"/auth/keys/{ID}", "DELETE"),
    ("POST", "/rate-limit", "GET, HEAD"),
    ("DELETE", "/inference", "POST, GET, HEAD"),
    ("PUT", f"/inference/{ID}", "GET, HEAD, DELETE"),
    ("POST", f"/inference/{ID}/result", "GET, HEAD"),
    ("GET", f"/inference/{ID}/cancel", "POST"),
    ("POST", "/history", "GET, HEAD"),
    ("PUT", f"/history/{ID}", "GET, HEAD, DELETE"),
    ("PUT", "/conversations", "GET, HEAD, POST"),
    ("POST", f"/conversations/{ID}", "GET, HEAD, DELETE, PATCH"),
    ("POST", "/stats", "GET, HEAD"),
    ("DELETE", "/usage", "GET, HEAD"),
    ("POST", "/admin/upstreams", "GET, HEAD"),
    ("POST", "/metrics", "GET, HEAD"),
    ("PUT", "/openapi.json", "GET, HEAD"),
]


@pytest.fixture(scope="module")
def bare_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """No CORS: OPTIONS is a method like the others here."""
    tmp: Path = tmp_path_factory.mktemp("methods")
    with running(create_app(make_settings(tmp, migrate_on_start=True))) as server:
        yield server


def assert_405(r: httpx.Response, allow: str) -> None:
    assert r.status_code == 405, (r.request.method, r.request.url, r.status_code, r.text)
    assert r.headers["allow"] == allow
    assert r.json()["error"] == {
        "message": f"{r.request.method} is not allowed here; use {allow}.",
        "type": "invalid_request_error", "param": None, "code": "method_not_allowed"}
    assert r.headers["x-request-id"].startswith("req_")  # the envelope's headers too


@pytest.mark.parametrize(("method", "path", "allow"), WRONG)
def test_wrong_method_is_405_with_the_paths_allow_list(bare_gateway: GatewayServer,
                                                        method: str, path: str,
                                                        allow: str) -> None:
    assert_405(httpx.request(method, bare_gateway.url + path), allow)


def concrete(path_format: str) -> str:
    return re.sub(r"\{[^}]+\}", ID, path_format)


def test_every_api_route_is_covered(bare_gateway: GatewayServer) -> None:
    """Routes added later are held to the same rule: for every API path, a method none of
    its routes serves is a 405 listing all the methods that are."""
    allowed: dict[str, set[str]] = {}
    # RequestObserver → Envelope → FastRoutes: the hot routes, then the Starlette app.
    dispatch = bare_gateway.app.app.app
    for route in dispatch.app.routes:
        if isinstance(route, Route) and route.methods:
            allowed.setdefault(concrete(route.path_format), set()).update(route.methods)
            assert any(route.path_regex.match(path) for _, path, _ in WRONG), (
                f"{route.path_format} is missing from WRONG")
    for method, path in dispatch.fast:
        allowed.setdefault(path, set()).add(method)
        assert any(p == path for _, p, _ in WRONG), f"{path} is missing from WRONG"
    for path, methods in allowed.items():
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} - methods:
            r = httpx.request(method, bare_gateway.url + path)
            assert r.status_code == 405, (method, path, r.status_code)
            assert set(r.headers["allow"].split(", ")) == methods, (method, path)


def test_right_methods_and_unknown_paths_are_unchanged(bare_gateway: GatewayServer) -> None:
    assert httpx.get(bare_gateway.url + "/health").status_code == 200
    assert httpx.head(bare_gateway.url + "/health").status_code == 200
    r = httpx.post(bare_gateway.url + "/v1/chat/completions", json={})
    assert r.status_code == 401  # the route itself, not a 405
    r = httpx.get(bare_gateway.url + "/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.delete(bare_gateway.url + "/v1/nothing-here")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"  # static files only


def test_static_page_and_assets_still_served(bare_gateway: GatewayServer) -> None:
    page = httpx.get(bare_gateway.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert b"<html" in page.content.lower()
    head = httpx.head(bare_gateway.url + "/")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == page.headers["content-length"]
    for asset, kind in (("/app.css", "text/css"), ("/favicon.svg", "image/svg+xml")):
        r = httpx.get(bare_gateway.url + asset)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), asset
        assert r.headers["cache-control"] == "no-cache"
    r = httpx.put(bare_gateway.url + "/")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
