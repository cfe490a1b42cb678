"""The fake upstream's resilience features, checked on their own (they pass today): replies
per upstream model, request counts, retry-after headers, dropped and gated streams."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from tests.resilience.support import MESSAGES, TEXT, down, ok_json, ok_stream, refused_url
from tests.servers import FIXTURES, FakeUpstream, Reply, recording_events, wait_for


def post(upstream: FakeUpstream, model: str, client: httpx.Client | None = None
         ) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES}
    if client is not None:
        return client.post(upstream.url + "/v1/chat/completions", json=body)
    return httpx.post(upstream.url + "/v1/chat/completions", json=body)


def test_each_model_has_its_own_script_and_count(fault: FakeUpstream) -> None:
    fault.script(ok_json())
    fault.script_model("down", down(503), down(503), ok_json())
    fault.script_model("always", down(500))
    with httpx.Client() as client:  # one keep-alive connection serves every model
        assert [post(fault, "down", client).status_code for _ in range(4)] == [503, 503, 200, 200]
        assert [post(fault, "always", client).status_code for _ in range(2)] == [500, 500]
        other = post(fault, "anything-else", client)
    assert other.status_code == 200 and other.json()["choices"][0]["message"]["content"] == TEXT
    assert (fault.hits("down"), fault.hits("always"), fault.hits("anything-else")) == (4, 2, 1)
    assert fault.hits() == 7 and fault.hits("never") == 0
    assert [r.model for r in fault.received[:2]] == ["down", "down"]
    fault.script()  # afresh: scripts and counts gone
    assert fault.hits() == 0 and post(fault, "down").status_code == 500  # unscripted


def test_error_bodies_are_the_recordings_with_retry_headers(fault: FakeUpstream) -> None:
    fault.script(Reply.error(429, "openai_error_429.json", retry_after="30",
                             retry_after_ms="300"))
    r = post(fault, "m")
    assert r.status_code == 429 and r.content == (FIXTURES / "openai_error_429.json").read_bytes()
    assert (r.headers["retry-after"], r.headers["retry-after-ms"]) == ("30", "300")
    assert r.headers["content-type"] == "application/json"
    fault.script(down(503))
    r = post(fault, "m")
    assert r.status_code == 503 and "retry-after" not in r.headers
    assert r.json()["error"]["type"] == "server_error"
    ctx = json.loads((FIXTURES / "openai_error_context_length.json").read_bytes())
    assert ctx["error"]["code"] == "context_length_exceeded"


def test_a_dropped_stream_ends_without_the_chunked_terminator(fault: FakeUpstream) -> None:
    fault.script(ok_stream(drop_after=2))
    events = recording_events("openai_text.sse")
    got = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", fault.url + "/v1/chat/completions",
                          json={"model": "m", "stream": True}) as r:
            for piece in r.iter_raw():
                got += piece
    assert got == b"".join(events[:2]) and fault.dropped == 1 and fault.completed == 0


def test_a_gated_stream_waits_for_the_test(fault: FakeUpstream) -> None:
    gate = threading.Event()
    fault.script(ok_stream(hang_after=1, gate=gate))
    events = recording_events("openai_text.sse")
    with httpx.stream("POST", fault.url + "/v1/chat/completions", json={"model": "m"}) as r:
        chunks = r.iter_raw()
        assert next(chunks) == events[0]
        assert fault.completed == 0  # held: the rest waits for the gate
        gate.set()
        assert b"".join(chunks) == b"".join(events[1:])
    assert wait_for(lambda: fault.completed == 1)


def test_a_refused_url_refuses() -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(refused_url() + "/models")
