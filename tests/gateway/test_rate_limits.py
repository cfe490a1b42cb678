"""Plan limits on the running gateway: headers, 429s, slots released on every path."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from gateway.ratelimit.base import Limits
from tests.conftest import Account, register, set_plan
from tests.servers import FakeUpstream, GatewayServer, Reply, wait_for

MESSAGES = [{"role": "user", "content": "Hello"}]


def post(gateway: GatewayServer, key: str, **body: object) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions",
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": "gateway-demo", "messages": MESSAGES, **body}, timeout=20)


class HeldStream:
    """A streaming request kept open (slot held) until ``close``."""

    def __init__(self, gateway: GatewayServer, key: str, **body: object) -> None:
        self._ctx = httpx.stream("POST", gateway.url + "/v1/chat/completions",
                                 headers={"X-API-Key": key}, timeout=20,
                                 json={"model": "gpt-4o-mini", "messages": MESSAGES,
                                       "stream": True, **body})
        self.response = self._ctx.__enter__()
        assert self.response.status_code == 200
        self._chunks = self.response.iter_bytes()
        self.first = next(self._chunks)

    def close(self) -> None:
        self._ctx.__exit__(None, None, None)


def in_use(gateway: GatewayServer, account: Account) -> int:
    r = httpx.get(gateway.url + "/rate-limit", headers={"X-API-Key": account.api_key})
    assert r.status_code == 200, r.text
    return r.json()["concurrent"]["in_use"]


def key_with_limits(gateway: GatewayServer, account: Account, **limits: int) -> str:
    # Keys are managed with the session (JWT); an API key may not mint keys.
    r = httpx.post(gateway.url + "/auth/keys",
                   headers={"Authorization": f"Bearer {account.token}"},
                   json={"name": "limited", "limits": limits})
    assert r.status_code == 201, r.text
    assert r.json()["limits"] == limits
    return r.json()["key"]


def test_headers_and_rpm_429(gateway: GatewayServer) -> None:
    acct = register(gateway.url)  # free plan: 20 requests per minute
    for i in range(20):
        r = post(gateway, acct.api_key)
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-limit-requests"] == "20"
        assert r.headers["x-ratelimit-remaining-requests"] == str(19 - i)
        assert r.headers["x-ratelimit-limit-tokens"] == "40000"
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    r = post(gateway, acct.api_key)
    assert r.status_code == 429
    err = r.json()["error"]
    assert (err["type"], err["code"]) == ("requests", "rate_limit_exceeded")
    assert "requests per minute" in err["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert int(r.headers["retry-after-ms"]) > 0
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    status = httpx.get(gateway.url + "/rate-limit",
                       headers={"Authorization": f"Bearer {acct.token}"}).json()
    assert status["plan"] == "free" and status["requests"]["remaining"] == 0
    assert status["limits"] == {"requests_per_minute": 20, "tokens_per_minute": 40000,
                                "concurrent_requests": 2}


def test_tokens_429_for_an_oversized_request(gateway: GatewayServer) -> None:
    acct = register(gateway.url)
    r = post(gateway, acct.api_key, max_tokens=50_000)  # alone above the 40k TPM of free
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "tokens"


def test_key_override_and_plan_change(gateway: GatewayServer) -> None:
    acct = register(gateway.url)
    key = key_with_limits(gateway, acct, requests_per_minute=3)
    assert [post(gateway, key).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert post(gateway, key).headers["x-ratelimit-limit-requests"] == "3"
    other = register(gateway.url)
    assert post(gateway, other.api_key).headers["x-ratelimit-limit-requests"] == "20"
    set_plan(gateway, other.user_id, "pro")  # takes effect within the auth cache TTL
    assert post(gateway, other.api_key).headers["x-ratelimit-limit-requests"] == "300"


def test_concurrency_slots_released_on_every_path(gateway: GatewayServer,
                                                  upstream: FakeUpstream) -> None:
    acct = register(gateway.url)  # free: 2 concurrent
    upstream.script(Reply.by_event("openai_text.sse", hang_after=2))
    holders = [HeldStream(gateway, acct.api_key) for _ in range(2)]
    assert in_use(gateway, acct) == 2
    third = post(gateway, acct.api_key)
    assert third.status_code == 429 and "concurrent" in third.json()["error"]["message"]
    assert third.headers["retry-after"] == "1"
    for held in holders:  # client disconnects mid-stream
        held.close()
    assert wait_for(lambda: in_use(gateway, acct) == 0)

    assert post(gateway, acct.api_key).status_code == 200  # normal end
    assert in_use(gateway, acct) == 0
    upstream.script(Reply.recording("openai_error_500.json", status=500))
    assert post(gateway, acct.api_key, model="gpt-4o-mini").status_code in (502, 503)
    assert in_use(gateway, acct) == 0
    upstream.script(Reply.recording("anthropic_error_overloaded.sse"))
    assert post(gateway, acct.api_key, model="claude-haiku", stream=True).status_code == 200
    assert in_use(gateway, acct) == 0
    upstream.script(Reply.by_event("openai_text.sse", hang_after=3))  # stalls mid-stream
    r = post(gateway, acct.api_key, model="gpt-4o-mini", stream=True)
    assert b'"upstream_timeout"' in r.content and r.content.endswith(b"data: [DONE]\n\n")
    assert in_use(gateway, acct) == 0


def test_sdk_retry_honours_retry_after(gateway: GatewayServer, upstream: FakeUpstream) -> None:
    acct = register(gateway.url)
    set_plan(gateway, acct.user_id, "free")
    upstream.script(Reply.by_event("openai_text.sse", hang_after=2))
    holders = [HeldStream(gateway, acct.api_key) for _ in range(2)]

    no_retry = openai.OpenAI(base_url=gateway.url + "/v1", api_key=acct.api_key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as err:
        no_retry.chat.completions.create(model="gateway-demo", messages=MESSAGES)
    assert err.value.code == "rate_limit_exceeded"

    # Free a slot 0.5 s from now; the SDK waits retry-after (1 s) and then succeeds.
    threading.Timer(0.5, holders[0].close).start()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=acct.api_key, max_retries=2)
    started = time.monotonic()
    out = client.chat.completions.create(model="gateway-demo", messages=MESSAGES)
    elapsed = time.monotonic() - started
    assert out.choices[0].message.content
    assert 0.9 <= elapsed < 5, elapsed
    holders[1].close()


def test_rate_limit_status_does_not_consume(gateway: GatewayServer, account: Account) -> None:
    limits = Limits(3000, 10_000_000, 100)
    before = gateway.run(gateway.state.limiter.status(account.user_id, limits))
    for _ in range(3):
        httpx.get(gateway.url + "/rate-limit", headers={"X-API-Key": account.api_key})
    after = gateway.run(gateway.state.limiter.status(account.user_id, limits))
    assert before.requests.remaining == after.requests.remaining


def test_login_is_throttled_per_account(gateway: GatewayServer) -> None:
    acct = register(gateway.url)
    codes = [httpx.post(gateway.url + "/auth/login",
                        json={"email": acct.email, "password": "wrong password 9"}).status_code
             for _ in range(11)]
    assert codes[:10] == [401] * 10 and codes[10] == 429
    r = httpx.post(gateway.url + "/auth/login",
                   json={"email": acct.email, "password": acct.password})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert json.loads(r.content)["error"]["code"] == "too_many_login_attempts"


def test_rate_limit_lists_the_models_the_plan_includes(gateway: GatewayServer) -> None:
    """``available`` is exactly what /v1/models offers the caller; the models served here
    that the plan leaves out are named, so the UI can say so instead of hiding them."""
    acct = register(gateway.url)
    headers = {"Authorization": f"Bearer {acct.token}"}

    def split() -> tuple[dict, list[str]]:
        models = httpx.get(gateway.url + "/rate-limit", headers=headers).json()["models"]
        listed = httpx.get(gateway.url + "/v1/models", headers=headers).json()["data"]
        return models, [m["id"] for m in listed]

    models, listed = split()
    assert models["available"] == listed == sorted(
        ["claude-haiku", "gateway-demo", "gateway-demo-embed", "gpt-4o-mini", "llama-3-8b"])
    assert models["not_in_plan"] == ["gpt-4o"]
    # Every served model chats but the demo embeddings model.
    assert models["chat"] == sorted({*models["available"], "gpt-4o"} - {"gateway-demo-embed"})
    set_plan(gateway, acct.user_id, "pro")
    models, listed = split()
    assert models["available"] == listed and "gpt-4o" in listed
    assert models["not_in_plan"] == []
