"""The properties every fuzzed answer must have, and the bystander whose rows must survive.

Per answer: a 2xx, or a 4xx whose body is OpenAI's error object; never a 5xx, never a
stream that stops short of ``[DONE]``. Per module: every call a well-behaved second user
made while the fuzzing ran is in that user's ``/history`` and counted in ``/stats``.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, settings

# Examples per property. Each is one request to the live gateway (~1,000 in all): at this
# count the fuzz directory takes ~45 s of CPU on today's code, shrinking of failures included.
EXAMPLES = 30

fuzz_settings = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
    # No "explain" phase: it replays variants of a failure, each one more request.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture])
# Tests parametrised by the area of a body or the query parameter they break (a handful
# to a dozen each) get fewer examples per area, so the total stays bounded.
area_settings = settings(fuzz_settings, max_examples=EXAMPLES // 2)

NUDGE_EVERY = 8  # fuzzed requests per bystander call
MIN_BYSTANDER_CALLS = 10


def error_shape_problem(response: httpx.Response) -> str | None:
    """Why ``response`` is not an OpenAI error body, or ``None`` if it is one."""
    try:
        body = response.json()
    except ValueError:
        return f"body is not JSON: {response.content[:200]!r}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"body has no 'error' object: {body!r:.200}"
    kinds = {"message": (str,), "type": (str,), "param": (str, type(None)),
             "code": (str, type(None))}
    for name, allowed in kinds.items():
        if name not in error or not isinstance(error[name], allowed):
            return f"error.{name} missing or of the wrong type: {error!r:.300}"
    return None


def answer_problem(response: httpx.Response) -> str | None:
    """Why ``response`` breaks the fuzzing properties, or ``None``."""
    status = response.status_code
    if 200 <= status < 300:
        if response.headers.get("content-type", "").startswith("text/event-stream") and \
                not response.content.endswith(b"data: [DONE]\n\n"):
            return f"stream ended without [DONE]: ...{response.content[-300:]!r}"
        return None
    if not 400 <= status < 500:
        return f"status {status}: {response.content[:300]!r}"
    problem = error_shape_problem(response)
    return f"status {status}, {problem}" if problem else None


class Fuzzer:
    """Sends fuzzed requests as one user and checks each answer."""

    def __init__(self, client: httpx.Client, api_key: str, bystander: Bystander) -> None:
        self.client = client
        self.api_key = api_key
        self.bystander = bystander

    def send(self, method: str, path: str, *, content: bytes | None = None,
             content_type: str | None = "application/json",
             params: dict[str, str] | None = None, auth: bool = True,
             headers: dict[str, str | bytes] | None = None) -> httpx.Response:
        """One request; fails the example unless the answer has the properties."""
        headers = dict(headers or {})
        if auth:
            headers["authorization"] = f"Bearer {self.api_key}"
        if content_type is not None:
            headers["content-type"] = content_type
        response = self.client.request(method, path, content=content, params=params,
                                       headers=headers)
        self.bystander.nudge()
        problem = answer_problem(response)
        assert problem is None, f"{method} {path}: {problem}"
        return response


class Bystander:
    """A user making ordinary demo-model calls, plain and streamed, from its own thread:
    one for every ``NUDGE_EVERY`` fuzzed requests, so they spread over the whole module."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.calls = 0
        self.failures: list[str] = []
        self._tokens: queue.SimpleQueue[bool] = queue.SimpleQueue()  # False: stop
        self._nudges = 0
        self._thread = threading.Thread(target=self._run, name="bystander", daemon=True)

    @staticmethod
    def marker(i: int) -> str:
        return f"bystander call {i}"

    def start(self) -> None:
        self._thread.start()

    def nudge(self) -> None:
        self._nudges += 1
        if self._nudges % NUDGE_EVERY == 0:
            self._tokens.put(True)

    def finish(self) -> None:
        """Make up to ``MIN_BYSTANDER_CALLS`` if the module sent few requests; wait for all."""
        if self._thread.is_alive():
            for _ in range(MIN_BYSTANDER_CALLS - self._nudges // NUDGE_EVERY):
                self._tokens.put(True)
            self._tokens.put(False)
            self._thread.join(60)
        assert not self._thread.is_alive(), "bystander calls did not finish in 60 s"

    def _run(self) -> None:
        headers = {"authorization": f"Bearer {self.api_key}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=30) as client:
            while self._tokens.get():
                i, self.calls = self.calls, self.calls + 1
                body: dict[str, Any] = {
                    "model": "gateway-demo", "stream": i % 2 == 1,
                    "messages": [{"role": "user", "content": self.marker(i)}]}
                try:
                    r = client.post("/v1/chat/completions", json=body)
                except httpx.HTTPError as exc:
                    self.failures.append(f"call {i}: {exc!r}")
                    continue
                if r.status_code != 200 or (body["stream"] and
                                            not r.content.endswith(b"data: [DONE]\n\n")):
                    self.failures.append(f"call {i}: {r.status_code} {r.content[-200:]!r}")

    def history_markers(self) -> set[str]:
        """The prompts of every row in the bystander's /history, all pages."""
        seen: set[str] = set()
        params = {"limit": "100"}
        while True:
            r = httpx.get(self.base_url + "/history", params=params,
                          headers={"authorization": f"Bearer {self.api_key}"}, timeout=10)
            assert r.status_code == 200, r.text
            page = r.json()
            seen |= {row["prompt_preview"] for row in page["data"]}
            if not page["next_cursor"]:
                return seen
            params["cursor"] = page["next_cursor"]

    def stats_totals(self) -> dict[str, Any]:
        r = httpx.get(self.base_url + "/stats", params={"days": "2"},
                      headers={"authorization": f"Bearer {self.api_key}"}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["totals"]

    def assert_all_stored(self, timeout: float = 15.0) -> None:
        """Every call answered 200, is in /history and counted in /stats (the writer
        stores rows in the background: poll until it has, up to ``timeout``)."""
        self.finish()
        assert self.failures == [], f"bystander calls failed: {self.failures}"
        expected = {self.marker(i) for i in range(self.calls)}
        deadline = time.monotonic() + timeout
        while True:
            seen, totals = self.history_markers(), self.stats_totals()
            if (seen >= expected and totals["requests"] == self.calls) or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.05)  # polling interval, not a synchronisation
        missing = sorted(expected - seen, key=lambda m: int(m.rsplit(" ", 1)[1]))
        assert not missing, f"{len(missing)} of {self.calls} bystander calls never reached " \
                            f"/history: {missing}"
        assert (totals["requests"], totals["succeeded"]) == (self.calls, self.calls), \
            f"/stats counts {json.dumps(totals)} for {self.calls} bystander calls"
