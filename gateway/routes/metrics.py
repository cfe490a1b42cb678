"""GET /metrics: the Prometheus exposition, behind a bearer token when one is set."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import APIError


def _authorized(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Constant time: the comparison must not tell how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode())


async def metrics(request: Request) -> Response:
    state = request.app.state
    token = state.settings.metrics_token
    if token is not None and not _authorized(request, token.get_secret_value()):
        raise APIError(401, "Metrics need the token: send 'Authorization: Bearer <token>' "
                       "with the value of GATEWAY_METRICS_TOKEN.", code="invalid_api_key",
                       headers={"www-authenticate": "Bearer"})
    state.metrics.sample_writer(state.writer)
    body, content_type = state.metrics.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)


routes = [Route("/metrics", metrics, methods=["GET"])]
