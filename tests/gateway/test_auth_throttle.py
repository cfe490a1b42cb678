"""AuthThrottle on each real limiter backend (memory, Redis, PostgreSQL): what counts, who
is refused, how long an account is slowed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.auth.throttle import AuthThrottle
from gateway.errors import APIError
from gateway.ratelimit import RateLimiter, build_limiter
from storage.engine import build_engine
from storage.migrate import upgrade
from tests.conftest import REDIS_URL, postgres_database, run_sync, skip_or_fail


@pytest.fixture(params=["memory", "redis", "sql"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    engine = None
    if request.param == "memory":
        built = build_limiter("memory")
    elif request.param == "redis":
        if not REDIS_URL:
            skip_or_fail("Redis not available: set GATEWAY_TEST_REDIS_URL")
        built = build_limiter("redis", redis_url=REDIS_URL)
    else:
        url = postgres_database("throttle")
        run_sync(upgrade, url)
        engine = build_engine(url)
        built = build_limiter("sql", engine=engine)
    yield built
    await built.aclose()
    if engine is not None:
        await engine.dispose()


class Sleeps:
    """Stands in for asyncio.sleep: records each requested delay, returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def throttle(limiter: RateLimiter, sleeps: Sleeps | None = None, **overrides: float
             ) -> AuthThrottle:
    values = {"attempts_per_ip": 1000, "failures_per_address": 1000,
              "failures_per_account": 1000, "window_seconds": 60, "max_delay": 8.0,
              "registrations_per_ip": 1000, "registration_window_seconds": 60}
    values.update(overrides)
    return AuthThrottle(limiter, sleep=sleeps or Sleeps(), **values)  # type: ignore[arg-type]


def fresh() -> tuple[str, str, str]:
    """An email and two addresses no other test (or earlier run on Redis) has used."""
    tag = uuid.uuid4().hex[:8]
    return f"{tag}@example.com", f"10.1.{tag}", f"10.2.{tag}"


async def test_failures_refuse_only_that_address_for_that_account(limiter: RateLimiter
                                                                  ) -> None:
    auth = throttle(limiter, failures_per_address=3)
    email, a, b = fresh()
    for _ in range(3):
        await auth.admit_login(email, a)
        await auth.login_failed(email, a)
    with pytest.raises(APIError) as refused:
        await auth.admit_login(email, a)
    assert refused.value.status == 429 and refused.value.code == "too_many_login_attempts"
    assert 1 <= int(refused.value.headers["retry-after"]) <= 60
    assert 0 < int(refused.value.headers["retry-after-ms"]) <= 60_000
    assert await auth.admit_login(email, b) == 0.0  # the owner's address
    assert await auth.admit_login("other-" + email, a) == 0.0  # another account


async def test_only_failures_count_not_attempts(limiter: RateLimiter) -> None:
    auth = throttle(limiter, failures_per_address=3, failures_per_account=3)
    email, a, _ = fresh()
    for _ in range(20):  # successful logins: admitted, never counted
        assert await auth.admit_login(email, a) == 0.0
    await auth.login_failed(email, a)
    await auth.login_failed(email, a)
    assert await auth.admit_login(email, a) == 0.0
    await auth.login_failed(email, a)
    with pytest.raises(APIError):
        await auth.admit_login(email, a)


async def test_account_failures_slow_every_address_by_a_bounded_growing_delay(
        limiter: RateLimiter) -> None:
    sleeps = Sleeps()
    auth = throttle(limiter, sleeps, failures_per_account=2, max_delay=8.0)
    email, _, owner = fresh()
    seen = []
    for n in range(21):  # n failures so far, each from another address (a botnet)
        seen.append(await auth.admit_login(email, owner))
        await auth.login_failed(email, f"10.3.{n}.{uuid.uuid4().hex[:6]}")
    assert seen == [0, 0, 1, 1, 2, 2, 2, 2, *[4] * 8, *[8] * 5]
    assert sleeps.delays == [d for d in seen if d]


async def test_registrations_are_counted_per_address(limiter: RateLimiter) -> None:
    auth = throttle(limiter, registrations_per_ip=3, registration_window_seconds=3600)
    _, a, b = fresh()
    for _ in range(3):
        await auth.admit_registration(a)
    with pytest.raises(APIError) as refused:
        await auth.admit_registration(a)
    assert refused.value.status == 429 and refused.value.code == "too_many_registrations"
    assert refused.value.type == "rate_limit_error"
    assert 3000 < int(refused.value.headers["retry-after"]) <= 3600
    await auth.admit_registration(b)
