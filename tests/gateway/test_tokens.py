"""Token counts: exact with tiktoken, and the admission estimate that must not undercount."""

from __future__ import annotations

import pytest

from gateway.tokens import TokenCounter

SAMPLES = [
    "Say hello to the benchmark, briefly please.",
    "Bonjour ! Ça va ? En japonais : こんにちは（日本語）👋🏽 À bientôt — café ☕.",
    "今日は良い天気ですね。明日も晴れるといいのですが、天気予報では雨だそうです。",
    "def f(x):\n    return {k: v for k, v in zip(range(10), x) if v % 2}\n",
    "Привет, как дела? Это тест для подсчёта токенов на кириллице.",
    '{"location": "Paris, France", "unit": "celsius", "days": [1, 2, 3]}',
    "The quick brown fox jumps over the lazy dog. " * 20,
]


@pytest.mark.parametrize("text", SAMPLES)
def test_estimate_never_undercounts(text: str) -> None:
    counter = TokenCounter()
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": text},
                                             {"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c", "type": "function",
                     "function": {"name": "get_weather", "arguments": text}}]}]
    exact = counter.messages(messages)
    estimate = TokenCounter.estimate_messages(messages)
    assert exact <= estimate <= 3 * exact


def test_tiktoken_loads_on_first_exact_count() -> None:
    counter = TokenCounter()
    TokenCounter.estimate_messages([{"role": "user", "content": "hi"}])
    assert counter._enc is None
    assert counter.text("hello world") == 2 and counter._enc is not None
