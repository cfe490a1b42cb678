"""Validate an Anthropic Messages body once, at the edge, naming the bad field; then the
OpenAI-shaped chat request every provider takes, through the shared mapping
(providers/anthropic_format.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.chat.request import ParsedChat
from gateway.errors import invalid
from providers.anthropic_format import openai_messages, openai_tool, openai_tool_choice
from providers.base import ChatRequest

# Fields translated into the OpenAI request; anything else is kept in ``extra``, which
# providers send on (so ``top_k`` or ``thinking`` reach an upstream that takes them).
KNOWN = frozenset({"model", "messages", "system", "max_tokens", "stream", "temperature",
                   "top_p", "stop_sequences", "tools", "tool_choice", "metadata"})
BLOCK_TYPES = frozenset({"text", "image", "tool_use", "tool_result", "thinking",
                         "redacted_thinking"})
TOOL_CHOICES = frozenset({"auto", "any", "tool", "none"})
MAX_TOKENS = 10_000_000


@dataclass(frozen=True, slots=True)
class ParsedMessages:
    """The Messages body (``body``, as sent) and the chat request it translates to."""

    body: dict[str, Any]
    chat: ParsedChat


def _number(data: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise invalid(name, f"{name}: must be a number between {lo:g} and {hi:g}")
    return value


def _text_blocks(blocks: Any, where: str) -> None:
    if not isinstance(blocks, list):
        raise invalid(where, f"{where}: must be a string or an array of text blocks")
    for j, block in enumerate(blocks):
        if (not isinstance(block, dict) or block.get("type") != "text"
                or not isinstance(block.get("text"), str)):
            raise invalid(f"{where}.{j}", f"{where}.{j}: must be a text block "
                          "{\"type\": \"text\", \"text\": ...}")


def _block(block: Any, where: str, role: str) -> None:
    kind = block.get("type") if isinstance(block, dict) else None
    if not isinstance(kind, str) or kind not in BLOCK_TYPES:
        raise invalid(f"{where}.type", f"{where}.type: must be one of "
                      f"{', '.join(sorted(BLOCK_TYPES))}")
    if kind == "text" and not isinstance(block.get("text"), str):
        raise invalid(f"{where}.text", f"{where}.text: Field required (a string)")
    elif kind == "image":
        source = block.get("source")
        ok = isinstance(source, dict) and (
            (source.get("type") == "base64" and isinstance(source.get("media_type"), str)
             and isinstance(source.get("data"), str))
            or (source.get("type") == "url" and isinstance(source.get("url"), str)))
        if not ok:
            raise invalid(f"{where}.source", f"{where}.source: must be "
                          "{\"type\": \"base64\", \"media_type\", \"data\"} or "
                          "{\"type\": \"url\", \"url\"}")
    elif kind == "tool_use":
        if role != "assistant":
            raise invalid(f"{where}.type", f"{where}: tool_use blocks belong to assistant "
                          "messages")
        if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
            raise invalid(f"{where}", f"{where}: a tool_use block needs an id and a name")
        if not isinstance(block.get("input", {}), dict):
            raise invalid(f"{where}.input", f"{where}.input: must be an object")
    elif kind == "tool_result":
        if role != "user":
            raise invalid(f"{where}.type", f"{where}: tool_result blocks belong to user "
                          "messages")
        if not isinstance(block.get("tool_use_id"), str):
            raise invalid(f"{where}.tool_use_id", f"{where}.tool_use_id: Field required")
        content = block.get("content")
        if content is not None and not isinstance(content, str):
            if not isinstance(content, list):
                raise invalid(f"{where}.content", f"{where}.content: must be a string or "
                              "an array of text and image blocks")
            for k, inner in enumerate(content):
                if not isinstance(inner, dict) or inner.get("type") not in ("text", "image"):
                    raise invalid(f"{where}.content.{k}", f"{where}.content.{k}: must be a "
                                  "text or image block")
                _block(inner, f"{where}.content.{k}", role)


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise invalid("messages", "messages: must be a non-empty array")
    for i, message in enumerate(raw):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise invalid(where, f"{where}: must be an object")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise invalid(f"{where}.role", f"{where}.role: must be 'user' or 'assistant'")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise invalid(f"{where}.content", f"{where}.content: must be a string or an "
                          "array of content blocks")
        for j, block in enumerate(content):
            _block(block, f"{where}.content.{j}", role)
    return raw


def _tools(data: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = data.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise invalid("tools", "tools: must be an array")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise invalid(f"tools.{i}.name", f"tools.{i}.name: Field required")
        if tool.get("type") not in (None, "custom"):
            raise invalid(f"tools.{i}.type", f"tools.{i}.type: only client tools (custom) "
                          "can be translated; server tools need an Anthropic model")
        if not isinstance(tool.get("input_schema"), dict):
            raise invalid(f"tools.{i}.input_schema", f"tools.{i}.input_schema: Field "
                          "required (a JSON Schema object)")
    return tools


def parse_messages(data: dict[str, Any], *, count_only: bool = False) -> ParsedMessages:
    """Check every field we translate; raise a 400 naming the first bad one.
    ``count_only``: the count_tokens body, where ``max_tokens`` is not asked for."""
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid("model", "model: Field required (a string)")
    max_tokens = data.get("max_tokens")
    if not count_only or max_tokens is not None:
        if (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                or not 1 <= max_tokens <= MAX_TOKENS):
            raise invalid("max_tokens", "max_tokens: Field required (an integer of at "
                          "least 1)")
    messages = _messages(data.get("messages"))
    system = data.get("system")
    if system is not None and not isinstance(system, str):
        _text_blocks(system, "system")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("stream", "stream: must be a boolean")
    params: dict[str, Any] = {}
    for name, hi in (("temperature", 1), ("top_p", 1)):
        if (value := _number(data, name, 0, hi)) is not None:
            params[name] = value
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    stop = data.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise invalid("stop_sequences", "stop_sequences: must be an array of non-empty "
                          "strings")
        if stop:
            params["stop"] = stop
    tools = _tools(data)
    if tools:
        params["tools"] = [openai_tool(tool) for tool in tools]
    choice = data.get("tool_choice")
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        if not isinstance(kind, str) or kind not in TOOL_CHOICES or (
                choice.get("type") == "tool" and not isinstance(choice.get("name"), str)):
            raise invalid("tool_choice", "tool_choice: must be {\"type\": \"auto\"|\"any\"|"
                          "\"none\"} or {\"type\": \"tool\", \"name\": ...}")
        if choice["type"] != "none" and not tools:
            raise invalid("tool_choice", "tool_choice: only allowed when tools are given")
        params["tool_choice"], parallel = openai_tool_choice(choice)
        if parallel is not None:
            params["parallel_tool_calls"] = parallel
    metadata = data.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise invalid("metadata", "metadata: must be an object")
        user = metadata.get("user_id")
        if user is not None and not isinstance(user, str):
            raise invalid("metadata.user_id", "metadata.user_id: must be a string")
        if user:
            params["user"] = user
    extra = {k: v for k, v in data.items() if k not in KNOWN}
    request = ChatRequest(model=model, messages=openai_messages(system, messages),
                          params=params, extra=extra)
    return ParsedMessages(body=data, chat=ParsedChat(
        model=model, stream=stream, include_usage=True, n=1, max_tokens=max_tokens,
        request=request))
