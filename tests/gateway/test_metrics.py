"""GET /metrics: what a real gateway counts after real calls, its token, its label sets,
and ``gateway serve --workers 2`` adding the workers' numbers up."""

from __future__ import annotations

import http.client
import json
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.metrics import Metrics
from gateway.settings import ConfigError, load_settings
from storage.engine import build_engine
from storage.writer import RequestWriter
from tests.conftest import ONE_TRY, SECRET, Account, make_settings, register
from tests.processes import GatewayProcess, accepting_pid, child_pids, gateway_env, set_plan
from tests.servers import FakeUpstream, GatewayServer, Reply, recorded_openai

CHAT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello in French"}]
TOKEN = "metrics-" + "t" * 24

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    r = httpx.get(url + "/metrics", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
    return parse(r.text)


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def settled(url: str, expected: Samples, headers: dict[str, str] | None = None,
            timeout: float = 10.0) -> Samples:
    """Scrape until ``expected`` shows (a request is counted once its last byte went
    out, which the client can see first); then assert it exactly."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url, headers)
        got = {k: samples.get(k) for k in expected}
        if got == expected or time.monotonic() > deadline:
            assert got == expected
            return samples
        time.sleep(0.02)


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=20)


@pytest.fixture
def fresh(database_url: str, upstream: FakeUpstream, tmp_path: Path) -> Iterator[GatewayServer]:
    """A gateway of its own: its metrics start at zero."""
    providers = {"fake-openai": {"kind": "openai", "base_url": upstream.url + "/v1",
                                 "api_key": "sk-up", "models": {MODEL: MODEL},
                                 "read_timeout": 2.0, **ONE_TRY}}
    server = GatewayServer(create_app(make_settings(tmp_path, database_url,
                                                    providers=providers)))
    yield server
    server.stop()


def limited_key(url: str, account: Account, **limits: int) -> str:
    r = httpx.post(url + "/auth/keys", json={"name": "limited", "limits": limits},
                   headers={"Authorization": f"Bearer {account.token}"})
    assert r.status_code == 201, r.text
    return r.json()["key"]


def test_a_call_a_stream_a_429_and_a_failed_login_are_counted_exactly(
        fresh: GatewayServer, upstream: FakeUpstream) -> None:
    account = register(fresh.url)
    client = sdk(fresh.url, limited_key(fresh.url, account, requests_per_minute=2))
    upstream.script(Reply.recording("openai_text.json", split=7))
    answer = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    upstream.script(Reply.recording("openai_text.sse", split=5))
    with client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True) as s:
        assert "".join(c.choices[0].delta.content or "" for c in s if c.choices) == \
            recorded_openai("openai_text.sse")[0]
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    r = httpx.post(fresh.url + "/auth/login",
                   json={"email": account.email, "password": "wrong password 42"})
    assert r.status_code == 401

    _, streamed = recorded_openai("openai_text.sse")
    assert answer.usage is not None
    samples = settled(fresh.url, {
        key("gateway_requests_total", route=CHAT, model=MODEL, status="200"): 2.0,
        key("gateway_requests_total", route=CHAT, model=MODEL, status="429"): 1.0,
        key("gateway_requests_total", route="/auth/register", model="", status="201"): 1.0,
        key("gateway_requests_total", route="/auth/keys", model="", status="201"): 1.0,
        key("gateway_requests_total", route="/auth/login", model="", status="401"): 1.0,
        key("gateway_request_duration_seconds_count", route=CHAT, model=MODEL): 3.0,
        key("gateway_tokens_total", model=MODEL, kind="prompt"):
            float(answer.usage.prompt_tokens + streamed["prompt_tokens"]),
        key("gateway_tokens_total", model=MODEL, kind="completion"):
            float(answer.usage.completion_tokens + streamed["completion_tokens"]),
        # Only the stream has a first token apart from its whole answer.
        key("gateway_time_to_first_token_seconds_count", model=MODEL): 1.0,
        key("gateway_rate_limited_total", limit="requests"): 1.0,
        key("gateway_signups_total"): 1.0,
        key("gateway_logins_failed_total"): 1.0,
        key("gateway_streams_in_flight"): 0.0,
        key("gateway_writer_dropped_total"): 0.0,
    })
    # Nothing else was counted: no other limit, no upstream error, no other chat status.
    assert not [k for k in samples if k[0] in ("gateway_rate_limited_total",
                                               "gateway_upstream_errors_total")
                and k != key("gateway_rate_limited_total", limit="requests")]
    chat = {k for k in samples if k[0] == "gateway_requests_total"
            and ("route", CHAT) in k[1]}
    assert len(chat) == 2
    assert samples[key("gateway_writer_queue_depth")] >= 0


def test_labels_stay_bounded_and_upstream_errors_are_counted(
        fresh: GatewayServer, upstream: FakeUpstream) -> None:
    account = register(fresh.url)
    auth = {"Authorization": f"Bearer {account.api_key}"}
    # A model nobody serves: counted, but not per model.
    r = httpx.post(fresh.url + CHAT, headers=auth,
                   json={"model": f"no-such-{uuid.uuid4().hex}", "messages": MESSAGES})
    assert r.status_code == 404
    # Ids in the path: counted under the route's template.
    assert httpx.get(f"{fresh.url}/inference/{uuid.uuid4()}", headers=auth).status_code == 404
    # Not an API route (the web UI's files, unknown paths): not counted at all.
    httpx.get(f"{fresh.url}/no-such-page-{uuid.uuid4().hex}")
    # An upstream failure before the first byte, and a stream cut half-way.
    upstream.script(Reply.error(500, "openai_error_500.json"))
    r = httpx.post(fresh.url + CHAT, headers=auth, json={"model": MODEL, "messages": MESSAGES})
    assert r.status_code == 503, r.text
    upstream.script(Reply.by_event("openai_text.sse", drop_after=3))
    r = httpx.post(fresh.url + CHAT, headers=auth,
                   json={"model": MODEL, "messages": MESSAGES, "stream": True})
    assert r.status_code == 200 and b'"error"' in r.content and r.content.endswith(
        b"data: [DONE]\n\n"), r.content

    samples = settled(fresh.url, {
        key("gateway_requests_total", route=CHAT, model="", status="404"): 1.0,
        key("gateway_requests_total", route="/inference/{id}", model="", status="404"): 1.0,
        key("gateway_requests_total", route=CHAT, model=MODEL, status="503"): 1.0,
        # A stream's status is the one its client got: 200, whatever happened after.
        key("gateway_requests_total", route=CHAT, model=MODEL, status="200"): 1.0,
        # The 500, and the connection lost mid-stream.
        key("gateway_upstream_errors_total", provider="fake-openai",
            kind="upstream_unavailable"): 2.0,
        key("gateway_streams_in_flight"): 0.0,
    })
    routes = {dict(k[1])["route"] for k in samples if k[0] == "gateway_requests_total"}
    assert routes == {CHAT, "/inference/{id}", "/auth/register"}
    models = {dict(k[1])["model"] for k in samples if k[0] == "gateway_requests_total"}
    assert models == {"", MODEL}


def test_a_stream_in_flight_is_in_the_gauge(fresh: GatewayServer,
                                            upstream: FakeUpstream) -> None:
    account = register(fresh.url)
    gate = threading.Event()
    upstream.script(Reply.by_event("openai_text.sse", hang_after=2, gate=gate))
    with httpx.stream("POST", fresh.url + CHAT,
                      headers={"Authorization": f"Bearer {account.api_key}"},
                      json={"model": MODEL, "messages": MESSAGES, "stream": True},
                      timeout=20) as r:
        chunks = r.iter_bytes()
        assert next(chunks)  # the first event is out: the stream is open
        assert scrape(fresh.url)[key("gateway_streams_in_flight")] == 1.0
        gate.set()
        assert b"".join(chunks).endswith(b"data: [DONE]\n\n")
    settled(fresh.url, {key("gateway_streams_in_flight"): 0.0})


def test_the_token_protects_the_metrics(upstream: FakeUpstream, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, metrics_token=TOKEN)
    server = GatewayServer(create_app(settings))
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"},
                        {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"Bearer {TOKEN}x"}):
            r = httpx.get(server.url + "/metrics", headers=headers)
            assert r.status_code == 401, headers
            assert r.headers["www-authenticate"] == "Bearer"
            error = r.json()["error"]
            assert error["code"] == "invalid_api_key" and error["type"] == (
                "authentication_error"), error
            assert "gateway_" not in r.text
        samples = scrape(server.url, {"Authorization": f"Bearer {TOKEN}"})
        assert samples[key("gateway_signups_total")] == 0.0
    finally:
        server.stop()
    with pytest.raises(ConfigError, match="metrics_token"):
        load_settings(data_dir=tmp_path, jwt_secret=SECRET, key_hash_secret=SECRET + "k",
                      metrics_token="")


async def test_the_writer_queue_and_its_drops_are_sampled(tmp_path: Path) -> None:
    engine = build_engine(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")
    try:
        writer = RequestWriter(engine, queue_size=1)  # not started: nothing leaves the queue
        metrics = Metrics(["m"])
        assert writer.submit_audit({"action": "a"}) and not writer.submit_audit({"action": "b"})
        metrics.sample_writer(writer)
        metrics.sample_writer(writer)  # drops are added once, not at every sample
        samples = parse(metrics.render(None)[0].decode())
        assert samples[key("gateway_writer_queue_depth")] == 1.0
        assert samples[key("gateway_writer_dropped_total")] == 1.0
    finally:
        await engine.dispose()


# -- gateway serve --workers 2 -------------------------------------------------------------

WORKERS, CALLS = 2, 8


def request(port: int, method: str, path: str, parent: int, *,
            body: object = None, headers: dict[str, str] | None = None
            ) -> tuple[int, bytes, int]:
    """(status, body, worker pid), on a connection of its own."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.connect()
        pid = accepting_pid(conn.sock, child_pids(parent))
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read(), pid
    finally:
        conn.close()


def test_workers_add_up(tmp_path: Path) -> None:
    proc_env = gateway_env(tmp_path / "data")
    proc = GatewayProcess(proc_env, tmp_path / "serve.log", args=["--workers", str(WORKERS)])
    metrics_dir = None
    try:
        proc.wait_ready()
        status, body, _ = request(proc.port, "POST", "/auth/register", proc.proc.pid,
                                  body={"email": "workers@example.com",
                                        "password": "correct horse 42"})
        assert status == 201, body
        # A worker that starts late leaves every call to the other one for a while: the
        # free plan's 20 rpm must not end the test before the kernel hands it a connection.
        set_plan(proc_env, "workers@example.com")
        auth = {"Authorization": f"Bearer {json.loads(body)['apiKey']}"}
        served: list[int] = []
        tokens = {"prompt": 0, "completion": 0}
        deadline = time.monotonic() + 60
        # Fresh connections until both workers served calls (the kernel picks the worker).
        while len(served) < CALLS or len(set(served)) < WORKERS:
            assert time.monotonic() < deadline, served
            status, body, pid = request(proc.port, "POST", CHAT, proc.proc.pid, headers=auth,
                                        body={"model": "gateway-demo", "messages": MESSAGES})
            assert status == 200, body
            usage = json.loads(body)["usage"]
            tokens["prompt"] += usage["prompt_tokens"]
            tokens["completion"] += usage["completion_tokens"]
            served.append(pid)
        env = (Path(f"/proc/{served[0]}/environ").read_bytes().split(b"\0"))
        metrics_dir = Path(next(v.split(b"=", 1)[1].decode() for v in env
                                if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")))
        assert stat.S_IMODE(metrics_dir.stat().st_mode) == 0o700
        expected = {
            key("gateway_requests_total", route=CHAT, model="gateway-demo", status="200"):
                float(len(served)),
            key("gateway_tokens_total", model="gateway-demo", kind="prompt"):
                float(tokens["prompt"]),
            key("gateway_tokens_total", model="gateway-demo", kind="completion"):
                float(tokens["completion"]),
            key("gateway_signups_total"): 1.0,
            key("gateway_streams_in_flight"): 0.0,
        }
        # Every worker answers the scrape with the sum, not its own share.
        answered: set[int] = set()
        while answered != set(served):
            assert time.monotonic() < deadline, answered
            status, body, pid = request(proc.port, "GET", "/metrics", proc.proc.pid)
            assert status == 200
            samples = parse(body.decode())
            got = {k: samples.get(k) for k in expected}
            if got == expected:
                answered.add(pid)
            else:
                assert all((got[k] or 0) <= v for k, v in expected.items()), got
    finally:
        proc.stop()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
    # The directory was the serve's own: gone with it.
    assert metrics_dir is not None and not metrics_dir.exists()
