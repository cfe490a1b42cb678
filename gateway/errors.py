"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import math
from collections.abc import Mapping

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from providers.errors import ProviderError
from providers.untrusted import clamp_seconds

_STATUS_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "invalid_request_error", 405: "invalid_request_error", 409: "invalid_request_error",
    413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
    429: "rate_limit_error",
}


class APIError(Exception):
    """An error answered to the caller with ``status`` and an OpenAI-shaped body."""

    def __init__(self, status: int, message: str, *, type: str | None = None,
                 param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _STATUS_TYPES.get(status, "api_error")
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}

    def response(self) -> Response:
        return Response(orjson.dumps(self.body()), status_code=self.status,
                        headers=self.headers, media_type="application/json")


def invalid(param: str, message: str, code: str | None = None) -> APIError:
    """A 400 naming the offending field."""
    return APIError(400, message, param=param, code=code)


def unauthorized() -> APIError:
    # Deliberately vague: never say which part of the credential was wrong.
    return APIError(401, "Invalid or missing credentials. Send 'Authorization: Bearer <key>'.",
                    code="invalid_api_key")


def not_found(what: str = "resource") -> APIError:
    return APIError(404, f"No such {what}.", code="not_found")


def model_not_found(model: str) -> APIError:
    return APIError(404, f"The model '{model}' does not exist or you do not have access to it.",
                    param="model", code="model_not_found")


def retry_headers(seconds: float) -> dict[str, str]:
    """``retry-after`` and ``retry-after-ms`` for a wait of ``seconds``, both rounded up
    (never sooner than meant), whole seconds at least 1 ("0" invites an instant retry
    storm). The one place every 429 and 503 of the gateway gets them from."""
    seconds = max(seconds, 0.0)
    # round(): 0.161 s is 161.00000000000003 ms in floating point, not 162 ms.
    return {"retry-after": str(max(1, math.ceil(round(seconds, 6)))),
            "retry-after-ms": str(math.ceil(round(seconds * 1000, 6)))}


def limiter_unavailable(headers: Mapping[str, str] | None = None) -> APIError:
    """The limiter's backend is down and it fails closed: a 503, not the caller's fault."""
    return APIError(503, "Rate limiting is unavailable right now; try again shortly.",
                    type="api_error", code="rate_limiter_unavailable", headers=headers)


def from_provider(exc: ProviderError, headers: Mapping[str, str] | None = None) -> APIError:
    """Map a typed upstream error to the status and body the caller gets (with
    ``headers`` added), in the HTTP answer and inside a stream alike.

    ``retry_after`` is clamped again here: a third-party provider plugin may set any
    float, and NaN or infinity must not turn a 429 into a 500."""
    out = dict(headers or {})
    if isinstance(exc.retry_after, int | float):
        wait = clamp_seconds(float(exc.retry_after))
        if wait is not None:
            out.update(retry_headers(wait))
    return APIError(exc.status, exc.message, type=exc.type, param=exc.param, code=exc.code,
                    headers=out)


async def handle_api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return exc.response()


async def handle_http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return APIError(exc.status_code, exc.detail or "error", headers=exc.headers).response()


def internal_error() -> APIError:
    return APIError(500, "The gateway hit an internal error; it has been logged.",
                    type="server_error", code="internal_error")


async def handle_unexpected(_request: Request, _exc: Exception) -> Response:
    return internal_error().response()
