"""What a call produced, per choice: text, reasoning, tool calls, finish reason and usage.

Reasoning is kept apart from the text: it goes on the answer as ``reasoning_content`` and
counts as completion tokens, but the stored record's ``response`` is the text alone (the
reasoning is not stored)."""

from __future__ import annotations

from typing import Any

from providers.base import Chunk, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage


class _Choice:
    __slots__ = ("finish", "parts", "reasoning", "tools")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.reasoning: list[str] = []
        self.tools: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None


class Transcript:
    """Accumulates chunks cheaply (list appends); builds messages and stored text on demand."""

    def __init__(self) -> None:
        self._choices: dict[int, _Choice] = {}
        self.usage: Usage | None = None

    def _choice(self, index: int) -> _Choice:
        choice = self._choices.get(index)
        if choice is None:
            choice = self._choices[index] = _Choice()
        return choice

    def add(self, chunk: Chunk) -> None:
        if isinstance(chunk, TextDelta):
            self._choice(chunk.index).parts.append(chunk.text)
        elif isinstance(chunk, ReasoningDelta):
            self._choice(chunk.index).reasoning.append(chunk.text)
        elif isinstance(chunk, ToolCallDelta):
            tools = self._choice(chunk.index).tools
            call = tools.get(chunk.call_index)
            if call is None:
                call = tools[chunk.call_index] = {"id": chunk.id, "name": chunk.name, "args": []}
            else:
                call["id"] = call["id"] or chunk.id
                call["name"] = call["name"] or chunk.name
            if chunk.arguments:
                call["args"].append(chunk.arguments)
        elif isinstance(chunk, Finish):
            self._choice(chunk.index).finish = chunk.reason
        elif isinstance(chunk, Usage):
            self.usage = chunk

    def text(self, index: int = 0) -> str:
        choice = self._choices.get(index)
        return "".join(choice.parts) if choice else ""

    def reasoning(self, index: int = 0) -> str:
        choice = self._choices.get(index)
        return "".join(choice.reasoning) if choice else ""

    def tool_calls(self, index: int = 0) -> list[dict[str, Any]]:
        choice = self._choices.get(index)
        if choice is None:
            return []
        return [{"id": c["id"], "type": "function",
                 "function": {"name": c["name"], "arguments": "".join(c["args"])}}
                for _, c in sorted(choice.tools.items())]

    def finish_reason(self, index: int = 0) -> str | None:
        choice = self._choices.get(index)
        return choice.finish if choice else None

    def completion_texts(self) -> list[str]:
        """Every choice's text and tool-call arguments, for counting completion tokens."""
        out = []
        for choice in self._choices.values():
            out.append("".join(choice.parts))
            out.append("".join(choice.reasoning))
            out.extend("".join(c["args"]) + (c["name"] or "") for c in choice.tools.values())
        return out

    def choices(self, n: int) -> list[dict[str, Any]]:
        """OpenAI ``choices`` for a non-streamed ``chat.completion``."""
        out = []
        for index in range(n):
            text = self.text(index)
            calls = self.tool_calls(index)
            message: dict[str, Any] = {"role": "assistant",
                                       "content": text if text or not calls else None,
                                       "refusal": None}
            if reasoning := self.reasoning(index):
                message["reasoning_content"] = reasoning
            if calls:
                message["tool_calls"] = calls
            out.append({"index": index, "message": message, "logprobs": None,
                        "finish_reason": self.finish_reason(index) or "stop"})
        return out
