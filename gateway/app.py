"""The app factory: routes assembled in one place, long-lived objects built in the lifespan."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import TYPE_CHECKING

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from gateway.auth.credentials import ApiKeyHasher, JwtCodec, PasswordHasher
from gateway.auth.principal import Authenticator
from gateway.auth.resets import PasswordResets
from gateway.auth.throttle import AuthThrottle
from gateway.budgets import stored_seeder
from gateway.cache import HEADER as CACHE_HEADER
from gateway.cache import CacheStore, MemoryStore, ResponseCache
from gateway.catalog import ModelCatalog
from gateway.chat.call import ATTEMPTS_HEADER, SERVED_BY_HEADER, CallServices
from gateway.datadir import ensure_secrets, prepare_data_dir
from gateway.errors import APIError, handle_api_error, handle_http_exception, handle_unexpected
from gateway.jobs import JobRunner
from gateway.mail import SmtpMailer
from gateway.metrics import MULTIPROC_ENV, Metrics
from gateway.middleware import Envelope, FastRoutes
from gateway.observe import RequestObserver
from gateway.pricing import Price, price_table
from gateway.ratelimit import LeaseRenewer, RateLimiter, build_limiter, choose_backend
from gateway.ratelimit.spend import build_ledger
from gateway.resilience.router import Router
from gateway.routes import (
    accounts,
    admin,
    chat,
    conversations,
    embeddings,
    health,
    history,
    legacy,
    limits,
    messages,
    metrics,
    openapi,
    password_reset,
    responses,
)
from gateway.routing import MethodNotAllowed
from gateway.settings import Settings
from gateway.tokens import TokenCounter
from gateway.upstream_client import build_upstream_transport
from providers.base import ProviderConfig
from providers.registry import ProviderRegistry
from storage.accounts import AccountRepository
from storage.conversations import ConversationStore
from storage.engine import build_engine, session_factory
from storage.history import HistoryStore
from storage.jobs import JobStore
from storage.models import utcnow
from storage.password_resets import PasswordResetStore
from storage.reads import ReadEngine
from storage.responses import ResponseStore
from storage.spool import Spool
from storage.writer import RequestWriter
from webui import static_app

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("gateway")
# A replica that does not answer a new connection in this time is failed over to the
# primary (storage/reads.py) rather than holding the read for asyncpg's 60 s default.
REPLICA_CONNECT_SECONDS = 2.0


def provider_configs(settings: Settings) -> list[ProviderConfig]:
    return [ProviderConfig(name=name, kind=spec.kind, base_url=spec.base_url,
                           api_key=spec.api_key.get_secret_value() if spec.api_key else None,
                           connect_timeout=spec.connect_timeout, read_timeout=spec.read_timeout,
                           total_timeout=spec.total_timeout,
                           max_event_bytes=spec.max_event_bytes,
                           max_response_bytes=spec.max_response_bytes,
                           headers=spec.headers, options=spec.options)
            for name, spec in settings.provider_settings().items()]


def api_routes() -> list[BaseRoute]:
    """Every API route the router serves (the hot ``chat.FAST`` ones aside), each of them
    described in gateway/openapi.py (tests/gateway/test_openapi.py checks it)."""
    return [*health.routes, *accounts.routes, *password_reset.routes, *chat.routes,
            *embeddings.routes, *messages.routes, *responses.routes, *limits.routes,
            *legacy.routes, *history.routes, *conversations.routes, *admin.routes,
            *metrics.routes, *openapi.routes]


def create_app(settings: Settings, *,
               upstream_transport: httpx.AsyncBaseTransport | None = None,
               clock: Callable[[], float] = time.monotonic,
               wall_clock: Callable[[], datetime] = utcnow) -> RequestObserver:
    """Build the ASGI app; ``upstream_transport`` replaces the upstream pool (bench, tests),
    ``clock`` the monotonic clock of the circuit breakers, ``wall_clock`` the time password
    reset links are issued and checked at and the budgets' periods are taken at (tests)."""
    settings = ensure_secrets(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = app.state
        state.settings = settings
        url = settings.effective_database_url
        if settings.database_url is None:  # the embedded database lives in the data dir
            prepare_data_dir(settings)  # also when another process migrated: tighten ours
        if settings.auto_migrate:
            from storage.migrate import upgrade_async  # alembic only when it is needed

            await upgrade_async(url)
        state.engine = build_engine(url, pool_size=settings.db_pool_size)
        # The read-only views (/history, /stats) read through this; writes, accounts, keys
        # and job claims use state.engine. No replica configured: no second pool.
        read_url = settings.effective_database_read_url
        state.reads = ReadEngine(
            state.engine,
            build_engine(read_url, pool_size=settings.db_pool_size,
                         connect_timeout=REPLICA_CONNECT_SECONDS) if read_url else None,
            max_wait=settings.read_replica_max_wait_ms / 1000)
        sessions = session_factory(state.engine)
        state.sessions = sessions
        spool = (Spool(settings.data_dir / "spool",
                       sync_seconds=settings.writer_spool_fsync_ms / 1000)
                 if settings.writer_spool else None)
        state.writer = RequestWriter(state.engine, queue_size=settings.writer_queue_size,
                                     batch_size=settings.writer_batch_size,
                                     flush_seconds=settings.writer_flush_seconds, spool=spool)
        await state.writer.replay()  # rows of processes killed before their writer wrote them
        state.writer.start()
        state.redis = None
        if settings.redis_url:
            from redis.asyncio import Redis

            state.redis = Redis.from_url(settings.redis_url)
        choice = choose_backend(settings.rate_limit_backend, redis_url=settings.redis_url,
                                workers=settings.workers)
        log.info("rate limiter: %s", choice)
        if choice.warning:
            log.warning("%s", choice.warning)
        state.limiter = build_limiter(choice.backend, redis_url=settings.redis_url,
                                      engine=state.engine,
                                      fail_open=settings.rate_limit_fail_open,
                                      lease_seconds=settings.rate_limit_lease_seconds)
        state.accounts = AccountRepository(sessions)
        state.hasher = ApiKeyHasher(settings.key_hash_secret.get_secret_value())
        state.jwt = JwtCodec(settings.jwt_secret.get_secret_value(), issuer=settings.jwt_issuer,
                             audience=settings.jwt_audience, ttl_seconds=settings.jwt_ttl_seconds)
        state.passwords = PasswordHasher(rounds=settings.bcrypt_rounds,
                                         min_length=settings.password_min_length)
        state.throttle = AuthThrottle(
            state.limiter, attempts_per_ip=settings.login_attempts_per_ip,
            failures_per_address=settings.login_failures_per_address,
            failures_per_account=settings.login_attempts_per_account,
            window_seconds=settings.login_window_seconds,
            max_delay=settings.login_delay_max_seconds,
            registrations_per_ip=settings.registrations_per_ip,
            registration_window_seconds=settings.registration_window_seconds,
            forgot_per_ip=settings.forgot_password_per_ip,
            forgot_per_account=settings.forgot_password_per_account,
            reset_per_ip=settings.reset_password_per_ip,
            reset_window_seconds=settings.password_reset_window_seconds)
        state.auth = Authenticator(state.accounts, state.hasher, state.jwt,
                                   ttl=settings.auth_cache_seconds, touch=state.writer.touch_key)
        mailer = (SmtpMailer(settings.smtp_url.get_secret_value(), sender=settings.mail_from,
                             timeout=settings.mail_timeout_seconds)
                  if settings.smtp_url is not None else None)
        state.password_resets = PasswordResets(
            state.accounts, PasswordResetStore(sessions), state.hasher, mailer,
            public_url=settings.public_base_url,
            ttl_seconds=settings.password_reset_ttl_seconds, clock=wall_clock)
        state.http = upstream_transport or build_upstream_transport(
            settings.upstream_max_connections)
        state.providers = ProviderRegistry()  # every installed provider plugin
        state.providers.build(provider_configs(settings), state.http)
        live = {name: state.providers.get(name) for name in state.providers.names()}
        state.catalog = ModelCatalog(settings.model_routes(), live,
                                     settings.provider_settings(), created=int(time.time()),
                                     clock=clock)
        state.tokens = TokenCounter()
        state.metrics = Metrics((m["id"] for m in state.catalog.snapshot()["models"]),
                                multiprocess_dir=os.environ.get(MULTIPROC_ENV))
        state.metrics.start(state.writer)
        state.leases = LeaseRenewer(state.limiter,
                                    interval=settings.rate_limit_lease_seconds / 3)
        state.leases.start()
        router = Router(state.catalog, backoff_base=settings.retry_backoff_base_seconds,
                        backoff_cap=settings.retry_backoff_max_seconds,
                        on_error=state.metrics.upstream_error)
        state.call_services = CallServices(limiter=state.limiter, leases=state.leases,
                                           writer=state.writer, tokens=state.tokens,
                                           router=router,
                                           default_max_tokens=settings.default_max_tokens_estimate,
                                           metrics=state.metrics,
                                           budgets=build_ledger(
                                               choice.backend, seeder=stored_seeder(state.engine),
                                               redis=limiter_client(state.limiter, choice.backend),
                                               engine=state.engine,
                                               fail_open=settings.rate_limit_fail_open,
                                               clock=wall_clock),
                                           prices=price_table({
                                               name: Price(**spec.model_dump())
                                               for name, spec in settings.pricing.items()}))
        # One cache for every instance when they share Redis; else this process's own.
        store: CacheStore
        if state.redis is not None:
            # Imported here: the redis package loads cryptography, which a gateway without
            # Redis never needs (tests/gateway/test_lazy_imports.py).
            from gateway.cache.redis_store import RedisStore
            store = RedisStore(state.redis)
        else:
            store = MemoryStore(settings.cache_max_bytes, clock=clock)
        state.cache = ResponseCache(store, default_ttl=settings.cache_ttl_seconds)
        state.history = HistoryStore(state.engine, state.reads)
        state.conversations = ConversationStore(state.engine, state.reads)
        state.responses = ResponseStore(state.engine)
        state.jobs = JobRunner(JobStore(state.engine), state.call_services, state.catalog,
                               workers=settings.job_workers if settings.jobs_enabled else 0,
                               lease_seconds=settings.job_lease_seconds,
                               max_attempts=settings.job_max_attempts)
        state.jobs.start()
        # Start-up objects (modules, metadata, settings) live as long as the process: out of
        # the cyclic collector's sight, its full collections stop pausing requests. A request
        # allocates hundreds of objects: at the default threshold (700) young collections ran
        # several times per request and promoted the objects of calls in flight; 10,000
        # keeps each pause well under a millisecond (bench/README.md has the numbers).
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 20, 100)
        try:
            yield
        finally:
            # Running jobs finish, or go back to pending, before anything they use closes.
            await state.jobs.stop(settings.shutdown_grace_seconds)
            await state.password_resets.aclose(settings.mail_timeout_seconds)
            await state.leases.aclose()
            await state.writer.stop()
            await state.cache.aclose()
            await state.metrics.aclose()
            await state.providers.aclose()
            await state.http.aclose()
            await state.limiter.aclose()
            if state.redis is not None:
                await state.redis.aclose()
            await state.reads.dispose()
            await state.engine.dispose()

    api = api_routes()
    # The UI mounted at / matches every path: a wrong method on an API path must be a 405
    # (gateway/routing.py) before it gets there.
    routes = [*api, MethodNotAllowed(api, fast=chat.FAST), static_app.mount()]
    app = Starlette(
        routes=routes, lifespan=lifespan,
        exception_handlers={APIError: handle_api_error, HTTPException: handle_http_exception,
                            Exception: handle_unexpected})
    # One dispatch (the hot routes, then the router) under one CORS layer for all routes,
    # inside the envelope (ids, headers, body limit); around it all, each request is
    # counted and timed by its route and logged (gateway/observe.py).
    routed: ASGIApp = FastRoutes(app, chat.FAST)
    if settings.cors_origins:
        routed = cors_layer(routed, settings.cors_origins)
    enveloped = Envelope(routed, max_body_bytes=settings.max_body_bytes,
                         trust_forwarded=settings.trust_forwarded)
    return RequestObserver(enveloped, state=app.state, fast=chat.FAST)


def limiter_client(limiter: RateLimiter, backend: str) -> Redis | None:
    """The Redis limiter's connection pool, for the spend ledger on the same backend: one
    pool, so a Redis restart noticed by either leaves no stale connection for the other
    (the limiter's client never retries, fails fast, and a retried script could run twice).
    Other backends never import redis (it loads cryptography: test_lazy_imports.py)."""
    if backend != "redis":
        return None
    from gateway.ratelimit.redis_backend import RedisRateLimiter

    return limiter.client if isinstance(limiter, RedisRateLimiter) else None


def cors_layer(app: ASGIApp, origins: list[str]) -> ASGIApp:
    """CORS only when origins are configured: no layer at all (and no cost) otherwise."""
    return CORSMiddleware(
        app, allow_origins=origins,
        allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["authorization", "content-type", "x-api-key", "x-request-id",
                       conversations.HEADER, CACHE_HEADER],
        expose_headers=["x-request-id", "retry-after", "retry-after-ms", ATTEMPTS_HEADER,
                        SERVED_BY_HEADER, CACHE_HEADER,
                        "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                        "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens",
                        "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"])
