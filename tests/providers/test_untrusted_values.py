"""What an upstream sends is parsed defensively: retry hints, usage numbers, indices and
the error text relayed to clients."""

from __future__ import annotations

import email.utils
import time
from contextlib import aclosing

import httpx
import pytest

from gateway.errors import from_provider
from providers.anthropic import usage_from_anthropic
from providers.base import ChatRequest, Finish, ProviderConfig, TextDelta, Usage
from providers.errors import ProviderError, UpstreamProtocolError, UpstreamRateLimited
from providers.openai import OpenAIProvider
from providers.openai_format import usage_from_openai
from providers.untrusted import (
    MAX_RETRY_AFTER,
    MAX_TOKENS,
    clean_text,
    parse_retry_after,
    token_count,
)
from tests.providers.conftest import TrickleStream

HOUR = MAX_RETRY_AFTER


@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after-ms": "161"}, 0.161),
    ({"retry-after-ms": "NaN"}, None),
    ({"retry-after-ms": "nan", "retry-after": "4"}, 4.0),
    ({"retry-after-ms": "inf"}, HOUR),
    ({"retry-after-ms": "-inf"}, 0.0),
    ({"retry-after-ms": "-5"}, 0.0),
    ({"retry-after-ms": "garbage", "retry-after": "2"}, 2.0),
    ({"retry-after": "-5"}, 0.0),
    ({"retry-after": "1e999"}, HOUR),
    ({"retry-after": "99999999999"}, HOUR),
    ({"retry-after": "NaN"}, None),
    ({"retry-after": "Mon, 99 Foo 2024 25:61:61 GMT"}, None),
    ({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, HOUR),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
    ({"retry-after": "3, 4"}, None),
    ({}, None),
])
def test_retry_after_is_finite_and_clamped(headers: dict[str, str],
                                           expected: float | None) -> None:
    assert parse_retry_after(httpx.Headers(headers)) == pytest.approx(expected)


def test_retry_after_as_a_future_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after({"retry-after": when}) <= 30  # type: ignore[operator]


@pytest.mark.parametrize(("retry_after", "headers"), [
    (float("nan"), {}),
    (float("inf"), {"retry-after": "3600", "retry-after-ms": "3600000"}),
    (-5.0, {"retry-after": "1", "retry-after-ms": "0"}),
    (1e300, {"retry-after": "3600", "retry-after-ms": "3600000"}),
    (0.161, {"retry-after": "1", "retry-after-ms": "161"}),
    (2.5, {"retry-after": "3", "retry-after-ms": "2500"}),
    (None, {}),
])
def test_from_provider_never_fails_on_a_plugins_retry_after(retry_after: float | None,
                                                            headers: dict[str, str]) -> None:
    """A third-party provider may set any float; the caller still gets its 429."""
    error = from_provider(UpstreamRateLimited("slow down", retry_after=retry_after))
    assert (error.status, error.headers) == (429, headers)


@pytest.mark.parametrize(("value", "expected"), [
    (12, 12), (0, 0), (-5, None), (10**30, MAX_TOKENS), (12.0, 12), (12.7, 12),
    ("12", None), (True, None), (None, None), ([1], None), ({"n": 1}, None),
    (float("nan"), None), (float("inf"), MAX_TOKENS),
])
def test_token_count(value: object, expected: int | None) -> None:
    assert token_count(value) == expected


def test_openai_usage_with_nonsense_numbers() -> None:
    assert usage_from_openai({"prompt_tokens": 12, "completion_tokens": 10**30,
                              "prompt_tokens_details": {"cached_tokens": True}}) == Usage(
        prompt_tokens=12, completion_tokens=MAX_TOKENS, cached_tokens=None)
    assert usage_from_openai({"completion_tokens": 2, "prompt_tokens_details": "x",
                              "cached_tokens": 1}) == Usage(
        prompt_tokens=0, completion_tokens=2, cached_tokens=1)
    # A main count that is not a count: no usage at all, so the gateway counts itself
    # instead of billing 0 (or a negative number).
    assert usage_from_openai({"prompt_tokens": "12", "completion_tokens": 3}) is None
    assert usage_from_openai({"prompt_tokens": -3, "completion_tokens": 2}) is None
    assert usage_from_openai(7) is None
    assert usage_from_openai([]) is None


def test_anthropic_usage_with_nonsense_numbers() -> None:
    assert usage_from_anthropic({"input_tokens": 9, "output_tokens": 10**20,
                                 "cache_read_input_tokens": 10**20,
                                 "cache_creation_input_tokens": None}) == [
        Usage(prompt_tokens=9 + MAX_TOKENS, completion_tokens=MAX_TOKENS,
              cached_tokens=MAX_TOKENS, cache_creation_tokens=None)]
    assert usage_from_anthropic({"input_tokens": "9", "output_tokens": 1}) == []
    assert usage_from_anthropic({"input_tokens": 9, "output_tokens": -1}) == []


STREAM_END = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'


@pytest.mark.parametrize(("usage", "expected"), [
    (b'{"prompt_tokens":"a lot","completion_tokens":-1}', None),
    (b'{"prompt_tokens":1e300,"completion_tokens":2}', Usage(MAX_TOKENS, 2, None)),
    (b'"seven"', None),
], ids=["strings and negatives", "huge", "not an object"])
async def test_stream_usage_numbers_never_break_the_stream(upstream, transport, ctx,
                                                           usage: bytes,
                                                           expected: Usage | None) -> None:
    body = (b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}'
            b"\n\n" + STREAM_END + b'data: {"choices":[],"usage":' + usage + b"}\n\n"
            b"data: [DONE]\n\n")
    upstream.post("https://up.example/v1/chat/completions").mock(return_value=httpx.Response(
        200, stream=TrickleStream(body), headers={"content-type": "text/event-stream"}))
    provider = OpenAIProvider(ProviderConfig(name="up", kind="openai",
                                             base_url="https://up.example/v1"), transport)
    req = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    async with aclosing(provider.stream_chat(req, ctx)) as stream:
        chunks = [chunk async for chunk in stream]
    assert chunks == [TextDelta("hi"), Finish("stop"), *([expected] if expected else [])]


@pytest.mark.parametrize("event", [
    b'{"choices":[{"index":"0","delta":{"content":"hi"}}]}',
    b'{"choices":[{"index":[0],"delta":{"content":"hi"}}]}',
    b'{"choices":[{"index":0,"delta":{"tool_calls":[{"index":"first"}]}}]}',
    b'{"choices":[{"index":0,"delta":"text"}]}',
    b'{"choices":[null]}',
], ids=["string index", "list index", "string call index", "string delta", "null choice"])
async def test_malformed_stream_events_are_protocol_errors(upstream, transport, ctx,
                                                           event: bytes) -> None:
    upstream.post("https://up.example/v1/chat/completions").mock(return_value=httpx.Response(
        200, stream=TrickleStream(b"data: " + event + b"\n\n"),
        headers={"content-type": "text/event-stream"}))
    provider = OpenAIProvider(ProviderConfig(name="up", kind="openai",
                                             base_url="https://up.example/v1"), transport)
    req = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(UpstreamProtocolError) as info:
        async with aclosing(provider.stream_chat(req, ctx)) as stream:
            async for _ in stream:
                pass
    assert info.value.message == "upstream 'up': sent a stream event of an unexpected shape"


@pytest.mark.parametrize(("text", "expected"), [
    ("plain", "plain"),
    ("a\x00b\x1b[31mc\x7fd\x85e", "a b [31mc d e"),
    ("line one\r\n\tline two", "line one line two"),
    ("evil\u202egnp.exe", "evil gnp.exe"),
    ("x" * 400, "x" * 299 + "…"),
    ("café 日本 👋🏽", "café 日本 👋🏽"),
])
def test_clean_text(text: str, expected: str) -> None:
    assert clean_text(text) == expected


def test_a_relayed_message_is_cleaned_and_cut() -> None:
    from providers.openai_format import error_from_openai_payload

    error = error_from_openai_payload("up", {"error": {
        "message": "bad\x1b]0;pwned\x07 request " + "y" * 1000, "param": "\x00" + "p" * 500,
        "code": 10**100}})
    assert isinstance(error, ProviderError)
    assert error.message.startswith("upstream 'up': bad ]0;pwned request yyy")
    assert len(error.message) == len("upstream 'up': ") + 300
    assert error.param == "p" * 99 + "…"
    assert error.upstream_status is None  # a code that is not an HTTP status is not one


async def test_anthropic_stream_with_a_nonsense_count_reports_no_usage(upstream, transport,
                                                                      ctx) -> None:
    """The gateway then estimates with its own tokenizer rather than bill nonsense."""
    from providers.anthropic import AnthropicProvider

    body = (b'event: message_start\ndata: {"type":"message_start","message":{"usage":'
            b'{"input_tokens":9,"output_tokens":1}}}\n\n'
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":"hi"}}\n\n'
            b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
            b'"end_turn"},"usage":{"output_tokens":"many"}}\n\n'
            b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    upstream.post("https://a.example/v1/messages").mock(return_value=httpx.Response(
        200, stream=TrickleStream(body), headers={"content-type": "text/event-stream"}))
    provider = AnthropicProvider(ProviderConfig(name="a", kind="anthropic",
                                                base_url="https://a.example"), transport)
    req = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    async with aclosing(provider.stream_chat(req, ctx)) as stream:
        chunks = [chunk async for chunk in stream]
    assert chunks == [TextDelta("hi"), Finish("stop")]
