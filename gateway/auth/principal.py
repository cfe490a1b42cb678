"""Who is calling: resolve a credential to a ``Principal``, with a short-lived cache.

The cache keeps the hot path free of database round trips. Revocation clears this
process's entry at once; other processes see it within ``ttl`` seconds, as do plan changes
and password resets (which end the sessions issued before them: gateway/auth/resets.py).
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection

from gateway.auth.credentials import ApiKeyHasher, JwtCodec
from gateway.errors import APIError, unauthorized
from gateway.ratelimit.spend import DEFAULT_PERIOD
from storage.accounts import AccountRepository
from storage.models import SubscriptionPlan, User, utcnow


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    requests_per_minute: int
    tokens_per_minute: int
    concurrent_requests: int
    price_monthly: float
    features: dict[str, Any] = field(default_factory=dict)
    monthly_budget_usd: float | None = None  # the whole user's spend per UTC month

    @classmethod
    def from_row(cls, row: SubscriptionPlan) -> Plan:
        return cls(name=row.name, requests_per_minute=row.requests_per_minute,
                   tokens_per_minute=row.tokens_per_minute,
                   concurrent_requests=row.concurrent_requests,
                   price_monthly=float(row.price_monthly), features=dict(row.features or {}),
                   monthly_budget_usd=(float(row.monthly_budget_usd)
                                       if row.monthly_budget_usd is not None else None))

    def allows_model(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pat) for pat in self.features.get("models", ["*"]))


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: uuid.UUID
    email: str
    plan: Plan
    via: str  # "api_key" | "jwt"
    api_key_id: uuid.UUID | None = None
    key_limits: dict[str, int] = field(default_factory=dict)
    is_admin: bool = False
    key_name: str | None = None
    key_budget_usd: float | None = None  # the key's own budget, per key_budget_period
    key_budget_period: str | None = None

    @property
    def subject(self) -> str:
        """The rate-limit subject: one budget per user, whichever credential is used."""
        return str(self.user_id)


def principal_from_rows(user: User, plan: SubscriptionPlan, via: str,
                        key: Any = None) -> Principal:
    """The Principal for a user row, their plan row and (when via a key) the key row."""
    limits = {}
    if key is not None:
        for name in ("requests_per_minute", "tokens_per_minute", "concurrent_requests"):
            if getattr(key, name) is not None:
                limits[name] = getattr(key, name)
    budget = key.budget_usd if key is not None else None
    return Principal(user_id=user.id, email=user.email, plan=Plan.from_row(plan), via=via,
                     api_key_id=key.id if key is not None else None, key_limits=limits,
                     is_admin=bool(user.is_admin),
                     key_name=key.name if key is not None else None,
                     key_budget_usd=float(budget) if budget is not None else None,
                     key_budget_period=(key.budget_period or DEFAULT_PERIOD
                                        if budget is not None else None))


def require_admin(principal: Principal) -> None:
    """403 unless the caller is an admin; the session and the user's API keys both count,
    since the admin views only read (monitoring scripts hold keys, not sessions)."""
    if not principal.is_admin:
        raise APIError(403, "This endpoint is for administrators. An operator grants access "
                       "with 'gateway set-admin EMAIL'.", type="permission_error",
                       code="admin_required")


class Authenticator:
    """Turns request headers into a Principal or raises a 401 ``APIError``."""

    def __init__(self, accounts: AccountRepository, hasher: ApiKeyHasher, jwt: JwtCodec,
                 *, ttl: float = 5.0, touch: Any = None) -> None:
        self._accounts = accounts
        self._hasher = hasher
        self._jwt = jwt
        self._ttl = ttl
        self._touch = touch  # callable(key_id, at) that records last_used_at off the hot path
        self._keys: dict[str, tuple[float, Principal | None, str]] = {}
        # user id -> (expiry, principal, session generation)
        self._users: dict[uuid.UUID, tuple[float, Principal | None, int]] = {}
        self._loading: dict[str, asyncio.Task[Principal | None]] = {}

    async def authenticate(self, conn: HTTPConnection) -> Principal:
        headers = conn.headers
        auth = headers.get("authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise unauthorized()
            token = value.strip()
        else:
            token = headers.get("x-api-key", "").strip()
        if not token:
            raise unauthorized()
        if self._hasher.looks_like_key(token):
            principal = await self._by_key(token)
        else:
            principal = await self._by_jwt(token)
        if principal is None:
            raise unauthorized()
        return principal

    async def _by_key(self, key: str) -> Principal | None:
        # Cached by the presented key, so a hit costs no HMAC; the hash is kept for revocation.
        cached = self._keys.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        # One lookup per key at a time: when an entry expires under load, hundreds of calls
        # miss together; they share one query instead of queueing for database connections
        # (and the writer behind them) and touching the key hundreds of times.
        task = self._loading.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load_key(key))
            self._loading[key] = task
            task.add_done_callback(lambda done: self._loaded(key, done))
        return await asyncio.shield(task)

    def _loaded(self, key: str, task: asyncio.Task[Principal | None]) -> None:
        self._loading.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every waiter went away

    async def _load_key(self, key: str) -> Principal | None:
        now = time.monotonic()
        key_hash = self._hasher.hash(key)
        record = await self._accounts.key_by_hash(key_hash)
        principal = None
        if (record is not None and self._hasher.matches(record.key.key_hash, key_hash)
                and record.key.status == "active" and record.user.status == "active"):
            principal = principal_from_rows(record.user, record.plan, "api_key", record.key)
        if len(self._keys) > 100_000:
            self._keys.clear()
        self._keys[key] = (now + self._ttl, principal, key_hash)
        # last_used_at is kept to within the cache TTL: one write per key per TTL.
        if principal is not None and self._touch is not None:
            self._touch(principal.api_key_id, utcnow())
        return principal

    async def _by_jwt(self, token: str) -> Principal | None:
        session = self._jwt.verify_session(token)
        if session is None:
            return None
        user_id, generation = session
        now = time.monotonic()
        cached = self._users.get(user_id)
        # A newer generation than the cached one means a reset this entry predates (made
        # in another process): reload, so a session issued since is not refused.
        if cached is None or cached[0] <= now or generation > cached[2]:
            row = await self._accounts.user_with_plan(user_id)
            principal = None
            current = 0
            if row is not None and row[0].status == "active":
                principal = principal_from_rows(row[0], row[1], "jwt")
                current = row[0].session_generation
            if len(self._users) > 100_000:
                self._users.clear()
            cached = self._users[user_id] = (now + self._ttl, principal, current)
        # A session from before the last password reset is over (the account's API keys
        # are not: they are managed, and revoked, on their own).
        return cached[1] if generation == cached[2] else None

    def forget_user(self, user_id: uuid.UUID) -> None:
        """Drop a user's sessions from this process's cache (password reset)."""
        self._users.pop(user_id, None)

    def forget_key(self, key_hash: str) -> None:
        """Drop a key from this process's cache (revoke, regenerate)."""
        for key, entry in list(self._keys.items()):
            if entry[2] == key_hash:
                del self._keys[key]
