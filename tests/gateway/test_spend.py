"""What each call cost, end to end: recorded upstream usages of each dialect through the
running gateway, the stored row's ``cost_usd``, /history, and /stats' totals, models and
days (usage_daily on SQLite and PostgreSQL); fallbacks priced at the model that answered,
unpriced models, ``[pricing.<model>]`` over the defaults, and a refused price table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.pricing import Price, price_table
from gateway.settings import ConfigError, load_settings
from providers.base import Usage
from storage.models import InferenceRequest
from tests.conftest import ONE_TRY, Account, make_settings, register, set_plan
from tests.gateway.test_openai_protocol import MESSAGES, stored
from tests.legacy.support import submit, wait_final
from tests.servers import FIXTURES, FakeUpstream, GatewayServer, Reply, wait_for

# USD per million tokens, (input, output, cached input): the list prices of README "Prices",
# written out here so the arithmetic is checked against numbers, not against the table.
GPT_4O_MINI = (0.15, 0.60, 0.075)
CLAUDE_HAIKU = (1.00, 5.00, 0.10)
LLAMA_3_8B = (0.20, 0.20, 0.20)
OVERRIDE = (1000.0, 2000.0, 100.0)  # [pricing.gpt-4o-mini] of the priced gateway below
EMBEDDING = (0.02, 0.0, 0.02)  # [pricing.text-embedding-3-small]


def cost(price: tuple[float, float, float], *, uncached: int, cached: int = 0,
         output: int = 0) -> float:
    """Input not read from a prompt cache at the input price (a cache write is input too),
    cache reads at the cached price, output at the output price."""
    return (uncached * price[0] + cached * price[2] + output * price[1]) / 1_000_000


def recorded(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_bytes())


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(gw: GatewayServer, key: str, model: str, **body: Any) -> httpx.Response:
    r = httpx.post(gw.url + "/v1/chat/completions", headers=auth(key), timeout=20,
                   json={"model": model, "messages": MESSAGES, **body})
    assert r.status_code == 200, r.text
    return r


def last_row(gw: GatewayServer, account: Account) -> InferenceRequest:
    return stored(gw, account.user_id)[-1]


def assert_cost(gw: GatewayServer, account: Account, row: InferenceRequest,
                expected: float) -> None:
    """The stored row, /history's list item and /history/{id} all say ``expected``."""
    assert row.cost_usd == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert row.cached is False
    item = httpx.get(f"{gw.url}/history/{row.id}", headers=auth(account.api_key)).json()
    assert (item["cost_usd"], item["cached"]) == (round(expected, 8), False)
    listed = httpx.get(gw.url + "/history", headers=auth(account.api_key),
                       params={"include_conversations": "true", "limit": 100}).json()["data"]
    entry = next(i for i in listed if i["id"] == str(row.id))
    assert (entry["cost_usd"], entry["cached"]) == (round(expected, 8), False)


# -- each dialect's recorded usage, on the defaults --------------------------------------

def test_openai_cached_prompt_tokens_plain_and_streamed(gateway: GatewayServer, account: Account,
                                                         upstream: FakeUpstream) -> None:
    usage = recorded("openai_text.json")["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    assert cached > 0
    expected = cost(GPT_4O_MINI, uncached=usage["prompt_tokens"] - cached, cached=cached,
                    output=usage["completion_tokens"])
    upstream.script(Reply.recording("openai_text.json", split=7))
    chat(gateway, account.api_key, "gpt-4o-mini")
    assert_cost(gateway, account, last_row(gateway, account), expected)

    upstream.script(Reply.recording("openai_text.sse", split=5))
    chat(gateway, account.api_key, "gpt-4o-mini", stream=True)
    row = last_row(gateway, account)
    assert row.status == "completed" and not row.tokens_estimated
    assert_cost(gateway, account, row, expected)


def test_anthropic_cache_reads_and_cache_writes(gateway: GatewayServer, account: Account,
                                                upstream: FakeUpstream) -> None:
    usage = recorded("anthropic_text.json")["usage"]
    assert usage["cache_read_input_tokens"] > 0
    upstream.script(Reply.recording("anthropic_text.json"))
    chat(gateway, account.api_key, "claude-haiku")
    assert_cost(gateway, account, last_row(gateway, account),
                cost(CLAUDE_HAIKU, uncached=usage["input_tokens"],
                     cached=usage["cache_read_input_tokens"], output=usage["output_tokens"]))

    # The stream's last usage (message_delta): 423 input, 1268 written to the prompt cache,
    # billed as input, and 97 output.
    final = json.loads([line for line in (FIXTURES / "anthropic_parallel_tools.sse")
                        .read_text().splitlines() if "message_delta" in line][-1][6:])["usage"]
    assert final["cache_creation_input_tokens"] > 0
    upstream.script(Reply.recording("anthropic_parallel_tools.sse", split=11))
    chat(gateway, account.api_key, "claude-haiku", stream=True)
    assert_cost(gateway, account, last_row(gateway, account),
                cost(CLAUDE_HAIKU, uncached=final["input_tokens"]
                     + final["cache_creation_input_tokens"], output=final["output_tokens"]))


def test_together_and_the_free_demo(gateway: GatewayServer, account: Account,
                                    upstream: FakeUpstream) -> None:
    usage = recorded("together_text.json")["usage"]
    upstream.script(Reply.recording("together_text.json"))
    chat(gateway, account.api_key, "llama-3-8b")
    assert_cost(gateway, account, last_row(gateway, account),
                cost(LLAMA_3_8B, uncached=usage["prompt_tokens"],
                     output=usage["completion_tokens"]))

    chat(gateway, account.api_key, "gateway-demo")
    row = last_row(gateway, account)
    assert row.model == "gateway-demo" and row.total_tokens > 0
    assert_cost(gateway, account, row, 0.0)


def test_anthropic_inbound_messages(gateway: GatewayServer, account: Account,
                                    upstream: FakeUpstream) -> None:
    usage = recorded("anthropic_text.json")["usage"]
    expected = cost(CLAUDE_HAIKU, uncached=usage["input_tokens"],
                    cached=usage["cache_read_input_tokens"], output=usage["output_tokens"])
    for name, stream in (("anthropic_text.json", False), ("anthropic_text.sse", True)):
        upstream.script(Reply.recording(name))
        r = httpx.post(gateway.url + "/v1/messages", timeout=20,
                       headers={"x-api-key": account.api_key, "anthropic-version": "2023-06-01"},
                       json={"model": "claude-haiku", "max_tokens": 64, "stream": stream,
                             "messages": [{"role": "user", "content": "Hello"}]})
        assert r.status_code == 200, r.text
        row = last_row(gateway, account)
        assert (row.source, row.status) == ("messages", "completed")
        assert_cost(gateway, account, row, expected)


def test_legacy_job(gateway: GatewayServer, account: Account, upstream: FakeUpstream) -> None:
    usage = recorded("openai_text.json")["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    upstream.script(Reply.recording("openai_text.sse"))  # a job streams from its upstream
    job_id = submit(gateway.url, account.api_key, model="gpt-4o-mini", prompt="Bonjour?")
    assert wait_final(gateway.url, account.api_key, job_id)["status"] == "completed"
    row = next(r for r in stored(gateway, account.user_id) if str(r.id) == job_id)
    assert row.source == "legacy"
    expected = cost(GPT_4O_MINI, uncached=usage["prompt_tokens"] - cached, cached=cached,
                    output=usage["completion_tokens"])
    assert_cost(gateway, account, row, expected)
    stats = httpx.get(gateway.url + "/stats", headers=auth(account.api_key)).json()
    assert stats["totals"]["cost_usd"] == round(expected, 8)


# -- calls that did not complete ---------------------------------------------------------

def test_cancelled_stream_costs_its_partial_usage(gateway: GatewayServer, account: Account,
                                                 upstream: FakeUpstream) -> None:
    upstream.script(Reply.by_event("openai_text.sse", hang_after=3))
    with httpx.stream("POST", gateway.url + "/v1/chat/completions",
                      headers=auth(account.api_key),
                      json={"model": "gpt-4o-mini", "messages": MESSAGES,
                            "stream": True}) as r:
        seen = b""
        for piece in r.iter_bytes():
            seen += piece
            if seen.count(b"\n\n") >= 3:
                break
    assert wait_for(lambda: last_row(gateway, account).status == "cancelled")
    row = last_row(gateway, account)
    # What was produced before the client left, counted by the gateway (the upstream's usage
    # never came): the prompt and the partial answer, at the answering model's price.
    assert row.tokens_estimated and row.completion_tokens > 0 and row.prompt_tokens > 0
    assert row.cost_usd > 0
    assert_cost(gateway, account, row, cost(GPT_4O_MINI, uncached=row.prompt_tokens,
                                            output=row.completion_tokens))


def test_failed_calls(gateway: GatewayServer, account: Account, upstream: FakeUpstream) -> None:
    # Refused by the upstream before any answer: nothing was billed, whatever the estimate.
    upstream.script(Reply.error(500, "openai_error_500.json"))
    r = httpx.post(gateway.url + "/v1/chat/completions", headers=auth(account.api_key),
                   json={"model": "gpt-4o-mini", "messages": MESSAGES}, timeout=20)
    assert r.status_code >= 500
    row = last_row(gateway, account)
    assert row.status == "failed" and row.prompt_tokens > 0
    assert_cost(gateway, account, row, 0.0)

    # Failed half-way through a stream: what was read and produced until then.
    upstream.script(Reply.recording("anthropic_error_overloaded.sse"))
    chat(gateway, account.api_key, "claude-haiku", stream=True)
    row = last_row(gateway, account)
    assert row.status == "failed" and row.cost_usd > 0
    assert_cost(gateway, account, row, cost(CLAUDE_HAIKU, uncached=row.prompt_tokens,
                                            output=row.completion_tokens))


# -- a gateway with prices of its own ----------------------------------------------------

@pytest.fixture(scope="module")
def priced(database_url: str, upstream: FakeUpstream,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """``gpt-4o-mini`` repriced, an unpriced ``mystery`` model, a priced embedding model,
    and ``flaky-chat`` (priced absurdly) that falls back to ``claude-haiku``."""
    providers = {
        "fake-openai": {"kind": "openai", "base_url": upstream.url + "/v1", "api_key": "sk-up",
                        "models": {"gpt-4o-mini": "gpt-4o-mini", "mystery": "mystery-up",
                                   "text-embedding-3-small": "text-embedding-3-small",
                                   "flaky-up": "flaky-up"},
                        "read_timeout": 2.0, **ONE_TRY},
        "fake-anthropic": {"kind": "anthropic", "base_url": upstream.url, "api_key": "sk-ant",
                           "models": {"claude-haiku": "claude-haiku-4-5"}, "read_timeout": 2.0,
                           **ONE_TRY},
    }
    models = {"flaky-chat": {"provider": "fake-openai", "upstream": "flaky-up",
                             "fallbacks": ["claude-haiku"]}}
    pricing = {
        "gpt-4o-mini": dict(zip(("input_per_million", "output_per_million",
                                 "cached_input_per_million"), OVERRIDE, strict=True)),
        "text-embedding-3-small": {"input_per_million": EMBEDDING[0], "output_per_million": 0},
        "flaky-chat": {"input_per_million": 10_000, "output_per_million": 10_000},
    }
    settings = make_settings(tmp_path_factory.mktemp("priced"), database_url,
                             providers=providers, models=models, pricing=pricing)
    server = GatewayServer(create_app(settings))
    yield server
    server.stop()


def test_stats_totals_models_days_and_unpriced(priced: GatewayServer,
                                               upstream: FakeUpstream) -> None:
    account = register(priced.url)
    set_plan(priced, account.user_id, "enterprise")
    usage = recorded("openai_text.json")["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    upstream.script(Reply.recording("openai_text.json"))
    chat(priced, account.api_key, "gpt-4o-mini")
    chat(priced, account.api_key, "gpt-4o-mini")
    overridden = cost(OVERRIDE, uncached=usage["prompt_tokens"] - cached, cached=cached,
                      output=usage["completion_tokens"])
    assert_cost(priced, account, last_row(priced, account), overridden)

    chat(priced, account.api_key, "mystery")  # no price: costs 0, and /stats says so
    mystery = last_row(priced, account)
    assert mystery.total_tokens > 0
    assert_cost(priced, account, mystery, 0.0)

    # The asked-for model fails; the fallback answers and is what the call is priced at.
    upstream.script_model("flaky-up", Reply.error(500, "openai_error_500.json"))
    upstream.script_model("claude-haiku-4-5", Reply.recording("anthropic_text.json"))
    r = chat(priced, account.api_key, "flaky-chat")
    assert r.json()["model"] == "claude-haiku"
    claude = recorded("anthropic_text.json")["usage"]
    fallback = cost(CLAUDE_HAIKU, uncached=claude["input_tokens"],
                    cached=claude["cache_read_input_tokens"], output=claude["output_tokens"])
    assert_cost(priced, account, last_row(priced, account), fallback)

    upstream.script(Reply.recording("openai_embeddings.json"))
    r = httpx.post(priced.url + "/v1/embeddings", headers=auth(account.api_key), timeout=20,
                   json={"model": "text-embedding-3-small", "input": ["Bonjour", "café ☕"],
                         "encoding_format": "float", "dimensions": 8})
    assert r.status_code == 200, r.text
    embedding = cost(EMBEDDING, uncached=recorded("openai_embeddings.json")["usage"]
                     ["prompt_tokens"])
    row = last_row(priced, account)
    assert row.source == "embed" and embedding > 0
    assert_cost(priced, account, row, embedding)

    stats = httpx.get(priced.url + "/stats", headers=auth(account.api_key)).json()
    total = 2 * overridden + fallback + embedding
    assert stats["totals"]["cost_usd"] == round(total, 8)
    by_model = {m["model"]: m for m in stats["by_model"]}
    assert by_model["gpt-4o-mini"]["cost_usd"] == round(2 * overridden, 8)
    assert by_model["gpt-4o-mini"]["priced"] is True
    assert (by_model["mystery"]["cost_usd"], by_model["mystery"]["priced"]) == (0.0, False)
    assert by_model["mystery"]["total_tokens"] == mystery.total_tokens
    # usage_daily keeps the model asked for; its cost is the fallback's.
    assert by_model["flaky-chat"]["cost_usd"] == round(fallback, 8)
    assert by_model["text-embedding-3-small"]["cost_usd"] == round(embedding, 8)
    assert stats["unpriced_models"] == ["mystery"]
    assert stats["by_day"][-1]["cost_usd"] == round(total, 8)
    assert all(day["cost_usd"] == 0 for day in stats["by_day"][:-1])
    # Money is rounded to 8 places in the JSON itself.
    raw = httpx.get(priced.url + "/stats", headers=auth(account.api_key)).text
    assert f'"cost_usd":{round(total, 8)}' in raw


# -- the price table's settings ----------------------------------------------------------

def test_pricing_from_toml_overrides_a_default(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[pricing.ok]\ninput_per_million = 1000.0\noutput_per_million = 2000.0\n'
                   'cached_input_per_million = 100.0\n'
                   '[pricing.gpt-4o]\ninput_per_million = 1\noutput_per_million = 2\n')
    monkeypatch.setenv("GATEWAY_CONFIG", str(cfg))
    settings = load_settings(data_dir=tmp_path)
    assert settings.pricing["ok"].cached_input_per_million == 100.0
    assert settings.pricing["gpt-4o"].cached_input_per_million is None
    prices = price_table({name: Price(**spec.model_dump())
                          for name, spec in settings.pricing.items()})
    assert prices.price("gpt-4o") == Price(1.0, 2.0)  # the default (2.50, 10.00) is gone
    assert prices.price("gpt-4o-mini") == Price(*GPT_4O_MINI)  # the others stay
    assert prices.cost("ok", Usage(prompt_tokens=3000, completion_tokens=500,
                                   cached_tokens=1000)) == pytest.approx(
        (2000 * 1000.0 + 1000 * 100.0 + 500 * 2000.0) / 1_000_000)


@pytest.mark.parametrize(("table", "message"), [
    ("input_per_million = -1\noutput_per_million = 2", r"pricing\.ok\.input_per_million"),
    ("input_per_million = 1\noutput_per_million = 2\ncached_input_per_million = -0.5",
     r"pricing\.ok\.cached_input_per_million"),
    ("input_per_million = 1\noutput_per_million = 2\ninput_per_milion = 3",
     r"pricing\.ok\.input_per_milion: Extra inputs are not permitted"),
    ("input_per_million = 1", r"pricing\.ok\.output_per_million: Field required"),
    ("input_per_million = nan\noutput_per_million = 2", r"pricing\.ok\.input_per_million"),
])
def test_invalid_pricing_is_refused_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             table: str, message: str) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f"[pricing.ok]\n{table}\n")
    monkeypatch.setenv("GATEWAY_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match=message):
        load_settings(data_dir=tmp_path)
