"""Throttling of /auth/login and /auth/register on the shared limiter (exact across instances).

Login: every attempt from one address counts against a per-address cap. Only *failed*
logins count against an account, in two ways:

- per (account, address): the ``failures_per_address``-th failure within the window
  refuses that address for that account (429) for one window; other addresses go on;
- per account, from every address: once failures within the window reach
  ``failures_per_account``, each attempt waits before its password is checked, longer as
  failures reach 2x, 4x and 8x that number (up to ``max_delay``). The account is slowed,
  never locked, so its owner still signs in from their own address.

A password reset clears the account's failures: its counters are keyed by the account's
session generation, which the reset raises (the limiter has no "delete"; fresh keys are
empty keys, on every backend).

Registration: at most ``registrations_per_ip`` accounts per address per window.

Forgot password: at most ``forgot_per_ip`` requests per address and ``forgot_per_account``
per email address (known or not: the answer must not tell) per window; reset password: at
most ``reset_per_ip`` attempts per address per window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gateway.errors import APIError, retry_headers
from gateway.ratelimit import RateLimiter

DELAY_LEVELS = 4
"""Account-wide slow-down steps: max_delay/8, /4, /2 and max_delay."""


def too_many(message: str, code: str, retry_after: float) -> APIError:
    """A 429 in OpenAI's shape that says when to come back."""
    headers = retry_headers(retry_after)
    return APIError(429, message.format(wait=headers["retry-after"]), code=code,
                    headers=headers)


class AuthThrottle:
    """Counts login failures and registrations; raises 429 ``APIError`` or sleeps."""

    def __init__(self, limiter: RateLimiter, *, attempts_per_ip: int, failures_per_address: int,
                 failures_per_account: int, window_seconds: float, max_delay: float,
                 registrations_per_ip: int, registration_window_seconds: float,
                 forgot_per_ip: int = 10, forgot_per_account: int = 3, reset_per_ip: int = 20,
                 reset_window_seconds: float = 3600,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self._limiter = limiter
        self._per_ip = attempts_per_ip
        self._per_address = failures_per_address
        self._per_account = failures_per_account
        self._window = window_seconds
        self._max_delay = max_delay
        self._registrations = registrations_per_ip
        self._registration_window = registration_window_seconds
        self._forgot_per_ip = forgot_per_ip
        self._forgot_per_account = forgot_per_account
        self._reset_per_ip = reset_per_ip
        self._reset_window = reset_window_seconds
        self._sleep = sleep
        # Longer than any flag lives, so a probe of an empty key is told apart (see _is_set).
        self._probe_window = 2 * window_seconds + 1

    def delay(self, level: int) -> float:
        """Seconds an attempt waits once the account's failures reached ``level``."""
        return self._max_delay / 2 ** (DELAY_LEVELS - 1 - level)

    async def admit_login(self, email: str, ip: str, *, epoch: int = 0) -> float:
        """Refuse (429) or slow down one login attempt before its password is checked.

        ``epoch`` is the account's session generation (0 for unknown emails). Returns the
        delay applied (seconds).
        """
        email = _account(email, epoch)
        allowed, retry = await self._limiter.hit(f"login:ip:{ip}", self._per_ip, self._window)
        if not allowed:
            raise too_many("Too many login attempts from this address; try again in {wait} "
                           "seconds.", "too_many_login_attempts", retry)
        locked, *levels = await asyncio.gather(
            self._is_set(_lock_key(email, ip)),
            *(self._is_set(_slow_key(email, level)) for level in range(DELAY_LEVELS)))
        if locked[0]:
            raise too_many("Too many failed logins for this account from this address; try "
                           "again in {wait} seconds.", "too_many_login_attempts", locked[1])
        reached = [level for level, (on, _) in enumerate(levels) if on]
        if not reached:
            return 0.0
        # The same wait whatever the password: a shorter answer must not give a guess away.
        delay = self.delay(max(reached))
        await self._sleep(delay)
        return delay

    async def login_failed(self, email: str, ip: str, *, epoch: int = 0) -> None:
        """Count one failed login against the account from this address, and overall."""
        email = _account(email, epoch)
        # A limit one below the threshold refuses exactly the threshold-th failure, which is
        # when the flag goes up (the limiter answers allowed or not, never a count).
        allowed, _ = await self._limiter.hit(f"login:fail:{email}|{ip}",
                                             self._per_address - 1, self._window)
        if not allowed:
            await self._limiter.hit(_lock_key(email, ip), 1, self._window)
        for level in range(DELAY_LEVELS):
            allowed, _ = await self._limiter.hit(f"login:fail:{email}",
                                                 self._per_account * 2 ** level - 1,
                                                 self._window)
            if allowed:  # counted below this level's threshold: nothing more to raise
                return
            await self._limiter.hit(_slow_key(email, level), 1, self._window)

    async def admit_registration(self, ip: str) -> None:
        """Count one registration from this address or refuse it (429)."""
        allowed, retry = await self._limiter.hit(f"register:ip:{ip}", self._registrations,
                                                 self._registration_window)
        if not allowed:
            raise too_many("Too many accounts registered from this address; try again in "
                           "{wait} seconds.", "too_many_registrations", retry)

    async def admit_forgot_password(self, email: str, ip: str) -> None:
        """Count one reset mail request from this address and for this email, or 429."""
        allowed, retry = await self._limiter.hit(f"forgot:ip:{ip}", self._forgot_per_ip,
                                                 self._reset_window)
        if not allowed:
            raise too_many("Too many password reset requests from this address; try again "
                           "in {wait} seconds.", "too_many_password_resets", retry)
        allowed, retry = await self._limiter.hit(f"forgot:account:{email}",
                                                 self._forgot_per_account, self._reset_window)
        if not allowed:
            raise too_many("Too many password reset requests for this email address; try "
                           "again in {wait} seconds.", "too_many_password_resets", retry)

    async def admit_password_reset(self, ip: str) -> None:
        """Count one attempt to use a reset token from this address, or 429."""
        allowed, retry = await self._limiter.hit(f"reset:ip:{ip}", self._reset_per_ip,
                                                 self._reset_window)
        if not allowed:
            raise too_many("Too many password reset attempts from this address; try again "
                           "in {wait} seconds.", "too_many_password_resets", retry)

    async def _is_set(self, key: str) -> tuple[bool, float]:
        """Whether a flag (a key hit once with limit 1) is up, and for how much longer.

        ``hit`` is the limiter's only shared primitive, and it counts. With a limit of 0 it
        counts nothing and reports when the key's oldest entry expires, or the window it
        was given when the key is empty: a window longer than any flag lives tells them
        apart. A limiter failing open answers "allowed": the flag reads as down.
        """
        allowed, retry = await self._limiter.hit(key, 0, self._probe_window)
        return (not allowed and retry < self._probe_window), retry


def _lock_key(email: str, ip: str) -> str:
    return f"login:locked:{email}|{ip}"


def _slow_key(email: str, level: int) -> str:
    return f"login:slow{level}:{email}"


def _account(email: str, epoch: int) -> str:
    """The name an account's login counters go by: new ones after each password reset."""
    return email if epoch == 0 else f"{email}#{epoch}"
