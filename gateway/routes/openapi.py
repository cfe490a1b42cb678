"""GET /openapi.json: the API's description (gateway/openapi.py), open to everyone."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.openapi import document_bytes


async def openapi_json(_request: Request) -> Response:
    return Response(document_bytes(), media_type="application/json")


routes = [Route("/openapi.json", openapi_json, methods=["GET"])]
