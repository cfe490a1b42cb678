"""What the Prometheus metrics (gateway/metrics.py) cost a request, without servers or
sockets: the request layer (``RequestObserver``: the route's counter and histogram; request
lines off, as by default) around an app that answers at once, against the same app bare,
and a finished call's share
(``Metrics.call``: tokens and time to first token, the stream gauge up and down). Both in
memory (one process) and in prometheus_client's multiprocess mode (``--workers N``), where
each update also writes the worker's mmap file.
Run: ``python -m bench.metrics_cost``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

REQUESTS = 20_000
EVENTS = 64
MODEL = "gpt-4o-mini"


def _best(fn: Any, repeat: int = 5) -> float:
    """µs per call of ``fn(n)`` running ``REQUESTS`` calls: the best of ``repeat`` runs,
    so that a busy machine's pauses fall between them."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(REQUESTS)
        best = min(best, (time.perf_counter() - start) / REQUESTS * 1e6)
    return best


def measure() -> dict[str, float]:
    # Imported here: prometheus_client picks in-memory or multiprocess values at import.
    from gateway.metrics import Metrics
    from gateway.observe import RequestObserver, note_model
    from providers.base import Usage

    state = SimpleNamespace()
    state.metrics = Metrics([MODEL], multiprocess_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    start = {"type": "http.response.start", "status": 200, "headers": []}
    body = {"type": "http.response.body", "body": b"{}", "more_body": False}
    event = {"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        note_model(MODEL)  # what ChatCall does
        await send(start)
        await send(body)

    async def stream(scope: Any, receive: Any, send: Any) -> None:
        note_model(MODEL)
        await send(start)
        for _ in range(EVENTS):
            await send(event)
        await send(body)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(_message: Any) -> None:
        return None

    fast = [("POST", "/v1/chat/completions")]
    layered = RequestObserver(app, state=state, fast=fast, log_lines=False)
    layered_stream = RequestObserver(stream, state=state, fast=fast, log_lines=False)
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions"}
    loop = asyncio.new_event_loop()

    def requests(asgi: Any) -> Any:
        async def run(n: int) -> None:
            for _ in range(n):
                await asgi(scope, receive, send)
        return lambda n: loop.run_until_complete(run(n))

    usage = Usage(prompt_tokens=2061, completion_tokens=22)
    metrics = state.metrics

    def calls(n: int) -> None:
        for _ in range(n):
            metrics.streams.inc()
            metrics.call(MODEL, usage, 0.25)
            metrics.streams.dec()

    try:
        bare = _best(requests(app))
        with_layer = _best(requests(layered))
        call = _best(calls)
        # The layer sees every message a stream sends (for the status): its share per event.
        per_event = ((_best(requests(layered_stream)) - _best(requests(stream)))
                     - (with_layer - bare)) / EVENTS
    finally:
        loop.close()
    return {"request layer": with_layer - bare, "finished stream": call,
            "per streamed call, total": with_layer - bare + call,
            "per streamed event": per_event}


def main() -> dict[str, dict[str, float]]:
    if "--child" in sys.argv:
        for name, us in measure().items():
            print(f"{name}={us}")
        return {}
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as directory:
        for mode, extra in (("in memory", {}), ("multiprocess", {
                "PROMETHEUS_MULTIPROC_DIR": directory})):
            env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            done = subprocess.run([sys.executable, "-m", "bench.metrics_cost", "--child"],
                                  env={**env, **extra}, capture_output=True, text=True,
                                  check=True)
            out[mode] = {name: float(us) for name, us in
                         (line.split("=") for line in done.stdout.split("\n") if "=" in line)}
    for mode, results in out.items():
        for name, us in results.items():
            print(f"{mode:>12} | {name:>24}: {us:5.2f} µs")
    return out


if __name__ == "__main__":
    main()
