"""CPU per SSE event: sse-starlette's ``EventSourceResponse`` against ours.

``python -m bench.sse_cpu [--events N] [--per-response N] [--repeats N] [--uvloop]``

Both responses run as bare ASGI apps on one event loop, with no network: ``send`` discards
each message (a socket write that does not block costs the same to either), ``receive``
never reports a disconnect. Each streams the same pre-encoded ``chat.completion.chunk``
events from an async generator. CPU time is ``time.process_time()`` around the responses
alone; the two are measured in alternation, so drift on a shared machine hits both, and
the median of the repetitions is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import statistics
import time
from collections.abc import AsyncGenerator, Callable
from importlib.metadata import version
from typing import Any

from starlette.types import ASGIApp, Message

from gateway.chat.encode import ChunkEncoder
from gateway.sse import EventStreamResponse
from providers.base import TextDelta

SCOPE: dict[str, Any] = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
                         "http_version": "1.1", "method": "POST", "scheme": "http",
                         "path": "/v1/chat/completions", "query_string": b"", "headers": [],
                         "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}


def chat_events(count: int) -> list[bytes]:
    """``count`` events as the gateway encodes a streamed answer: a word each."""
    encoder = ChunkEncoder("chatcmpl-0123456789abcdef", 1767225600, "gpt-4o-mini", False)
    return [encoder.encode(TextDelta(" word")) for _ in range(count)]


async def _events(events: list[bytes]) -> AsyncGenerator[bytes, None]:
    for event in events:
        yield event


async def _discard(_message: Message) -> None:
    return None


def _never_disconnects() -> Callable[[], Any]:
    forever = asyncio.Event()  # never set: the client stays

    async def receive() -> Message:
        await forever.wait()
        return {"type": "http.disconnect"}
    return receive


def ours(events: list[bytes]) -> ASGIApp:
    return EventStreamResponse(_events(events))


def sse_starlette(events: list[bytes]) -> ASGIApp:
    from sse_starlette import EventSourceResponse

    # As gateway/routes/chat.py called it before gateway/sse.py replaced it.
    return EventSourceResponse(_events(events), sep="\n", ping=15)


async def cpu_per_event(make: Callable[[list[bytes]], ASGIApp], events: list[bytes],
                        responses: int) -> float:
    """CPU seconds per event over ``responses`` responses of ``events`` each."""
    receive = _never_disconnects()
    apps = [make(events) for _ in range(responses)]  # built outside the timed span
    gc.collect()
    start = time.process_time()
    for app in apps:
        await app(SCOPE, receive, _discard)
    return (time.process_time() - start) / (responses * len(events))


async def measure(total: int, per_response: int, repeats: int) -> dict[str, list[float]]:
    events = chat_events(per_response)
    responses = max(1, total // per_response)
    candidates = {"sse-starlette": sse_starlette, "gateway.sse": ours}
    for make in candidates.values():  # warm-up: imports, first-call caches
        await cpu_per_event(make, events, 1)
    runs: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, make in candidates.items():
            runs[name].append(await cpu_per_event(make, events, responses))
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sse_cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000, help="events per repetition")
    parser.add_argument("--per-response", type=int, default=None,
                        help="events per response (default: all in one; e.g. 50 for short "
                             "answers, where each response's setup counts too)")
    parser.add_argument("--repeats", type=int, default=9, help="repetitions (median)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args(argv)
    per_response = args.per_response or args.events
    if args.uvloop:
        import uvloop

        runner: Any = uvloop.run
    else:
        runner = asyncio.run
    runs = runner(measure(args.events, per_response, args.repeats))
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"python {platform.python_version()}, {loop}, starlette {version('starlette')}, "
          f"sse-starlette {version('sse-starlette')}, anyio {version('anyio')}; "
          f"{args.events} events in responses of {per_response}, median of {args.repeats}")
    medians = {name: statistics.median(values) for name, values in runs.items()}
    for name, values in runs.items():
        print(f"  {name:14} {medians[name] * 1e6:6.2f} µs/event  "
              f"[{min(values) * 1e6:.2f}–{max(values) * 1e6:.2f}]")
    extra = medians["sse-starlette"] - medians["gateway.sse"]
    ratio = medians["sse-starlette"] / medians["gateway.sse"]
    print(f"  sse-starlette: {extra * 1e6:+.2f} µs CPU per event, {ratio:.1f}× gateway.sse")


if __name__ == "__main__":
    main()
