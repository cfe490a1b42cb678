"""TogetherProvider: OpenAI parsing plus Together's deviations, from recorded streams."""

from __future__ import annotations

import json

import httpx
import pytest

from providers.base import ChatRequest, Finish, ModelInfo, ProviderConfig, TextDelta, Usage
from providers.errors import UpstreamNotFound
from providers.together import TogetherProvider

URL = "https://api.together.xyz/v1/chat/completions"
REQ = ChatRequest(model="meta-llama/Llama-3.3-70B-Instruct-Turbo",
                  messages=[{"role": "user", "content": "Bonjour ?"}], params={"n": 1})
SPLITS = ["whole", "bytewise", "awkward"]


@pytest.fixture
def provider(transport: httpx.AsyncBaseTransport) -> TogetherProvider:
    return TogetherProvider(ProviderConfig(name="together", kind="together", api_key="tg-key"),
                            transport)


@pytest.mark.parametrize("split", SPLITS)
async def test_text_stream_with_eos_and_usage_on_last_chunk(provider, upstream, replay, collect,
                                                            split) -> None:
    route = upstream.post(URL).mock(return_value=replay("together_text.sse", split)[0])
    chunks = await collect(provider, REQ)
    text = ["Bon", "jour", " !", " Ça", " va", " ?", " 日本", "語", " 👋", "🏽"]
    assert chunks == [*(TextDelta(t) for t in text), Finish("stop"),
                      Usage(prompt_tokens=47, completion_tokens=11, cached_tokens=0)]
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer tg-key"
    assert json.loads(request.content) == {
        "model": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "messages": [{"role": "user", "content": "Bonjour ?"}], "n": 1,
        "stream": True, "stream_options": {"include_usage": True}}


@pytest.mark.parametrize("split", SPLITS)
async def test_legacy_chunks_with_token_and_generated_text(provider, upstream, replay, collect,
                                                           split) -> None:
    upstream.post(URL).mock(return_value=replay("together_legacy.sse", split)[0])
    chunks = await collect(provider, REQ)
    # generated_text repeats the whole answer on the last chunk; it must not be emitted.
    assert chunks == [*(TextDelta(t) for t in [" Sure", "!", " Ça", " va", " 🙂"]),
                      Finish("stop"), Usage(prompt_tokens=16, completion_tokens=6)]


async def test_text_without_delta(provider, upstream, replay, collect) -> None:
    data = (b'data: {"id":"x","choices":[{"index":0,"text":"Hi","finish_reason":null}]}\n\n'
            b'data: {"id":"x","choices":[{"index":0,"text":"","finish_reason":"length"}]}\n\n'
            b"data: [DONE]\n\n")
    upstream.post(URL).mock(return_value=replay(data)[0])
    assert await collect(provider, REQ) == [TextDelta("Hi"), Finish("length")]


async def test_unknown_model(provider, upstream, fixture_bytes, collect) -> None:
    upstream.post(URL).mock(return_value=httpx.Response(
        404, content=fixture_bytes("together_error_404.json"),
        headers={"content-type": "application/json"}))
    with pytest.raises(UpstreamNotFound, match="Unable to access model"):
        await collect(provider, REQ)


async def test_list_models_accepts_a_bare_array(provider, upstream, fixture_bytes) -> None:
    upstream.get("https://api.together.xyz/v1/models").mock(
        return_value=httpx.Response(200, content=fixture_bytes("together_models.json")))
    assert await provider.list_models() == [
        ModelInfo("meta-llama/Llama-3.3-70B-Instruct-Turbo", "Meta"),
        ModelInfo("Qwen/Qwen2.5-7B-Instruct-Turbo", "Qwen")]


def test_supports_n() -> None:
    assert TogetherProvider.kind == "together"
    assert TogetherProvider.supports_n is True
