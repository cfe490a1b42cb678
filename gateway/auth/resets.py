"""Forgot password: issue single-use reset links off the request path, and spend them.

``request`` only schedules the work: looking the account up, storing the token and
mailing the link happen in a background task, so the answer (and its timing) is the same
whether or not the address has an account. Tokens are random (256 bits), stored only as
their keyed hash, expire after ``ttl`` and work once; a newer request replaces older
links. Without an SMTP server the link goes to the log at WARNING, so a local user can
still reset; it is never logged otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from gateway.auth.credentials import ApiKeyHasher
from gateway.mail import MailError, SmtpMailer
from storage.accounts import AccountRepository
from storage.models import utcnow
from storage.password_resets import PasswordReset, PasswordResetStore

log = logging.getLogger("gateway")

TOKEN_BYTES = 32
MAX_TOKEN_LENGTH = 200  # ours are 43 characters; anything much longer is not one of ours
MAX_PENDING = 1000
"""Requests handled at once per process; more (a flood from many addresses, a mail server
that hangs) are dropped with a warning instead of piling up tasks and connections."""


class PasswordResets:
    """Reset links: issue (in the background) and spend."""

    def __init__(self, accounts: AccountRepository, store: PasswordResetStore,
                 hasher: ApiKeyHasher, mailer: SmtpMailer | None, *, public_url: str,
                 ttl_seconds: int, clock: Callable[[], datetime] = utcnow) -> None:
        self._accounts = accounts
        self._store = store
        self._hasher = hasher
        self._mailer = mailer
        self._public_url = public_url
        self._ttl = timedelta(seconds=ttl_seconds)
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def request(self, email: str) -> None:
        """Mail a reset link to ``email`` if it is an active account's; returns at once."""
        if len(self._tasks) >= MAX_PENDING:
            log.warning("password reset request for %s dropped: %d requests are still being "
                        "handled (is the mail server slow?)", email, len(self._tasks))
            return
        task = asyncio.get_running_loop().create_task(self._issue(email))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def spend(self, token: str, password_hash: str) -> PasswordReset | None:
        """Set the password of the token's account; None for an unusable token."""
        return await self._store.spend(self._hasher.hash(token), password_hash,
                                       now=self._clock())

    async def drain(self) -> None:
        """Wait until every scheduled request has been handled (mailed, logged or dropped)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def aclose(self, grace: float) -> None:
        """Let mails in flight finish for up to ``grace`` seconds, then cancel the rest."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _issue(self, email: str) -> None:
        try:
            user = await self._accounts.user_by_email(email)
            if user is None or user.status != "active":
                return
            token = secrets.token_urlsafe(TOKEN_BYTES)
            now = self._clock()
            expires_at = now + self._ttl
            await self._store.issue(user.id, self._hasher.hash(token), now=now,
                                    expires_at=expires_at)
            # In the fragment: browsers never send it, so it stays out of every access log.
            link = f"{self._public_url}/#reset={token}"
            if self._mailer is None:
                log.warning("no SMTP server is configured (GATEWAY_SMTP_URL), so the password "
                            "reset link for %s is written here; it works once, until %s "
                            "UTC: %s", email, f"{expires_at:%Y-%m-%d %H:%M}", link)
                return
            message = self._mailer.compose(email, "Reset your password",
                                           self._body(email, link, expires_at))
            await self._mailer.send(message)
            log.info("password reset mail sent to %s", email)
        except MailError as exc:
            log.warning("password reset mail to %s was not sent (SMTP server %s): %s", email,
                        self._mailer.server if self._mailer else "-", exc)
        except Exception:
            log.exception("password reset request for %s failed", email)

    def _body(self, email: str, link: str, expires_at: datetime) -> str:
        minutes = round(self._ttl.total_seconds() / 60)
        return (f"Someone, hopefully you, asked to reset the password of the account {email} "
                f"at {self._public_url}.\n\n"
                f"To choose a new password, open this link:\n\n{link}\n\n"
                f"The link works once and expires in {minutes} minutes (at "
                f"{expires_at:%Y-%m-%d %H:%M} UTC). Setting a new password signs out every "
                "session of the account; its API keys keep working.\n\n"
                "If you did not ask for this, ignore this mail: your password stays as it "
                "is.\n")
