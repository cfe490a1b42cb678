"""Typed upstream errors. The gateway maps each to an HTTP status and OpenAI error type."""

from __future__ import annotations


class ProviderError(Exception):
    """Base class: the upstream call failed. ``status`` is what the gateway answers with.

    ``code`` is the gateway's own error code; ``upstream_code`` is what the upstream
    called it (OpenAI's error ``code``, Anthropic's error ``type``), kept so retry and
    fallback decisions can tell e.g. a context overflow from another 400."""

    status: int = 502
    type: str = "api_error"
    code: str | None = "upstream_error"

    def __init__(self, message: str, *, param: str | None = None,
                 retry_after: float | None = None, upstream_status: int | None = None,
                 upstream_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.upstream_status = upstream_status
        self.upstream_code = upstream_code


class UpstreamAuthError(ProviderError):
    """The upstream refused the gateway's credentials (a gateway configuration problem)."""

    status = 502
    code = "upstream_auth_error"


class UpstreamBadRequest(ProviderError):
    """The upstream rejected the request as invalid; the caller must change it."""

    status = 400
    type = "invalid_request_error"
    code = None


class UpstreamNotFound(ProviderError):
    """The upstream does not know the model."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class UpstreamRateLimited(ProviderError):
    """The upstream throttled us; ``retry_after`` (seconds) when it said."""

    status = 429
    type = "rate_limit_error"
    code = "upstream_rate_limited"


class UpstreamTimeout(ProviderError):
    """Connecting, the first byte, or the gap between chunks took too long."""

    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


class UpstreamUnavailable(ProviderError):
    """The upstream is down or overloaded (5xx, 529, connection refused)."""

    status = 503
    type = "api_error"
    code = "upstream_unavailable"


class UpstreamProtocolError(ProviderError):
    """The upstream answered with something we cannot parse."""

    status = 502
    code = "upstream_protocol_error"


class UpstreamResponseTooLarge(ProviderError):
    """The upstream sent a body, or one SSE event or line, over the configured cap."""

    status = 502
    code = "upstream_response_too_large"
