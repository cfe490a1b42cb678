"""The ``gateway`` command as an operator meets it: real processes on fresh data
directories, their exit status, their output and what they stored."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import sqlite3
import subprocess
import sys
import termios
import time
from contextlib import closing
from importlib.metadata import version
from pathlib import Path

import bcrypt
import pytest

from tests.processes import gateway_env

PASSWORD = "correct horse 42"
COMMANDS = ["serve", "migrate", "create-user", "create-key", "set-plan", "set-admin"]


def gateway(env: dict[str, str], *args: str, stdin: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def users(data_dir: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(data_dir / "gateway.db")) as db:
        return db.execute("SELECT email, subscription_tier FROM users ORDER BY email").fetchall()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory that does not exist yet: no database, no tables."""
    return tmp_path / "data"


@pytest.fixture
def env(data_dir: Path) -> dict[str, str]:
    return gateway_env(data_dir)


def test_create_user_on_a_fresh_data_dir_migrates_first(env: dict[str, str],
                                                         data_dir: Path) -> None:
    done = gateway(env, "create-user", "First@Example.com", "--password-stdin", "--plan", "pro",
                   stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    line, key = done.stdout.splitlines()
    assert re.fullmatch(r"user [0-9a-f-]{36} first@example\.com plan=pro", line), line
    assert key.startswith("gw-")
    assert done.stderr == ""  # a schema brought up to date silently, no alembic chatter
    assert users(data_dir) == [("first@example.com", "pro")]

    # The stored hash is of the line read from stdin, without its newline.
    with closing(sqlite3.connect(data_dir / "gateway.db")) as db:
        (stored,) = db.execute("SELECT password_hash FROM users").fetchone()
    assert bcrypt.checkpw(PASSWORD.encode(), stored.encode())

    created = gateway(env, "create-key", "first@example.com", "--name", "ci")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("gw-") and created.stdout.strip() != key


@pytest.mark.parametrize("command", [["create-key", "nobody@example.com"],
                                     ["set-plan", "nobody@example.com", "pro"],
                                     ["set-admin", "nobody@example.com"]])
def test_account_commands_on_a_fresh_data_dir_migrate_first(env: dict[str, str],
                                                            command: list[str]) -> None:
    done = gateway(env, *command)
    # Not "no such table": the tables exist, the user does not.
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "gateway: no user with email nobody@example.com\n"


def test_set_plan_to_an_unknown_plan_names_the_plans(env: dict[str, str],
                                                      data_dir: Path) -> None:
    assert gateway(env, "create-user", "someone@example.com", "--password-stdin",
                   stdin=PASSWORD).returncode == 0
    done = gateway(env, "set-plan", "someone@example.com", "gold")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == ("gateway: there is no plan 'gold'; the plans are: "
                           "free, pro, enterprise\n")
    assert users(data_dir) == [("someone@example.com", "free")]

    moved = gateway(env, "set-plan", "someone@example.com", "enterprise")
    assert (moved.returncode, moved.stdout) == (0, "someone@example.com plan=enterprise\n")
    assert users(data_dir) == [("someone@example.com", "enterprise")]


def test_create_user_on_an_unknown_plan_stores_nothing(env: dict[str, str],
                                                       data_dir: Path) -> None:
    done = gateway(env, "create-user", "gold@example.com", "--password-stdin", "--plan", "gold",
                   stdin=PASSWORD)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.count("\n") == 1 and "free, pro, enterprise" in done.stderr
    assert users(data_dir) == []


def test_a_weak_password_from_stdin_is_refused(env: dict[str, str], data_dir: Path) -> None:
    done = gateway(env, "create-user", "weak@example.com", "--password-stdin",
                   stdin="short\n")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "gateway: password must be at least 10 characters\n"
    assert users(data_dir) == []


def test_without_a_password_or_a_terminal_create_user_says_how(env: dict[str, str],
                                                               data_dir: Path) -> None:
    done = gateway(env, "create-user", "nopass@example.com", stdin="")
    assert (done.returncode, done.stdout) == (2, "")
    assert "--password-stdin" in done.stderr and done.stderr.count("\n") == 1
    assert not (data_dir / "gateway.db").exists()  # refused before any work


def _take_terminal() -> None:
    """In the child: make the pseudo-terminal on stdin its controlling terminal, the
    /dev/tty that getpass reads from."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A process on a pseudo-terminal, typed into like an operator would."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(args, env=env, stdin=slave, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     start_new_session=True, preexec_fn=_take_terminal)
        os.close(slave)
        self.screen = b""

    def expect(self, prompt: bytes, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while prompt not in self.screen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {prompt!r} on the terminal: {self.screen!r}"
            if select.select([self.master], [], [], remaining)[0]:
                self.screen += os.read(self.master, 1024)
        self.screen = self.screen.split(prompt, 1)[1]

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def finish(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=120)
        os.close(self.master)
        return self.proc.returncode, out, err


def test_create_user_asks_for_the_password_on_the_terminal(env: dict[str, str],
                                                           data_dir: Path) -> None:
    args = [sys.executable, "-m", "gateway.cli", "create-user"]
    term = Terminal([*args, "typed@example.com"], env)
    term.expect(b"Password: ")
    term.type(PASSWORD)
    term.expect(b"Password (again): ")
    term.type(PASSWORD)
    status, out, err = term.finish()
    assert status == 0, err
    assert out.startswith("user ") and PASSWORD not in term.screen.decode()  # no echo
    assert users(data_dir) == [("typed@example.com", "free")]

    term = Terminal([*args, "typo@example.com"], env)
    term.expect(b"Password: ")
    term.type(PASSWORD)
    term.expect(b"Password (again): ")
    term.type(PASSWORD + "!")
    assert term.finish() == (2, "", "gateway: the two passwords differ\n")
    assert users(data_dir) == [("typed@example.com", "free")]


def test_version(env: dict[str, str]) -> None:
    done = gateway(env, "--version")
    assert (done.returncode, done.stdout) == (0, f"gateway {version('llm-gateway')}\n")


def test_help_shows_every_serve_default_and_no_markup(env: dict[str, str]) -> None:
    texts = {name: gateway(env, name, "--help") for name in COMMANDS}
    texts["gateway"] = gateway(env, "--help")
    for name, done in texts.items():
        assert done.returncode == 0, (name, done.stderr)
        assert "`" not in done.stdout, (name, done.stdout)  # reStructuredText markup
    for command in COMMANDS:
        assert command in texts["gateway"].stdout
    # Each option of serve is one entry: its line and the indented lines that continue it.
    options = texts["serve"].stdout.split("options:\n", 1)[1]
    entries = re.split(r"\n(?=  -)", options.strip("\n"))
    named = {re.match(r"\s*(-[-\w]+(?:, --[\w-]+)?)", e).group(1): " ".join(e.split())
             for e in entries}
    assert set(named) == {"-h, --help", "--host", "--port", "--workers", "--access-log",
                          "--log-level"}
    for option, text in named.items():
        if option != "-h, --help":
            assert "(default: " in text, text
    assert "(default: 127.0.0.1)" in named["--host"] and "(default: 8000)" in named["--port"]


def test_json_logs_make_cli_errors_one_json_line(env: dict[str, str]) -> None:
    env = {**env, "GATEWAY_LOG_FORMAT": "json"}
    messages = []
    for args in (["set-plan", "someone@example.com", "gold"], ["set-plan"]):
        done = gateway(env, *args)
        assert done.returncode == 2
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        record = json.loads(lines[0])
        assert record["level"] == "ERROR" and record["timestamp"], record
        messages.append(record["message"])
    assert messages[0].endswith("the plans are: free, pro, enterprise"), messages
    assert "required: email, plan" in messages[1], messages  # a usage error, as JSON too
