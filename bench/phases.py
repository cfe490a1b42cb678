"""Where a call's CPU goes, phase by phase, without a profiler: ``python -m bench.phases``.

The real gateway objects, built by the real ``create_app`` lifespan on a data directory
prepared as the benchmark prepares it (auth, limits and persistence on), driven in this
process one request at a time, in the order the chat route (gateway/routes/chat.py) runs
them, against the benchmark's mock upstream in a process of its own on the other core:

- auth: ``Authenticator.authenticate`` (the key cache after the first call)
- parse: ``json_object`` + ``parse_chat`` + ``ModelCatalog.resolve``
- admit: ``ChatCall`` built, ``admit`` (token estimate, rate limiter, spool's start record)
- upstream call: ``ChatCall.complete`` (plain) or ``open`` (stream, to its first chunk):
  routing, the provider's request, the transport, the answer parsed
- relay: plain, the JSON response built and sent; stream, every event encoded and sent
  through ``EventStreamResponse``
- close: ``Call.finish`` (release, metrics, limiter, the record, queued for the writer)
- persistence: the process's CPU outside the phases above, over the same requests: the
  writer's batches on the event loop and in the SQLite thread, the spool's thread, and the
  lease renewer (the gateway's background work per request).

Each phase is the CPU time of the event loop's thread (``time.thread_time``), so waiting
for the mock is not counted; "persistence" is the process's CPU (``time.process_time``,
all threads) less the phases' sum. uvicorn's HTTP and ASGI work is not in any phase: the
benchmark's CPU per request, less this total, is the server's share. Rounds of
``--requests`` calls each; the table gives the median round and the range.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson

from bench import procs, services
from bench.harness import openai_body
from bench.services import NONSTREAM, PACED, Backends

PHASES = ("auth", "parse", "admit", "upstream call", "relay", "close", "persistence")
KINDS = ("nonstream", "stream")


class Clock:
    """Adds the event loop thread's CPU time spent in each phase."""

    def __init__(self) -> None:
        self.us: dict[str, float] = dict.fromkeys(PHASES, 0.0)

    async def timed(self, phase: str, work: Awaitable[Any]) -> Any:
        t0 = time.thread_time()
        try:
            return await work
        finally:
            self.us[phase] += (time.thread_time() - t0) * 1e6

    def wrap_finish(self, call: Any) -> None:
        """Time ``call.finish`` wherever it is called from (inside the stream's response)
        as "close", and take that time out of the phase it ran in."""
        finish = call.finish

        async def timed_finish() -> None:
            t0 = time.thread_time()
            try:
                await finish()
            finally:
                spent = (time.thread_time() - t0) * 1e6
                self.us["close"] += spent
                self.us["relay"] -= spent

        call.finish = timed_finish


def _scope(app_state: Any, key: str, body: bytes, n: int) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {key}".encode()),
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
            "app": SimpleNamespace(state=app_state),
            "state": {"request_id": f"req_phases{os.getpid()}x{n}"}}


def _receive(body: bytes) -> Callable[[], Awaitable[dict[str, Any]]]:
    """The body once, then nothing: the client never leaves."""
    sent = False
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()
        return {"type": "http.disconnect"}

    return receive


async def _discard(_message: dict[str, Any]) -> None:
    return None


async def one_call(state: Any, key: str, body: bytes, n: int, clock: Clock) -> None:
    """One request through the chat route's steps, each timed as its phase."""
    from starlette.requests import Request

    from gateway.chat.call import ChatCall
    from gateway.chat.encode import ChunkEncoder, usage_body
    from gateway.chat.request import parse_chat
    from gateway.http import JSONResponse, json_object, request_id
    from gateway.routes import chat
    from gateway.sse import EventStreamResponse

    scope = _scope(state, key, body, n)
    receive = _receive(body)
    request = Request(scope, receive)
    principal = await clock.timed("auth", state.auth.authenticate(request))

    async def parse() -> Any:
        parsed = parse_chat(await json_object(request))
        return parsed, state.catalog.resolve(parsed.model, principal)

    parsed, route = await clock.timed("parse", parse())

    async def admit() -> ChatCall:
        call = ChatCall(state.call_services, principal, route, parsed, source="v1",
                        request_id=request_id(request))
        await call.admit()
        return call

    call = await clock.timed("admit", admit())
    completion_id = "chatcmpl-" + request_id(request).removeprefix("req_")
    created = int(time.time())
    if not parsed.stream:
        await clock.timed("upstream call", call.complete())
        await clock.timed("close", call.finish())

        async def respond() -> None:
            assert call.usage is not None
            await JSONResponse({
                "id": completion_id, "object": "chat.completion", "created": created,
                "model": call.model, "choices": call.transcript.choices(parsed.n),
                "usage": usage_body(call.usage), "system_fingerprint": None,
            }, headers=call.headers)(scope, receive, _discard)

        await clock.timed("relay", respond())
        return
    clock.wrap_finish(call)  # the stream's response finishes the call before its tail
    first = await clock.timed("upstream call", call.open())
    encoder = ChunkEncoder(completion_id, created, call.model, parsed.include_usage)
    response = EventStreamResponse(chat._sse(call, first, encoder), headers=call.headers)
    await clock.timed("relay", response(scope, receive, _discard))


async def _lifespan(app: Any) -> tuple[Callable[[], Awaitable[None]], asyncio.Task[None]]:
    """Start ``app``'s lifespan as a server would; return its shutdown and its task."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"},
                                    "state": {}}, inbox.get, outbox.put))
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"the gateway did not start: {started}")

    async def shutdown() -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task

    return shutdown, task


async def measure(kind: str, key: str, *, requests: int, rounds: int,
                  warmup: int) -> list[dict[str, float]]:
    """``rounds`` rounds of ``requests`` calls; each round's µs per call by phase."""
    from gateway.app import create_app
    from gateway.settings import load_settings

    app = create_app(load_settings())
    shutdown, _task = await _lifespan(app)
    state = app.state
    model = NONSTREAM if kind == "nonstream" else PACED[20]
    body = orjson.dumps(openai_body(model, kind == "stream"))
    out = []
    try:
        for n in range(warmup):
            await one_call(state, key, body, n, Clock())
        await state.writer.flush()
        n = warmup
        for _ in range(rounds):
            clock = Clock()
            cpu0 = time.process_time()
            for _ in range(requests):
                await one_call(state, key, body, n, clock)
                n += 1
            await state.writer.flush()  # the round's rows written: their cost is counted
            total = (time.process_time() - cpu0) * 1e6
            clock.us["persistence"] = total - sum(clock.us.values())
            out.append({phase: us / requests for phase, us in clock.us.items()})
    finally:
        await shutdown()
    return out


def table(kind: str, rounds: list[dict[str, float]]) -> str:
    totals = [sum(r.values()) for r in rounds]
    total = statistics.median(totals)
    lines = [f"{kind}: CPU µs per request, median of {len(rounds)} rounds [min–max]", "",
             "| phase | µs | share | range |", "|---|---|---|---|"]
    for phase in PHASES:
        values = [r[phase] for r in rounds]
        mid = statistics.median(values)
        lines.append(f"| {phase} | {mid:,.1f} | {100 * mid / total:.0f} % | "
                     f"{min(values):,.1f}–{max(values):,.1f} |")
    lines.append(f"| **total** | {total:,.1f} | 100 % | {min(totals):,.1f}–{max(totals):,.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kinds", nargs="*", help="nonstream, stream (default: both)")
    parser.add_argument("--requests", type=int, default=500, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args(argv)
    kinds = args.kinds or list(KINDS)
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"unknown kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}")
    procs.pin_self(procs.GATEWAY_CORE)
    with tempfile.TemporaryDirectory(prefix="gateway-phases-") as tmp:
        work = Path(tmp)
        mock = services.start_mock(work)
        try:
            env = services.gateway_env(work, mock.port, Backends("sqlite"))
            key = services.prepare_gateway(env)
            for name in [k for k in os.environ if k.startswith("GATEWAY_")]:
                del os.environ[name]
            os.environ.update({k: v for k, v in env.items() if k.startswith("GATEWAY_")})
            os.environ["GATEWAY_MIGRATE_ON_START"] = "false"  # prepare_gateway migrated
            import uvloop

            for kind in kinds:
                rounds = uvloop.run(measure(kind, key, requests=args.requests,
                                            rounds=args.rounds, warmup=args.warmup))
                print(table(kind, rounds))
        finally:
            mock.stop()


if __name__ == "__main__":
    main()
