"""Prometheus metrics: the counters, and how workers add up.

``Metrics`` is built once per process in the lifespan; the request layer
(gateway/observe.py) and the call path report to it, and ``GET /metrics``
(gateway/routes/metrics.py) renders it. Under ``gateway serve --workers N`` the serve
command points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory shared by the
workers: prometheus_client then keeps every value in a per-process file there (it decides
when it is imported, from the environment), and a scrape answered by any worker sums all.

Label sets stay bounded: ``route`` is a route template, ``model`` a public model name of
the catalog (anything else is ``""``), ``status`` an HTTP status (499: the client left
before any answer), ``provider`` a configured provider and ``kind`` an error class's code.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from providers.base import Usage
from providers.errors import ProviderError
from storage.writer import RequestWriter

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RATE_LIMITS = frozenset({"requests", "tokens", "concurrent", "budget"})

# Whole requests: from a 1 ms health check to a five-minute stream.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
# How often each worker copies its writer's queue depth and drops into the shared files
# (multiprocess mode only: otherwise the scrape reads them directly).
WRITER_SAMPLE_SECONDS = 1.0


def prepare_multiprocess_dir() -> str:
    """The directory the workers of one ``gateway serve`` share their metrics in.

    An operator's own ``PROMETHEUS_MULTIPROC_DIR`` is used, emptied of its value files
    first (counts of an earlier run must not add to this one's); otherwise a fresh 0700
    temporary directory, removed when ``serve`` exits.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        for old in path.glob("*.db"):
            old.unlink(missing_ok=True)
        return str(path)
    path = Path(tempfile.mkdtemp(prefix="gateway-metrics-"))  # mode 0700
    atexit.register(shutil.rmtree, path, True)
    return str(path)


def forget_dead_processes(path: str) -> None:
    """Drop the live gauges of workers that died without their shutdown (a crash, then
    uvicorn's replacement): their streams in flight and queued rows are gone with them."""
    for file in Path(path).glob("gauge_live*_*.db"):
        tail = file.stem.rsplit("_", 1)[1]
        if not tail.isdigit():
            continue
        pid = int(tail)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, path)
        except PermissionError:  # alive, another user's (a recycled pid): keep it
            pass


def upstream_error_kind(exc: BaseException) -> str:
    """A bounded name for a failed upstream call: the error class's code (never the
    upstream's own, which it alone chooses), or ``internal_error`` for a plugin's bug."""
    if isinstance(exc, ProviderError):
        return exc.code or exc.type
    return "internal_error"


class Metrics:
    """The gateway's metrics, with each label combination's child looked up once.

    ``.labels(...)`` costs several µs (it validates and joins the labels); the hot paths
    keep the children in dicts keyed by their label values instead.
    """

    def __init__(self, models: Iterable[str], *, multiprocess_dir: str | None = None) -> None:
        """``models``: the catalog's public names, the only values of the ``model`` label."""
        self.models = frozenset(models)
        # Follow the library's own choice (made at its import): values in files or in memory.
        self.multiprocess = (multiprocess_dir is not None
                             and values.ValueClass is not values.MutexValue)
        own = None if self.multiprocess else CollectorRegistry()
        self.registry = own or CollectorRegistry()
        if self.multiprocess:
            MultiProcessCollector(self.registry, path=multiprocess_dir)
            forget_dead_processes(multiprocess_dir)
        self.requests = Counter("gateway_requests", "HTTP requests by route template, model "
                                "and response status.", ["route", "model", "status"],
                                registry=own)
        self.duration = Histogram("gateway_request_duration_seconds", "Time from a request's "
                                  "arrival to its response's last byte (streams included).",
                                  ["route", "model"], buckets=DURATION_BUCKETS, registry=own)
        self.ttft = Histogram("gateway_time_to_first_token_seconds", "Time from a streamed "
                              "call's start to its first content token.", ["model"],
                              buckets=TTFT_BUCKETS, registry=own)
        self.tokens = Counter("gateway_tokens", "Tokens of finished calls (upstream usage, "
                              "else estimated).", ["model", "kind"], registry=own)
        self.rate_limited = Counter("gateway_rate_limited", "Calls refused by a plan limit.",
                                    ["limit"], registry=own)
        self.upstream_errors = Counter("gateway_upstream_errors", "Failed upstream calls "
                                       "(each attempt) and streams that broke mid-way.",
                                       ["provider", "kind"], registry=own)
        self.streams = Gauge("gateway_streams_in_flight", "SSE chat completions in progress.",
                             registry=own, multiprocess_mode="livesum")
        self.writer_depth = Gauge("gateway_writer_queue_depth", "Rows waiting in the "
                                  "background writer's queue.", registry=own,
                                  multiprocess_mode="livesum")
        self.writer_dropped = Counter("gateway_writer_dropped", "Rows the background writer "
                                      "dropped (queue full too long, or unstorable).",
                                      registry=own)
        self.signups = Counter("gateway_signups", "Accounts registered.", registry=own)
        self.logins_failed = Counter("gateway_logins_failed", "Logins refused for a wrong "
                                     "email or password (or an inactive account).",
                                     registry=own)
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._model_children: dict[str, tuple[Any, Any, Any]] = {}
        self._dropped_seen = 0
        self._sampler: asyncio.Task[None] | None = None

    # -- the hot path --------------------------------------------------------------------

    def request(self, route: str, model: str, status: int, seconds: float) -> None:
        """One HTTP request answered."""
        key = (route, model, status)
        children = self._request_children.get(key)
        if children is None:
            label = model if model in self.models else ""
            children = (self.requests.labels(route, label, str(status)),
                        self.duration.labels(route, label))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def call(self, model: str, usage: Usage, ttft: float | None) -> None:
        """One finished call's tokens, and its time to first token when it streamed."""
        children = self._model_children.get(model)
        if children is None:
            if model not in self.models:
                return
            children = (self.tokens.labels(model, "prompt"),
                        self.tokens.labels(model, "completion"), self.ttft.labels(model))
            self._model_children[model] = children
        prompt, completion, first_token = children
        if usage.prompt_tokens:
            prompt.inc(usage.prompt_tokens)
        if usage.completion_tokens:
            completion.inc(usage.completion_tokens)
        if ttft is not None:
            first_token.observe(ttft)

    # -- rarer events --------------------------------------------------------------------

    def rate_limit(self, limit: str) -> None:
        """A call refused by the plan's ``limit`` (requests, tokens, concurrent or budget)."""
        if limit in RATE_LIMITS:
            self.rate_limited.labels(limit).inc()

    def upstream_error(self, provider: str, exc: BaseException) -> None:
        self.upstream_errors.labels(provider, upstream_error_kind(exc)).inc()

    def sample_writer(self, writer: RequestWriter) -> None:
        """Copy the writer's queue depth and drop count (its own stats) into the metrics."""
        self.writer_depth.set(writer.pending)
        dropped = writer.stats.dropped
        if dropped > self._dropped_seen:
            self.writer_dropped.inc(dropped - self._dropped_seen)
            self._dropped_seen = dropped

    # -- lifecycle and exposition --------------------------------------------------------

    def start(self, writer: RequestWriter) -> None:
        """In multiprocess mode another worker may answer the scrape: sample the writer
        now and then, so that its numbers are in the shared files."""
        self.sample_writer(writer)
        if self.multiprocess:
            self._sampler = asyncio.create_task(self._sample(writer))

    async def _sample(self, writer: RequestWriter) -> None:
        while True:
            await asyncio.sleep(WRITER_SAMPLE_SECONDS)
            self.sample_writer(writer)

    async def aclose(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if self.multiprocess:
            # This process's gauges leave the sums (counters stay: totals never go down).
            mark_process_dead(os.getpid())

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition (Prometheus text, or OpenMetrics when asked for) and its type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
