"""Settings: environment (``GATEWAY_*``, ``DATABASE_URL``, ``REDIS_URL``), then a TOML file.

With nothing set the gateway runs embedded: SQLite in a data directory, the in-memory
limiter and only the offline demo model. ``GATEWAY_ENV=production`` demands real secrets.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

MIN_SECRET_LENGTH = 32


class ConfigError(Exception):
    """Settings are invalid; the message says what to change."""


class ProviderSettings(BaseModel):
    """One upstream. ``models`` maps public names to upstream ids (a list means the same)."""

    kind: str
    base_url: str | None = None
    api_key: SecretStr | None = None
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)
    total_timeout: float = Field(600.0, gt=0)
    max_event_bytes: int = Field(1024 * 1024, ge=1024)
    max_response_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    headers: dict[str, str] = {}
    options: dict[str, Any] = {}
    models: dict[str, str] | list[str] = []
    owned_by: str | None = None
    # Resilience (gateway/resilience/): retries of one target before the first byte, and
    # its circuit breaker (per target, per process).
    max_retries: int = Field(2, ge=0, le=10)
    breaker_failures: int = Field(5, ge=1)
    breaker_cooldown_seconds: float = Field(30.0, gt=0, le=86_400, allow_inf_nan=False)

    def model_map(self) -> dict[str, str]:
        if isinstance(self.models, list):
            return {m: m for m in self.models}
        return dict(self.models)


class RouteTarget(BaseModel):
    """One deployment of a balanced model: ``provider`` serving it as ``upstream``."""

    provider: str
    upstream: str
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)


class ModelRoute(BaseModel):
    """A public model name served by ``provider`` as ``upstream``, or balanced over
    ``targets``; ``fallbacks`` (and ``context_fallbacks``, for prompts too long for it)
    are other public model names tried in order when it fails.

    ``cache`` answers its chat calls from the response cache (gateway/cache/) by default,
    for ``cache_ttl_seconds`` (default: ``GATEWAY_CACHE_TTL_SECONDS``). A model served
    through a provider's ``models`` map gets them from a ``[models.<name>]`` entry that
    carries nothing else (no provider, upstream or targets): an overlay."""

    provider: str | None = None
    upstream: str | None = None
    targets: list[RouteTarget] = []
    strategy: Literal["weighted", "least-busy"] = "weighted"
    fallbacks: list[str] = []
    context_fallbacks: list[str] = []
    aliases: list[str] = []
    cache: bool = False
    cache_ttl_seconds: float | None = Field(None, gt=0, le=365 * 86_400, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_way(self) -> ModelRoute:
        single = self.provider is not None or self.upstream is not None
        if single and self.targets:
            raise ValueError("give either provider and upstream, or targets, not both")
        if self.is_overlay:
            if self.model_fields_set - {"cache", "cache_ttl_seconds"}:
                raise ValueError("a route needs provider and upstream (or targets); only "
                                 "cache and cache_ttl_seconds may be set without them")
            return self
        if not self.targets and (self.provider is None or self.upstream is None):
            raise ValueError("a route needs provider and upstream (or targets)")
        return self

    @property
    def is_overlay(self) -> bool:
        """Only cache settings, for a model some provider's ``models`` map serves."""
        return self.provider is None and self.upstream is None and not self.targets

    def target_list(self) -> list[RouteTarget]:
        if self.targets:
            return list(self.targets)
        if self.is_overlay:
            return []
        assert self.provider is not None and self.upstream is not None
        return [RouteTarget(provider=self.provider, upstream=self.upstream)]


class PriceSettings(BaseModel):
    """``[pricing.<model>]``: USD per million tokens (gateway/pricing.py)."""

    model_config = ConfigDict(extra="forbid")

    input_per_million: float = Field(ge=0, allow_inf_nan=False)
    output_per_million: float = Field(ge=0, allow_inf_nan=False)
    cached_input_per_million: float | None = Field(None, ge=0, allow_inf_nan=False)


# The seed's models, each enabled only when its provider has a key.
DEFAULT_PROVIDERS: dict[str, dict[str, Any]] = {
    "openai": {"kind": "openai", "models": {
        "gpt-4o": "gpt-4o", "gpt-4o-mini": "gpt-4o-mini", "gpt-4": "gpt-4",
        "gpt-3.5-turbo": "gpt-3.5-turbo"}},
    "anthropic": {"kind": "anthropic", "models": {
        "claude-opus": "claude-opus-4-1", "claude-sonnet": "claude-sonnet-4-5",
        "claude-haiku": "claude-haiku-4-5"}},
    "together": {"kind": "together", "models": {
        "llama-3-70b": "meta-llama/Llama-3-70b-chat-hf",
        "llama-3-8b": "meta-llama/Llama-3-8b-chat-hf"}},
}
DEMO_MODEL = "gateway-demo"
DEMO_EMBED_MODEL = "gateway-demo-embed"  # providers/demo_embed.py: offline, not semantic


class Settings(BaseSettings):
    """Every setting of the gateway; see the README's configuration reference."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="forbid",
                                      env_nested_delimiter="__")

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path("./data")
    database_url: str | None = Field(
        None, validation_alias=AliasChoices("GATEWAY_DATABASE_URL", "DATABASE_URL",
                                            "database_url"))
    # A streaming replica of DATABASE_URL for the read-only views (/history, /stats): see
    # storage/reads.py for the rule that keeps those reads from ever being stale.
    database_read_url: str | None = Field(
        None, validation_alias=AliasChoices("GATEWAY_DATABASE_READ_URL", "DATABASE_READ_URL",
                                            "database_read_url"))
    # How long a read waits for the replica to replay the writes committed before it began,
    # before it reads the primary instead.
    read_replica_max_wait_ms: int = Field(100, ge=0, le=10_000)
    redis_url: str | None = Field(
        None, validation_alias=AliasChoices("GATEWAY_REDIS_URL", "REDIS_URL", "redis_url"))
    db_pool_size: int = Field(10, ge=1)
    migrate_on_start: bool | None = None  # default: yes, except in production

    jwt_secret: SecretStr | None = None
    key_hash_secret: SecretStr | None = None
    jwt_issuer: str = "llm-gateway"
    jwt_audience: str = "llm-gateway"
    jwt_ttl_seconds: int = Field(24 * 3600, gt=0)
    password_min_length: int = Field(10, ge=8)
    bcrypt_rounds: int = Field(12, ge=4, le=16)
    auth_cache_seconds: float = Field(5.0, ge=0)
    login_attempts_per_account: int = Field(10, ge=1)
    login_attempts_per_ip: int = Field(50, ge=1)
    login_window_seconds: int = Field(900, ge=1)
    login_failures_per_address: int = Field(10, ge=1)
    login_delay_max_seconds: float = Field(4.0, ge=0, le=30)
    registrations_per_ip: int = Field(10, ge=1)
    registration_window_seconds: int = Field(3600, ge=1)
    # Forgot password (gateway/auth/resets.py): links mailed over SMTP, or written to the
    # log when no SMTP server is set; both endpoints throttled per address (and per account).
    smtp_url: SecretStr | None = None  # smtp://[user:password@]host:port or smtps://...
    mail_from: str = "LLM Gateway <noreply@localhost>"
    public_url: str | None = None  # default: http://GATEWAY_HOST:GATEWAY_PORT as served
    mail_timeout_seconds: float = Field(15.0, gt=0, le=300)
    password_reset_ttl_seconds: int = Field(1800, ge=60, le=7 * 86_400)
    forgot_password_per_ip: int = Field(10, ge=1)
    forgot_password_per_account: int = Field(3, ge=1)
    reset_password_per_ip: int = Field(20, ge=1)
    password_reset_window_seconds: int = Field(3600, ge=1)

    cors_origins: list[str] = []
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    trust_forwarded: bool = False
    # GET /metrics needs 'Authorization: Bearer <this>' when set; open otherwise (keep it
    # off the public listener then, e.g. nginx only proxies it to the scraper's network).
    metrics_token: SecretStr | None = Field(None, min_length=1)
    # Deeper JSON is refused with a 400 naming the field: nothing legitimate nests this far,
    # and the writer (orjson, 255 levels) could not store it.
    max_json_depth: int = Field(64, ge=8, le=255)
    # The longest previous_response_id chain a /v1/responses call may continue (answers,
    # one indexed read each); a longer one is a 400.
    responses_max_chain: int = Field(100, ge=1, le=10_000)
    # uvicorn answers 503 once this many connections (or requests) are open. Every open
    # stream is a connection and holds an upstream one: the same bound as the upstream pool,
    # so normal load (bench/README.md: 5,000 open streams) is never turned away.
    limit_concurrency: int = Field(10_000, ge=1)
    # Idle keep-alive connections are closed after this; nginx.conf retires its upstream
    # connections sooner (4 s), so it never reuses one the gateway is closing.
    keep_alive_seconds: float = Field(5.0, gt=0)
    # What every line on stderr is: "text" for people, "json" (one object per line) for log
    # shippers; gateway/logs.py applies it to our loggers, uvicorn's and alembic's alike.
    log_format: Literal["text", "json"] = "text"
    # On SIGTERM: how long open streams and running jobs get to finish (both counted from
    # the signal) before they are cut off, and the jobs among them retried elsewhere.
    shutdown_grace_seconds: float = Field(30.0, ge=0)

    # auto: redis with REDIS_URL, else memory for one worker, else sql (see choose_backend).
    rate_limit_backend: Literal["auto", "memory", "redis", "sql"] = "auto"
    rate_limit_fail_open: bool = True
    rate_limit_lease_seconds: float = Field(300.0, gt=0)
    # The processes serving this gateway: `gateway serve --workers N` passes N to its
    # workers here, so that the limiter choice knows it is one of several.
    workers: int = Field(1, ge=1)
    default_max_tokens_estimate: int = Field(1024, ge=1)
    # The response cache (gateway/cache/): how long an answer is kept unless its model
    # says otherwise, and the in-process cache's bound (used when REDIS_URL is not set).
    cache_ttl_seconds: float = Field(3600.0, gt=0, le=365 * 86_400, allow_inf_nan=False)
    cache_max_bytes: int = Field(64 * 1024 * 1024, ge=0)

    writer_queue_size: int = Field(10_000, ge=1)
    writer_batch_size: int = Field(2000, ge=1)
    writer_flush_seconds: float = Field(0.2, gt=0)
    # Crash safety: queued rows also go to a per-process file in data_dir/spool, written
    # and fsynced by a thread at most this often, replayed by the next start.
    writer_spool: bool = True
    writer_spool_fsync_ms: int = Field(100, ge=1, le=10_000)

    openai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GATEWAY_OPENAI_API_KEY", "OPENAI_API_KEY",
                                            "openai_api_key"))
    anthropic_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GATEWAY_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY",
                                            "anthropic_api_key"))
    together_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GATEWAY_TOGETHER_API_KEY", "TOGETHER_API_KEY",
                                            "together_api_key"))
    demo_enabled: bool = True
    demo_delay_ms: int = Field(20, ge=0)
    providers: dict[str, ProviderSettings] = {}
    models: dict[str, ModelRoute] = {}
    # Prices by public model name, over the dated defaults of gateway/pricing.py.
    pricing: dict[str, PriceSettings] = {}
    upstream_max_connections: int = Field(10_000, ge=1)
    # Retries back off exponentially with full jitter: a random wait up to base * 2^n,
    # never more than the cap; an upstream's retry-after above the cap is not waited for.
    retry_backoff_base_seconds: float = Field(0.25, gt=0, allow_inf_nan=False)
    retry_backoff_max_seconds: float = Field(8.0, gt=0, le=3600, allow_inf_nan=False)

    jobs_enabled: bool = True
    job_workers: int = Field(4, ge=0)
    job_lease_seconds: float = Field(60.0, gt=0)
    job_max_attempts: int = Field(3, ge=1)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlFileSource(settings_cls))

    @model_validator(mode="after")
    def _check(self) -> Settings:
        known = self._known_models()
        mapped = self._mapped_models()
        for name, route in self.models.items():
            if route.is_overlay and name not in mapped:
                raise ValueError(f"models.{name}: a route needs provider and upstream (or "
                                 "targets); cache settings alone only apply to a model a "
                                 "provider's models map serves")
            for target in route.target_list():
                if (target.provider not in self.providers
                        and target.provider not in DEFAULT_PROVIDERS):
                    raise ValueError(f"models.{name}: unknown provider {target.provider!r}")
            for field in ("fallbacks", "context_fallbacks"):
                for other in getattr(route, field):
                    if other == name or other not in known:
                        raise ValueError(f"models.{name}.{field}: {other!r} is not another "
                                         "configured model")
        if self.database_read_url and not (
                _postgres_url(self.effective_database_url)
                and _postgres_url(self.effective_database_read_url or "")):
            raise ValueError("database_read_url: a read replica needs PostgreSQL for both "
                             "DATABASE_URL and DATABASE_READ_URL (postgresql://...)")
        if self.smtp_url is not None:
            smtp_url_parts(self.smtp_url.get_secret_value())  # raises a readable ValueError
        if self.public_url is not None and not self.public_url.startswith(("http://",
                                                                           "https://")):
            raise ValueError("public_url must start with http:// or https://")
        if self.rate_limit_backend == "redis" and not self.redis_url:
            raise ValueError("rate_limit_backend is 'redis' but REDIS_URL is not set")
        if self.env == "production":
            for field in ("jwt_secret", "key_hash_secret"):
                value = getattr(self, field)
                if value is None or len(value.get_secret_value()) < MIN_SECRET_LENGTH:
                    raise ValueError(
                        f"{field}: production needs GATEWAY_{field.upper()} of at least "
                        f"{MIN_SECRET_LENGTH} random characters (python -c 'import secrets; "
                        f"print(secrets.token_urlsafe(48))')")
            if self.smtp_url is not None and self.public_url is None:
                raise ValueError("public_url: production mails password reset links, which "
                                 "need GATEWAY_PUBLIC_URL, the address users open the web "
                                 "UI at (e.g. https://gateway.example.com)")
        return self

    def _known_models(self) -> set[str]:
        """Every public model name the configuration can give (enabled or not)."""
        names = {*self._mapped_models(), *self.models}
        for route in self.models.values():
            names.update(route.aliases)
        return names

    def _mapped_models(self) -> set[str]:
        """The public names the providers' ``models`` maps give (enabled or not)."""
        names = {DEMO_MODEL, DEMO_EMBED_MODEL}
        for spec in (*DEFAULT_PROVIDERS.values(), *self.providers.values()):
            models = spec["models"] if isinstance(spec, dict) else spec.models
            names.update(models)
        return names

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return _asyncpg_url(self.database_url)
        return f"sqlite+aiosqlite:///{(self.data_dir / 'gateway.db').resolve()}"

    @property
    def effective_database_read_url(self) -> str | None:
        """The read replica's URL for SQLAlchemy, or None: everything reads the primary."""
        return _asyncpg_url(self.database_read_url) if self.database_read_url else None

    @property
    def auto_migrate(self) -> bool:
        if self.migrate_on_start is not None:
            return self.migrate_on_start
        return self.env != "production"

    @property
    def public_base_url(self) -> str:
        """Where users reach the gateway (the web UI), for links in mails."""
        if self.public_url:
            return self.public_url.rstrip("/")
        # What `gateway serve` listens on; an "any address" bind is reached as localhost.
        host = os.environ.get("GATEWAY_HOST", "127.0.0.1")
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{os.environ.get('GATEWAY_PORT', '8000')}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    def provider_settings(self) -> dict[str, ProviderSettings]:
        """Configured upstreams: the demo, the seed defaults that have keys, then the config."""
        out: dict[str, ProviderSettings] = {}
        if self.demo_enabled:
            out["demo"] = ProviderSettings(kind="demo", models=[DEMO_MODEL, DEMO_EMBED_MODEL],
                                           owned_by="demo",
                                           options={"delay_ms": self.demo_delay_ms})
        keys = {"openai": self.openai_api_key, "anthropic": self.anthropic_api_key,
                "together": self.together_api_key}
        for name, spec in DEFAULT_PROVIDERS.items():
            if keys[name] is not None:
                out[name] = ProviderSettings(**spec, api_key=keys[name])
        for name, spec in self.providers.items():
            if spec.api_key is None and name in keys and keys[name] is not None:
                spec = spec.model_copy(update={"api_key": keys[name]})
            out[name] = spec
        return out

    def model_routes(self) -> dict[str, ModelRoute]:
        """Public model name (and alias) → route, for every enabled provider."""
        providers = self.provider_settings()
        routes: dict[str, ModelRoute] = {}
        for pname, spec in providers.items():
            for public, upstream in spec.model_map().items():
                routes[public] = ModelRoute(provider=pname, upstream=upstream)
        for public, route in self.models.items():
            if route.is_overlay:  # cache settings for a mapped model, if it is enabled
                if public in routes:
                    routes[public] = routes[public].model_copy(update={
                        "cache": route.cache, "cache_ttl_seconds": route.cache_ttl_seconds})
                continue
            # A balanced route keeps the targets whose provider is enabled (has its key).
            targets = [t for t in route.target_list() if t.provider in providers]
            if len(targets) == len(route.target_list()):
                routes[public] = route
            elif targets:
                routes[public] = route.model_copy(update={"targets": targets})
        for route in list(routes.values()):
            for alias in route.aliases:
                routes.setdefault(alias, route)
        return routes


def _asyncpg_url(url: str) -> str:
    """Accept the URLs people copy from hosting dashboards."""
    for plain in ("postgres://", "postgresql://"):
        if url.startswith(plain):
            return "postgresql+asyncpg://" + url[len(plain):]
    return url


def _postgres_url(url: str) -> bool:
    return url.startswith("postgresql")


def smtp_url_parts(url: str) -> tuple[bool, str, int, str | None, str | None]:
    """(implicit TLS, host, port, user, password) of an ``smtp://`` or ``smtps://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        # Not the URL itself in the message: it may hold the password.
        raise ValueError("smtp_url must look like smtp://[user:password@]host:port (STARTTLS "
                         "when the server offers it) or smtps://... (TLS from the start)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("smtp_url: the port is not a number from 1 to 65535") from None
    tls = parts.scheme == "smtps"
    return (tls, parts.hostname, port or (465 if tls else 25),
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password is not None else None)


class TomlFileSource(PydanticBaseSettingsSource):
    """Reads the file named by ``GATEWAY_CONFIG`` (TOML), lowest priority."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("GATEWAY_CONFIG")
        if not path:
            return {}
        try:
            with open(path, "rb") as fh:
                return tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"GATEWAY_CONFIG={path}: file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"GATEWAY_CONFIG={path}: invalid TOML: {exc}") from exc


def load_settings(**overrides: Any) -> Settings:
    """Read and validate settings, turning validation errors into one readable ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                 for err in exc.errors()]
        raise ConfigError("invalid gateway settings:\n" + "\n".join(lines)) from exc
