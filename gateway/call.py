"""One upstream call from admission to its stored record, whatever the API: admit →
route → finish.

``Call`` owns a call's outcome: it alone decides the final status, counts usage once,
settles the limiter and hands storage a ``CallRecord``. What differs between kinds of call
(a chat completion in gateway/chat/call.py, an embedding in gateway/embeddings/call.py) is
how the tokens are estimated at admission and counted at the end, and what the record
says of the answer: the subclass's hooks.
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from gateway.auth.principal import Principal
from gateway.budgets import budgets_for
from gateway.budgets import refusal as budget_refusal
from gateway.catalog import Route
from gateway.errors import APIError, from_provider, limiter_unavailable, retry_headers
from gateway.limits import limits_for, rate_limit_headers, rejection
from gateway.metrics import Metrics
from gateway.observe import note_call, note_model
from gateway.pricing import PriceTable
from gateway.ratelimit import LeaseRenewer
from gateway.ratelimit.base import UNAVAILABLE_RETRY_AFTER, Lease, RateLimiter
from gateway.ratelimit.spend import Charge, SpendLedger, to_nano
from gateway.resilience.balance import Deployment
from gateway.resilience.router import Attempt, Router, Served
from gateway.tokens import TokenCounter
from providers.base import CallContext, Usage
from providers.errors import ProviderError
from storage.models import utcnow
from storage.records import CallRecord
from storage.writer import RequestWriter

T = TypeVar("T")

ATTEMPTS_HEADER = "x-gateway-attempts"
SERVED_BY_HEADER = "x-gateway-served-by"
# The request's parameters the provider that answered neither sent nor emulated,
# comma-separated (providers.base.dropped_params); absent when none were.
DROPPED_PARAMS_HEADER = "x-gateway-dropped-params"


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
    prices: PriceTable
    budgets: SpendLedger


class Call(ABC):
    """``admit``, then the subclass's routed upstream call, then ``finish`` once, whatever
    happened. ``headers`` go on the answer. ``store`` takes the finished record; by default
    it is queued for the writer (legacy jobs store theirs themselves, fenced by their
    lease)."""

    def __init__(self, svc: CallServices, principal: Principal, route: Route,
                 record: CallRecord, *,
                 store: Callable[[CallRecord], Awaitable[None]] | None = None) -> None:
        note_model(route.public)
        self.svc = svc
        self.principal = principal
        self.route = route
        self.record = record
        self.headers: dict[str, str] = {}
        self.attempts: list[Attempt] = []
        self.served: Served | None = None
        self.usage: Usage | None = None  # set once, when the answer is complete or the call ends
        self._t0 = time.perf_counter()
        self._deadline = time.monotonic() + route.timeout
        self._ttft: float | None = None
        self._lease: Lease | None = None
        self._charges: tuple[Charge, ...] = ()  # the budgets this call's cost goes to
        self._status = "cancelled"  # until the call knows better: a client that left
        self._error: str | None = None
        self._finished = False
        self._store = store

    # -- what a kind of call says ---------------------------------------------------------

    @abstractmethod
    def _estimate(self) -> int:
        """The tokens to reserve against the plan at admission (quick, on the safe side)."""

    @abstractmethod
    def _count(self) -> Usage:
        """The call's usage when it ends: the upstream's, or an estimate of what was done."""

    async def _release(self) -> None:  # noqa: B027 (optional hook: most hold nothing)
        """Let go of what the kind of call holds (an upstream stream), at ``finish``."""

    def _first_token_seconds(self) -> float | None:
        """The time to first token the metrics get (streamed calls only)."""
        return None

    def _dropped(self, deployment: Deployment) -> tuple[str, ...]:
        """The request's parameters ``deployment`` (the one that answered) dropped."""
        return ()

    def _describe(self, record: CallRecord) -> None:  # noqa: B027 (optional hook)
        """Put what the answer was into the finished ``record`` (an embedding says no more
        than its usage)."""

    # -- the lifecycle --------------------------------------------------------------------

    @property
    def model(self) -> str:
        """The model the answer names: the one asked for, or the fallback that answered."""
        if self.served is None or self.served.route is self.route:
            return self.record.model
        return self.served.route.public

    async def admit(self) -> None:
        """Check the budgets, then take a rate-limit decision; raise the 429 (with headers)
        when refused. A hit of the response cache costs nothing: no budget holds it back."""
        budgets = () if self.record.cached else budgets_for(self.principal)
        if budgets:
            # Read-only and first: a refusal here holds nothing that would need undoing.
            check = await self.svc.budgets.check(budgets)
            if check.unavailable:
                raise limiter_unavailable(retry_headers(UNAVAILABLE_RETRY_AFTER))
            if check.refused is not None:
                self.svc.metrics.rate_limit("budget")
                raise budget_refusal(check.refused, check.at or utcnow())
            self._charges = check.charges
        decision = await self.svc.limiter.acquire(self.principal.subject,
                                                  limits_for(self.principal), self._estimate())
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

    async def _route(self, call: Callable[[Deployment], Awaitable[T]], *,
                     needs_n: bool = False, needs: str | None = None) -> T:
        """``call`` the route's deployments through the router until one answers.
        Failures finish the call and become the HTTP error the caller gets."""
        try:
            answer, self.served = await self.svc.router.run(
                self.route, self.principal, call, self.attempts, deadline=self._deadline,
                needs_n=needs_n, needs=needs)
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
            # The target that answered decides: a fallback to another dialect drops others.
            if dropped := self._dropped(deployment):
                self.headers[DROPPED_PARAMS_HEADER] = ",".join(dropped)
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

    def error(self, exc: ProviderError) -> APIError:
        """A provider error as the caller sees it, in the answer or inside a stream."""
        return from_provider(exc, self.headers)

    def _fail(self, message: str) -> None:
        self._status, self._error = "failed", message

    def _unexpected(self, exc: BaseException) -> None:
        """A cancellation leaves the call cancelled; anything else is the gateway's own
        failure (a bug, in a provider plugin or here), stored as such."""
        if not isinstance(exc, anyio.get_cancelled_exc_class() | GeneratorExit):
            self._fail(f"internal error: {type(exc).__name__}")

    def _settle(self) -> None:
        """The answer is complete: the call succeeded, with its usage counted once."""
        self._status = "completed"
        self.usage = self._count()

    async def finish(self) -> None:
        """Close upstream, release the slot, settle tokens and store the record; once."""
        if self._finished:
            return
        self._finished = True
        await self._release()
        if self.served is not None:
            self.served.deployment.in_flight -= 1
        if self.usage is None:
            self.usage = self._count()
        usage = self.usage
        # No upstream answered (every target refused, the client left first, or a hit of
        # the response cache): nothing was billed, so no estimate is priced either.
        billed = self.served is not None and not self.record.cached
        self.record.cost_usd = self.svc.prices.cost(self.model, usage) if billed else 0.0
        # Counted once, at the end: nothing per streamed event. A cached answer used no
        # model: no tokens in the metrics nor against the plan.
        if not self.record.cached:
            self.svc.metrics.call(self.model, usage, self._first_token_seconds())
        if self._charges and self.record.cost_usd > 0:
            # Settled before the answer's last bytes: the caller's next call sees it.
            await self.svc.budgets.settle(self._charges, to_nano(self.record.cost_usd))
        if self._lease is not None:
            self.svc.leases.drop(self._lease)
            await self.svc.limiter.release(self._lease,
                                           0 if self.record.cached else usage.total_tokens)
        record = self._complete_record(usage)
        note_call(record)
        if self._store is not None:
            await self._store(record)
        else:
            await self.svc.writer.submit_request(record)

    def _complete_record(self, usage: Usage) -> CallRecord:
        now = utcnow()
        record = self.record
        self._describe(record)
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


def new_record(principal: Principal, route: Route, *, model: str, source: str,
               request_id: str, prompt: str, row_id: uuid.UUID | None = None,
               **fields: object) -> CallRecord:
    """A call's record as known at admission; the first target names the provider until
    one answers."""
    first = route.targets[0][0]
    return CallRecord(
        id=row_id or uuid.uuid4(), user_id=principal.user_id,
        api_key_id=principal.api_key_id, request_id=request_id, source=source,
        model=model, provider=first.provider_name, upstream_model=first.upstream,
        prompt=prompt, created_at=utcnow(), **fields)  # type: ignore[arg-type]
