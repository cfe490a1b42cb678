"""The limiter contract, run against every backend (memory, redis, sql-sqlite, sql-postgres)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from gateway.ratelimit import UNLIMITED, Decision, Limits

if TYPE_CHECKING:  # fixtures' types only; nothing is imported from conftest at run time
    from tests.ratelimit.conftest import FakeClock, LimiterFactory

WIDE = UNLIMITED


def limits(rpm: int = WIDE, tpm: int = WIDE, concurrent: int = WIDE) -> Limits:
    return Limits(requests_per_minute=rpm, tokens_per_minute=tpm, concurrent_requests=concurrent)


def allowed(decision: Decision) -> Decision:
    assert decision.allowed, decision
    assert decision.lease is not None and decision.limit_type is None
    return decision


async def test_requests_slide_without_boundary_burst(
    make_limiter: LimiterFactory, clock: FakeClock, subject: str
) -> None:
    limiter = await make_limiter(clock=clock)
    rpm = limits(rpm=3)
    for _ in range(3):  # at t = 0, 10, 20
        allowed(await limiter.acquire(subject, rpm, 0))
        clock.advance(10)
    clock.advance(29)  # t = 59
    d = await limiter.acquire(subject, rpm, 0)
    assert (d.allowed, d.limit_type, d.lease) == (False, "requests", None)
    assert d.retry_after == pytest.approx(1.0)
    assert d.requests.remaining == 0

    clock.advance(1.5)  # t = 60.5: only the call at t = 0 left the window
    d = allowed(await limiter.acquire(subject, rpm, 0))
    assert d.requests.remaining == 0
    assert d.requests.reset_seconds == pytest.approx(60.0)
    d = await limiter.acquire(subject, rpm, 0)
    assert d.limit_type == "requests"
    assert d.retry_after == pytest.approx(9.5)  # the call at t = 10 leaves at t = 70

    # Past the minute boundary a fixed window would allow 3 more; the sliding log does not.
    clock.advance(5)
    assert (await limiter.acquire(subject, rpm, 0)).limit_type == "requests"


async def test_tokens_reserved_then_settled_lower_and_higher(
    make_limiter: LimiterFactory, clock: FakeClock, subject: str
) -> None:
    limiter = await make_limiter(clock=clock)
    tpm = limits(tpm=1000)
    first = allowed(await limiter.acquire(subject, tpm, 600))
    assert first.tokens.remaining == 400
    assert first.lease is not None and first.lease.reserved_tokens == 600
    assert (await limiter.acquire(subject, tpm, 500)).limit_type == "tokens"

    await limiter.release(first.lease, 100)  # used less than estimated
    assert (await limiter.status(subject, tpm)).tokens.remaining == 900

    clock.advance(10)
    second = allowed(await limiter.acquire(subject, tpm, 500))
    assert second.tokens.remaining == 400
    assert second.lease is not None
    await limiter.release(second.lease, 800)  # used more than estimated
    assert (await limiter.status(subject, tpm)).tokens.remaining == 100

    d = await limiter.acquire(subject, tpm, 200)
    assert (d.allowed, d.limit_type) == (False, "tokens")
    assert d.tokens.remaining == 100
    assert d.retry_after == pytest.approx(50.0)  # the first call's 100 leave at t = 60
    clock.advance(50.5)
    allowed(await limiter.acquire(subject, tpm, 200))


async def test_request_larger_than_the_whole_limit_is_rejected_outright(
    make_limiter: LimiterFactory, clock: FakeClock, subject: str
) -> None:
    limiter = await make_limiter(clock=clock)
    d = await limiter.acquire(subject, limits(tpm=1000), 1001)
    assert (d.allowed, d.limit_type) == (False, "tokens")
    assert d.message and "too large" in d.message.lower() and "1000" in d.message
    status = await limiter.status(subject, limits(tpm=1000))
    assert (status.tokens.remaining, status.requests.remaining) == (1000, WIDE)


async def test_concurrency_slots_are_taken_and_released(
    make_limiter: LimiterFactory, clock: FakeClock, subject: str
) -> None:
    limiter = await make_limiter(clock=clock)
    two = limits(concurrent=2)
    a = allowed(await limiter.acquire(subject, two, 1))
    b = allowed(await limiter.acquire(subject, two, 1))
    assert (a.concurrent_in_use, b.concurrent_in_use, b.concurrent_limit) == (1, 2, 2)
    d = await limiter.acquire(subject, two, 1)
    assert (d.allowed, d.limit_type, d.concurrent_in_use) == (False, "concurrent", 2)
    assert 0 < d.retry_after <= 5

    assert a.lease is not None
    await limiter.release(a.lease, 1)
    assert (await limiter.status(subject, two)).concurrent_in_use == 1
    c = allowed(await limiter.acquire(subject, two, 1))
    assert c.concurrent_in_use == 2


async def test_release_is_idempotent(
    make_limiter: LimiterFactory, clock: FakeClock, subject: str
) -> None:
    limiter = await make_limiter(clock=clock)
    one = limits(tpm=1000, concurrent=1)
    first = allowed(await limiter.acquire(subject, one, 300))
    assert first.lease is not None
    await limiter.release(first.lease, 200)
    await limiter.release(first.lease, 200)
    status = await limiter.status(subject, one)
    assert (status.concurrent_in_use, status.tokens.remaining) == (0, 800)

    second = allowed(await limiter.acquire(subject, one, 100))
    await limiter.release(first.lease, 200)  # a late duplicate must not free `second`
    status = await limiter.status(subject, one)
    assert (status.concurrent_in_use, status.tokens.remaining) == (1, 700)
    assert (await limiter.acquire(subject, one, 1)).limit_type == "concurrent"
    assert second.lease is not None
    await limiter.release(second.lease, 100)


async def test_expired_leases_are_reclaimed_and_renew_extends_them(
    make_limiter: LimiterFactory, clock: FakeClock, subject: str
) -> None:
    limiter = await make_limiter(clock=clock, lease_seconds=10)
    one = limits(concurrent=1)
    leaked = allowed(await limiter.acquire(subject, one, 0))
    assert leaked.lease is not None
    clock.advance(5)
    assert (await limiter.acquire(subject, one, 0)).limit_type == "concurrent"
    await limiter.renew([leaked.lease])  # now held until t = 15
    clock.advance(7)  # t = 12: past the first lease, within the renewed one
    assert (await limiter.acquire(subject, one, 0)).limit_type == "concurrent"

    clock.advance(4)  # t = 16: the holder crashed; its slot goes to the next caller
    fresh = allowed(await limiter.acquire(subject, one, 0))
    await limiter.renew([leaked.lease])  # a reclaimed lease is not brought back
    await limiter.release(leaked.lease, 0)  # nor may it free the new holder's slot
    assert (await limiter.status(subject, one)).concurrent_in_use == 1
    assert fresh.lease is not None
    await limiter.release(fresh.lease, 0)
    assert (await limiter.status(subject, one)).concurrent_in_use == 0


async def test_usage_beyond_the_estimate_is_charged_when_a_call_outlives_the_window(
    make_limiter: LimiterFactory, clock: FakeClock, subject: str
) -> None:
    limiter = await make_limiter(clock=clock, lease_seconds=30)
    tpm = limits(tpm=1000)
    long_call = allowed(await limiter.acquire(subject, tpm, 100))
    assert long_call.lease is not None
    for _ in range(3):  # a 75 s stream that keeps renewing its lease
        clock.advance(25)
        await limiter.renew([long_call.lease])
    await limiter.release(long_call.lease, 400)
    await limiter.release(long_call.lease, 400)
    status = await limiter.status(subject, tpm)
    assert (status.tokens.remaining, status.requests.remaining) == (700, WIDE)


async def test_status_reports_without_consuming(
    make_limiter: LimiterFactory, clock: FakeClock, subject: str
) -> None:
    limiter = await make_limiter(clock=clock)
    plan = limits(rpm=5, tpm=1000, concurrent=3)
    empty = await limiter.status(subject, plan)
    assert (empty.requests.remaining, empty.tokens.remaining, empty.concurrent_in_use) == (
        5, 1000, 0)
    assert (empty.requests.reset_seconds, empty.tokens.reset_seconds) == (0, 0)

    allowed(await limiter.acquire(subject, plan, 250))
    clock.advance(15)
    for _ in range(3):
        status = await limiter.status(subject, plan)
        assert (status.requests.limit, status.requests.remaining) == (5, 4)
        assert (status.tokens.limit, status.tokens.remaining) == (1000, 750)
        assert (status.concurrent_limit, status.concurrent_in_use) == (3, 1)
        assert status.requests.reset_seconds == pytest.approx(45.0)
        assert status.tokens.reset_seconds == pytest.approx(45.0)
    d = allowed(await limiter.acquire(subject, plan, 250))
    assert (d.requests.remaining, d.tokens.remaining, d.concurrent_in_use) == (3, 500, 2)


async def test_rejections_consume_nothing(
    make_limiter: LimiterFactory, clock: FakeClock, subject: str
) -> None:
    limiter = await make_limiter(clock=clock)
    plan = limits(rpm=2, tpm=100, concurrent=2)
    allowed(await limiter.acquire(subject, plan, 60))
    for _ in range(5):
        d = await limiter.acquire(subject, plan, 50)
        assert (d.limit_type, d.requests.remaining, d.tokens.remaining) == ("tokens", 1, 40)
    allowed(await limiter.acquire(subject, plan, 40))
    status = await limiter.status(subject, plan)
    assert (status.requests.remaining, status.tokens.remaining, status.concurrent_in_use) == (
        0, 0, 2)


async def test_hit_limits_login_attempts_per_key(
    make_limiter: LimiterFactory, clock: FakeClock, subject: str
) -> None:
    limiter = await make_limiter(clock=clock)
    account, ip = f"login:acct:{subject}@example.com", f"login:ip:{subject}"
    for _ in range(3):
        assert await limiter.hit(account, 3, 300) == (True, 0.0)
        clock.advance(10)
    ok, retry = await limiter.hit(account, 3, 300)
    assert not ok and retry == pytest.approx(270.0)
    assert (await limiter.hit(ip, 3, 300))[0]  # another key has its own window
    clock.advance(270.5)
    assert (await limiter.hit(account, 3, 300))[0]
    assert not (await limiter.hit(account, 3, 300))[0]


async def test_real_clock_window(make_limiter: LimiterFactory, subject: str) -> None:
    limiter = await make_limiter(window_seconds=0.4)
    plan = limits(rpm=2)
    allowed(await limiter.acquire(subject, plan, 0))
    allowed(await limiter.acquire(subject, plan, 0))
    d = await limiter.acquire(subject, plan, 0)
    assert d.limit_type == "requests" and 0 < d.retry_after <= 0.4
    await asyncio.sleep(d.retry_after + 0.05)
    allowed(await limiter.acquire(subject, plan, 0))


@pytest.mark.parametrize("which", ["requests", "tokens", "concurrent"])
async def test_concurrent_acquires_admit_exactly_the_limit(
    make_limiter: LimiterFactory, subject: str, which: str
) -> None:
    limiter = await make_limiter()
    plan = {"requests": limits(rpm=10), "tokens": limits(tpm=100),
            "concurrent": limits(concurrent=10)}[which]
    decisions = await asyncio.gather(*(limiter.acquire(subject, plan, 10) for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 10
    assert {d.limit_type for d in decisions if not d.allowed} == {which}
    assert len({d.lease.slot_id for d in decisions if d.lease}) == 10
