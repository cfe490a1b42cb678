"""Queries for users, API keys and plans."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select

from storage.models import ApiKey, AuditLog, SubscriptionPlan, User, utcnow


class EmailTaken(Exception):
    """A user with that email already exists."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key: ApiKey
    user: User
    plan: SubscriptionPlan


class AccountRepository:
    def __init__(self, sessions: async_sessionmaker) -> None:
        self._sessions = sessions

    async def create_user(self, email: str, password_hash: str, key_hash: str, prefix: str,
                          suffix: str, *, tier: str = "free") -> tuple[User, ApiKey]:
        """Insert a user and their first key in one transaction."""
        user = User(email=email, password_hash=password_hash, subscription_tier=tier)
        key = ApiKey(user_id=user.id, name="default", key_hash=key_hash, key_prefix=prefix,
                     key_suffix=suffix)
        async with self._sessions() as session:
            try:
                session.add(user)
                await session.flush()
                session.add(key)
                await session.commit()
            except IntegrityError as exc:
                raise EmailTaken(email) from exc
        return user, key

    async def user_by_email(self, email: str) -> User | None:
        async with self._sessions() as session:
            return (await session.exec(select(User).where(User.email == email))).first()

    async def user_with_plan(self, user_id: uuid.UUID) -> tuple[User, SubscriptionPlan] | None:
        async with self._sessions() as session:
            row = (await session.exec(
                select(User, SubscriptionPlan)
                .join(SubscriptionPlan, SubscriptionPlan.name == User.subscription_tier)
                .where(User.id == user_id))).first()
            return (row[0], row[1]) if row else None

    async def key_by_hash(self, key_hash: str) -> KeyRecord | None:
        async with self._sessions() as session:
            row = (await session.exec(
                select(ApiKey, User, SubscriptionPlan)
                .join(User, User.id == ApiKey.user_id)
                .join(SubscriptionPlan, SubscriptionPlan.name == User.subscription_tier)
                .where(ApiKey.key_hash == key_hash))).first()
            return KeyRecord(*row) if row else None

    async def list_keys(self, user_id: uuid.UUID) -> list[ApiKey]:
        async with self._sessions() as session:
            return list((await session.exec(
                select(ApiKey).where(ApiKey.user_id == user_id)
                .order_by(ApiKey.created_at))).all())

    async def create_key(self, user_id: uuid.UUID, name: str, key_hash: str, prefix: str,
                         suffix: str, limits: dict[str, Any] | None = None) -> ApiKey:
        key = ApiKey(user_id=user_id, name=name, key_hash=key_hash, key_prefix=prefix,
                     key_suffix=suffix, **(limits or {}))
        async with self._sessions() as session:
            session.add(key)
            await session.commit()
        return key

    async def get_key(self, user_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
        async with self._sessions() as session:
            return (await session.exec(
                select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id))).first()

    async def replace_key_hash(self, key: ApiKey, key_hash: str, prefix: str,
                               suffix: str) -> ApiKey | None:
        """Regenerate: the same key row gets a new secret; the old one stops working.

        Only an active key is regenerated (None otherwise): the condition is in the UPDATE
        itself, so a revoke racing this call cannot be undone by it.
        """
        async with self._sessions() as session:
            result = await session.exec(
                sa.update(ApiKey).where(ApiKey.id == key.id, ApiKey.status == "active")
                .values(key_hash=key_hash, key_prefix=prefix, key_suffix=suffix,
                        updated_at=utcnow()))
            await session.commit()
        if result.rowcount != 1:
            return None
        return key.model_copy(update={"key_hash": key_hash, "key_prefix": prefix,
                                      "key_suffix": suffix})

    async def revoke_key(self, key: ApiKey) -> None:
        now = utcnow()
        async with self._sessions() as session:
            await session.exec(sa.update(ApiKey).where(
                ApiKey.id == key.id, ApiKey.status != "revoked").values(
                status="revoked", revoked_at=now, updated_at=now))
            await session.commit()

    async def set_plan(self, user_id: uuid.UUID, tier: str) -> bool:
        async with self._sessions() as session:
            result = await session.exec(sa.update(User).where(User.id == user_id).values(
                subscription_tier=tier, updated_at=utcnow()))
            await session.commit()
            return result.rowcount == 1

    async def set_admin(self, user_id: uuid.UUID, admin: bool, *, via: str) -> bool:
        """Grant or revoke the admin flag; True when it changed.

        A change and its audit row commit together: no grant goes unrecorded, and granting
        an admin again records nothing.
        """
        async with self._sessions() as session:
            result = await session.exec(sa.update(User).where(
                User.id == user_id, User.is_admin != admin).values(
                is_admin=admin, updated_at=utcnow()))
            if result.rowcount == 1:
                session.add(AuditLog(
                    user_id=user_id, action="user.admin_grant" if admin else "user.admin_revoke",
                    resource_type="user", resource_id=str(user_id), details={"via": via}))
            await session.commit()
            return result.rowcount == 1

    async def plans(self) -> list[SubscriptionPlan]:
        async with self._sessions() as session:
            return list((await session.exec(
                select(SubscriptionPlan).order_by(SubscriptionPlan.price_monthly))).all())
