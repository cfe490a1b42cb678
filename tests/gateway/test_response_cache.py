"""The response cache end to end: the real app under uvicorn, a fake upstream replaying
recordings, hits and misses told by ``x-gateway-cache`` and by the upstream's request
count, answers replayed through the live encoder, history rows and the rate limiter."""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import sqlalchemy as sa

from gateway.app import create_app
from gateway.embeddings.encode import to_base64
from gateway.settings import ConfigError, load_settings
from storage.migrate import upgrade
from storage.models import InferenceRequest
from tests.conftest import ONE_TRY, Account, make_settings, register, run_sync, set_plan
from tests.processes import free_port
from tests.servers import (
    FIXTURES,
    FakeUpstream,
    GatewayServer,
    Reply,
    recorded_openai,
    wait_for,
)

MESSAGES = [{"role": "user", "content": "Say hello in French"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "location": {"type": "string"}}}}}]
ON = {"x-gateway-cache": "on"}


class Clock:
    """Monotonic seconds that move only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def providers(upstream: FakeUpstream) -> dict:
    return {"fake-openai": {"kind": "openai", "base_url": upstream.url + "/v1",
                            "api_key": "sk-up", "read_timeout": 2.0,
                            "models": {"gpt-4o-mini": "gpt-4o-mini", "gpt-4o": "gpt-4o",
                                       "text-embedding-3-small": "text-embedding-3-small"},
                            **ONE_TRY}}


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def cached_gateway(upstream: FakeUpstream, clock: Clock,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """A gateway with the in-process cache on an injected clock; gpt-4o (served through
    the provider's models map) caches by default for 30 s, through a cache-only entry."""
    tmp = tmp_path_factory.mktemp("cache")
    url = f"sqlite+aiosqlite:///{tmp / 'gateway.db'}"
    run_sync(upgrade, url)
    settings = make_settings(tmp, url, providers=providers(upstream),
                             models={"gpt-4o": {"cache": True, "cache_ttl_seconds": 30}},
                             cache_ttl_seconds=600)
    server = GatewayServer(create_app(settings, clock=clock))
    yield server
    server.stop()


@pytest.fixture
def user(cached_gateway: GatewayServer) -> Account:
    acct = register(cached_gateway.url)
    set_plan(cached_gateway, acct.user_id, "enterprise")
    return acct


def post(gateway: GatewayServer, acct: Account, body: dict,
         headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=20,
                      headers={"Authorization": f"Bearer {acct.api_key}", **(headers or {})})


def chat(model: str = "gpt-4o-mini", **kw: object) -> dict:
    return {"model": model, "messages": MESSAGES, **kw}


def rows(gateway: GatewayServer, user_id: str) -> list[InferenceRequest]:
    async def run() -> list[InferenceRequest]:
        await gateway.state.writer.flush()
        async with gateway.state.sessions() as session:
            found = await session.exec(
                sa.select(InferenceRequest).where(InferenceRequest.user_id == uuid.UUID(user_id))
                .order_by(InferenceRequest.created_at))
            return list(found.scalars().all())
    return gateway.run(run())


def framing_free(response: httpx.Response) -> bytes:
    """The SSE body with this answer's own id and created replaced: what two answers to
    the same call share byte for byte."""
    body = response.content
    first = json.loads(body.split(b"\n\n")[0].removeprefix(b"data: "))
    body = body.replace(first["id"].encode(), b"ID")
    return body.replace(b'"created":%d' % first["created"], b'"created":0')


def test_hit_and_miss_headers_and_upstream_calls(cached_gateway: GatewayServer, user: Account,
                                                 upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_text.json"))
    first = post(cached_gateway, user, chat(temperature=0.2), ON)
    assert first.status_code == 200 and first.headers["x-gateway-cache"] == "miss"
    assert upstream.hits() == 1
    second = post(cached_gateway, user, chat(temperature=0.2), ON)
    assert second.status_code == 200 and second.headers["x-gateway-cache"] == "hit"
    assert upstream.hits() == 1  # the hit never reached the upstream
    assert "x-gateway-served-by" not in second.headers
    a, b = first.json(), second.json()
    assert b["id"] != a["id"]
    assert {**b, "id": a["id"], "created": a["created"]} == a
    # A parameter that changes the answer is another call; without the header (and on a
    # model that does not cache by default) the cache does not apply at all.
    third = post(cached_gateway, user, chat(temperature=0.3), ON)
    assert third.headers["x-gateway-cache"] == "miss" and upstream.hits() == 2
    plain = post(cached_gateway, user, chat(temperature=0.2))
    assert "x-gateway-cache" not in plain.headers and upstream.hits() == 3
    # n > 1 is never cached: the cache does not apply.
    many = post(cached_gateway, user, chat(temperature=0.2, n=2), ON)
    assert many.status_code == 200 and "x-gateway-cache" not in many.headers
    bad = post(cached_gateway, user, chat(), {"x-gateway-cache": "yes"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "x-gateway-cache"
    assert upstream.hits() == 4


def test_model_default_and_off(cached_gateway: GatewayServer, user: Account,
                               upstream: FakeUpstream, clock: Clock) -> None:
    upstream.script(Reply.recording("openai_text.json"))
    assert post(cached_gateway, user, chat("gpt-4o")).headers["x-gateway-cache"] == "miss"
    assert post(cached_gateway, user, chat("gpt-4o")).headers["x-gateway-cache"] == "hit"
    off = post(cached_gateway, user, chat("gpt-4o"), {"x-gateway-cache": "off"})
    assert off.status_code == 200 and "x-gateway-cache" not in off.headers
    assert upstream.hits() == 2
    # The model's own TTL (30 s), not the global default (600 s), on the injected clock.
    clock.now += 29
    assert post(cached_gateway, user, chat("gpt-4o")).headers["x-gateway-cache"] == "hit"
    clock.now += 2
    assert post(cached_gateway, user, chat("gpt-4o")).headers["x-gateway-cache"] == "miss"
    assert upstream.hits() == 3
    # The global default TTL for a call that opts in.
    assert post(cached_gateway, user, chat(seed=1), ON).headers["x-gateway-cache"] == "miss"
    clock.now += 599
    assert post(cached_gateway, user, chat(seed=1), ON).headers["x-gateway-cache"] == "hit"
    clock.now += 2
    assert post(cached_gateway, user, chat(seed=1), ON).headers["x-gateway-cache"] == "miss"
    assert upstream.hits() == 5


def test_one_users_answer_is_never_served_to_another(cached_gateway: GatewayServer,
                                                     user: Account,
                                                     upstream: FakeUpstream) -> None:
    other = register(cached_gateway.url)
    set_plan(cached_gateway, other.user_id, "enterprise")
    upstream.script(Reply.recording("openai_text.json"))
    assert post(cached_gateway, user, chat(), ON).headers["x-gateway-cache"] == "miss"
    assert post(cached_gateway, other, chat(), ON).headers["x-gateway-cache"] == "miss"
    assert upstream.hits() == 2
    assert post(cached_gateway, other, chat(), ON).headers["x-gateway-cache"] == "hit"
    assert post(cached_gateway, user, chat(), ON).headers["x-gateway-cache"] == "hit"
    assert upstream.hits() == 2


def test_streamed_replay_is_the_live_stream(cached_gateway: GatewayServer, user: Account,
                                            upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_tools.sse", split=11))
    body = chat(tools=TOOLS, stream=True, stream_options={"include_usage": True})
    live = post(cached_gateway, user, body, ON)
    assert live.headers["x-gateway-cache"] == "miss"
    replay = post(cached_gateway, user, body, ON)
    assert replay.headers["x-gateway-cache"] == "hit" and upstream.hits() == 1
    assert replay.headers["content-type"].startswith("text/event-stream")
    assert b'"tool_calls"' in live.content and b'"finish_reason":"tool_calls"' in live.content
    assert framing_free(replay) == framing_free(live)  # same deltas, tool calls, finish, usage
    # The same entry answers a plain call: the tool calls the stream assembled, its finish
    # and its usage.
    plain = post(cached_gateway, user, chat(tools=TOOLS), ON)
    assert plain.headers["x-gateway-cache"] == "hit" and upstream.hits() == 1
    events = [json.loads(e.removeprefix(b"data: ")) for e in live.content.split(b"\n\n")
              if e.startswith(b"data: {")]
    args = "".join(c["function"]["arguments"] for e in events for ch in e["choices"]
                   for c in ch["delta"].get("tool_calls", []))
    message = plain.json()["choices"][0]["message"]
    assert [c["function"]["arguments"] for c in message["tool_calls"]] == [args]
    assert plain.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert plain.json()["usage"] == events[-1]["usage"]


def test_plain_answer_streams_back(cached_gateway: GatewayServer, user: Account,
                                   upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_text.json"))
    whole = post(cached_gateway, user, chat(), ON).json()
    streamed = post(cached_gateway, user, chat(stream=True,
                                               stream_options={"include_usage": True}), ON)
    assert streamed.headers["x-gateway-cache"] == "hit" and upstream.hits() == 1
    events = [json.loads(e.removeprefix(b"data: ")) for e in streamed.content.split(b"\n\n")
              if e.startswith(b"data: {")]
    assert streamed.content.endswith(b"data: [DONE]\n\n")
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(ch["delta"].get("content") or "" for e in events for ch in e["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["choices"] == [] and events[-1]["usage"] == whole["usage"]


def test_history_row_and_rate_limits(cached_gateway: GatewayServer, user: Account,
                                     upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_text.json"))
    usage = json.loads((FIXTURES / "openai_text.json").read_bytes())["usage"]
    miss = post(cached_gateway, user, chat(), ON)
    hit = post(cached_gateway, user, chat(), ON)
    again = post(cached_gateway, user, chat(), ON)
    assert [r.headers["x-gateway-cache"] for r in (miss, hit, again)] == ["miss", "hit", "hit"]
    remaining = [(int(r.headers["x-ratelimit-remaining-requests"]),
                  int(r.headers["x-ratelimit-remaining-tokens"])) for r in (miss, hit, again)]
    # Each hit counts as a request, never against the tokens: after the miss settled its
    # real usage, the tokens left stay where they are.
    assert remaining[1][0] == remaining[0][0] - 1 and remaining[2][0] == remaining[1][0] - 1
    assert remaining[1][1] == remaining[2][1] == 10_000_000 - usage["total_tokens"]
    found = rows(cached_gateway, user.user_id)
    assert [(r.cached, r.status) for r in found] == [(False, "completed"), (True, "completed"),
                                                     (True, "completed")]
    live, cached = found[0], found[1]
    assert cached.cost_usd == 0 and live.cost_usd > 0
    assert (cached.prompt_tokens, cached.completion_tokens) == (usage["prompt_tokens"],
                                                                usage["completion_tokens"])
    assert cached.response == live.response and cached.finish_reason == "stop"
    assert (cached.provider, cached.upstream_model) == ("fake-openai", "gpt-4o-mini")
    assert cached.attempts == 0 and cached.served_by is None
    # /stats counts every call and the tokens each delivered, hits included (README).
    stats = httpx.get(cached_gateway.url + "/stats", timeout=20,
                      headers={"Authorization": f"Bearer {user.token}"}).json()["totals"]
    assert (stats["requests"], stats["succeeded"]) == (3, 3)
    assert stats["total_tokens"] == 3 * usage["total_tokens"]


def test_failed_answers_are_not_kept(cached_gateway: GatewayServer, user: Account,
                                     upstream: FakeUpstream) -> None:
    upstream.script(Reply.error(500, "openai_error_500.json"),
                    Reply.recording("openai_text.sse"))
    failed = post(cached_gateway, user, chat(), ON)
    assert failed.status_code >= 500 and failed.headers["x-gateway-cache"] == "miss"
    body = chat(stream=True)
    assert post(cached_gateway, user, body, ON).headers["x-gateway-cache"] == "miss"
    assert post(cached_gateway, user, body, ON).headers["x-gateway-cache"] == "hit"
    assert upstream.hits() == 2
    # Cut off by the upstream mid-stream: failed inside the stream, never kept.
    upstream.script(Reply.by_event("openai_text.sse", drop_after=3))
    cut = post(cached_gateway, user, chat(stream=True, seed=3), ON)
    assert cut.headers["x-gateway-cache"] == "miss" and b'"error"' in cut.content
    upstream.script(Reply.recording("openai_text.sse"))
    assert post(cached_gateway, user, chat(stream=True, seed=3),
                ON).headers["x-gateway-cache"] == "miss"
    assert upstream.hits() == 1


def test_answers_cut_off_by_their_client_are_not_kept(cached_gateway: GatewayServer,
                                                      user: Account,
                                                      upstream: FakeUpstream) -> None:
    gate = threading.Event()  # never set while the client is there: the answer stays open
    upstream.script(Reply.by_event("openai_text.sse", hang_after=2, gate=gate))
    body = chat(stream=True, seed=11)
    with httpx.stream("POST", cached_gateway.url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {user.api_key}", **ON},
                      timeout=20) as r:
        assert r.headers["x-gateway-cache"] == "miss"
        assert next(r.iter_bytes()).startswith(b"data: ")
    # The client left mid-answer: the call ends as cancelled, and nothing is kept.
    assert wait_for(lambda: [x.status for x in rows(cached_gateway, user.user_id)]
                    == ["cancelled"])
    gate.set()
    upstream.script(Reply.recording("openai_text.sse"))
    assert post(cached_gateway, user, body, ON).headers["x-gateway-cache"] == "miss"
    assert post(cached_gateway, user, body, ON).headers["x-gateway-cache"] == "hit"
    assert upstream.hits() == 1


def test_openai_sdk_reads_a_hit(cached_gateway: GatewayServer, user: Account,
                                upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_text.sse", split=9))
    text, usage = recorded_openai("openai_text.sse")
    client = openai.OpenAI(base_url=cached_gateway.url + "/v1", api_key=user.api_key,
                           max_retries=0, _strict_response_validation=True, timeout=20)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                 stream=True, extra_headers=ON))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=ON)
    assert raw.headers["x-gateway-cache"] == "hit" and upstream.hits() == 1
    out = raw.parse()
    assert out.choices[0].message.content == text and out.choices[0].finish_reason == "stop"
    assert out.usage.total_tokens == usage["total_tokens"]


def test_embeddings_hit_in_either_encoding(cached_gateway: GatewayServer, user: Account,
                                           upstream: FakeUpstream) -> None:
    upstream.script(Reply.recording("openai_embeddings.json"))
    recorded = json.loads((FIXTURES / "openai_embeddings.json").read_bytes())
    body = {"model": "text-embedding-3-small", "input": ["first", "second"]}

    def embed(acct: Account, **kw: object) -> httpx.Response:
        return httpx.post(cached_gateway.url + "/v1/embeddings", json={**body, **kw},
                          timeout=20, headers={"Authorization": f"Bearer {acct.api_key}", **ON})

    miss = embed(user)
    assert miss.status_code == 200 and miss.headers["x-gateway-cache"] == "miss"
    hit = embed(user)
    assert hit.headers["x-gateway-cache"] == "hit" and upstream.hits() == 1
    assert hit.json() == miss.json()
    assert [d["embedding"] for d in hit.json()["data"]] == [d["embedding"]
                                                           for d in recorded["data"]]
    # The encoding only frames the same vectors: the same entry, written as base64.
    b64 = embed(user, encoding_format="base64")
    assert b64.headers["x-gateway-cache"] == "hit" and upstream.hits() == 1
    assert [d["embedding"] for d in b64.json()["data"]] == [
        to_base64(d["embedding"]) for d in recorded["data"]]
    assert embed(user, dimensions=8).headers["x-gateway-cache"] == "miss"
    other = register(cached_gateway.url)
    set_plan(cached_gateway, other.user_id, "enterprise")
    assert embed(other).headers["x-gateway-cache"] == "miss" and upstream.hits() == 3
    found = rows(cached_gateway, user.user_id)
    assert [(r.source, r.cached, r.status) for r in found] == [
        ("embed", False, "completed"), ("embed", True, "completed"),
        ("embed", True, "completed"), ("embed", False, "completed")]
    assert found[1].cost_usd == 0
    assert found[1].prompt_tokens == recorded["usage"]["prompt_tokens"]


def test_redis_unreachable_is_a_miss_logged_once(upstream: FakeUpstream, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    run_sync(upgrade, url)
    settings = make_settings(tmp_path, url, providers=providers(upstream),
                             redis_url=f"redis://127.0.0.1:{free_port()}/0",
                             rate_limit_backend="memory")
    upstream.script(Reply.recording("openai_text.json"))
    server = GatewayServer(create_app(settings))
    try:
        acct = register(server.url)
        with caplog.at_level(logging.WARNING, logger="gateway"):
            for _ in range(3):
                r = post(server, acct, chat(), ON)
                assert r.status_code == 200 and r.headers["x-gateway-cache"] == "miss"
    finally:
        server.stop()
    assert upstream.hits() == 3
    down = [r for r in caplog.records if "response cache: Redis unavailable" in r.getMessage()]
    assert len(down) == 1


def test_cache_only_model_entries() -> None:
    settings = load_settings(openai_api_key="sk", models={
        "gpt-4o": {"cache": True, "cache_ttl_seconds": 5},
        "fast": {"provider": "openai", "upstream": "gpt-4o-mini", "cache": True}})
    routes = settings.model_routes()
    assert (routes["gpt-4o"].cache, routes["gpt-4o"].cache_ttl_seconds) == (True, 5)
    assert routes["gpt-4o"].upstream == "gpt-4o" and routes["fast"].cache
    assert not routes["gpt-4o-mini"].cache
    # A provider without its key: its models (and their cache entries) are simply not served.
    assert "gpt-4o" not in load_settings(models={"gpt-4o": {"cache": True}}).model_routes()
    with pytest.raises(ConfigError, match=r"models\.nowhere"):
        load_settings(models={"nowhere": {"cache": True}})
    with pytest.raises(ConfigError, match="only cache and cache_ttl_seconds"):
        load_settings(models={"gpt-4o": {"cache": True, "fallbacks": ["gpt-4o-mini"]}})
    with pytest.raises(ConfigError, match="cache_ttl_seconds"):
        load_settings(models={"gpt-4o": {"cache_ttl_seconds": 0}})


def test_key_ignores_framing_only() -> None:
    from gateway.cache import chat_key, embeddings_key
    from gateway.chat.request import parse_chat
    from gateway.embeddings.request import parse_embeddings

    user = uuid.uuid4()

    def key(**kw: object) -> str:
        return chat_key(user, "m", parse_chat({"model": "m", "messages": MESSAGES,
                                               **kw}).request)

    assert key() == key(stream=True, stream_options={"include_usage": True})
    assert key(temperature=0.5, top_p=0.5) == key(top_p=0.5, temperature=0.5)
    for change in ({"temperature": 0.5}, {"tools": TOOLS}, {"tool_choice": "none"},
                   {"response_format": {"type": "json_object"}}, {"seed": 1},
                   {"max_tokens": 5}, {"stop": "x"}, {"unknown_field": 1}):
        assert key(**change) != key(), change
    assert chat_key(uuid.uuid4(), "m", parse_chat(chat("m")).request) != key()
    assert re.fullmatch(rf"gw:cache:{user}:[0-9a-f]{{64}}", key())

    def embed_key(**kw: object) -> str:
        return embeddings_key(user, "e", parse_embeddings({"model": "e", "input": "a", **kw}))

    assert embed_key() == embed_key(encoding_format="base64") != key()
    for change in ({"input": "b"}, {"input": ["a"]}, {"dimensions": 8}, {"user": "u"},
                   {"unknown_field": 1}):
        assert embed_key(**change) != embed_key(), change
