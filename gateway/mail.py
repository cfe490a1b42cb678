"""Outgoing mail over SMTP (aiosmtplib): one connection per message, bounded in time."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

from gateway.settings import smtp_url_parts


class MailError(Exception):
    """A message could not be handed to the SMTP server (down, refused, too slow)."""


class SmtpMailer:
    """Sends plain-text mail through the server of an ``smtp://`` or ``smtps://`` URL.

    ``smtp://`` upgrades with STARTTLS when the server offers it; ``smtps://`` speaks TLS
    from the first byte. The URL's password is only handed to the SMTP client.
    """

    def __init__(self, url: str, *, sender: str, timeout: float) -> None:
        self._tls, self._host, self._port, self._user, self._password = smtp_url_parts(url)
        self.sender = sender
        self._timeout = timeout

    @property
    def server(self) -> str:
        """host:port, for logs (never the credentials)."""
        return f"{self._host}:{self._port}"

    def compose(self, to: str, subject: str, body: str) -> EmailMessage:
        """A plain-text message with the headers mail servers and spam filters expect."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(usegmt=True)
        domain = parseaddr(self.sender)[1].rpartition("@")[2] or None
        message["Message-ID"] = make_msgid(domain=domain)
        message.set_content(body)
        return message

    async def send(self, message: EmailMessage) -> None:
        """Deliver one message or raise ``MailError``; gives up after the timeout."""
        # Imported at the first message, not at start-up: ~2.5 MB of RSS for a feature
        # (password reset mail) most calls never reach.
        import aiosmtplib

        try:
            # The timeout bounds each step inside aiosmtplib; wait_for bounds the whole.
            await asyncio.wait_for(aiosmtplib.send(
                message, hostname=self._host, port=self._port, username=self._user,
                password=self._password, use_tls=self._tls,
                start_tls=False if self._tls else None, timeout=self._timeout),
                self._timeout * 2)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise MailError(f"{type(exc).__name__}: {exc}") from exc
