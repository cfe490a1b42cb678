"""One chat call from admission to its stored record: admit → open → relay → finish.

Both APIs use it: ``/v1/chat/completions`` and the legacy ``/inference`` jobs. The
lifecycle (limits, routing, usage counted once, the stored ``CallRecord``) is
``gateway.call.Call``'s; this is what is particular to chat: the answer streamed or whole,
its transcript, and its tokens. The routes only turn its chunks and errors into their wire
format.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from gateway.auth.principal import Principal
from gateway.cache import HEADER as CACHE_HEADER
from gateway.cache import CachedAnswer, CacheSlot, ResponseCache
from gateway.call import (
    ATTEMPTS_HEADER,
    DROPPED_PARAMS_HEADER,
    SERVED_BY_HEADER,
    Call,
    CallServices,
    new_record,
)
from gateway.catalog import Route
from gateway.chat.request import ParsedChat
from gateway.chat.transcript import Transcript
from gateway.errors import APIError, invalid
from gateway.resilience.balance import Deployment
from gateway.resilience.policy import breaker_failure
from providers.base import (
    CallContext,
    Chunk,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
    dropped_params,
)
from providers.errors import ProviderError
from storage.records import CallRecord


def prompt_text(messages: list[dict[str, Any]]) -> str:
    """What the caller asked this time: the last user message as plain text.

    It is what history lists and searches; earlier turns are in earlier calls' rows and
    in ``messages``.
    """
    for msg in reversed(messages):
        if msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
            return content or ""
    return ""


class ChatCall(Call):
    """Owns one chat call: ``admit``, then ``open`` and ``relay`` (a stream) or
    ``complete``, then ``finish`` once, whatever happened. ``headers`` go on the answer."""

    def __init__(self, svc: CallServices, principal: Principal, route: Route,
                 parsed: ParsedChat, *, source: str, request_id: str,
                 row_id: uuid.UUID | None = None,
                 store: Callable[[CallRecord], Awaitable[None]] | None = None) -> None:
        """``store`` takes the finished record; by default it is queued for the writer (v1).
        Legacy jobs store theirs themselves, fenced by their lease."""
        req = parsed.request
        super().__init__(svc, principal, route, new_record(
            principal, route, model=parsed.model, source=source, request_id=request_id,
            prompt=prompt_text(req.messages), row_id=row_id, messages=req.messages,
            parameters={**req.params, **req.extra}), store=store)
        if parsed.n > 1 and not route.supports_n:
            raise invalid("n", f"'n' greater than 1 is not supported by model '{route.public}'")
        self.parsed = parsed
        self.transcript = Transcript()
        self._stream: AsyncIterator[Chunk] | None = None
        self._sse = False  # an SSE answer in progress, in gateway_streams_in_flight
        # The response cache, when it applies: the answer found (a hit), or the chunks
        # kept to store once the call completes (a miss).
        self._cache: ResponseCache | None = None
        self._slot: CacheSlot | None = None
        self._cached: CachedAnswer | None = None
        self._kept: list[Chunk] | None = None

    async def use_cache(self, cache: ResponseCache, slot: CacheSlot) -> None:
        """Look the call up before admission: a hit is answered from ``cache`` without
        the upstream (and reserves no tokens); a miss keeps its answer there when it
        completes."""
        self._cache, self._slot = cache, slot
        self._cached = await cache.get(slot)
        if self._cached is None:
            self._kept = []
            return
        record = self.record
        record.cached = True
        record.provider, record.upstream_model = self._cached.provider, self._cached.upstream

    async def admit(self) -> None:
        await super().admit()
        if self._slot is not None:
            self.headers[CACHE_HEADER] = "hit" if self._cached is not None else "miss"

    def _estimate(self) -> int:
        if self._cached is not None:
            return 0  # a hit counts as a request, never against the plan's tokens
        max_tokens = self.parsed.max_tokens or self.svc.default_max_tokens
        prompt = self.svc.tokens.estimate_messages(self.parsed.request.messages)
        return prompt + max_tokens * self.parsed.n

    async def open(self) -> Chunk | None:
        """Route the call until an upstream stream yields its first chunk (None if it
        ended without one). Failures become the HTTP error the caller gets."""
        ctx = self._context()
        if self._store is None:  # v1: an SSE answer (a legacy job streams to its row)
            self._sse = True
            self.svc.metrics.streams.inc()
        if self._cached is not None:
            self._stream = _replay(self._cached.chunks)
            first = await anext(self._stream, None)
            if first is None:
                self._settle()
            else:
                self._note(first)
            return first

        async def first_chunk(target: Deployment) -> tuple[AsyncIterator[Chunk], Chunk | None]:
            stream = self._stream_on(target, ctx)
            try:
                return stream, await anext(stream)
            except StopAsyncIteration:
                return stream, None

        self._stream, first = await self._route(first_chunk, needs_n=self.parsed.n > 1)
        if first is None:
            self._settle()  # an empty answer, but a whole one
        else:
            self._note(first)
        return first

    async def complete(self) -> None:
        """The whole answer from one non-streamed upstream call, routed like ``open``.

        Cheaper than collecting a stream: one body, one parse, no per-event work.
        """
        if self._cached is not None:
            chunks = self._cached.chunks
        else:
            ctx = self._context()
            chunks = await self._route(lambda target: self._complete_on(target, ctx),
                                       needs_n=self.parsed.n > 1)
        for chunk in chunks:
            self._note(chunk)
        self._settle()

    def _stream_on(self, target: Deployment, ctx: CallContext) -> AsyncIterator[Chunk]:
        """The streamed upstream call on one target (a kind of call may ask differently)."""
        return target.provider.stream_chat(replace(self.parsed.request, model=target.upstream),
                                           ctx)

    def _complete_on(self, target: Deployment, ctx: CallContext) -> Awaitable[list[Chunk]]:
        """The non-streamed upstream call on one target."""
        return target.provider.complete_chat(
            replace(self.parsed.request, model=target.upstream), ctx)

    def _dropped(self, deployment: Deployment) -> tuple[str, ...]:
        return dropped_params(deployment.provider,
                              replace(self.parsed.request, model=deployment.upstream))

    async def relay(self) -> AsyncIterator[Chunk]:
        """The chunks after the first. A provider error ends the call as failed and
        propagates (it can only travel inside the stream now)."""
        assert self._stream is not None
        try:
            async for chunk in self._stream:
                self._note(chunk)
                yield chunk
        except ProviderError as exc:
            self._fail(exc.message)
            if self.served is not None:
                self.svc.metrics.upstream_error(self.served.deployment.provider_name, exc)
                if breaker_failure(exc):
                    self.served.deployment.breaker.failure()
            raise
        except BaseException as exc:
            self._unexpected(exc)
            raise
        self._settle()

    def _note(self, chunk: Chunk) -> None:
        self.transcript.add(chunk)
        if self._kept is not None:
            self._kept.append(chunk)
        if self._ttft is None and isinstance(chunk, TextDelta | ReasoningDelta | ToolCallDelta):
            self._ttft = time.perf_counter() - self._t0

    def _count(self) -> Usage:
        """Upstream usage, or a tiktoken count marked as estimated (of what was produced,
        for a call that failed or was cancelled half-way)."""
        if self.transcript.usage is not None:
            return self.transcript.usage
        completion = sum(self.svc.tokens.text(t) for t in self.transcript.completion_texts())
        prompt = self.svc.tokens.messages(self.parsed.request.messages)
        return Usage(prompt_tokens=prompt, completion_tokens=completion, estimated=True)

    async def _release(self) -> None:
        if self._stream is not None:
            try:
                await self._stream.aclose()  # type: ignore[attr-defined]
            except Exception:
                pass
        if self._sse:
            self.svc.metrics.streams.dec()

    def _first_token_seconds(self) -> float | None:
        return self._ttft if self._stream is not None and self._cached is None else None

    async def finish(self) -> None:
        """``Call.finish``; then a miss that completed keeps its answer in the cache. Not
        before: a failed, cancelled or cut-off answer is never kept."""
        if self._finished:
            return
        await super().finish()
        if (self._kept is not None and self._status == "completed"
                and self._cache is not None and self._slot is not None):
            await self._cache.put(self._slot, CachedAnswer(
                self._kept, provider=self.record.provider,
                upstream=self.record.upstream_model))

    def _describe(self, record: CallRecord) -> None:
        transcript = self.transcript
        record.response = transcript.text()
        record.tool_calls = transcript.tool_calls() or None
        record.finish_reason = transcript.finish_reason()


async def _replay(chunks: list[Chunk]) -> AsyncIterator[Chunk]:
    """A cached answer's chunks as the stream a live upstream would have been."""
    for chunk in chunks:
        yield chunk


__all__ = ["ATTEMPTS_HEADER", "DROPPED_PARAMS_HEADER", "SERVED_BY_HEADER", "APIError",
           "CallServices", "ChatCall", "prompt_text"]
