"""The legacy job worker: runs pending ``/inference`` jobs inside every gateway process.

One dispatcher task claims jobs from the database while fewer than ``job_workers`` run
here; each job runs as its own task through :class:`ChatCall` (the same admission,
provider stream and release as ``/v1``), with a heartbeat that renews its lease and
stores progress. Submissions in this process wake the dispatcher at once; jobs submitted
elsewhere are found by polling.

Nothing is lost, and nothing is called twice without need. When the server's shutdown
signal arrives this process stops claiming at once; running jobs get the same grace
period as open streams (``shutdown_grace_seconds``, counted from the signal) to finish.
Only those still running after it are interrupted and go back to ``pending`` with the
attempt counted, since their upstream was called. A job of a crashed process is claimed
again once its lease expires; either way a job fails for good after ``job_max_attempts``.
A job refused by the rate limiter goes back to ``pending`` uncounted and this process
skips that user until the retry-after passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any

from gateway.auth.principal import Principal, principal_from_rows
from gateway.catalog import ModelCatalog
from gateway.chat.call import CallServices, ChatCall
from gateway.chat.request import parse_chat
from gateway.errors import APIError
from gateway.shutdown import ShutdownSignals
from providers.errors import (
    ProviderError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from storage.jobs import Job, JobStore
from storage.records import CallRecord

log = logging.getLogger("gateway.jobs")

POLL_SECONDS = 0.5
# After the grace period: how long interrupted jobs get to close their calls and be put
# back. Past it their leases expire and another process takes them over.
SETTLE_SECONDS = 5.0
TRANSIENT = (UpstreamRateLimited, UpstreamTimeout, UpstreamUnavailable)


@dataclass(slots=True)
class Outcome:
    """How one attempt ended. ``busy``: the limiter refused it; nothing was called."""

    status: str  # completed | failed | cancelled | busy
    row: CallRecord | None = None  # ChatCall's final record, when a call was made
    error: str | None = None
    transient: bool = False
    retry_after: float | None = None

    @classmethod
    def of(cls, run: Running, *, transient: bool = False,
           retry_after: float | None = None) -> Outcome:
        """The outcome the call itself recorded (its status, its error)."""
        assert run.row is not None
        return cls(run.row.status, run.row, run.row.error, transient, retry_after)

    def values(self) -> dict[str, Any]:
        """What the final write stores."""
        if self.row is not None:
            return {**self.row.values(), "status": self.status}
        return {"status": self.status, "error": self.error}


class Running:
    """A job held by this process: its task, its call, and why it was stopped (if it was)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.call: ChatCall | None = None
        self.row: CallRecord | None = None
        self.task: asyncio.Task[Any] | None = None
        self.stop_reason: str | None = None  # cancelled | shutdown | lost
        self.called = False  # the upstream was called: an interrupted attempt counts

    async def capture(self, record: CallRecord) -> None:
        """ChatCall's ``store``: keep the record; the worker writes it, fenced, afterwards."""
        self.row = record

    def stop(self, reason: str) -> None:
        """Stop the running attempt once; the first reason wins."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        if self.task is not None and not self.task.done():
            self.task.cancel()


def _retry_after(headers: dict[str, str]) -> float:
    try:
        return int(headers["retry-after-ms"]) / 1000
    except (KeyError, ValueError):
        return 1.0


class JobRunner:
    """Owns the dispatcher and the running jobs of this process."""

    def __init__(self, store: JobStore, services: CallServices, catalog: ModelCatalog, *,
                 workers: int, lease_seconds: float, max_attempts: int) -> None:
        self.store = store
        self._services = services
        self._catalog = catalog
        self._workers = workers
        self._lease = lease_seconds
        self._tick = min(1.0, lease_seconds / 3)
        self._max_attempts = max_attempts
        self.owner = f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._wake = asyncio.Event()
        self._running: dict[uuid.UUID, Running] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._backoff: dict[uuid.UUID, float] = {}  # user → monotonic time to retry
        self._dispatcher: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(max(workers, 1))
        self._stopping = False
        self._claiming = False
        self._shutdown_at: float | None = None  # monotonic time the shutdown began
        self._signals = ShutdownSignals(self.begin_shutdown)

    # -- used by the routes ------------------------------------------------------------

    def wake(self) -> None:
        """A job was submitted here: look for work now rather than at the next poll."""
        self._wake.set()

    def progress(self, job_id: uuid.UUID) -> int | None:
        """Completion tokens so far of a job running in this process."""
        run = self._running.get(job_id)
        if run is None or run.call is None:
            return None
        return self._services.tokens.text(run.call.transcript.text())

    def stop_local(self, job_id: uuid.UUID, reason: str = "cancelled") -> None:
        """Stop a job now if it runs in this process (cancel, delete)."""
        run = self._running.get(job_id)
        if run is not None:
            run.stop(reason)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start claiming; from now on the server's shutdown signal stops the claiming."""
        if self._workers > 0 and self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch(), name="job-dispatcher")
            self._signals.install()

    def begin_shutdown(self) -> None:
        """Stop claiming now; the grace period of running jobs counts from the first call."""
        if self._shutdown_at is None:
            self._shutdown_at = time.monotonic()
            if self._dispatcher is not None:
                log.info("shutting down: no new jobs are claimed; %d running",
                         len(self._running))
        self._stopping = True
        self._wake.set()

    async def stop(self, grace_seconds: float) -> None:
        """Let running jobs finish until ``grace_seconds`` after the shutdown began; then
        interrupt the rest and put them back to ``pending``, the attempt counted.

        Without a signal (an embedded server told to exit) the shutdown begins here.
        """
        self.begin_shutdown()
        self._signals.remove()
        if self._dispatcher is not None:
            if not self._claiming:  # mid-claim it hands the job back and ends by itself
                self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        assert self._shutdown_at is not None
        remaining = grace_seconds - (time.monotonic() - self._shutdown_at)
        if self._tasks and remaining > 0:
            await asyncio.wait(set(self._tasks), timeout=remaining)
        if self._running:
            log.warning("%d job(s) still running after the %g s grace period: "
                        "interrupted, they are retried", len(self._running), grace_seconds)
        for run in list(self._running.values()):
            run.stop("shutdown")
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=SETTLE_SECONDS)
            for task in late:  # their leases expire and another process takes them over
                task.cancel()

    async def _dispatch(self) -> None:
        while not self._stopping:
            await self._slots.acquire()
            if self._stopping:
                self._slots.release()
                return
            self._claiming = True  # until the job is registered or handed back
            try:
                job = await self._claim()
                if job is not None and self._stopping:
                    await self._hand_back(job)  # the shutdown began during the claim
                    self._slots.release()
                    return
            finally:
                self._claiming = False
            if job is None:
                self._slots.release()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
                self._wake.clear()
                continue
            # Registered before the task starts, so a shutdown now still finds it.
            run = self._running[job.id] = Running(job)
            task = asyncio.create_task(self._process(run), name=f"job-{job.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _claim(self) -> Job | None:
        try:
            return await self.store.claim(self.owner, self._lease, self._skipped_users())
        except Exception:
            log.exception("claiming a job failed")
            return None

    async def _hand_back(self, job: Job) -> None:
        """Return a job claimed but not started, uncounted; if that fails too, its lease
        expires and another process takes it."""
        try:
            await self.store.requeue(job.id, self.owner, count_attempt=False)
        except Exception:
            log.exception("job %s: handing it back at shutdown failed", job.id)

    def _skipped_users(self) -> list[uuid.UUID]:
        now = time.monotonic()
        for user, until in list(self._backoff.items()):
            if until <= now:
                del self._backoff[user]
        return list(self._backoff)

    # -- one job -----------------------------------------------------------------------

    async def _process(self, run: Running) -> None:
        job = run.job
        try:
            if job.attempts > self._max_attempts:
                await self._finish(run, Outcome(
                    "failed", error=f"Gave up after {self._max_attempts} attempts: the "
                    "gateway process running this job stopped before it finished."),
                    attempts=self._max_attempts)
                return
            outcome = await self._guarded(run, self._attempt(run))
            await self._settle(run, outcome)
        except Exception:
            log.exception("job %s: unexpected error; its lease will expire and it is retried",
                          job.id)
        finally:
            self._running.pop(job.id, None)
            self._slots.release()
            self._wake.set()

    async def _settle(self, run: Running, outcome: Outcome) -> None:
        """Write what the attempt came to: done, back to pending, or nothing (lease lost)."""
        job, reason = run.job, run.stop_reason
        if reason == "lost":
            log.info("job %s: lease lost (deleted, or taken over); result discarded", job.id)
            return
        if outcome.status == "busy":
            self._backoff[job.user_id] = time.monotonic() + min(max(
                outcome.retry_after or 1.0, 0.1), 30.0)
            requeued = await self.store.requeue(job.id, self.owner, count_attempt=False)
        elif reason == "shutdown" and outcome.status == "cancelled":
            # Interrupted after the grace period. Once the upstream was called the attempt
            # counts, so a job that keeps outliving shutdowns ends after max_attempts.
            requeued = await self.store.requeue(
                job.id, self.owner, count_attempt=run.called,
                note=(f"Attempt {job.attempts} was interrupted by a shutdown; retrying."
                      if run.called else None))
        elif (outcome.transient and reason in (None, "shutdown")
              and job.attempts < self._max_attempts):
            delay = outcome.retry_after or float(2 ** (job.attempts - 1))
            self._backoff[job.user_id] = time.monotonic() + min(delay, 30.0)
            requeued = await self.store.requeue(
                job.id, self.owner, count_attempt=True,
                note=f"Attempt {job.attempts} failed ({outcome.error}); retrying.")
        else:
            await self._finish(run, outcome)
            return
        if not requeued:  # the user cancelled it meanwhile: record that, and what was produced
            error = "Cancelled by the user."
            row = None if outcome.row is None else replace(outcome.row, error=error)
            # An attempt that never called the upstream (the limiter held it back) is not one.
            await self._finish(run, Outcome("cancelled", row, error),
                               attempts=None if run.called else job.attempts - 1)

    async def _finish(self, run: Running, outcome: Outcome, attempts: int | None = None) -> None:
        self._backoff.pop(run.job.user_id, None)  # a slot of this user may be free now
        stored = await self.store.finish(run.job, self.owner, outcome.values(),
                                         attempts=attempts)
        if stored is None:
            log.warning("job %s: final write fenced off (no longer ours); result discarded",
                        run.job.id)

    async def _guarded(self, run: Running, coro: Coroutine[Any, Any, Outcome]) -> Outcome:
        """Run an attempt while renewing the lease; stop it if the lease is lost."""
        task = asyncio.create_task(coro)
        run.task = task
        if run.stop_reason is not None:
            task.cancel()
        while True:
            try:
                done, _ = await asyncio.wait({task}, timeout=self._tick)
            except asyncio.CancelledError:  # shutdown ran out of patience
                task.cancel()
                raise
            if done:
                return task.result()
            if run.stop_reason is not None:
                continue
            tokens = self.progress(run.job.id) or 0
            try:
                state = await self.store.heartbeat(run.job.id, self.owner, self._lease, tokens)
            except Exception:
                log.exception("job %s: renewing the lease failed", run.job.id)
                continue
            if state != "ok":
                run.stop(state)

    async def _principal(self, job: Job) -> Principal:
        owner = await self.store.owner(job.user_id, job.api_key_id)
        if owner is None or owner.user.status != "active":
            raise APIError(403, "The account that submitted this job is not active.")
        via = "api_key" if owner.key else "jwt"
        return principal_from_rows(owner.user, owner.plan, via, owner.key)

    async def _attempt(self, run: Running) -> Outcome:
        """One try: admission, the provider stream to its end, and the call's final row."""
        job = run.job
        try:
            principal = await self._principal(job)
            route = self._catalog.resolve(job.model, principal)
            call = ChatCall(self._services, principal, route, parse_chat(job.body()),
                            source="legacy", request_id=job.request_id or f"job_{job.id.hex}",
                            row_id=job.id, store=run.capture)
        except APIError as exc:
            return Outcome("failed", error=exc.message)
        except asyncio.CancelledError:
            return Outcome("cancelled")
        run.call = call
        try:
            await call.admit()
        except APIError as exc:
            # A spent budget is not a busy moment: the job fails rather than waiting for
            # the period (maybe a month, or for ever) to end.
            if exc.status in (429, 503) and exc.code != "insufficient_quota":
                return Outcome("busy", retry_after=_retry_after(exc.headers))
            return Outcome("failed", error=exc.message)
        except asyncio.CancelledError:
            await call.finish()
            return Outcome.of(run)
        try:
            run.called = True
            await call.open()
            async for _ in call.relay():
                pass
        except ProviderError as exc:  # mid-stream
            await call.finish()
            return Outcome.of(run, transient=isinstance(exc, TRANSIENT),
                              retry_after=exc.retry_after)
        except APIError as exc:  # from open(), which already finished the call as failed
            cause = exc.__cause__
            if cause is None:  # every target paused by its breaker: try again after it
                return Outcome.of(run, transient=True, retry_after=_retry_after(exc.headers))
            return Outcome.of(run, transient=isinstance(cause, TRANSIENT),
                              retry_after=getattr(cause, "retry_after", None))
        except asyncio.CancelledError:
            await call.finish()
            return Outcome.of(run)
        except Exception:
            log.exception("job %s: the call failed unexpectedly", job.id)
            await call.finish()  # recorded as failed by the call itself
            return Outcome("failed", run.row, "The gateway hit an internal error.")
        await call.finish()
        return Outcome.of(run)
