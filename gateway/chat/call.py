"""One chat call from admission to its stored record: admit → open → relay → finish.

Both APIs use it: ``/v1/chat/completions`` and the legacy ``/inference`` jobs. The call
owns its outcome: it alone decides the final status, counts usage once and hands storage a
``CallRecord``. The routes only turn its chunks and errors into their wire format.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import anyio

from gateway.auth.principal import Principal
from gateway.catalog import Route
from gateway.chat.request import ParsedChat
from gateway.chat.transcript import Transcript
from gateway.errors import APIError, from_provider, invalid
from gateway.limits import limits_for, rate_limit_headers, rejection
from gateway.metrics import Metrics
from gateway.observe import note_call, note_model
from gateway.ratelimit import LeaseRenewer
from gateway.ratelimit.base import Lease, RateLimiter
from gateway.resilience.balance import Deployment
from gateway.resilience.policy import breaker_failure
from gateway.resilience.router import Attempt, Router, Served
from gateway.tokens import TokenCounter
from providers.base import CallContext, Chunk, TextDelta, ToolCallDelta, Usage
from providers.errors import ProviderError
from storage.models import utcnow
from storage.records import CallRecord
from storage.writer import RequestWriter

T = TypeVar("T")

ATTEMPTS_HEADER = "x-gateway-attempts"
SERVED_BY_HEADER = "x-gateway-served-by"


@dataclass(frozen=True, slots=True)
class CallServices:
    """The long-lived objects a call needs, built once in the lifespan."""

    limiter: RateLimiter
    leases: LeaseRenewer
    writer: RequestWriter
    tokens: TokenCounter
    router: Router
    default_max_tokens: int
    metrics: Metrics


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


class ChatCall:
    """Owns one call: ``admit``, then ``open`` and ``relay`` (a stream) or ``complete``,
    then ``finish`` once, whatever happened. ``headers`` go on the answer."""

    def __init__(self, svc: CallServices, principal: Principal, route: Route,
                 parsed: ParsedChat, *, source: str, request_id: str,
                 row_id: uuid.UUID | None = None,
                 store: Callable[[CallRecord], Awaitable[None]] | None = None) -> None:
        """``store`` takes the finished record; by default it is queued for the writer (v1).
        Legacy jobs store theirs themselves, fenced by their lease."""
        note_model(route.public)
        if parsed.n > 1 and not route.supports_n:
            raise invalid("n", f"'n' greater than 1 is not supported by model '{route.public}'")
        self.svc = svc
        self.principal = principal
        self.route = route
        self.parsed = parsed
        self.transcript = Transcript()
        self.headers: dict[str, str] = {}
        self.attempts: list[Attempt] = []
        self.served: Served | None = None
        self.usage: Usage | None = None  # set once, when the answer is complete or the call ends
        first = route.targets[0][0]
        req = parsed.request
        self.record = CallRecord(
            id=row_id or uuid.uuid4(), user_id=principal.user_id,
            api_key_id=principal.api_key_id, request_id=request_id, source=source,
            model=parsed.model, provider=first.provider_name, upstream_model=first.upstream,
            prompt=prompt_text(req.messages), created_at=utcnow(), messages=req.messages,
            parameters={**req.params, **req.extra})
        self._t0 = time.perf_counter()
        self._deadline = time.monotonic() + route.timeout
        self._ttft: float | None = None
        self._lease: Lease | None = None
        self._stream: AsyncIterator[Chunk] | None = None
        self._status = "cancelled"  # until the call knows better: a client that left
        self._error: str | None = None
        self._finished = False
        self._store = store
        self._sse = False  # an SSE answer in progress, in gateway_streams_in_flight

    @property
    def model(self) -> str:
        """The model the answer names: the one asked for, or the fallback that answered."""
        if self.served is None or self.served.route is self.route:
            return self.parsed.model
        return self.served.route.public

    async def admit(self) -> None:
        """Take a rate-limit decision; raise the 429 (with headers) when refused."""
        max_tokens = self.parsed.max_tokens or self.svc.default_max_tokens
        prompt = self.svc.tokens.estimate_messages(self.parsed.request.messages)
        estimate = prompt + max_tokens * self.parsed.n
        decision = await self.svc.limiter.acquire(self.principal.subject,
                                                  limits_for(self.principal), estimate)
        self.headers = rate_limit_headers(decision)
        if not decision.allowed:
            self.svc.metrics.rate_limit(decision.limit_type)
            raise rejection(decision, self.headers)
        self._lease = decision.lease
        if self._lease is not None:
            self.svc.leases.hold(self._lease)
        if self._store is None:  # legacy jobs have rows (and leases) of their own
            self.svc.writer.begin(self.record)

    def _context(self) -> CallContext:
        return CallContext(request_id=self.record.request_id or "",
                           user_id=str(self.principal.user_id), deadline=self._deadline)

    async def open(self) -> Chunk | None:
        """Route the call until an upstream stream yields its first chunk (None if it
        ended without one). Failures become the HTTP error the caller gets."""
        ctx = self._context()
        if self._store is None:  # v1: an SSE answer (a legacy job streams to its row)
            self._sse = True
            self.svc.metrics.streams.inc()

        async def first_chunk(target: Deployment) -> tuple[AsyncIterator[Chunk], Chunk | None]:
            stream = target.provider.stream_chat(
                replace(self.parsed.request, model=target.upstream), ctx)
            try:
                return stream, await anext(stream)
            except StopAsyncIteration:
                return stream, None

        self._stream, first = await self._route(first_chunk)
        if first is None:
            self._settle()  # an empty answer, but a whole one
        else:
            self._note(first)
        return first

    async def complete(self) -> None:
        """The whole answer from one non-streamed upstream call, routed like ``open``.

        Cheaper than collecting a stream: one body, one parse, no per-event work.
        """
        ctx = self._context()
        chunks = await self._route(lambda target: target.provider.complete_chat(
            replace(self.parsed.request, model=target.upstream), ctx))
        for chunk in chunks:
            self._note(chunk)
        self._settle()

    async def _route(self, call: Callable[[Deployment], Awaitable[T]]) -> T:
        try:
            answer, self.served = await self.svc.router.run(
                self.route, self.principal, call, self.attempts, deadline=self._deadline,
                needs_n=self.parsed.n > 1)
        except ProviderError as exc:
            cause: BaseException | None = exc
            error = from_provider(exc)
        except APIError as exc:  # every target paused by its breaker
            cause, error = None, exc
        except BaseException as exc:  # the client left (cancelled), or a bug (failed)
            self._unexpected(exc)
            with anyio.CancelScope(shield=True):
                await self.finish()
            raise
        else:
            deployment = self.served.deployment
            self.headers[ATTEMPTS_HEADER] = str(len(self.attempts))
            self.headers[SERVED_BY_HEADER] = deployment.name
            self.record.provider = deployment.provider_name
            self.record.upstream_model = deployment.upstream
            return answer
        self.headers[ATTEMPTS_HEADER] = str(len(self.attempts))
        if self.attempts:  # the target tried last is the one the row names
            tried = self.attempts[-1].target
            self.record.provider, self.record.upstream_model = tried.provider_name, tried.upstream
        error.headers = {**self.headers, **error.headers}
        self._fail(error.message)
        await self.finish()
        raise error from cause

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

    def error(self, exc: ProviderError) -> APIError:
        """A provider error as the caller sees it, in the answer or inside the stream."""
        return from_provider(exc, self.headers)

    def _fail(self, message: str) -> None:
        self._status, self._error = "failed", message

    def _unexpected(self, exc: BaseException) -> None:
        """A cancellation leaves the call cancelled; anything else is the gateway's own
        failure (a bug, in a provider plugin or here), stored as such."""
        if not isinstance(exc, anyio.get_cancelled_exc_class() | GeneratorExit):
            self._fail(f"internal error: {type(exc).__name__}")

    def _note(self, chunk: Chunk) -> None:
        self.transcript.add(chunk)
        if self._ttft is None and isinstance(chunk, TextDelta | ToolCallDelta):
            self._ttft = time.perf_counter() - self._t0

    def _settle(self) -> None:
        """The answer is complete: the call succeeded, with its usage counted once."""
        self._status = "completed"
        self.usage = self._count()

    def _count(self) -> Usage:
        """Upstream usage, or a tiktoken count marked as estimated (of what was produced,
        for a call that failed or was cancelled half-way)."""
        if self.transcript.usage is not None:
            return self.transcript.usage
        completion = sum(self.svc.tokens.text(t) for t in self.transcript.completion_texts())
        prompt = self.svc.tokens.messages(self.parsed.request.messages)
        return Usage(prompt_tokens=prompt, completion_tokens=completion, estimated=True)

    async def finish(self) -> None:
        """Close upstream, release the slot, settle tokens and store the record; once."""
        if self._finished:
            return
        self._finished = True
        if self._stream is not None:
            try:
                await self._stream.aclose()  # type: ignore[attr-defined]
            except Exception:
                pass
        if self.served is not None:
            self.served.deployment.in_flight -= 1
        if self.usage is None:
            self.usage = self._count()
        usage = self.usage
        # Counted once, at the end: nothing per streamed event.
        self.svc.metrics.call(self.model, usage,
                              self._ttft if self._stream is not None else None)
        if self._sse:
            self.svc.metrics.streams.dec()
        if self._lease is not None:
            self.svc.leases.drop(self._lease)
            await self.svc.limiter.release(self._lease, usage.total_tokens)
        record = self._complete_record(usage)
        note_call(record)
        if self._store is not None:
            await self._store(record)
        else:
            await self.svc.writer.submit_request(record)

    def _complete_record(self, usage: Usage) -> CallRecord:
        now = utcnow()
        transcript = self.transcript
        record = self.record
        record.response = transcript.text()
        record.tool_calls = transcript.tool_calls() or None
        record.finish_reason = transcript.finish_reason()
        record.status = self._status
        record.error = self._error
        record.prompt_tokens = usage.prompt_tokens
        record.completion_tokens = usage.completion_tokens
        record.total_tokens = usage.total_tokens
        record.tokens_estimated = usage.estimated
        record.processing_time_ms = round((time.perf_counter() - self._t0) * 1000)
        record.time_to_first_token_ms = (round(self._ttft * 1000) if self._ttft is not None
                                         else None)
        record.attempts = len(self.attempts)
        record.served_by = (self.served.deployment.name if self.served is not None else None)
        record.upstream_attempts = [a.view() for a in self.attempts]
        record.started_at = record.created_at
        record.completed_at = record.updated_at = now
        return record


__all__ = ["APIError", "CallServices", "ChatCall", "prompt_text"]
