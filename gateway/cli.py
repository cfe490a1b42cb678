"""The ``gateway`` command: serve, migrate, create-user, create-key, set-plan, set-admin."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys

from gateway.settings import ConfigError, Settings, ensure_secrets, load_settings, prepare_data_dir


def app_factory():
    from gateway.app import create_app

    return create_app(load_settings())


def _settings() -> Settings:
    try:
        return ensure_secrets(load_settings())
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from gateway.ratelimit import choose_backend

    settings = _settings()
    if settings.auto_migrate:
        # In a child process: the server never imports alembic (~9 MB it would keep).
        done = subprocess.run([sys.executable, "-m", "gateway.cli", "migrate"], check=False)
        if done.returncode:
            raise SystemExit(done.returncode)
        os.environ["GATEWAY_MIGRATE_ON_START"] = "false"  # done once, not per worker
    if settings.is_sqlite and args.workers > 1:
        print("gateway: note: SQLite with several workers works, but PostgreSQL scales better",
              file=sys.stderr)
    # The workers' settings read their count here: the limiter choice depends on it.
    os.environ["GATEWAY_WORKERS"] = str(args.workers)
    if args.workers > 1 or "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from gateway.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

        # Before the workers start (and import prometheus_client): their metrics add up.
        os.environ[MULTIPROC_ENV] = prepare_multiprocess_dir()
    choice = choose_backend(settings.rate_limit_backend, redis_url=settings.redis_url,
                            workers=args.workers)
    print(f"gateway: serving on http://{args.host}:{args.port} "
          f"({'embedded SQLite' if settings.is_sqlite else 'external database'}, "
          f"rate limiter: {choice})", file=sys.stderr)
    uvicorn.run("gateway.cli:app_factory", factory=True, host=args.host, port=args.port,
                workers=args.workers, access_log=args.access_log, log_level=args.log_level,
                timeout_graceful_shutdown=settings.shutdown_grace_seconds, server_header=False,
                # Bounds on what clients can hold (README: production runs behind nginx,
                # which also times out slow headers and bodies; uvicorn cannot).
                limit_concurrency=settings.limit_concurrency,
                timeout_keep_alive=settings.keep_alive_seconds,
                # Forwarded headers count only when the settings say a proxy sets them.
                proxy_headers=settings.trust_forwarded)


def cmd_migrate(_args: argparse.Namespace) -> None:
    from storage.migrate import upgrade

    settings = _settings()
    if settings.database_url is None:  # the embedded database lives in the data dir
        prepare_data_dir(settings)
    upgrade(settings.effective_database_url)
    print("gateway: database is at the latest schema", file=sys.stderr)


async def _with_accounts(settings: Settings, fn):
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


def cmd_create_user(args: argparse.Namespace) -> None:
    from gateway.errors import APIError
    from storage.accounts import EmailTaken

    settings = _settings()

    async def run(accounts, hasher, passwords):
        passwords.check_policy(args.password)
        key = hasher.generate()
        user, _ = await accounts.create_user(args.email.strip().lower(),
                                             passwords.hash(args.password), key.key_hash,
                                             key.prefix, key.suffix, tier=args.plan)
        print(f"user {user.id} {user.email} plan={user.subscription_tier}")
        print(key.plaintext)

    try:
        asyncio.run(_with_accounts(settings, run))
    except APIError as exc:
        print(f"gateway: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
    except EmailTaken:
        print(f"gateway: a user with email {args.email} exists", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_create_key(args: argparse.Namespace) -> None:
    settings = _settings()

    async def run(accounts, hasher, _passwords):
        user = await accounts.user_by_email(args.email.strip().lower())
        if user is None:
            print(f"gateway: no user with email {args.email}", file=sys.stderr)
            raise SystemExit(2)
        key = hasher.generate()
        await accounts.create_key(user.id, args.name, key.key_hash, key.prefix, key.suffix)
        print(key.plaintext)

    asyncio.run(_with_accounts(settings, run))


def cmd_set_plan(args: argparse.Namespace) -> None:
    settings = _settings()

    async def run(accounts, _hasher, _passwords):
        user = await accounts.user_by_email(args.email.strip().lower())
        if user is None or not await accounts.set_plan(user.id, args.plan):
            print(f"gateway: no user with email {args.email}", file=sys.stderr)
            raise SystemExit(2)
        print(f"{user.email} plan={args.plan}")

    asyncio.run(_with_accounts(settings, run))


def cmd_set_admin(args: argparse.Namespace) -> None:
    settings = _settings()
    admin = not args.revoke

    async def run(accounts, _hasher, _passwords):
        user = await accounts.user_by_email(args.email.strip().lower())
        if user is None:
            print(f"gateway: no user with email {args.email}", file=sys.stderr)
            raise SystemExit(2)
        changed = await accounts.set_admin(user.id, admin, via="cli")
        print(f"{user.email} admin={'yes' if admin else 'no'}"
              + ("" if changed else " (unchanged)"))

    asyncio.run(_with_accounts(settings, run))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default=os.environ.get("GATEWAY_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("GATEWAY_PORT", "8000")))
    serve.add_argument("--workers", type=int, default=int(os.environ.get("GATEWAY_WORKERS", "1")))
    serve.add_argument("--access-log", action="store_true", help="log every request line")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(fn=cmd_serve)
    sub.add_parser("migrate", help="upgrade the database schema").set_defaults(fn=cmd_migrate)
    cu = sub.add_parser("create-user", help="create a user and print their first API key")
    cu.add_argument("email")
    cu.add_argument("--password", required=True)
    cu.add_argument("--plan", default="free", choices=["free", "pro", "enterprise"])
    cu.set_defaults(fn=cmd_create_user)
    ck = sub.add_parser("create-key", help="create an API key for a user and print it")
    ck.add_argument("email")
    ck.add_argument("--name", default="cli")
    ck.set_defaults(fn=cmd_create_key)
    sp = sub.add_parser("set-plan", help="move a user to another plan")
    sp.add_argument("email")
    sp.add_argument("plan")
    sp.set_defaults(fn=cmd_set_plan)
    sa = sub.add_parser("set-admin", help="let a user read the admin views (/admin/*)")
    sa.add_argument("email")
    sa.add_argument("--revoke", action="store_true", help="take the admin flag away")
    sa.set_defaults(fn=cmd_set_admin)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx logs every upstream request at INFO: a line per call is the writer's job, not the log's.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args.fn(args)


if __name__ == "__main__":
    main()
