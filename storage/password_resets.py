"""Password reset tokens: issue one for a user, and spend one to set a new password."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker

from storage.models import PasswordResetToken, User


@dataclass(frozen=True, slots=True)
class PasswordReset:
    """The account whose password a spent token changed."""

    user_id: uuid.UUID
    email: str
    session_generation: int


class PasswordResetStore:
    def __init__(self, sessions: async_sessionmaker) -> None:
        self._sessions = sessions

    async def issue(self, user_id: uuid.UUID, token_hash: str, *, now: datetime,
                    expires_at: datetime) -> None:
        """Store a new token for the user; their older unspent tokens stop working.

        Only the newest link in someone's mailbox works: a link from an older mail that
        leaked (a forwarded mail, a shared inbox) cannot be used once a newer one exists.
        """
        async with self._sessions() as session:
            await session.exec(sa.update(PasswordResetToken).where(
                PasswordResetToken.user_id == user_id,
                PasswordResetToken.used_at.is_(None)).values(used_at=now))
            session.add(PasswordResetToken(user_id=user_id, token_hash=token_hash,
                                           expires_at=expires_at, created_at=now))
            await session.commit()

    async def spend(self, token_hash: str, password_hash: str, *,
                    now: datetime) -> PasswordReset | None:
        """Spend a valid token and set the password in one transaction; None when the
        token is unknown, spent, replaced or expired, or its account is not active.

        The conditions are in the UPDATEs themselves, so two requests racing with one
        token cannot both succeed, and a refused reset leaves nothing changed.
        """
        async with self._sessions() as session:
            spent = await session.exec(
                sa.update(PasswordResetToken).where(
                    PasswordResetToken.token_hash == token_hash,
                    PasswordResetToken.used_at.is_(None),
                    PasswordResetToken.expires_at > now)
                .values(used_at=now).returning(PasswordResetToken.user_id))
            user_id = spent.scalar_one_or_none()
            if user_id is None:
                await session.rollback()
                return None
            changed = await session.exec(
                sa.update(User).where(User.id == user_id, User.status == "active")
                .values(password_hash=password_hash, password_changed_at=now,
                        session_generation=User.session_generation + 1, updated_at=now)
                .returning(User.email, User.session_generation))
            row = changed.first()
            if row is None:
                await session.rollback()
                return None
            await session.commit()
            return PasswordReset(user_id=user_id, email=row[0], session_generation=row[1])
