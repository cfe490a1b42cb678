"""Plan limits on the request path: the caller's limits, OpenAI's headers, the 429."""

from __future__ import annotations

import math

from gateway.auth.principal import Principal
from gateway.errors import APIError, limiter_unavailable, retry_headers
from gateway.ratelimit.base import Decision, Limits, WindowState


def limits_for(principal: Principal) -> Limits:
    """The plan's limits, tightened by the API key's own overrides."""
    plan = principal.plan
    over = principal.key_limits
    return Limits(
        requests_per_minute=min(plan.requests_per_minute,
                                over.get("requests_per_minute", plan.requests_per_minute)),
        tokens_per_minute=min(plan.tokens_per_minute,
                              over.get("tokens_per_minute", plan.tokens_per_minute)),
        concurrent_requests=min(plan.concurrent_requests,
                                over.get("concurrent_requests", plan.concurrent_requests)))


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1s``, ``6m0s``, ``1h2m3s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _window_headers(kind: str, window: WindowState) -> dict[str, str]:
    return {f"x-ratelimit-limit-{kind}": str(window.limit),
            f"x-ratelimit-remaining-{kind}": str(max(0, window.remaining)),
            f"x-ratelimit-reset-{kind}": duration(window.reset_seconds)}


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    return {**_window_headers("requests", decision.requests),
            **_window_headers("tokens", decision.tokens)}


def rejection(decision: Decision, headers: dict[str, str]) -> APIError:
    """The 429 (or 503 when the limiter is down and fails closed) for a refused call."""
    wait = max(decision.retry_after, 0.001)
    retry = {**headers, **retry_headers(wait)}
    kind = decision.limit_type
    if kind == "unavailable":
        return limiter_unavailable(retry)
    if kind == "concurrent":
        message = (f"Too many concurrent requests: your plan allows "
                   f"{decision.concurrent_limit} at a time. Retry when one finishes.")
        kind = "requests"
    elif decision.message:
        message = decision.message
    elif kind == "tokens":
        message = (f"Rate limit reached for tokens per minute: limit {decision.tokens.limit}, "
                   f"remaining {max(0, decision.tokens.remaining)}. "
                   f"Try again in {duration(wait)}.")
    else:
        message = (f"Rate limit reached for requests per minute: limit "
                   f"{decision.requests.limit}. Try again in {duration(wait)}.")
    return APIError(429, message, type=kind, code="rate_limit_exceeded", headers=retry)

