"""Pure decision rules shared by the backends (the Redis Lua scripts mirror them).

Every time here is an *expiry*: an entry admitted at ``t`` is stored as ``t + window``
and counts while ``expiry > now``.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.ratelimit.base import (
    CONCURRENT_RETRY_AFTER,
    Decision,
    Lease,
    Limits,
    WindowState,
)

TOO_LARGE_MESSAGE = (
    "Request too large: its estimated {requested} tokens exceed the limit of {limit} tokens "
    "per minute. Shorten the prompt or lower max_tokens."
)


def first_exceeded(
    limits: Limits, estimated: int, in_use: int, requests_used: int, tokens_used: int
) -> str | None:
    """Name the first limit (concurrent, requests, tokens) this call would exceed."""
    if in_use >= limits.concurrent_requests:
        return "concurrent"
    if requests_used >= limits.requests_per_minute:
        return "requests"
    if tokens_used + estimated > limits.tokens_per_minute:
        return "tokens"
    return None


def window_state(limit: int, used: int, newest_expiry: float | None, now: float) -> WindowState:
    """The header view of one window: time to reset is until its newest entry expires."""
    reset = newest_expiry - now if used > 0 and newest_expiry is not None else 0.0
    return WindowState(limit, max(0, limit - used), max(0.0, reset))


def requests_retry_after(oldest_expiry: float | None, now: float, window: float) -> float:
    """Wait until the oldest counted request leaves the window."""
    return max(0.0, oldest_expiry - now) if oldest_expiry is not None else window


def tokens_retry_after(
    entries: Iterable[tuple[float, float]], used: float, estimated: int, limit: int,
    now: float, window: float,
) -> float:
    """Wait until enough tokens leave the window for ``estimated`` to fit.

    ``entries`` are (expiry, tokens) in expiry order. In-flight reservations are counted
    at their estimate, so this is a best guess when those settle lower.
    """
    need = used + estimated - limit
    freed = 0.0
    for expiry, amount in entries:
        freed += amount
        if freed >= need:
            return max(0.0, expiry - now)
    return window


def rejected(
    limits: Limits, limit_type: str, retry_after: float, requests: WindowState,
    tokens: WindowState, in_use: int, message: str | None = None,
) -> Decision:
    """A rejection that consumed nothing."""
    return Decision(False, requests, tokens, limits.concurrent_requests, in_use,
                    limit_type, retry_after, None, message)


def too_large(limits: Limits, estimated: int, requests: WindowState, tokens: WindowState,
              in_use: int, window: float) -> Decision:
    """Reject a call whose estimate alone exceeds the tokens-per-minute limit (as OpenAI)."""
    message = TOO_LARGE_MESSAGE.format(requested=estimated, limit=limits.tokens_per_minute)
    return rejected(limits, "tokens", window, requests, tokens, in_use, message)


def concurrent_rejection(limits: Limits, requests: WindowState, tokens: WindowState,
                         in_use: int) -> Decision:
    """All slots are taken; a slot frees when any call of this subject ends."""
    return rejected(limits, "concurrent", CONCURRENT_RETRY_AFTER, requests, tokens, in_use)


def admitted(limits: Limits, requests: WindowState, tokens: WindowState, in_use: int,
             lease: Lease) -> Decision:
    """An admission holding ``lease``."""
    return Decision(True, requests, tokens, limits.concurrent_requests, in_use,
                    None, 0.0, lease)
