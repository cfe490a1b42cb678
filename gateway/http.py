"""Small request/response helpers shared by the routes: JSON in and out, client facts."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import APIError, invalid


class JSONResponse(Response):
    """A JSON response encoded with orjson (UUIDs and datetimes included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it."""
    ctype = request.headers.get("content-type", "")
    if ctype and "json" not in ctype:
        raise APIError(415, "Send the body as JSON with 'Content-Type: application/json'.",
                       code="unsupported_media_type")
    body = await request.body()
    if not body:
        raise invalid("body", "The request body is empty; send a JSON object.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid("body", f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid("body", "The request body must be a JSON object.")
    return data


def client_ip(request: Request) -> str | None:
    if request.app.state.settings.trust_forwarded:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            return forwarded.split(",")[0].strip()[:64]
    return request.client.host if request.client else None


def request_id(request: Request) -> str:
    return request.scope.get("state", {}).get("request_id", "")
