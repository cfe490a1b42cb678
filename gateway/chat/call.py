"""One chat call from admission to the stored row: limiter, provider stream, record, release.

Both APIs use it: ``/v1/chat/completions`` and the legacy ``/inference`` jobs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import anyio

from gateway.auth.principal import Principal
from gateway.catalog import Target
from gateway.chat.request import ParsedChat
from gateway.chat.transcript import Transcript
from gateway.errors import APIError, from_provider, invalid
from gateway.limits import limits_for, rate_limit_headers, rejection
from gateway.ratelimit import LeaseRenewer
from gateway.ratelimit.base import Lease, RateLimiter
from gateway.tokens import TokenCounter
from providers.base import CallContext, ChatRequest, Chunk, TextDelta, ToolCallDelta, Usage
from providers.errors import ProviderError
from storage.models import utcnow
from storage.writer import RequestWriter


@dataclass(frozen=True, slots=True)
class CallServices:
    """The long-lived objects a call needs, built once in the lifespan."""

    limiter: RateLimiter
    leases: LeaseRenewer
    writer: RequestWriter
    tokens: TokenCounter
    default_max_tokens: int


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
    """Owns one upstream call. ``admit`` → ``open`` → iterate ``rest`` → ``close`` once."""

    def __init__(self, svc: CallServices, principal: Principal, target: Target,
                 parsed: ParsedChat, *, source: str, request_id: str,
                 row_id: uuid.UUID | None = None,
                 record: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> None:
        """``record`` stores the final row; by default it is queued for the writer (v1)."""
        if parsed.n > 1 and not target.provider.supports_n:
            raise invalid("n", f"'n' greater than 1 is not supported by model '{target.public}'")
        self.svc = svc
        self.principal = principal
        self.target = target
        self.parsed = parsed
        self.source = source
        self.request_id = request_id
        self.row_id = row_id or uuid.uuid4()
        self.transcript = Transcript()
        self.headers: dict[str, str] = {}
        self.created_at = utcnow()
        self._t0 = time.perf_counter()
        self._ttft: float | None = None
        self._lease: Lease | None = None
        self._stream: AsyncIterator[Chunk] | None = None
        self._closed = False
        self._estimate: Usage | None = None
        self._record = record

    async def admit(self) -> None:
        """Take a rate-limit decision; raise the 429 (with headers) when refused."""
        max_tokens = self.parsed.max_tokens or self.svc.default_max_tokens
        prompt = self.svc.tokens.estimate_messages(self.parsed.request.messages)
        estimate = prompt + max_tokens * self.parsed.n
        decision = await self.svc.limiter.acquire(self.principal.subject,
                                                  limits_for(self.principal), estimate)
        self.headers = rate_limit_headers(decision)
        if not decision.allowed:
            raise rejection(decision, self.headers)
        self._lease = decision.lease
        if self._lease is not None:
            self.svc.leases.hold(self._lease)
        if self._record is None:  # legacy jobs have rows (and leases) of their own
            self.svc.writer.begin({
                "id": self.row_id, "user_id": self.principal.user_id,
                "api_key_id": self.principal.api_key_id, "request_id": self.request_id,
                "source": self.source, "model": self.target.public,
                "provider": self.target.provider_name, "upstream_model": self.target.upstream,
                "prompt": prompt_text(self.parsed.request.messages),
                "created_at": self.created_at})

    def _upstream(self) -> tuple[ChatRequest, CallContext]:
        return (replace(self.parsed.request, model=self.target.upstream),
                CallContext(request_id=self.request_id, user_id=str(self.principal.user_id)))

    async def open(self) -> Chunk | None:
        """Start the upstream stream and wait for its first chunk (errors become HTTP errors)."""
        self._stream = self.target.provider.stream_chat(*self._upstream())
        try:
            chunk = await anext(self._stream)
        except StopAsyncIteration:
            return None
        except BaseException as exc:
            await self._abort(exc)
            raise
        self._note(chunk)
        return chunk

    async def complete(self) -> None:
        """The whole answer from one non-streamed upstream call (errors become HTTP errors).

        Cheaper than collecting a stream: one body, one parse, no per-event work.
        """
        try:
            chunks = await self.target.provider.complete_chat(*self._upstream())
        except BaseException as exc:
            await self._abort(exc)
            raise
        for chunk in chunks:
            self._note(chunk)

    async def _abort(self, exc: BaseException) -> None:
        """Close after a failure before any byte went out; a provider error becomes the
        HTTP error the caller gets."""
        if isinstance(exc, ProviderError):
            await self.close("failed", exc.message)
            raise from_provider(exc) from exc
        with anyio.CancelScope(shield=True):
            await self.close("cancelled")

    async def rest(self) -> AsyncIterator[Chunk]:
        """The chunks after the first; provider errors propagate to the caller."""
        assert self._stream is not None
        async for chunk in self._stream:
            self._note(chunk)
            yield chunk

    def _note(self, chunk: Chunk) -> None:
        self.transcript.add(chunk)
        if self._ttft is None and isinstance(chunk, TextDelta | ToolCallDelta):
            self._ttft = time.perf_counter() - self._t0

    def usage(self) -> Usage:
        """Upstream usage, or a tiktoken count marked as estimated; call once the stream
        has ended (the count is kept, so the response and ``close`` do not count twice)."""
        if self.transcript.usage is not None:
            return self.transcript.usage
        if self._estimate is None:
            completion = sum(self.svc.tokens.text(t)
                             for t in self.transcript.completion_texts())
            prompt = self.svc.tokens.messages(self.parsed.request.messages)
            self._estimate = Usage(prompt_tokens=prompt,
                                   completion_tokens=completion, estimated=True)
        return self._estimate

    async def close(self, status: str, error: str | None = None) -> None:
        """Close upstream, release the slot, settle tokens and queue the row; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._stream is not None:
            try:
                await self._stream.aclose()  # type: ignore[attr-defined]
            except Exception:
                pass
        usage = self.usage()
        if self._lease is not None:
            self.svc.leases.drop(self._lease)
            await self.svc.limiter.release(self._lease, usage.total_tokens)
        row = self.row(status, error, usage)
        if self._record is not None:
            await self._record(row)
        else:
            await self.svc.writer.submit_request(row)

    def row(self, status: str, error: str | None, usage: Usage) -> dict[str, Any]:
        now = utcnow()
        transcript = self.transcript
        req = self.parsed.request
        calls = transcript.tool_calls()
        return {
            "id": self.row_id, "user_id": self.principal.user_id,
            "api_key_id": self.principal.api_key_id, "request_id": self.request_id,
            "source": self.source, "model": self.target.public,
            "provider": self.target.provider_name, "upstream_model": self.target.upstream,
            "messages": req.messages, "parameters": {**req.params, **req.extra},
            "prompt": prompt_text(req.messages), "response": transcript.text(),
            "tool_calls": calls or None, "finish_reason": transcript.finish_reason(),
            "status": status, "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens, "total_tokens": usage.total_tokens,
            "tokens_estimated": usage.estimated,
            "processing_time_ms": round((time.perf_counter() - self._t0) * 1000),
            "time_to_first_token_ms": (round(self._ttft * 1000) if self._ttft is not None
                                       else None),
            "error": error, "attempts": 1, "created_at": self.created_at,
            "started_at": self.created_at, "completed_at": now, "updated_at": now,
        }


__all__ = ["APIError", "CallServices", "ChatCall", "prompt_text"]
