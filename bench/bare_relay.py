"""The bare relay: the stack the gateway is built on, with nothing of the gateway in it.

A Starlette app on uvicorn (the gateway's server, with the same automatic choice of loop
and HTTP parser: uvloop and httptools when installed) whose one route relays
``POST /v1/chat/completions`` to the mock through one pooled ``aiohttp.ClientSession``:
the body is passed on as it is, the answer comes back whole (JSON) or chunk by chunk as it
arrives (``text/event-stream``). No auth, no limits, no parsing, no storage: issue 17's
ratios measure the gateway against this floor, side by side in the same run, because
absolute numbers move 3-5x between machines and ratios do not.

``python -m bench.bare_relay --port 9200 --upstream http://127.0.0.1:9100``
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

PATH = "/v1/chat/completions"
# The gateway's own pool is this large in the benchmark (bench.services): the same here, so
# thousands of streams never wait for a connection in one and not the other.
MAX_CONNECTIONS = 20_000


def build_app(upstream: str) -> Starlette:
    """The relay to ``upstream`` (a base URL such as ``http://127.0.0.1:9100``)."""
    url = upstream.rstrip("/") + PATH
    sessions: list[aiohttp.ClientSession] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=60)
        sessions.append(aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                              cookie_jar=aiohttp.DummyCookieJar()))
        try:
            yield
        finally:
            await sessions.pop().close()

    async def relay(request: Request) -> Response:
        body = await request.body()
        upstream_response = await sessions[0].post(
            url, data=body, headers={"content-type": "application/json"})
        media_type = upstream_response.headers.get("content-type", "application/json")
        if not media_type.startswith("text/event-stream"):
            try:
                content = await upstream_response.read()
            finally:
                upstream_response.release()
            return Response(content, status_code=upstream_response.status,
                            media_type=media_type)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream_response.content.iter_any():
                    yield chunk
            finally:
                upstream_response.release()

        return StreamingResponse(chunks(), status_code=upstream_response.status,
                                 media_type=media_type)

    return Starlette(routes=[Route(PATH, relay, methods=["POST"])], lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--upstream", required=True, help="the mock's base URL")
    args = parser.parse_args(argv)
    # As `gateway serve` runs uvicorn: no access log, no server header, no WebSockets.
    uvicorn.run(build_app(args.upstream), host=args.host, port=args.port, access_log=False,
                log_level="warning", server_header=False, ws="none")


if __name__ == "__main__":
    main()
