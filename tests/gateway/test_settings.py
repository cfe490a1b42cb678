"""Settings: environment, TOML, validation messages, secrets kept in the data directory."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.settings import ConfigError, ensure_secrets, load_settings


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
    assert list(s.model_routes()) == ["gateway-demo"]


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
