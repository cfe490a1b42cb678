"""Settings: environment, TOML, validation messages, secrets kept in the data directory."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.datadir import ensure_secrets
from gateway.settings import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("GATEWAY_") or name in ("DATABASE_URL", "REDIS_URL",
                                                   "OPENAI_API_KEY", "ANTHROPIC_API_KEY",
                                                   "TOGETHER_API_KEY"):
            monkeypatch.delenv(name)


def test_embedded_defaults(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert s.effective_database_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/gateway.db"
    assert s.rate_limit_backend == "auto"
    assert list(s.model_routes()) == ["gateway-demo", "gateway-demo-embed"]


def test_env_and_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db:5432/gw")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("GATEWAY_CORS_ORIGINS", '["https://a.example"]')
    s = load_settings()
    assert s.effective_database_url == "postgresql+asyncpg://u:p@db:5432/gw"
    assert s.cors_origins == ["https://a.example"]
    routes = s.model_routes()
    assert routes["gpt-4o"].provider == "openai" and "claude-sonnet" not in routes


def test_toml_config_adds_openai_compatible_upstream(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[providers.ollama]\nkind = "openai"\n'
                   'base_url = "http://127.0.0.1:11434/v1"\nmodels = ["llama3.1"]\n'
                   '[models.fast]\nprovider = "ollama"\nupstream = "llama3.1"\n'
                   'aliases = ["quick"]\n')
    monkeypatch.setenv("GATEWAY_CONFIG", str(cfg))
    routes = load_settings().model_routes()
    assert routes["llama3.1"].provider == "ollama"
    assert routes["quick"].upstream == "llama3.1"


def test_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_RATE_LIMIT_BACKEND", "carrier-pigeon")
    with pytest.raises(ConfigError, match="rate_limit_backend"):
        load_settings()
    monkeypatch.delenv("GATEWAY_RATE_LIMIT_BACKEND")
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    monkeypatch.setenv("GATEWAY_CONFIG", str(bad))
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings()


def test_production_refuses_missing_or_weak_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ENV", "production")
    with pytest.raises(ConfigError, match="jwt_secret"):
        load_settings()
    monkeypatch.setenv("GATEWAY_JWT_SECRET", "short")
    monkeypatch.setenv("GATEWAY_KEY_HASH_SECRET", "k" * 48)
    with pytest.raises(ConfigError, match="at least 32"):
        load_settings()
    monkeypatch.setenv("GATEWAY_JWT_SECRET", "j" * 48)
    assert load_settings().env == "production"


def test_embedded_secrets_persist_with_mode_0600(tmp_path: Path) -> None:
    first = ensure_secrets(load_settings(data_dir=tmp_path))
    second = ensure_secrets(load_settings(data_dir=tmp_path))
    assert first.jwt_secret.get_secret_value() == second.jwt_secret.get_secret_value()
    assert first.key_hash_secret.get_secret_value() != first.jwt_secret.get_secret_value()
    for name in (".jwt_secret", ".key_hash_secret"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_resilience_options_parse_with_defaults(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[providers.a]\nkind = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'max_retries = 0\nbreaker_failures = 3\nbreaker_cooldown_seconds = 2.5\n'
        'models = ["x"]\n'
        '[providers.b]\nkind = "openai"\nbase_url = "http://127.0.0.1:2/v1"\nmodels = ["y"]\n'
        '[models.primary]\nprovider = "a"\nupstream = "down"\nfallbacks = ["x"]\n'
        'context_fallbacks = ["y"]\n'
        '[models.balanced]\nstrategy = "least-busy"\n'
        'targets = [ { provider = "a", upstream = "x", weight = 3 },\n'
        '            { provider = "b", upstream = "y" } ]\n')
    monkeypatch.setenv("GATEWAY_CONFIG", str(cfg))
    s = load_settings()
    a, b = s.provider_settings()["a"], s.provider_settings()["b"]
    assert (a.max_retries, a.breaker_failures, a.breaker_cooldown_seconds) == (0, 3, 2.5)
    assert (b.max_retries, b.breaker_failures, b.breaker_cooldown_seconds) == (2, 5, 30.0)
    assert (s.retry_backoff_base_seconds, s.retry_backoff_max_seconds) == (0.25, 8.0)
    routes = s.model_routes()
    assert routes["primary"].fallbacks == ["x"] and routes["primary"].context_fallbacks == ["y"]
    balanced = routes["balanced"]
    assert balanced.strategy == "least-busy"
    assert [(t.provider, t.upstream, t.weight) for t in balanced.target_list()] == [
        ("a", "x", 3.0), ("b", "y", 1.0)]


@pytest.mark.parametrize(("route", "message"), [
    ('provider = "a"\nupstream = "x"\nfallbacks = ["nope"]', "models.m.fallbacks"),
    ('provider = "a"\nupstream = "x"\ncontext_fallbacks = ["m"]', "models.m.context_fallbacks"),
    ('provider = "a"\nupstream = "x"\ntargets = [ { provider = "a", upstream = "y" } ]',
     "either provider and upstream, or targets"),
    ('upstream = "x"', "needs provider and upstream"),
    ('targets = [ { provider = "zz", upstream = "y" } ]', "unknown provider 'zz'"),
    ('targets = [ { provider = "a", upstream = "y", weight = 0 } ]', "weight"),
    ('targets = [ { provider = "a", upstream = "y", weight = inf } ]', "weight"),
    ('targets = [ { provider = "a", upstream = "y", weight = nan } ]', "weight"),
    ('provider = "a"\nupstream = "x"\nstrategy = "round-robin"', "strategy"),
])
def test_bad_routes_are_refused_naming_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 route: str, message: str) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[providers.a]\nkind = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
                   f'models = ["x"]\n[models.m]\n{route}\n')
    monkeypatch.setenv("GATEWAY_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match=message):
        load_settings()


@pytest.mark.parametrize("setting", ["max_retries = -1", "max_retries = 11",
                                     "breaker_failures = 0", "breaker_cooldown_seconds = 0",
                                     "breaker_cooldown_seconds = inf"])
def test_bad_resilience_options_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            setting: str) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[providers.a]\nkind = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
                   f'models = ["x"]\n{setting}\n')
    monkeypatch.setenv("GATEWAY_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match=setting.split(" ")[0]):
        load_settings()
