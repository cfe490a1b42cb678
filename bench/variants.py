"""Experiments: the gateway app with one hot-path change, to measure it against the default.

``python -m bench run --quick --variant httpcore`` serves the same
``create_app(load_settings())`` through uvicorn exactly like ``gateway serve``, except:

- ``httpcore``: httpx's own connection pool (httpcore) under the shared upstream client
  instead of the aiohttp pool the gateway ships with (``gateway/upstream_client.py``), through
  ``create_app``'s ``upstream_transport`` seam. It shows what that choice is worth.
- ``nospool``: the writer without its crash spool (``GATEWAY_WRITER_SPOOL=false``), to
  measure what the spool costs the hot path.
- ``baseline``: no change, launched like the variants: the other side of a comparison
  (``gateway serve`` migrates in a child process, a variant in the server).
- ``trim``: a thread calls glibc's ``malloc_trim(0)`` once a second: whether handing freed
  heap back to the system lowers the RSS left by a burst (the idle RSS after warm-up).
- ``bounded``: the writer binds at most 256 rows per statement even when backed up
  (shipped: the whole queue in one statement), to see what its transient peak leaves in RSS.

Nothing here is used by the product; results of a variant run say so in their notes.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

VARIANTS = ("httpcore", "nospool", "baseline", "trim", "bounded")
BOUNDED_ROWS = 256


def _bounded_statements() -> None:
    from storage.writer import RequestWriter

    commit = RequestWriter._commit

    async def bounded(self: Any, batch: Any, rows_per_statement: int | None,
                      **kwargs: Any) -> None:
        await commit(self, batch, rows_per_statement or BOUNDED_ROWS, **kwargs)

    RequestWriter._commit = bounded  # type: ignore[method-assign]


def _trim_every_second() -> None:
    import ctypes
    import threading
    import time

    libc = ctypes.CDLL("libc.so.6")

    def trim() -> None:
        while True:
            time.sleep(1.0)
            libc.malloc_trim(0)

    threading.Thread(target=trim, name="malloc-trim", daemon=True).start()


def app_factory() -> Any:
    """The gateway app with the variants named in ``BENCH_VARIANT`` applied."""
    import httpx

    from gateway.app import create_app
    from gateway.settings import load_settings

    chosen = set(filter(None, os.environ.get("BENCH_VARIANT", "").split(",")))
    settings = load_settings(**({"writer_spool": False} if "nospool" in chosen else {}))
    if "trim" in chosen:
        _trim_every_second()
    if "bounded" in chosen:
        _bounded_statements()
    transport = None
    if "httpcore" in chosen:
        n = settings.upstream_max_connections
        transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(
            max_connections=n, max_keepalive_connections=n, keepalive_expiry=60))
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
    # Plain text lines at INFO, as `gateway serve` writes by default (gateway/logs.py), and
    # no request lines (those are `gateway serve --access-log`).
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    uvicorn.run("bench.variants:app_factory", factory=True, host=args.host, port=args.port,
                access_log=False, log_level=args.log_level, timeout_graceful_shutdown=30,
                server_header=False, ws="none")  # as `gateway serve` runs it


if __name__ == "__main__":
    main()
