"""Retry, breaker and fallback classification, as tables over the errors the providers
really raise (built by their own mapping code from recorded bodies), and the backoff."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest

from gateway.resilience.policy import (
    RETRY_STATUSES,
    backoff,
    breaker_failure,
    context_overflow,
    retry_delay,
    retryable,
)
from providers.anthropic import error_from_anthropic_payload
from providers.errors import (
    ProviderError,
    UpstreamProtocolError,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from providers.openai_format import error_from_openai_payload, error_from_openai_response
from providers.upstream import map_transport_errors

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "upstream"


def http_error(status: int, body: bytes = b"", headers: dict[str, str] | None = None
               ) -> ProviderError:
    """What an OpenAI-compatible provider raises for this HTTP answer."""
    return error_from_openai_response("up", status, headers or {}, body)


def recorded(status: int, name: str, headers: dict[str, str] | None = None) -> ProviderError:
    return http_error(status, (FIXTURES / name).read_bytes(), headers)


def transport_error(exc: Exception) -> ProviderError:
    """What a provider raises when httpx fails before an answer."""
    try:
        with map_transport_errors("up"):
            raise exc
    except ProviderError as error:
        return error
    raise AssertionError("not mapped")


def in_stream(error: dict[str, object]) -> ProviderError:
    mapped = error_from_openai_payload("up", {"error": error})
    assert mapped is not None
    return mapped


def anthropic_event(kind: str) -> ProviderError:
    mapped = error_from_anthropic_payload("up", {"type": "error",
                                                 "error": {"type": kind, "message": "x"}})
    assert mapped is not None
    return mapped


#      status: (retryable, breaker failure)
STATUSES = {
    400: (False, False), 401: (False, False), 403: (False, False), 404: (False, False),
    408: (True, False), 409: (True, False), 413: (False, False), 422: (False, False),
    429: (True, False), 500: (True, True), 501: (False, True), 502: (True, True),
    503: (True, True), 504: (True, True), 529: (True, True),
}


@pytest.mark.parametrize("status", sorted(STATUSES))
def test_http_statuses(status: int) -> None:
    error = recorded(status, "openai_error_500.json" if status >= 500
                     else "openai_error_400.json")
    assert error.upstream_status == status
    assert (retryable(error), breaker_failure(error)) == STATUSES[status]


@pytest.mark.parametrize("status", sorted(STATUSES))
def test_http_statuses_with_an_html_page(status: int) -> None:
    """A proxy's HTML error page carries no JSON: the status alone decides."""
    error = http_error(status, b"<html><body>busy</body></html>")
    assert (retryable(error), breaker_failure(error)) == STATUSES[status]


def test_the_retry_statuses_are_the_issues() -> None:
    assert frozenset({408, 409, 429, 500, 502, 503, 504, 529}) == RETRY_STATUSES


@pytest.mark.parametrize(("error", "retry", "breaker"), [
    # Connection refused or reset, DNS: the upstream is unreachable.
    (transport_error(httpx.ConnectError("refused")), True, True),
    (transport_error(httpx.ReadError("reset")), True, True),
    (transport_error(httpx.RemoteProtocolError("peer closed")), True, True),
    # Timeouts before any answer (connect, first byte, a free pooled connection).
    (transport_error(httpx.ConnectTimeout("slow")), True, True),
    (transport_error(httpx.ReadTimeout("slow")), True, True),
    (transport_error(httpx.PoolTimeout("busy")), True, True),
    (UpstreamTimeout("upstream 'up' did not finish within its total_timeout (600 s)"),
     True, True),
    # A body we cannot use, or a configuration mistake: trying again changes nothing.
    (transport_error(httpx.DecodingError("gzip")), False, False),
    (transport_error(httpx.UnsupportedProtocol("ftp://")), False, False),
    (UpstreamResponseTooLarge("too large"), False, False),
    (UpstreamProtocolError("the stream ended before the answer finished"), False, False),
    (ProviderError("upstream 'up': sent an error event we could not read"), False, False),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v))
def test_failures_without_a_status(error: ProviderError, retry: bool, breaker: bool) -> None:
    assert error.upstream_status is None
    assert (retryable(error), breaker_failure(error)) == (retry, breaker)


@pytest.mark.parametrize(("error", "retry", "breaker"), [
    # OpenAI-style error events inside a stream (no HTTP status).
    (in_stream({"message": "The server had an error", "type": "server_error"}), True, True),
    (in_stream({"message": "Rate limit", "type": "tokens", "code": "rate_limit_exceeded"}),
     True, False),
    (in_stream({"message": "bad", "type": "invalid_request_error"}), False, False),
    (in_stream({"message": "no", "type": "authentication_error"}), False, False),
    (in_stream({"message": "odd", "type": "weird_error"}), False, False),
    # vLLM puts the status in "code": it is used as the status.
    (in_stream({"message": "context too long", "type": "BadRequestError", "code": 400}),
     False, False),
    (in_stream({"message": "engine dead", "type": "InternalServerError", "code": 500}),
     True, True),
    # Anthropic's error events.
    (anthropic_event("overloaded_error"), True, True),
    (anthropic_event("rate_limit_error"), True, False),
    (anthropic_event("timeout_error"), True, True),
    (anthropic_event("invalid_request_error"), False, False),
    (anthropic_event("api_error"), False, False),
], ids=lambda v: f"{type(v).__name__}:{v.upstream_code}" if isinstance(v, Exception)
    else str(v))
def test_error_events_in_a_stream(error: ProviderError, retry: bool, breaker: bool) -> None:
    assert (retryable(error), breaker_failure(error)) == (retry, breaker)


def test_anthropics_recorded_overload_and_rate_limit() -> None:
    def anthropic_http(status: int, name: str) -> ProviderError:
        error = error_from_anthropic_payload(
            "claude", httpx.Response(status, content=(FIXTURES / name).read_bytes()).json(),
            status=status)
        assert error is not None
        return error

    overloaded = anthropic_http(529, "anthropic_error_529.json")
    assert type(overloaded) is UpstreamUnavailable
    assert (retryable(overloaded), breaker_failure(overloaded)) == (True, True)
    limited = anthropic_http(429, "anthropic_error_429.json")
    assert (retryable(limited), breaker_failure(limited)) == (True, False)
    too_long = anthropic_http(400, "anthropic_error_prompt_too_long.json")
    assert (retryable(too_long), breaker_failure(too_long)) == (False, False)
    assert context_overflow(too_long)
    # Input plus max_tokens over the window: a larger-context model would take it too.
    over = error_from_anthropic_payload("claude", {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "input length and `max_tokens` exceed context limit: 189136 + 20000 > "
                   "204648, decrease input length or `max_tokens` and try again"}}, status=400)
    assert over is not None and context_overflow(over)
    other = anthropic_http(400, "anthropic_error_400.json")  # max_tokens over the model's cap
    assert not context_overflow(other)


@pytest.mark.parametrize(("status", "body", "overflow"), [
    # OpenAI's own code (recorded body).
    (400, (FIXTURES / "openai_error_context_length.json").read_bytes(), True),
    # vLLM: the status in "code", the wording in the message.
    (400, b'{"object":"error","message":"This model\'s maximum context length is 4096 tokens '
          b'and your request has 2778 input tokens","type":"BadRequestError","param":null,'
          b'"code":400}', True),
    # DeepSeek: OpenAI's wording with a generic code.
    (400, b'{"error":{"message":"This model\'s maximum context length is 131072 tokens. '
          b'However, you requested 131134 tokens (122942 in the messages, 8192 in the '
          b'completion). Please reduce the length of the messages or completion.",'
          b'"type":"invalid_request_error","param":null,"code":"invalid_request_error"}}', True),
    # llama.cpp server.
    (400, b'{"error":{"code":400,"message":"request (4390 tokens) exceeds the available '
          b'context size (4096 tokens), try increasing it","type":"exceed_context_size_error",'
          b'"n_prompt_tokens":4390,"n_ctx":4096}}', True),
    # llama-cpp-python.
    (400, b'{"error":{"message":"Requested tokens (2285) exceed context window of 2048",'
          b'"type":"invalid_request_error"}}', True),
    # Other 400s, and the wording on a status that is not 400.
    (400, (FIXTURES / "openai_error_400.json").read_bytes(), False),
    (413, b'{"error":{"message":"Request too large","type":"invalid_request_error"}}', False),
    (500, b'{"error":{"code":500,"message":"Context size has been exceeded.",'
          b'"type":"server_error"}}', False),
    (429, (FIXTURES / "openai_error_429.json").read_bytes(), False),
])
def test_context_overflow_from_openai_compatible_servers(status: int, body: bytes,
                                                         overflow: bool) -> None:
    error = http_error(status, body)
    assert context_overflow(error) is overflow
    if overflow:
        assert not retryable(error)  # the same prompt fails the same way: fall back instead


def test_context_overflow_by_code_without_a_status() -> None:
    """An in-stream error that carries OpenAI's code counts even with no HTTP status."""
    error = in_stream({"message": "too long", "type": "invalid_request_error",
                       "code": "context_length_exceeded"})
    assert error.upstream_status is None
    assert context_overflow(error)


@pytest.mark.parametrize("attempt", range(8))
def test_backoff_is_full_jitter_under_the_exponential_ceiling(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = min(8.0, 0.25 * 2 ** attempt)
    draws = [backoff(attempt, 0.25, 8.0, rng) for _ in range(2000)]
    assert all(0 <= d <= ceiling for d in draws)
    # Full jitter: the whole range is used, not just its top (mean ceiling / 2).
    assert min(draws) < ceiling * 0.05 and max(draws) > ceiling * 0.95
    assert sum(draws) / len(draws) == pytest.approx(ceiling / 2, rel=0.1)


def test_backoff_stays_at_the_cap_for_any_attempt() -> None:
    rng = random.Random(1)
    assert all(0 <= backoff(attempt, 0.25, 8.0, rng) <= 8.0
               for attempt in (10, 63, 64, 1000, 10_000))


def test_backoff_draws_from_the_given_rng() -> None:
    assert backoff(3, 0.25, 8.0, random.Random(42)) == random.Random(42).uniform(0, 2.0)


@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after": "3"}, 3.0),  # the upstream's own word, used as is (no jitter)
    ({"retry-after-ms": "161"}, 0.161),
    ({"retry-after": "0"}, 0.0),
    ({"retry-after": "8"}, 8.0),  # at the cap: still worth the wait
    ({"retry-after": "9"}, None),  # past the cap: give up on this target
    ({"retry-after": "3600"}, None),
])
def test_retry_delay_honours_retry_after_within_the_cap(headers: dict[str, str],
                                                        expected: float | None) -> None:
    error = recorded(429, "openai_error_429.json", headers)
    for attempt in range(4):
        delay = retry_delay(error, attempt, 0.25, 8.0, random.Random(attempt))
        assert delay == (None if expected is None else pytest.approx(expected))


def test_retry_delay_without_retry_after_is_the_backoff() -> None:
    error = recorded(503, "openai_error_500.json")
    assert error.retry_after is None
    for attempt in range(6):
        assert retry_delay(error, attempt, 0.25, 8.0, random.Random(attempt)) == backoff(
            attempt, 0.25, 8.0, random.Random(attempt))
