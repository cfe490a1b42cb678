"""Experiments: the gateway app with one hot-path change, to measure a fix before making it.

``python -m bench run --quick --variant aiohttp,quiet-httpx`` serves the same
``create_app(load_settings())`` through uvicorn exactly like ``gateway serve``, except:

- ``quiet-httpx``: the ``httpx`` logger at WARNING (``gateway serve`` configures logging at
  INFO, so httpx formats and writes one "HTTP Request: ..." line per upstream call);
- ``aiohttp``: httpx-aiohttp's ``AiohttpTransport`` under the shared ``httpx.AsyncClient``
  (through ``create_app``'s ``upstream_transport`` seam) instead of httpcore's pool;
- ``plain-sse``: Starlette's ``StreamingResponse`` instead of sse-starlette's
  ``EventSourceResponse`` (no ping task, no shutdown watcher, no per-send timeout scope).

Nothing here is used by the product; results of a variant run say so in their notes.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

VARIANTS = ("quiet-httpx", "aiohttp", "plain-sse")


def _plain_sse() -> None:
    from starlette.responses import StreamingResponse

    import gateway.routes.chat as chat

    class PlainEventStream(StreamingResponse):
        media_type = "text/event-stream"

        def __init__(self, content: Any, *, headers: dict[str, str] | None = None,
                     **_ignored: Any) -> None:
            super().__init__(content, headers=headers)

    chat.EventSourceResponse = PlainEventStream  # type: ignore[misc,assignment]


def app_factory() -> Any:
    """The gateway app with the variants named in ``BENCH_VARIANT`` applied."""
    import httpx

    from gateway.app import create_app
    from gateway.settings import load_settings

    chosen = set(filter(None, os.environ.get("BENCH_VARIANT", "").split(",")))
    settings = load_settings()
    transport = None
    if "aiohttp" in chosen:
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=httpx.Limits(
            max_connections=settings.upstream_max_connections, keepalive_expiry=60))
    if "plain-sse" in chosen:
        _plain_sse()
    return create_app(settings, upstream_transport=transport)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    chosen = set(filter(None, os.environ.get("BENCH_VARIANT", "").split(",")))
    unknown = chosen - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    # What gateway.cli.main does before serving.
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if "quiet-httpx" in chosen:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    uvicorn.run("bench.variants:app_factory", factory=True, host=args.host, port=args.port,
                access_log=False, log_level=args.log_level, timeout_graceful_shutdown=30,
                server_header=False)


if __name__ == "__main__":
    main()
