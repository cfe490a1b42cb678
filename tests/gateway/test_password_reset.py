"""Forgot password end to end (SQLite, PostgreSQL): the link goes out through a real SMTP
server (aiosmtpd, in-process), and the reset ends sessions, the old password and the link.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiosmtpd.smtp import SMTP

from gateway.app import create_app
from gateway.routes.password_reset import BAD_TOKEN
from gateway.settings import ConfigError, load_settings, smtp_url_parts
from storage.models import PasswordResetToken, User, utcnow
from tests.conftest import Account, make_settings, register
from tests.servers import GatewayServer, LoopThread, free_socket

PUBLIC_URL = "https://chat.example.test"
MAIL_FROM = "LLM Gateway <gateway@example.test>"
NEW_PASSWORD = "a new passphrase 7"
ACCEPTED = {"status": "accepted",
            "message": "If an account uses this address, a link to reset its password is on "
                       "its way."}
LINK = re.compile(re.escape(PUBLIC_URL) + r"/#reset=([A-Za-z0-9_-]+)")


class Inbox:
    """An aiosmtpd handler that keeps every message it receives, parsed."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self._changed = threading.Condition()
        self.open = threading.Event()  # cleared: messages wait in DATA until it is set
        self.open.set()
        self.holding = threading.Event()  # set while a message waits for ``open``

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        if not self.open.is_set():
            self.holding.set()
            await asyncio.to_thread(self.open.wait, 30)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._changed:
            self.messages.append((list(envelope.rcpt_tos), message))
            self._changed.notify_all()
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        with self._changed:
            return self._for(address)

    def wait(self, address: str, count: int = 1, timeout: float = 10) -> list[EmailMessage]:
        """The messages to ``address`` once there are ``count`` of them (or fail)."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self._for(address)) >= count, timeout)
            assert arrived, f"no mail to {address} within {timeout} s"
            return self._for(address)

    def _for(self, address: str) -> list[EmailMessage]:
        return [m for rcpt, m in self.messages if address in rcpt]


class SmtpServer:
    """aiosmtpd's SMTP protocol on a loopback port, in its own loop thread."""

    def __init__(self) -> None:
        self.inbox = Inbox()
        self.sock = free_socket()
        self.port = self.sock.getsockname()[1]
        self.thread = LoopThread("smtp")

        async def start() -> Any:
            return await self.thread.loop.create_server(lambda: SMTP(self.inbox),
                                                        sock=self.sock)
        self.server = self.thread.run(start())

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()
            await self.server.wait_closed()
        self.thread.run(close())
        self.thread.stop()


class WallClock:
    """The gateway's wall clock for reset links, movable by the tests."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def clock() -> WallClock:
    return WallClock()


@pytest.fixture(scope="module")
def server(database_url: str, smtp: SmtpServer, clock: WallClock,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """A gateway that mails through ``smtp``, caches principals (so a reset must clear its
    cache) and believes X-Forwarded-For (each test its own client address)."""
    settings = make_settings(
        tmp_path_factory.mktemp("reset"), database_url,
        smtp_url=f"smtp://127.0.0.1:{smtp.port}", mail_from=MAIL_FROM, public_url=PUBLIC_URL,
        auth_cache_seconds=60.0, trust_forwarded=True, login_failures_per_address=2,
        forgot_password_per_ip=4, forgot_password_per_account=3, reset_password_per_ip=6)
    gateway = GatewayServer(create_app(settings, wall_clock=clock))
    yield gateway
    gateway.stop()


def address() -> str:
    a, b, c = uuid.uuid4().bytes[:3]
    return f"10.{a}.{b}.{c}"


def forgot(gateway: GatewayServer, mail: str, ip: str) -> httpx.Response:
    return httpx.post(gateway.url + "/auth/forgot-password", json={"email": mail},
                      headers={"X-Forwarded-For": ip})


def reset(gateway: GatewayServer, token: str, password: str, ip: str) -> httpx.Response:
    return httpx.post(gateway.url + "/auth/reset-password",
                      json={"token": token, "password": password},
                      headers={"X-Forwarded-For": ip})


def login(gateway: GatewayServer, mail: str, password: str, ip: str) -> httpx.Response:
    return httpx.post(gateway.url + "/auth/login", json={"email": mail, "password": password},
                      headers={"X-Forwarded-For": ip})


def me(gateway: GatewayServer, credential: str) -> httpx.Response:
    return httpx.get(gateway.url + "/auth/me", headers={"Authorization": f"Bearer {credential}"})


def drain(gateway: GatewayServer) -> None:
    """Wait until the gateway handled every forgot-password request it accepted."""
    gateway.run(gateway.state.password_resets.drain())


def token_rows(gateway: GatewayServer, user_id: str) -> list[PasswordResetToken]:
    async def run() -> list[PasswordResetToken]:
        async with gateway.state.engine.connect() as conn:
            rows = await conn.execute(sa.select(PasswordResetToken).where(
                PasswordResetToken.user_id == uuid.UUID(user_id))
                .order_by(PasswordResetToken.created_at))
            return [PasswordResetToken(**row._mapping) for row in rows]
    return gateway.run(run())


def mailed_token(smtp: SmtpServer, account: Account, count: int = 1) -> str:
    body = smtp.inbox.wait(account.email, count)[-1].get_body(("plain",)).get_content()
    match = LINK.search(body)
    assert match, body
    return match.group(1)


def assert_bad_token(r: httpx.Response) -> None:
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "token"
    assert r.json()["error"]["message"] == BAD_TOKEN


def test_forgot_mail_reset_ends_sessions_and_old_password(
        server: GatewayServer, smtp: SmtpServer, caplog: pytest.LogCaptureFixture) -> None:
    ip = address()
    account = register(server.url)
    old_session = login(server, account.email, account.password, ip).json()["token"]
    assert me(server, old_session).status_code == 200  # now in the principal cache
    # Two failures from this address lock it out of the account (429) for a window...
    for _ in range(2):
        assert login(server, account.email, "wrong password 1", ip).status_code == 401
    assert login(server, account.email, account.password, ip).status_code == 429

    with caplog.at_level(logging.DEBUG, logger="gateway"):
        r = forgot(server, account.email.upper(), ip)
        assert r.status_code == 202, r.text
        assert r.json() == ACCEPTED
        [message] = smtp.inbox.wait(account.email)
        drain(server)
    assert message["From"] == MAIL_FROM
    assert message["To"] == account.email
    assert message["Subject"] == "Reset your password"
    assert abs(parsedate_to_datetime(message["Date"]) - utcnow()) < timedelta(minutes=1)
    assert re.fullmatch(r"<[^@<>]+@example\.test>", message["Message-ID"])
    assert message.get_content_type() == "text/plain"
    body = message.get_content()
    token = LINK.search(body).group(1)
    assert len(token) >= 43  # 32 random bytes, base64url
    assert "expires in 30 minutes" in body
    assert token not in caplog.text  # mailed, so never logged
    [row] = token_rows(server, account.user_id)
    assert row.token_hash == server.state.hasher.hash(token) and row.used_at is None
    assert timedelta(minutes=29) < row.expires_at.replace(tzinfo=None) - \
        row.created_at.replace(tzinfo=None) <= timedelta(minutes=30)

    # The new password follows the registration rules; a refusal spends nothing.
    r = reset(server, token, "short", ip)
    assert r.status_code == 400 and r.json()["error"]["param"] == "password", r.text
    assert token_rows(server, account.user_id)[0].used_at is None

    r = reset(server, token, NEW_PASSWORD, ip)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "password_reset", "email": account.email}

    r = me(server, old_session)
    assert r.status_code == 401, r.text
    assert me(server, account.token).status_code == 401  # the session from registration
    assert me(server, account.api_key).status_code == 200  # API keys are not sessions
    assert login(server, account.email, account.password, ip).status_code == 401
    # The reset cleared the failures: the same address signs in with the new password.
    r = login(server, account.email, NEW_PASSWORD, ip)
    assert r.status_code == 200, r.text
    assert me(server, r.json()["token"]).json()["email"] == account.email

    assert_bad_token(reset(server, token, "yet another one 8", ip))  # spent
    assert_bad_token(reset(server, "x" * 43, "yet another one 8", ip))  # never issued
    assert login(server, account.email, NEW_PASSWORD, ip).status_code == 200
    [row] = token_rows(server, account.user_id)
    assert row.used_at is not None


def test_the_answer_does_not_wait_for_the_mail(server: GatewayServer, smtp: SmtpServer) -> None:
    account = register(server.url)
    smtp.inbox.holding.clear()
    smtp.inbox.open.clear()
    try:
        r = forgot(server, account.email, address())
        assert r.status_code == 202 and r.json() == ACCEPTED
        # Answered while the mail server still holds the message in DATA.
        assert smtp.inbox.holding.wait(10)
        assert smtp.inbox.to(account.email) == []
    finally:
        smtp.inbox.open.set()
    mailed_token(smtp, account)
    drain(server)


SHORT_CACHE_SECONDS = 1.0


def another_process(database_url: str, tmp_path_factory: pytest.TempPathFactory,
                    cache_seconds: float) -> Iterator[GatewayServer]:
    """Another gateway on the same database, with its own principal cache."""
    settings = make_settings(tmp_path_factory.mktemp("other"), database_url,
                             auth_cache_seconds=cache_seconds)
    gateway = GatewayServer(create_app(settings))
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def other_long(database_url: str, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[GatewayServer]:
    yield from another_process(database_url, tmp_path_factory, 60.0)


@pytest.fixture(scope="module")
def other_short(database_url: str, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[GatewayServer]:
    yield from another_process(database_url, tmp_path_factory, SHORT_CACHE_SECONDS)


def reset_via(server: GatewayServer, smtp: SmtpServer, account: Account, ip: str) -> None:
    assert forgot(server, account.email, ip).status_code == 202
    assert reset(server, mailed_token(smtp, account), NEW_PASSWORD, ip).status_code == 200


def test_other_processes_take_new_sessions_at_once(
        server: GatewayServer, other_long: GatewayServer, smtp: SmtpServer) -> None:
    ip = address()
    account = register(server.url)
    assert me(other_long, account.token).status_code == 200  # cached there for a minute
    reset_via(server, smtp, account, ip)
    # A session issued after the reset is newer than that cache entry: it is reloaded, and
    # with it the old session is over there too.
    new_session = login(server, account.email, NEW_PASSWORD, ip).json()["token"]
    assert me(other_long, new_session).status_code == 200
    assert me(other_long, account.token).status_code == 401


def test_other_processes_end_old_sessions_within_their_cache_time(
        server: GatewayServer, other_short: GatewayServer, smtp: SmtpServer) -> None:
    account = register(server.url)
    assert me(other_short, account.token).status_code == 200  # cached there
    reset_via(server, smtp, account, address())
    reset_at = time.monotonic()
    while me(other_short, account.token).status_code == 200:
        assert time.monotonic() - reset_at < SHORT_CACHE_SECONDS + 5
    assert me(other_short, account.token).status_code == 401


def test_expired_link_is_refused(server: GatewayServer, smtp: SmtpServer,
                                 clock: WallClock) -> None:
    ip = address()
    account = register(server.url)
    assert forgot(server, account.email, ip).status_code == 202
    token = mailed_token(smtp, account)
    clock.offset = timedelta(minutes=30, seconds=1)
    try:
        assert_bad_token(reset(server, token, NEW_PASSWORD, ip))
    finally:
        clock.offset = timedelta()
    # The refusal changed nothing: the old password still works, and back within the 30
    # minutes the same link works (expiry is checked against the clock at the time of use).
    assert login(server, account.email, account.password, ip).status_code == 200
    assert reset(server, token, NEW_PASSWORD, ip).status_code == 200


def test_newer_link_replaces_older(server: GatewayServer, smtp: SmtpServer) -> None:
    ip = address()
    account = register(server.url)
    assert forgot(server, account.email, ip).status_code == 202
    first = mailed_token(smtp, account, 1)
    assert forgot(server, account.email, ip).status_code == 202
    second = mailed_token(smtp, account, 2)
    assert first != second
    assert_bad_token(reset(server, first, NEW_PASSWORD, ip))
    assert reset(server, second, NEW_PASSWORD, ip).status_code == 200


def test_unknown_email_same_answer_and_no_mail(server: GatewayServer, smtp: SmtpServer) -> None:
    ip = address()
    nobody = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    r = forgot(server, nobody, ip)
    assert r.status_code == 202 and r.json() == ACCEPTED
    drain(server)
    assert smtp.inbox.to(nobody) == []
    r = httpx.post(server.url + "/auth/forgot-password", json={"email": "not an address"},
                   headers={"X-Forwarded-For": ip})
    assert r.status_code == 400 and r.json()["error"]["param"] == "email"


def test_disabled_account_gets_no_mail(server: GatewayServer, smtp: SmtpServer) -> None:
    account = register(server.url)

    async def disable() -> None:
        async with server.state.engine.begin() as conn:
            await conn.execute(sa.update(User).where(User.id == uuid.UUID(account.user_id))
                               .values(status="disabled"))
    server.run(disable())
    assert forgot(server, account.email, address()).status_code == 202
    drain(server)
    assert smtp.inbox.to(account.email) == []
    assert token_rows(server, account.user_id) == []


def test_both_endpoints_are_throttled(server: GatewayServer) -> None:
    ip = address()
    for _ in range(4):
        assert forgot(server, f"t-{uuid.uuid4().hex[:8]}@example.com", ip).status_code == 202
    r = forgot(server, f"t-{uuid.uuid4().hex[:8]}@example.com", ip)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "too_many_password_resets"
    assert int(r.headers["retry-after"]) >= 1 and int(r.headers["retry-after-ms"]) > 0

    target = f"t-{uuid.uuid4().hex[:8]}@example.com"  # one account from many addresses
    for _ in range(3):
        assert forgot(server, target, address()).status_code == 202
    r = forgot(server, target.upper(), address())
    assert r.status_code == 429 and "this email address" in r.json()["error"]["message"]
    assert "retry-after" in r.headers

    ip = address()
    for _ in range(6):
        assert_bad_token(reset(server, "x" * 43, NEW_PASSWORD, ip))
    r = reset(server, "x" * 43, NEW_PASSWORD, ip)
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_password_resets"
    assert int(r.headers["retry-after"]) >= 1
    drain(server)


@pytest.fixture(scope="module")
def unreachable_smtp() -> Iterator[int]:
    """A port that refuses connections: bound (so nobody else takes it), not listening."""
    sock = free_socket()
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture(scope="module")
def smtp_down_server(database_url: str, unreachable_smtp: int,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    settings = make_settings(tmp_path_factory.mktemp("smtp-down"), database_url,
                             smtp_url=f"smtp://mailer:s3cret-mail-pass@127.0.0.1:"
                                      f"{unreachable_smtp}",
                             public_url=PUBLIC_URL, mail_timeout_seconds=5)
    gateway = GatewayServer(create_app(settings))
    yield gateway
    gateway.stop()


def test_smtp_down_still_accepted_and_logged(smtp_down_server: GatewayServer,
                                             caplog: pytest.LogCaptureFixture) -> None:
    account = register(smtp_down_server.url)
    with caplog.at_level(logging.DEBUG, logger="gateway"):
        r = forgot(smtp_down_server, account.email, "127.0.0.1")
        assert r.status_code == 202 and r.json() == ACCEPTED
        drain(smtp_down_server)
    failures = [rec for rec in caplog.records if "was not sent" in rec.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.WARNING
    assert account.email in failures[0].getMessage()
    assert "#reset=" not in caplog.text and "s3cret-mail-pass" not in caplog.text


@pytest.fixture(scope="module")
def no_smtp_server(database_url: str,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    gateway = GatewayServer(create_app(make_settings(tmp_path_factory.mktemp("no-smtp"),
                                                     database_url)))
    yield gateway
    gateway.stop()


def test_without_smtp_the_link_is_logged_and_works(no_smtp_server: GatewayServer,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    account = register(no_smtp_server.url)
    with caplog.at_level(logging.WARNING, logger="gateway"):
        assert forgot(no_smtp_server, account.email, "127.0.0.1").status_code == 202
        drain(no_smtp_server)
    base = no_smtp_server.state.settings.public_base_url
    links = [re.search(re.escape(base) + r"/#reset=([A-Za-z0-9_-]+)", rec.getMessage())
             for rec in caplog.records if rec.levelno == logging.WARNING]
    [token] = [m.group(1) for m in links if m]
    r = reset(no_smtp_server, token, NEW_PASSWORD, "127.0.0.1")
    assert r.status_code == 200, r.text
    assert login(no_smtp_server, account.email, NEW_PASSWORD, "127.0.0.1").status_code == 200


def test_mail_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert smtp_url_parts("smtp://mail.example.test") == (False, "mail.example.test", 25,
                                                          None, None)
    assert smtp_url_parts("smtps://me%40example.test:p%3Ass@mail.example.test") == (
        True, "mail.example.test", 465, "me@example.test", "p:ss")
    assert smtp_url_parts("smtp://u:p@127.0.0.1:2525")[1:3] == ("127.0.0.1", 2525)
    with pytest.raises(ConfigError, match="smtp_url must look like") as refused:
        load_settings(smtp_url="http://user:hunter2-secret@mail.example.test")
    assert "hunter2-secret" not in str(refused.value)
    with pytest.raises(ConfigError, match="public_url"):
        load_settings(public_url="chat.example.test")
    secrets = {"jwt_secret": "j" * 40, "key_hash_secret": "k" * 40}
    with pytest.raises(ConfigError, match="GATEWAY_PUBLIC_URL"):
        load_settings(env="production", smtp_url="smtp://mail.example.test", **secrets)
    assert load_settings(env="production", **secrets).smtp_url is None  # logs links then
    monkeypatch.setenv("GATEWAY_HOST", "0.0.0.0")
    monkeypatch.setenv("GATEWAY_PORT", "9001")
    assert load_settings().public_base_url == "http://127.0.0.1:9001"
    assert load_settings(public_url=PUBLIC_URL + "/").public_base_url == PUBLIC_URL
