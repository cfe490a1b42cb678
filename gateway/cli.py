"""The gateway command: serve, migrate, create-user, create-key, set-plan, set-admin."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

from gateway import logs
from gateway.datadir import ensure_secrets, prepare_data_dir
from gateway.settings import ConfigError, Settings, load_settings

log = logging.getLogger(logs.CLI_LOGGER)


def app_factory():
    from gateway.app import create_app

    settings = load_settings()
    # In each worker uvicorn applies the logging configuration; these hooks are not part of it.
    logs.capture_stray_output(settings.log_format)
    return create_app(settings)


def fail(message: str) -> NoReturn:
    """One line on stderr saying what is wrong, and exit status 2."""
    log.error("%s", message)
    raise SystemExit(2)


def _settings(level: str = "info", *, access_log: bool = False) -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        fail(str(exc))
    logs.configure(settings.log_format, level=level, access_log=access_log)
    try:
        return ensure_secrets(settings)
    except ConfigError as exc:
        fail(str(exc))


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from gateway.ratelimit import choose_backend

    settings = _settings(args.log_level, access_log=args.access_log)
    if settings.auto_migrate:
        # In a child process: the server never imports alembic (~9 MB it would keep).
        done = subprocess.run([sys.executable, "-m", "gateway.cli", "migrate"], check=False)
        if done.returncode:
            raise SystemExit(done.returncode)
        os.environ["GATEWAY_MIGRATE_ON_START"] = "false"  # done once, not per worker
    if settings.is_sqlite and args.workers > 1:
        log.warning("note: SQLite with several workers works, but PostgreSQL scales better")
    # The workers' settings read their count here: the limiter choice depends on it.
    os.environ["GATEWAY_WORKERS"] = str(args.workers)
    if args.workers > 1 or "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from gateway.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

        # Before the workers start (and import prometheus_client): their metrics add up.
        os.environ[MULTIPROC_ENV] = prepare_multiprocess_dir()
    choice = choose_backend(settings.rate_limit_backend, redis_url=settings.redis_url,
                            workers=args.workers)
    log.info("serving on http://%s:%s (%s, rate limiter: %s)", args.host, args.port,
             "embedded SQLite" if settings.is_sqlite else "external database", choice)
    uvicorn.run("gateway.cli:app_factory", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level,
                # uvicorn applies it here and again in each worker it starts.
                log_config=logs.logging_config(settings.log_format, level=args.log_level,
                                               access_log=args.access_log),
                access_log=False,  # the gateway's request line says more (gateway/observe.py)
                timeout_graceful_shutdown=settings.shutdown_grace_seconds, server_header=False,
                # Bounds on what clients can hold (README: production runs behind nginx,
                # which also times out slow headers and bodies; uvicorn cannot).
                limit_concurrency=settings.limit_concurrency,
                timeout_keep_alive=settings.keep_alive_seconds,
                # Forwarded headers count only when the settings say a proxy sets them.
                proxy_headers=settings.trust_forwarded,
                # No WebSocket route: not importing a WebSocket implementation saves ~2 MB of
                # RSS per worker. The loop and HTTP parser stay uvicorn's automatic choice,
                # uvloop and httptools (both in uvicorn[standard]).
                ws="none")


def _prepare_database(settings: Settings, *, quiet: bool) -> None:
    from storage.migrate import upgrade

    if settings.database_url is None:  # the embedded database lives in the data dir
        prepare_data_dir(settings)
    if quiet:
        # An account command's output is its own: a schema already current has nothing to say.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    upgrade(settings.effective_database_url)


def cmd_migrate(_args: argparse.Namespace) -> None:
    _prepare_database(_settings(), quiet=False)
    log.info("database is at the latest schema")


def _with_accounts(settings: Settings, fn: Callable[..., Awaitable[Any]]) -> Any:
    """Run ``fn(accounts, hasher, passwords)`` on the database, migrated first as ``serve``
    does (a fresh data directory has no tables yet)."""
    if settings.auto_migrate:
        _prepare_database(settings, quiet=True)
    return asyncio.run(_accounts_session(settings, fn))


async def _accounts_session(settings: Settings, fn: Callable[..., Awaitable[Any]]) -> Any:
    from gateway.auth.credentials import ApiKeyHasher, PasswordHasher
    from storage.accounts import AccountRepository
    from storage.engine import build_engine, session_factory

    engine = build_engine(settings.effective_database_url)
    try:
        accounts = AccountRepository(session_factory(engine))
        hasher = ApiKeyHasher(settings.key_hash_secret.get_secret_value())
        passwords = PasswordHasher(rounds=settings.bcrypt_rounds,
                                   min_length=settings.password_min_length)
        return await fn(accounts, hasher, passwords)
    finally:
        await engine.dispose()


async def _check_plan(accounts, plan: str) -> None:
    names = [p.name for p in await accounts.plans()]
    if plan not in names:
        fail(f"there is no plan {plan!r}; the plans are: {', '.join(names)}")


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if args.password is not None:
        return args.password
    if not sys.stdin.isatty():
        fail("no password given: pipe it with --password-stdin, or run in a terminal to be "
             "asked for it")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Password (again): ") != password:
        fail("the two passwords differ")
    return password


def cmd_create_user(args: argparse.Namespace) -> None:
    from gateway.errors import APIError
    from storage.accounts import EmailTaken

    settings = _settings()
    password = _read_password(args)

    async def run(accounts, hasher, passwords):
        passwords.check_policy(password)
        await _check_plan(accounts, args.plan)
        key = hasher.generate()
        user, _ = await accounts.create_user(args.email.strip().lower(),
                                             passwords.hash(password), key.key_hash,
                                             key.prefix, key.suffix, tier=args.plan)
        print(f"user {user.id} {user.email} plan={user.subscription_tier}")
        print(key.plaintext)

    try:
        _with_accounts(settings, run)
    except APIError as exc:
        fail(exc.message)
    except EmailTaken:
        fail(f"a user with email {args.email} exists")


def cmd_create_key(args: argparse.Namespace) -> None:
    settings = _settings()

    async def run(accounts, hasher, _passwords):
        user = await accounts.user_by_email(args.email.strip().lower())
        if user is None:
            fail(f"no user with email {args.email}")
        key = hasher.generate()
        await accounts.create_key(user.id, args.name, key.key_hash, key.prefix, key.suffix)
        print(key.plaintext)

    _with_accounts(settings, run)


def cmd_set_plan(args: argparse.Namespace) -> None:
    settings = _settings()

    async def run(accounts, _hasher, _passwords):
        await _check_plan(accounts, args.plan)
        user = await accounts.user_by_email(args.email.strip().lower())
        if user is None or not await accounts.set_plan(user.id, args.plan):
            fail(f"no user with email {args.email}")
        print(f"{user.email} plan={args.plan}")

    _with_accounts(settings, run)


def cmd_set_admin(args: argparse.Namespace) -> None:
    settings = _settings()
    admin = not args.revoke

    async def run(accounts, _hasher, _passwords):
        user = await accounts.user_by_email(args.email.strip().lower())
        if user is None:
            fail(f"no user with email {args.email}")
        changed = await accounts.set_admin(user.id, admin, via="cli")
        print(f"{user.email} admin={'yes' if admin else 'no'}"
              + ("" if changed else " (unchanged)"))

    _with_accounts(settings, run)


class _Parser(argparse.ArgumentParser):
    """Shows defaults in help; with JSON logs a usage error is one JSON line too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if logs.early_format() == "json":
            fail(f"{self.prog}: {message} (see {self.prog} --help)")
        super().error(message)


def _version() -> str:
    try:
        return version("llm-gateway")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gateway",
                     description="A self-hostable, OpenAI-compatible LLM gateway. Settings come "
                                 "from GATEWAY_* environment variables (see the README).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the gateway (migrates the database first "
                                         "unless GATEWAY_ENV=production)")
    serve.add_argument("--host", default=os.environ.get("GATEWAY_HOST", "127.0.0.1"),
                       help="address to listen on (GATEWAY_HOST)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("GATEWAY_PORT", "8000")),
                       help="port to listen on (GATEWAY_PORT)")
    serve.add_argument("--workers", type=int,
                       default=int(os.environ.get("GATEWAY_WORKERS", "1")),
                       help="worker processes (GATEWAY_WORKERS)")
    serve.add_argument("--access-log", action="store_true",
                       help="log one line per request: id, method, path, status, duration, "
                            "and the user, model and tokens of a chat call")
    serve.add_argument("--log-level", default="info",
                       choices=["critical", "error", "warning", "info", "debug"],
                       help="least severe level logged (the access log is separate)")
    serve.set_defaults(fn=cmd_serve)
    sub.add_parser("migrate", help="upgrade the database schema").set_defaults(fn=cmd_migrate)
    cu = sub.add_parser("create-user", help="create a user and print their first API key")
    cu.add_argument("email")
    given = cu.add_mutually_exclusive_group()
    given.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of standard input")
    given.add_argument("--password",
                       help="the password (visible to other users of this machine and kept "
                            "in shell history: prefer --password-stdin or the prompt); "
                            "without either option it is asked for on the terminal")
    cu.add_argument("--plan", default="free", help="the user's plan (see set-plan)")
    cu.set_defaults(fn=cmd_create_user)
    ck = sub.add_parser("create-key", help="create an API key for a user and print it")
    ck.add_argument("email")
    ck.add_argument("--name", default="cli", help="a label for the key")
    ck.set_defaults(fn=cmd_create_key)
    sp = sub.add_parser("set-plan", help="move a user to another plan")
    sp.add_argument("email")
    sp.add_argument("plan", help="a plan's name: free, pro and enterprise unless you added "
                                 "others to the subscription_plans table")
    sp.set_defaults(fn=cmd_set_plan)
    sa = sub.add_parser("set-admin", help="let a user read the admin views (/admin/*)")
    sa.add_argument("email")
    sa.add_argument("--revoke", action="store_true", help="take the admin flag away")
    sa.set_defaults(fn=cmd_set_admin)
    return parser


def main(argv: list[str] | None = None) -> None:
    # Until the settings are read (and when they are invalid): the environment's format.
    logs.configure(logs.early_format())
    args = build_parser().parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
