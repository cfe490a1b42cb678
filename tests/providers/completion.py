"""Shared by the complete_chat tests: recorded answers, the requests they answer, and
how to compare a non-streamed answer with a streamed one."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from providers.base import (
    ChatRequest,
    Chunk,
    Finish,
    TextDelta,
    ToolCallDelta,
    Usage,
)

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
TOGETHER_URL = "https://api.together.xyz/v1/chat/completions"
URLS = {"openai": OPENAI_URL, "anthropic": ANTHROPIC_URL, "together": TOGETHER_URL}

REQS = {
    "openai": ChatRequest(model="gpt-4o-mini",
                          messages=[{"role": "user", "content": "Salut ?"}]),
    "anthropic": ChatRequest(model="claude-sonnet-4-5",
                             messages=[{"role": "user", "content": "Salut ?"}]),
    "together": ChatRequest(model="meta-llama/Llama-3.3-70B-Instruct-Turbo",
                            messages=[{"role": "user", "content": "Bonjour ?"}],
                            params={"n": 1}),
}
SPLITS = ["whole", "bytewise", "awkward"]
JSON = {"content-type": "application/json"}

# The exact chunks for each recorded non-streamed answer.
RECORDED: dict[str, tuple[str, list[Chunk]]] = {
    "openai_text": ("openai", [
        TextDelta("Bonjour ! Ça va ? En japonais : こんにちは（日本語） 👋🏽 À bientôt — café ☕."),
        Finish("stop"),
        Usage(prompt_tokens=2061, completion_tokens=22, cached_tokens=1920),
    ]),
    "openai_tools": ("openai", [
        ToolCallDelta(0, id="call_Xk4pQ2rB7tNw9yHc3LmVs8eZ", name="get_weather",
                      arguments='{"location":"Paris, France","unit":"celsius"}'),
        Finish("tool_calls"),
        Usage(prompt_tokens=84, completion_tokens=19, cached_tokens=0),
    ]),
    "anthropic_text": ("anthropic", [
        TextDelta("Bonjour ! Ça va ? En japonais : こんにちは（日本語）👋🏽 À bientôt — café ☕."),
        Finish("stop"),
        # Cache reads count into prompt tokens, as OpenAI counts them (and the stream does).
        Usage(prompt_tokens=9 + 1850, completion_tokens=31, cached_tokens=1850,
              cache_creation_tokens=0),
    ]),
    "anthropic_tools": ("anthropic", [
        TextDelta("I'll check the current weather in Paris for you."),
        ToolCallDelta(0, id="toolu_01A9sXkP4vWq7HdZ2mTcN8Ry", name="get_weather",
                      arguments='{"location":"Paris, France","unit":"celsius"}'),
        Finish("tool_calls"),  # Anthropic's stop_reason "tool_use"
        Usage(prompt_tokens=612, completion_tokens=86, cached_tokens=0,
              cache_creation_tokens=0),
    ]),
    "together_text": ("together", [
        TextDelta("Bonjour ! Ça va ? 日本語 👋🏽"),
        Finish("stop"),  # Together's finish_reason "eos"
        Usage(prompt_tokens=47, completion_tokens=11, cached_tokens=0),  # flat cached_tokens
    ]),
}



def answer(chunks: list[Chunk]) -> dict[str, Any]:
    """What a list of chunks says, however it was cut: text and tool calls per choice
    (arguments parsed: Anthropic streams them spaced, its JSON body holds an object),
    finishes and usage in order."""
    text: dict[int, str] = {}
    calls: dict[tuple[int, int], dict[str, Any]] = {}
    finishes: list[Finish] = []
    usage: list[Usage] = []
    for chunk in chunks:
        if isinstance(chunk, TextDelta):
            text[chunk.index] = text.get(chunk.index, "") + chunk.text
        elif isinstance(chunk, ToolCallDelta):
            call = calls.setdefault((chunk.index, chunk.call_index),
                                    {"id": None, "name": None, "arguments": ""})
            for key in ("id", "name"):
                value = getattr(chunk, key)
                if value is not None:
                    assert call[key] is None, f"{key} sent twice"
                    call[key] = value
            call["arguments"] += chunk.arguments
        elif isinstance(chunk, Finish):
            finishes.append(chunk)
        else:
            usage.append(chunk)
    for call in calls.values():
        call["arguments"] = json.loads(call["arguments"])
    return {"text": text, "tool_calls": calls, "finishes": finishes, "usage": usage}


def same_headers_but_accept(a: httpx.Request, b: httpx.Request) -> bool:
    def rest(request: httpx.Request) -> list[tuple[str, str]]:
        return [(k, v) for k, v in request.headers.multi_items()
                if k not in ("accept", "content-length")]
    return rest(a) == rest(b)


def fresh(status: int, content: bytes, headers: dict[str, str] | None = None
          ) -> Callable[[httpx.Request], httpx.Response]:
    """A respx side effect answering every call with a new response (bodies read once)."""
    return lambda request: httpx.Response(status, content=content, headers=headers or {})

