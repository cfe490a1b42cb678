"""The offline demo model: deterministic, honours max_tokens / stop / n, counts words."""

from __future__ import annotations

import json
import time

import pytest

from providers.base import ChatRequest, Finish, ProviderConfig, TextDelta, ToolCallDelta, Usage
from providers.demo import DemoProvider, compose_reply

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}


@pytest.fixture
def demo() -> DemoProvider:
    return DemoProvider(ProviderConfig(name="demo", kind="demo", options={"delay_ms": 0}), None)


def ask(text: str, **params: object) -> ChatRequest:
    return ChatRequest(model="demo", messages=[{"role": "system", "content": "Be nice."},
                                               {"role": "user", "content": text}],
                       params=params)


def text_of(chunks: list) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextDelta))


async def test_reply_echoes_the_question_word_by_word(demo, collect) -> None:
    chunks = await collect(demo, ask("What is a gateway?"))
    reply = compose_reply([{"role": "user", "content": "What is a gateway?"}])
    assert "offline demo model" in reply and "What is a gateway?" in reply
    words = reply.split()
    assert chunks[:-2] == [TextDelta(w if i == 0 else " " + w) for i, w in enumerate(words)]
    assert chunks[-2:] == [Finish("stop"),
                           Usage(prompt_tokens=2 + 4, completion_tokens=len(words))]
    assert chunks == await collect(demo, ask("What is a gateway?"))  # deterministic


async def test_max_tokens_cuts_with_length(demo, collect) -> None:
    chunks = await collect(demo, ask("Hi", max_tokens=3))
    assert chunks == [TextDelta("Hello!"), TextDelta(" I'm"), TextDelta(" the"),
                      Finish("length"), Usage(prompt_tokens=3, completion_tokens=3)]


async def test_stop_sequence_ends_the_reply_early(demo, collect) -> None:
    chunks = await collect(demo, ask("Hi", stop=["demo"]))
    assert text_of(chunks) == "Hello! I'm the offline "
    assert chunks[-2:] == [Finish("stop"), Usage(prompt_tokens=3, completion_tokens=5)]


async def test_n_choices(demo, collect) -> None:
    chunks = await collect(demo, ask("Hi", n=2, max_tokens=1))
    assert chunks == [TextDelta("Hello!", 0), TextDelta("Hello!", 1), Finish("length", 0),
                      Finish("length", 1), Usage(prompt_tokens=3, completion_tokens=2)]


async def test_content_parts_are_read(demo, collect) -> None:
    req = ChatRequest(model="demo", messages=[{"role": "user", "content": [
        {"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": {"url": "x"}}]}])
    assert "“Describe”" in text_of(await collect(demo, req))


async def test_weather_question_with_tools_calls_the_tool(demo, collect) -> None:
    chunks = await collect(demo, ask("What's the weather in San Francisco?",
                                     tools=[WEATHER_TOOL]))
    first, *fragments, finish, usage = chunks
    assert isinstance(first, ToolCallDelta) and first.name == "get_weather"
    assert first.id and first.id.startswith("call_")
    assert json.loads("".join(f.arguments for f in fragments)) == {"location": "San Francisco"}
    assert finish == Finish("tool_calls")
    assert isinstance(usage, Usage)


async def test_tool_choice_none_answers_in_text(demo, collect) -> None:
    chunks = await collect(demo, ask("weather?", tools=[WEATHER_TOOL], tool_choice="none"))
    assert not any(isinstance(c, ToolCallDelta) for c in chunks)


async def test_tool_result_is_passed_along(demo, collect) -> None:
    req = ChatRequest(model="demo", messages=[
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"location":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18°C and sunny"}],
        params={"tools": [WEATHER_TOOL]})
    assert text_of(await collect(demo, req)).startswith("The tool answered: 18°C and sunny")


async def test_pacing_uses_delay_ms(collect) -> None:
    demo = DemoProvider(ProviderConfig(name="d", kind="demo", options={"delay_ms": 5}), None)
    started = time.perf_counter()
    await collect(demo, ask("Hi", max_tokens=4))
    assert time.perf_counter() - started >= 0.018
