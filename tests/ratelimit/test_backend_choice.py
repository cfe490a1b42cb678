"""choose_backend: what ``GATEWAY_RATE_LIMIT_BACKEND=auto`` (the default) resolves to."""

from __future__ import annotations

import pytest

from gateway.ratelimit import choose_backend
from gateway.settings import load_settings


def test_auto_picks_redis_when_redis_url_is_set() -> None:
    for workers in (1, 4):
        choice = choose_backend("auto", redis_url="redis://127.0.0.1:6379/0", workers=workers)
        assert (choice.backend, choice.warning) == ("redis", None)
        assert str(choice) == "redis (REDIS_URL is set)"


def test_auto_picks_memory_for_one_worker_and_sql_for_several() -> None:
    one = choose_backend("auto", redis_url=None, workers=1)
    assert (one.backend, one.warning) == ("memory", None)
    assert str(one) == "memory (1 worker, no REDIS_URL)"
    two = choose_backend("auto", redis_url=None, workers=2)
    assert (two.backend, two.warning) == ("sql", None)
    assert str(two) == "sql (2 workers, no REDIS_URL)"


@pytest.mark.parametrize("backend", ["memory", "redis", "sql"])
def test_an_explicit_backend_is_kept(backend: str) -> None:
    choice = choose_backend(backend, redis_url="redis://127.0.0.1:6379/0", workers=1)
    assert (choice.backend, choice.reason, choice.warning) == (backend, "configured", None)


def test_explicit_memory_with_several_workers_warns() -> None:
    choice = choose_backend("memory", redis_url=None, workers=3)
    assert choice.backend == "memory"
    assert choice.warning is not None
    assert "each worker counts alone" in choice.warning and "3x" in choice.warning


def test_settings_default_to_auto_and_read_the_worker_count(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAY_RATE_LIMIT_BACKEND", "GATEWAY_WORKERS", "REDIS_URL",
                 "GATEWAY_REDIS_URL", "GATEWAY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.rate_limit_backend, settings.workers) == ("auto", 1)
    monkeypatch.setenv("GATEWAY_WORKERS", "2")  # what `gateway serve --workers 2` sets
    assert load_settings().workers == 2
