"""complete_chat errors: the same typed errors as the streaming path, and protocol errors for
bodies that are not an answer."""

from __future__ import annotations

import httpcore
import httpx
import pytest

from providers.base import (
    ChatRequest,
    ProviderConfig,
)
from providers.errors import (
    ProviderError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from providers.openai import OpenAIProvider
from tests.providers.completion import (
    ANTHROPIC_URL,
    JSON,
    OPENAI_URL,
    REQS,
    URLS,
    fresh,
)

ERROR_CASES = [
    # (provider, status, recording, headers, class, param, retry_after)
    ("openai", 400, "openai_error_400.json", {}, UpstreamBadRequest, "temperature", None),
    ("openai", 401, "openai_error_401.json", {}, UpstreamAuthError, None, None),
    ("openai", 403, "openai_error_401.json", {}, UpstreamAuthError, None, None),
    ("openai", 404, "openai_error_404.json", {}, UpstreamNotFound, None, None),
    ("openai", 422, "openai_error_400.json", {}, UpstreamBadRequest, "temperature", None),
    ("openai", 429, "openai_error_429.json", {"retry-after": "3"}, UpstreamRateLimited, None,
     3.0),
    ("openai", 429, "openai_error_429.json", {"retry-after-ms": "161", "retry-after": "1"},
     UpstreamRateLimited, None, 0.161),
    ("openai", 500, "openai_error_500.json", {}, UpstreamUnavailable, None, None),
    ("openai", 502, "openai_error_500.json", {}, UpstreamUnavailable, None, None),
    ("openai", 503, "openai_error_500.json", {}, UpstreamUnavailable, None, None),
    ("openai", 529, "openai_error_500.json", {}, UpstreamUnavailable, None, None),
    ("openai", 504, "openai_error_500.json", {}, UpstreamTimeout, None, None),
    ("anthropic", 400, "anthropic_error_400.json", {}, UpstreamBadRequest, None, None),
    ("anthropic", 401, "anthropic_error_401.json", {}, UpstreamAuthError, None, None),
    ("anthropic", 429, "anthropic_error_429.json", {"retry-after": "17"}, UpstreamRateLimited,
     None, 17.0),
    ("anthropic", 529, "anthropic_error_529.json", {}, UpstreamUnavailable, None, None),
    ("anthropic", 500, "anthropic_error_529.json", {}, UpstreamUnavailable, None, None),
    ("anthropic", 504, "anthropic_error_529.json", {}, UpstreamTimeout, None, None),
    ("together", 404, "together_error_404.json", {}, UpstreamNotFound, None, None),
]


def same_error(a: ProviderError, b: ProviderError) -> None:
    assert type(a) is type(b)
    assert (a.message, a.param, a.retry_after, a.upstream_status, a.status, a.code,
            a.upstream_code) == (b.message, b.param, b.retry_after, b.upstream_status,
                                 b.status, b.code, b.upstream_code)


@pytest.mark.parametrize(("kind", "status", "recording", "headers", "cls", "param",
                          "retry_after"), ERROR_CASES)
async def test_http_errors_are_typed_like_the_stream(providers, upstream, fixture_bytes,
                                                     complete, collect, kind, status,
                                                     recording, headers, cls, param,
                                                     retry_after) -> None:
    upstream.post(URLS[kind]).mock(side_effect=fresh(status, fixture_bytes(recording),
                                                     {**JSON, **headers}))
    with pytest.raises(cls) as whole:
        await complete(providers[kind], REQS[kind])
    error = whole.value
    assert type(error) is cls
    assert error.param == param
    assert error.retry_after == pytest.approx(retry_after)
    assert error.upstream_status == status
    assert error.message.startswith(f"upstream {kind!r}")
    with pytest.raises(cls) as streamed:
        await collect(providers[kind], REQS[kind])
    same_error(error, streamed.value)


@pytest.mark.parametrize(("kind", "status", "recording", "upstream_code"), [
    ("openai", 400, "openai_error_context_length.json", "context_length_exceeded"),
    ("openai", 400, "openai_error_400.json", "invalid_type"),
    ("openai", 401, "openai_error_401.json", "invalid_api_key"),
    ("openai", 404, "openai_error_404.json", "model_not_found"),
    ("openai", 429, "openai_error_429.json", "rate_limit_exceeded"),
    ("openai", 500, "openai_error_500.json", None),  # "code": null
    ("anthropic", 400, "anthropic_error_prompt_too_long.json", "invalid_request_error"),
    ("anthropic", 401, "anthropic_error_401.json", "authentication_error"),
    ("anthropic", 429, "anthropic_error_429.json", "rate_limit_error"),
    ("anthropic", 529, "anthropic_error_529.json", "overloaded_error"),
    ("together", 404, "together_error_404.json", "model_not_available"),
])
async def test_the_upstreams_own_error_code_is_kept(providers, upstream, fixture_bytes,
                                                    complete, collect, kind, status, recording,
                                                    upstream_code) -> None:
    """OpenAI's ``code`` and Anthropic's error ``type`` ride along next to the gateway's own
    ``code``, which does not change (a context overflow is still a plain 400)."""
    upstream.post(URLS[kind]).mock(side_effect=fresh(status, fixture_bytes(recording), JSON))
    with pytest.raises(ProviderError) as whole:
        await complete(providers[kind], REQS[kind])
    assert whole.value.upstream_code == upstream_code
    assert whole.value.upstream_status == status
    with pytest.raises(ProviderError) as streamed:
        await collect(providers[kind], REQS[kind])
    same_error(whole.value, streamed.value)


async def test_a_context_overflow_keeps_the_gateways_own_shape(providers, upstream,
                                                               fixture_bytes, complete) -> None:
    upstream.post(OPENAI_URL).mock(side_effect=fresh(
        400, fixture_bytes("openai_error_context_length.json"), JSON))
    with pytest.raises(UpstreamBadRequest) as info:
        await complete(providers["openai"], REQS["openai"])
    error = info.value
    assert (error.status, error.type, error.code, error.param, error.upstream_code) == (
        400, "invalid_request_error", None, "messages", "context_length_exceeded")
    assert error.message == ("upstream 'openai': This model's maximum context length is 128000 "
                             "tokens. However, your messages resulted in 204308 tokens. Please "
                             "reduce the length of the messages.")


@pytest.mark.parametrize(("kind", "recording", "relayed"), [
    ("openai", "openai_error_400.json", "Invalid type for 'temperature'"),
    ("anthropic", "anthropic_error_400.json", "max_tokens: 100000 > 64000"),
    ("together", "together_error_404.json", "Unable to access model"),
])
async def test_http_error_messages_are_relayed(providers, upstream, fixture_bytes, complete,
                                               kind, recording, relayed) -> None:
    status = 404 if "404" in recording else 400
    upstream.post(URLS[kind]).mock(return_value=httpx.Response(
        status, content=fixture_bytes(recording), headers=JSON))
    with pytest.raises(ProviderError) as info:
        await complete(providers[kind], REQS[kind])
    assert relayed in info.value.message


@pytest.mark.parametrize(("kind", "recording"), [
    ("openai", "openai_error_401.json"), ("anthropic", "anthropic_error_401.json")])
async def test_auth_error_does_not_leak_the_upstream_message(providers, upstream,
                                                             fixture_bytes, complete, kind,
                                                             recording) -> None:
    upstream.post(URLS[kind]).mock(return_value=httpx.Response(
        401, content=fixture_bytes(recording), headers=JSON))
    with pytest.raises(UpstreamAuthError) as info:
        await complete(providers[kind], REQS[kind])
    assert "sk-proj" not in info.value.message
    assert "invalid x-api-key" not in info.value.message
    assert "api_key" in info.value.message


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_html_error_page_still_maps_by_status(providers, upstream, complete,
                                                    kind) -> None:
    upstream.post(URLS[kind]).mock(return_value=httpx.Response(
        502, html="<html><body>502 Bad Gateway<script>alert(1)</script></body></html>"))
    with pytest.raises(UpstreamUnavailable) as info:
        await complete(providers[kind], REQS[kind])
    assert info.value.upstream_status == 502
    # None of the page reaches the client: it may carry scripts, or be binary.
    assert info.value.message == f"upstream {kind!r}: answered HTTP 502 with a non-JSON body"


# A 200 whose JSON body is an error object: typed by the error's own type / code.
ERRORS_WITH_200 = [
    ("openai", b'{"error": {"message": "model overloaded", "type": "server_error"}}',
     UpstreamUnavailable, "model overloaded"),
    ("openai", b'{"error": {"message": "Rate limit", "type": "tokens",'
     b' "code": "rate_limit_exceeded"}}', UpstreamRateLimited, "Rate limit"),
    ("openai", b'{"error": {"object": "error", "message": "context too long",'
     b' "type": "BadRequestError", "param": null, "code": 400}}',
     UpstreamBadRequest, "context too long"),
    ("openai", b'{"error": "plain text error"}', ProviderError, "plain text error"),
    ("together", b'{"error": {"message": "bad", "type": "invalid_request_error",'
     b' "param": "tools"}}', UpstreamBadRequest, "bad"),
    ("anthropic", b'{"type": "error", "error": {"type": "overloaded_error",'
     b' "message": "Overloaded"}}', UpstreamUnavailable, "Overloaded"),
    ("anthropic", b'{"type": "error", "error": {"type": "rate_limit_error",'
     b' "message": "slow down"}}', UpstreamRateLimited, "slow down"),
    ("anthropic", b'{"type": "error", "error": {"type": "invalid_request_error",'
     b' "message": "nope"}}', UpstreamBadRequest, "nope"),
]


@pytest.mark.parametrize(("kind", "body", "cls", "message"), ERRORS_WITH_200)
async def test_json_error_with_200_status(providers, upstream, complete, collect, kind, body,
                                          cls, message) -> None:
    upstream.post(URLS[kind]).mock(side_effect=fresh(200, body, JSON))
    with pytest.raises(cls, match=message) as whole:
        await complete(providers[kind], REQS[kind])
    assert type(whole.value) is cls
    with pytest.raises(cls) as streamed:  # the stream path sees the same JSON answer
        await collect(providers[kind], REQS[kind])
    same_error(whole.value, streamed.value)


@pytest.mark.parametrize(("kind", "recording", "cls"), [
    ("openai", "openai_error_400.json", UpstreamBadRequest),
    ("openai", "openai_error_429.json", UpstreamRateLimited),
    ("openai", "openai_error_500.json", UpstreamUnavailable),
    ("anthropic", "anthropic_error_400.json", UpstreamBadRequest),
    ("anthropic", "anthropic_error_401.json", UpstreamAuthError),
    ("anthropic", "anthropic_error_429.json", UpstreamRateLimited),
    ("anthropic", "anthropic_error_529.json", UpstreamUnavailable),
])
async def test_recorded_error_bodies_with_200_status(providers, upstream, fixture_bytes,
                                                     complete, kind, recording, cls) -> None:
    upstream.post(URLS[kind]).mock(return_value=httpx.Response(
        200, content=fixture_bytes(recording), headers=JSON))
    with pytest.raises(cls) as info:
        await complete(providers[kind], REQS[kind])
    assert type(info.value) is cls
    assert info.value.upstream_status is None


NOT_AN_ANSWER = {
    "not json": b"not json",
    "empty": b"",
    "html": b"<html><body>Welcome to nginx!</body></html>",
    "array": b'[{"choices": []}]',
    "string": b'"hello"',
    "null": b"null",
    "number": b"42",
    "truncated": b'{"id": "chatcmpl-1", "choices": [',
}


@pytest.mark.parametrize("kind", ["openai", "anthropic", "together"])
@pytest.mark.parametrize("body", list(NOT_AN_ANSWER.values()), ids=list(NOT_AN_ANSWER))
async def test_200_that_is_not_a_json_object(providers, upstream, complete, kind,
                                             body) -> None:
    upstream.post(URLS[kind]).mock(return_value=httpx.Response(200, content=body,
                                                               headers=JSON))
    with pytest.raises(UpstreamProtocolError) as info:
        await complete(providers[kind], REQS[kind])
    assert type(info.value) is UpstreamProtocolError
    assert info.value.message.startswith(f"upstream {kind!r}: expected a JSON object")


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_an_event_stream_instead_of_json(providers, upstream, replay, complete,
                                               kind) -> None:
    """An upstream that ignores ``stream: false`` and streams anyway."""
    upstream.post(URLS[kind]).mock(return_value=replay(f"{kind}_text.sse")[0])
    with pytest.raises(UpstreamProtocolError):
        await complete(providers[kind], REQS[kind])


@pytest.mark.parametrize("kind", ["openai", "together"])
@pytest.mark.parametrize("payload", [
    {"id": "chatcmpl-1", "object": "chat.completion"},
    {"choices": None},
    {"choices": {"index": 0}},
    {"object": "error", "message": "flat vLLM error with 200", "code": 400},
], ids=["no choices", "null choices", "object choices", "flat error"])
async def test_openai_body_without_choices(providers, upstream, complete, kind,
                                           payload) -> None:
    upstream.post(URLS[kind]).mock(return_value=httpx.Response(200, json=payload))
    with pytest.raises(UpstreamProtocolError, match="without choices"):
        await complete(providers[kind], REQS[kind])


@pytest.mark.parametrize("payload", [
    {"id": "msg_1", "role": "assistant", "content": [{"type": "text", "text": "hi"}]},
    {"type": "completion", "content": [{"type": "text", "text": "hi"}]},
    {"type": "message", "content": "hi"},
    {"type": "message"},
], ids=["no type", "other type", "string content", "no content"])
async def test_anthropic_body_that_is_not_a_message(providers, upstream, complete,
                                                    payload) -> None:
    upstream.post(ANTHROPIC_URL).mock(return_value=httpx.Response(200, json=payload))
    with pytest.raises(UpstreamProtocolError, match="not a message"):
        await complete(providers["anthropic"], REQS["anthropic"])


@pytest.mark.parametrize(("kind", "recording"), [
    ("openai", "anthropic_text.json"), ("together", "anthropic_tools.json"),
    ("anthropic", "openai_text.json"), ("anthropic", "together_text.json"),
])
async def test_the_other_apis_answer_is_a_protocol_error(providers, upstream, fixture_bytes,
                                                         complete, kind, recording) -> None:
    """A base_url pointing at the wrong kind of upstream."""
    upstream.post(URLS[kind]).mock(return_value=httpx.Response(
        200, content=fixture_bytes(recording), headers=JSON))
    with pytest.raises(UpstreamProtocolError):
        await complete(providers[kind], REQS[kind])


@pytest.mark.parametrize("kind", ["openai", "anthropic", "together"])
@pytest.mark.parametrize(("exc", "cls"), [
    (httpx.ConnectError("connection refused"), UpstreamUnavailable),
    (httpx.ConnectTimeout("connect timed out"), UpstreamTimeout),
    (httpx.ReadTimeout("no first byte"), UpstreamTimeout),
    (httpx.PoolTimeout("pool exhausted"), UpstreamTimeout),
    (httpx.RemoteProtocolError("server disconnected"), UpstreamUnavailable),
    (httpx.UnsupportedProtocol("ftp?"), ProviderError),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None)
async def test_transport_errors(providers, upstream, complete, kind, exc, cls) -> None:
    upstream.post(URLS[kind]).mock(side_effect=exc)
    with pytest.raises(cls) as info:
        await complete(providers[kind], REQS[kind])
    assert type(info.value) is cls
    assert info.value.__cause__ is exc
    assert URLS[kind] not in info.value.message  # base URLs can be internal


@pytest.mark.parametrize("kind", ["openai", "anthropic", "together"])
@pytest.mark.parametrize(("exc", "cls", "cause"), [
    (httpcore.ReadTimeout("read timed out"), UpstreamTimeout, httpx.ReadTimeout),
    (httpcore.ReadError("connection reset"), UpstreamUnavailable, httpx.ReadError),
    (httpcore.RemoteProtocolError("peer closed connection"), UpstreamUnavailable,
     httpx.RemoteProtocolError),
], ids=["ReadTimeout", "ReadError", "RemoteProtocolError"])
async def test_transport_errors_while_reading_the_body(providers, upstream, replay, complete,
                                                       kind, exc, cls, cause) -> None:
    response, body = replay(f"{kind}_text.json", "awkward", headers=JSON, fail_at=100,
                            error=exc)
    upstream.post(URLS[kind]).mock(return_value=response)
    with pytest.raises(cls) as info:
        await complete(providers[kind], REQS[kind])
    assert type(info.value) is cls
    assert isinstance(info.value.__cause__, cause)
    assert body.closed


async def test_transport_error_while_reading_an_error_body(providers, upstream, replay,
                                                           complete) -> None:
    response, body = replay("openai_error_429.json", "awkward", status=429, headers=JSON,
                            fail_at=10,
                            error=httpcore.ReadError("reset"))
    upstream.post(OPENAI_URL).mock(return_value=response)
    with pytest.raises(UpstreamUnavailable):
        await complete(providers["openai"], REQS["openai"])
    assert body.closed


@pytest.mark.parametrize("body", [
    b'{"choices":[null]}',
    b'{"choices":[{"index":0,"message":"text","finish_reason":"stop"}]}',
    b'{"choices":[{"index":"0","message":{"content":"hi"},"finish_reason":"stop"}]}',
    b'{"choices":[{"index":-1,"message":{"content":"hi"},"finish_reason":"stop"}]}',
])
async def test_malformed_openai_shapes_are_protocol_errors(upstream, transport, ctx,
                                                           body: bytes) -> None:
    provider = OpenAIProvider(ProviderConfig(name="up", kind="openai",
                                             base_url="https://up.example/v1"), transport)
    upstream.post("https://up.example/v1/chat/completions").mock(
        return_value=httpx.Response(200, content=body,
                                    headers={"content-type": "application/json"}))
    with pytest.raises(UpstreamProtocolError, match="a completion of an unexpected shape"):
        await provider.complete_chat(ChatRequest(model="m", messages=[
            {"role": "user", "content": "hi"}]), ctx)
