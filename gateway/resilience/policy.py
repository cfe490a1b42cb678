"""What to do about a failed upstream attempt: retry it, count it against the target's
breaker, fall back to a larger-context model, and how long to wait before trying again.

Pure functions over ``providers.errors.ProviderError``: the call path asks them, so the
rules live in one place and are tested as tables.
"""

from __future__ import annotations

import random

from providers.errors import (
    ProviderError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
    UpstreamUnavailable,
)

# Worth another try: the upstream timed out (408, 504), conflicted with itself (409),
# throttled (429) or failed on its side (500, 502, 503, 529 overloaded). Everything else
# (400, 401, 403, 404, 413, 422, 501, ...) would fail the same way again.
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})

# Wordings of "the prompt does not fit the model's context" that carry no code of their
# own, matched in lower case on a 400's message. As the servers send them:
# - Anthropic: "prompt is too long: 203284 tokens > 200000 maximum"
#   (github.com/anthropics/claude-code/issues/59696), and "input length and `max_tokens`
#   exceed context limit: 189136 + 20000 > 204648, ..." (anthropics/claude-code#408).
# - vLLM (type "BadRequestError", "code": 400): "'max_tokens' or 'max_completion_tokens' is
#   too large: 8000. This model's maximum context length is 4096 tokens and your request
#   has 2778 input tokens (8000 > 4096 - 2778)" (quoted in andrewcho-dev/opsconductor-ng,
#   vLLM_transition/TOKEN_LIMIT_FIX.md); DeepSeek sends OpenAI's wording with "code":
#   "invalid_request_error" (evalstate/fast-agent#621); OpenRouter: "This endpoint's
#   maximum context length is 32768 tokens" (refly-ai/refly#1177).
# - llama.cpp server: "request (4390 tokens) exceeds the available context size (4096
#   tokens), try increasing it", type exceed_context_size_error (ggml-org/llama.cpp#19774).
# - llama-cpp-python: "Requested tokens (2285) exceed context window of 2048"
#   (fedora-copr/logdetective-website#193).
CONTEXT_OVERFLOW_PHRASES = (
    "prompt is too long",
    "exceed context limit",
    "maximum context length",
    "context length",
    "context window",
    "context size",
)

# OpenAI's own code for it: {"error": {"message": "This model's maximum context length is
# 4097 tokens. However, your messages resulted in 4619 tokens. ...", "type":
# "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}
# (ChatGPTNextWeb/NextChat#625, chathub-dev/chathub#126).
CONTEXT_OVERFLOW_CODES = frozenset({"context_length_exceeded"})


def retryable(exc: ProviderError) -> bool:
    """May another attempt at the same target succeed? (Only before the first byte went
    to the client; the call path checks that.)"""
    if isinstance(exc, UpstreamProtocolError | UpstreamResponseTooLarge):
        return False  # the upstream answered, with something we cannot use
    status = exc.upstream_status
    if status is not None:
        return status in RETRY_STATUSES
    # No status: a connection refused or reset, a timeout, or an error event in a stream
    # (overloaded_error, server_error, rate_limit_error) that names no status.
    return isinstance(exc, UpstreamUnavailable | UpstreamTimeout | UpstreamRateLimited)


def breaker_failure(exc: ProviderError) -> bool:
    """Does this failure say the target is unhealthy (counted by its circuit breaker)?
    A 4xx, 429 included, is about the request or the account, never about health."""
    status = exc.upstream_status
    if status is not None:
        return status >= 500  # 529 (Anthropic's overloaded) included; 408 is a 4xx
    return isinstance(exc, UpstreamUnavailable | UpstreamTimeout)


def context_overflow(exc: ProviderError) -> bool:
    """Did the upstream refuse the prompt as longer than the model's context (so a model
    with a larger context, ``context_fallbacks``, may take it)?"""
    if exc.upstream_code in CONTEXT_OVERFLOW_CODES:
        return True
    if exc.upstream_status != 400:
        return False
    message = exc.message.lower()
    return any(phrase in message for phrase in CONTEXT_OVERFLOW_PHRASES)


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)];
    ``attempt`` 0 is the wait before the first retry. Jitter spreads the retries of many
    calls that failed together, so they do not hit a recovering upstream at once."""
    # 2 ** attempt overflows a float past ~1024; the cap is reached long before.
    ceiling = cap if attempt >= 64 else min(cap, base * 2 ** attempt)
    return rng.uniform(0, ceiling)


def retry_delay(exc: ProviderError, attempt: int, base: float, cap: float,
                rng: random.Random) -> float | None:
    """Seconds to wait before retrying the same target, or None not to retry it.

    An upstream's ``retry-after`` is its own word on when it will take the call: used as
    is while it is within ``cap``; past the cap, waiting is not worth it (try the next
    target or fallback instead)."""
    if exc.retry_after is not None:
        return exc.retry_after if exc.retry_after <= cap else None
    return backoff(attempt, base, cap, rng)
