"""GET /openapi.json: served to anyone, a valid OpenAPI 3.1 document, and in step with the
app's routes (a new endpoint without a description fails here)."""

from __future__ import annotations

import re

import httpx
import orjson
import schemathesis
from starlette.routing import Route

from gateway.app import api_routes
from gateway.openapi import ERRORS, document, document_bytes
from gateway.routes import chat
from tests.servers import GatewayServer

METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


def served() -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every API route the app serves; HEAD is Starlette's
    automatic twin of GET and is not described separately."""
    out = {(method.lower(), path) for method, path in chat.FAST}
    for route in api_routes():
        assert isinstance(route, Route), f"{route!r}: describe it in gateway/openapi.py"
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # {model:path} → {model}
        out |= {(m.lower(), path) for m in route.methods or () if m != "HEAD"}
    return out


def described() -> set[tuple[str, str]]:
    return {(method, path) for path, item in document()["paths"].items()
            for method in item if method in METHODS}


def test_every_route_is_described() -> None:
    missing = served() - described()
    assert not missing, f"routes without a description in gateway/openapi.py: {missing}"


def test_every_description_is_a_route() -> None:
    extra = described() - served()
    assert not extra, f"gateway/openapi.py describes routes the app does not serve: {extra}"


def test_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(doc).validate()  # against the OpenAPI 3.1 meta-schema


def test_every_error_response_has_openai_shape() -> None:
    doc = document()
    responses = doc["components"]["responses"]
    for status, (name, _) in ERRORS.items():
        body = responses[name]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/Error"}, status
    error = doc["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["required"] == ["message", "type", "param", "code"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "500" in op["responses"], (method, path)
            if op["security"]:  # authenticated: a missing credential is a 401
                assert "401" in op["responses"], (method, path)
            if "requestBody" in op:
                assert {"400", "413", "415"} <= set(op["responses"]), (method, path)


def test_chat_request_passes_unknown_fields_through() -> None:
    schema = document()["components"]["schemas"]["ChatCompletionRequest"]
    assert schema["additionalProperties"] is True
    assert schema["required"] == ["model", "messages"]


def test_served_without_credentials_and_built_once(gateway: GatewayServer) -> None:
    first = httpx.get(gateway.url + "/openapi.json")
    second = httpx.get(gateway.url + "/openapi.json")
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/json"
    assert first.content == second.content == orjson.dumps(document())
    assert orjson.loads(first.content)["paths"]["/v1/chat/completions"]["post"]
    # Encoded once, on the first request; later ones send the same bytes object.
    assert document_bytes() is document_bytes()
    assert httpx.post(gateway.url + "/openapi.json").status_code == 405


def test_operations_declaring_security_refuse_calls_without_it(gateway: GatewayServer) -> None:
    """Each operation the document marks as needing a credential answers 401 in OpenAI's
    shape without one, and each it marks as open answers without one."""
    some_id = "3f2b8c1e-0000-4000-8000-000000000001"
    for path, item in document()["paths"].items():
        url = gateway.url + re.sub(r"\{\w+\}", some_id, path)
        for method, op in item.items():
            r = httpx.request(method.upper(), url, json={} if "requestBody" in op else None)
            if op["security"] and {} not in op["security"]:
                assert r.status_code == 401, (method, path, r.status_code, r.text)
                assert r.json()["error"]["type"] == "authentication_error", (method, path)
            else:
                assert r.status_code != 401, (method, path, r.text)
