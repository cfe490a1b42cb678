"""The one Anthropic ⇄ OpenAI mapping (providers/anthropic_format.py): each rule read both
ways gives back what it was given, and a whole Messages conversation becomes the OpenAI
messages every provider takes."""

from __future__ import annotations

from typing import Any

import pytest

from providers.anthropic_format import (
    FINISH_REASONS,
    STOP_REASONS,
    anthropic_tool,
    anthropic_tool_choice,
    anthropic_usage,
    image_part,
    image_source,
    openai_messages,
    openai_tool,
    openai_tool_choice,
    tool_arguments,
    tool_input,
)

TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def test_stop_reasons_map_back_to_what_they_came_from() -> None:
    for finish, stop in FINISH_REASONS.items():
        assert STOP_REASONS[stop] == ("tool_calls" if finish == "function_call" else finish)


@pytest.mark.parametrize("url", ["data:image/png;base64,iVBORw0KGgo=",
                                 "https://example.com/cat.png"])
def test_images_both_ways(url: str) -> None:
    part = {"type": "image_url", "image_url": {"url": url}}
    assert image_part(image_source(part, "m")) == part


def test_tools_both_ways() -> None:
    assert openai_tool(anthropic_tool(TOOL, 0)) == TOOL
    bare = {"name": "now", "input_schema": {"type": "object", "properties": {}}}
    assert anthropic_tool(openai_tool(bare), 0) == bare


@pytest.mark.parametrize(("choice", "parallel"), [
    ("auto", None), ("required", None), ("none", None), ("auto", False), ("required", False),
    ({"type": "function", "function": {"name": "get_weather"}}, None),
    ({"type": "function", "function": {"name": "get_weather"}}, False)])
def test_tool_choice_both_ways(choice: Any, parallel: bool | None) -> None:
    out = anthropic_tool_choice(choice, parallel, has_tools=True)
    assert out is not None
    assert openai_tool_choice(out) == (choice, parallel)


def test_tool_arguments_are_a_json_object_both_ways() -> None:
    assert tool_arguments({}) == "{}" and tool_arguments(None) == "{}"
    assert tool_input(tool_arguments({"city": "Paris"})) == {"city": "Paris"}
    assert tool_input("not json") is None and tool_input("") == {}


def test_usage_counts_cache_beside_input() -> None:
    assert anthropic_usage(2061, 22, 1920, None) == {
        "input_tokens": 141, "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 1920, "output_tokens": 22}
    assert anthropic_usage(30, 5, 10, 15)["input_tokens"] == 5


def test_a_conversation_becomes_openai_messages() -> None:
    system = [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}]
    messages = [
        {"role": "user", "content": [
            {"type": "text", "text": "Look", "cache_control": {"type": "ephemeral"}},
            {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "t2", "name": "now", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "cold"},
            {"type": "tool_result", "tool_use_id": "t2", "is_error": True,
             "content": [{"type": "text", "text": "no clock"}]},
            {"type": "text", "text": "So?"}]},
        {"role": "assistant", "content": "Cold."},
    ]
    assert openai_messages(system, messages) == [
        {"role": "system", "content": "Be brief.\nBe kind."},
        {"role": "user", "content": [
            {"type": "text", "text": "Look", "cache_control": {"type": "ephemeral"}},
            {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "t1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "t2", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "cold"},
        {"role": "tool", "tool_call_id": "t2", "content": "Error: no clock"},
        {"role": "user", "content": "So?"},
        {"role": "assistant", "content": "Cold."},
    ]
