"""The embeddings capability: OpenAI-compatible upstreams (OpenAI, Together) replayed at
the HTTP boundary from recorded answers, and the offline demo model."""

from __future__ import annotations

import base64
import json
import math
import struct

import httpx
import pytest

from providers.anthropic import AnthropicProvider
from providers.base import (
    CHAT,
    EMBEDDINGS,
    CallContext,
    ChatRequest,
    EmbeddingRequest,
    ProviderConfig,
    capabilities,
)
from providers.demo import EMBEDDING_MODEL, DemoProvider
from providers.demo_embed import DIMENSIONS, demo_vector
from providers.errors import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from providers.openai import OpenAIProvider
from providers.together import TogetherProvider

OPENAI_URL = "https://api.openai.com/v1/embeddings"
TOGETHER_URL = "https://api.together.xyz/v1/embeddings"
SPLITS = ["whole", "bytewise", "awkward"]


def recorded(fixture_bytes, name: str) -> dict:
    return json.loads(fixture_bytes(name))


def floats_of(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


@pytest.fixture
def openai(transport: httpx.AsyncBaseTransport) -> OpenAIProvider:
    return OpenAIProvider(ProviderConfig(name="openai", kind="openai", api_key="sk-test"),
                          transport)


@pytest.mark.parametrize("split", SPLITS)
async def test_openai_floats_and_what_was_sent(openai, upstream, replay, fixture_bytes,
                                               ctx: CallContext, split) -> None:
    response, body = replay("openai_embeddings.json", split,
                            headers={"content-type": "application/json"})
    route = upstream.post(OPENAI_URL).mock(return_value=response)
    req = EmbeddingRequest(model="text-embedding-3-small", input=["Bonjour", "café ☕"],
                           encoding_format="float", dimensions=8, user="u-1",
                           extra={"future_field": {"x": 1}})
    result = await openai.embed(req, ctx)
    answer = recorded(fixture_bytes, "openai_embeddings.json")
    assert result.vectors == [item["embedding"] for item in answer["data"]]
    assert result.prompt_tokens == answer["usage"]["prompt_tokens"] == 11
    sent = route.calls.last.request
    assert json.loads(sent.content) == {
        "model": "text-embedding-3-small", "input": ["Bonjour", "café ☕"],
        "encoding_format": "float", "dimensions": 8, "user": "u-1",
        "future_field": {"x": 1}}
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.headers["x-client-request-id"] == ctx.request_id
    assert body.closed


async def test_openai_base64_kept_untouched(openai, upstream, replay, fixture_bytes,
                                            ctx: CallContext) -> None:
    response, _ = replay("openai_embeddings_base64.json",
                         headers={"content-type": "application/json"})
    route = upstream.post(OPENAI_URL).mock(return_value=response)
    req = EmbeddingRequest(model="text-embedding-3-small", input=["Bonjour", "café ☕"],
                           encoding_format="base64")
    result = await openai.embed(req, ctx)
    answer = recorded(fixture_bytes, "openai_embeddings_base64.json")
    assert result.vectors == [item["embedding"] for item in answer["data"]]
    floats = recorded(fixture_bytes, "openai_embeddings.json")
    # The two recordings are the same answer in the two encodings.
    assert [floats_of(v) for v in result.vectors] == [i["embedding"] for i in floats["data"]]
    sent = json.loads(route.calls.last.request.content)
    assert sent == {"model": "text-embedding-3-small", "input": ["Bonjour", "café ☕"],
                    "encoding_format": "base64"}


async def test_together_inherits_and_reports_no_usage(transport, upstream, replay,
                                                      fixture_bytes, ctx) -> None:
    together = TogetherProvider(ProviderConfig(name="together", kind="together",
                                               api_key="tg-key"), transport)
    response, _ = replay("together_embeddings.json",
                         headers={"content-type": "application/json"})
    route = upstream.post(TOGETHER_URL).mock(return_value=response)
    req = EmbeddingRequest(model="togethercomputer/m2-bert-80M-8k-retrieval",
                           input="Our solar system orbits the Milky Way")
    result = await together.embed(req, ctx)
    answer = recorded(fixture_bytes, "together_embeddings.json")
    assert result.vectors == [answer["data"][0]["embedding"]]
    assert result.prompt_tokens is None  # Together's answer has no usage
    assert json.loads(route.calls.last.request.content) == {
        "model": "togethercomputer/m2-bert-80M-8k-retrieval",
        "input": "Our solar system orbits the Milky Way"}
    assert route.calls.last.request.headers["authorization"] == "Bearer tg-key"


@pytest.mark.parametrize(("status", "name", "error", "param"), [
    (400, "openai_error_400.json", UpstreamBadRequest, None),
    (401, "openai_error_401.json", UpstreamAuthError, None),
    (429, "openai_error_429.json", UpstreamRateLimited, None),
    (500, "openai_error_500.json", UpstreamUnavailable, None),
])
async def test_openai_errors_mapped_like_chat(openai, upstream, replay, fixture_bytes, ctx,
                                              status, name, error, param) -> None:
    response, _ = replay(name, status=status, headers={"content-type": "application/json",
                                                       "retry-after": "2"})
    upstream.post(OPENAI_URL).mock(return_value=response)
    with pytest.raises(error) as caught:
        await openai.embed(EmbeddingRequest(model="text-embedding-3-small", input="x"), ctx)
    assert caught.value.upstream_status == status
    if status == 429:
        assert caught.value.retry_after == 2
    if status == 401:
        assert "sk-" not in caught.value.message  # the upstream's text is never relayed


@pytest.mark.parametrize("body", [
    b'{"object": "list", "data": [], "model": "m"}',  # fewer vectors than inputs
    b'{"object": "list", "data": [{"index": 5, "embedding": [0.1]}], "model": "m"}',
    b'{"object": "list", "data": [{"index": 0, "embedding": "not base64!"}], "model": "m"}',
    b'{"object": "list", "data": [{"index": 0, "embedding": "AAAA AA=="}], "model": "m"}',
    b'{"object": "list", "data": [{"index": 0, "embedding": "AAA="}], "model": "m"}',
    b'{"object": "list", "data": [{"index": 0, "embedding": [1, "x"]}], "model": "m"}',
    b'{"object": "list", "data": [{"index": 0, "embedding": []}], "model": "m"}',
    b'<html>bad gateway</html>',
])
async def test_openai_malformed_answers_are_protocol_errors(openai, upstream, replay, ctx,
                                                            body) -> None:
    response, _ = replay(body, headers={"content-type": "application/json"})
    upstream.post(OPENAI_URL).mock(return_value=response)
    with pytest.raises(UpstreamProtocolError):
        await openai.embed(EmbeddingRequest(model="m", input="x"), ctx)


async def test_error_in_a_200_body(openai, upstream, replay, fixture_bytes, ctx) -> None:
    response, _ = replay("openai_error_400.json", headers={"content-type": "application/json"})
    upstream.post(OPENAI_URL).mock(return_value=response)
    with pytest.raises(UpstreamBadRequest):
        await openai.embed(EmbeddingRequest(model="m", input="x"), ctx)


def test_capabilities(openai, transport) -> None:
    demo = DemoProvider(ProviderConfig(name="demo", kind="demo"), None)
    anthropic = AnthropicProvider(ProviderConfig(name="a", kind="anthropic", api_key="k"),
                                  transport)
    assert capabilities(openai, "anything") == {CHAT, EMBEDDINGS}
    assert capabilities(anthropic, "claude-haiku-4-5") == {CHAT}
    assert capabilities(demo, EMBEDDING_MODEL) == {EMBEDDINGS}
    assert capabilities(demo, "gateway-demo") == {CHAT}


# -- the demo model -----------------------------------------------------------------------

def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_demo_vectors_are_deterministic_distinct_and_unit(ctx) -> None:
    demo = DemoProvider(ProviderConfig(name="demo", kind="demo"), None)
    texts = ["The cat sat on the mat", "The cat sat on the mat", "Quarterly tax report",
             "the cat sat on a mat"]
    result = await demo.embed(EmbeddingRequest(model=EMBEDDING_MODEL, input=texts), ctx)
    a, again, other, near = result.vectors
    assert a == again and a != other
    assert all(len(v) == DIMENSIONS and abs(norm(v) - 1) < 1e-12 for v in result.vectors)
    # Shared words and spellings point the same way; this is all the model knows.
    assert cosine(a, near) > cosine(a, other)
    assert result.prompt_tokens == 6 + 6 + 3 + 6  # words, as the demo chat counts them
    ids = await demo.embed(EmbeddingRequest(model=EMBEDDING_MODEL, input=[[1, 2, 3], [3, 2, 1]]),
                           ctx)
    assert ids.vectors[0] != ids.vectors[1] and ids.prompt_tokens == 6


async def test_demo_dimensions_truncate_and_renormalise(ctx) -> None:
    demo = DemoProvider(ProviderConfig(name="demo", kind="demo"), None)
    result = await demo.embed(EmbeddingRequest(model=EMBEDDING_MODEL, input="hello world",
                                               dimensions=32), ctx)
    full = demo_vector("hello world")
    scale = norm(full[:32])
    assert result.vectors == [[x / scale for x in full[:32]]]
    with pytest.raises(UpstreamBadRequest) as caught:
        await demo.embed(EmbeddingRequest(model=EMBEDDING_MODEL, input="x", dimensions=257), ctx)
    assert caught.value.param == "dimensions" and caught.value.status == 400


async def test_demo_chat_model_does_not_embed_and_embed_model_does_not_chat(ctx, collect
                                                                            ) -> None:
    demo = DemoProvider(ProviderConfig(name="demo", kind="demo", options={"delay_ms": 0}), None)
    with pytest.raises(UpstreamBadRequest) as caught:
        await demo.embed(EmbeddingRequest(model="gateway-demo", input="x"), ctx)
    assert caught.value.param == "model"
    with pytest.raises(UpstreamBadRequest) as caught:
        await collect(demo, ChatRequest(model=EMBEDDING_MODEL,
                                        messages=[{"role": "user", "content": "hi"}]))
    assert caught.value.param == "model"
