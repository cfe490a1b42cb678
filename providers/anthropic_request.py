"""Translate an OpenAI-shaped chat request into an Anthropic Messages API body.

Choices worth knowing:

- ``system`` and ``developer`` messages, wherever they appear, are hoisted and joined
  with a blank line into the top-level ``system`` string.
- ``temperature`` above 1 is rejected (``UpstreamBadRequest``, param ``temperature``)
  rather than clamped or rescaled: Anthropic's range is 0..1 and silently changing the
  sampling a caller asked for would be worse than a clear 400.
- ``response_format`` is ignored: Anthropic has no JSON mode, and rewriting the caller's
  prompt to imitate one would be a surprise. ``seed`` and ``n`` (always 1 here; the
  gateway rejects ``n > 1`` because ``supports_n`` is False) are dropped too.
- Unknown top-level fields pass through (so callers can send Anthropic's own ``top_k``
  or ``thinking``), except OpenAI-only ones Anthropic would reject.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.anthropic_format import (
    anthropic_tool,
    anthropic_tool_choice,
    image_source,
    tool_input,
)
from providers.base import ChatRequest
from providers.errors import UpstreamBadRequest
from providers.upstream import first_set

DEFAULT_MAX_TOKENS = 4096

# OpenAI fields with no Anthropic equivalent; Anthropic answers 400 to unknown fields.
_OPENAI_ONLY = frozenset({
    "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs",
    "store", "modalities", "audio", "prediction", "reasoning_effort", "stream_options",
    "max_completion_tokens", "seed", "n", "response_format", "parallel_tool_calls",
    "functions", "function_call", "verbosity", "web_search_options", "prompt_cache_key",
    "safety_identifier", "service_tier", "metadata",
})
_HANDLED = frozenset({"temperature", "top_p", "max_tokens", "stop", "tools", "tool_choice",
                      "user", "model", "messages", "stream", "system"})


def build_anthropic_body(req: ChatRequest, *, stream: bool = True,
                         default_max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, Any]:
    """The ``/v1/messages`` body for ``req``; raises UpstreamBadRequest."""
    system, messages = translate_messages(req.messages)
    params = req.params
    max_tokens = first_set(req, "max_completion_tokens", "max_tokens") or default_max_tokens
    body: dict[str, Any] = {"model": req.model, "max_tokens": max_tokens}
    if system:
        body["system"] = system
    body["messages"] = messages
    temperature = params.get("temperature")
    if temperature is not None:
        if not 0 <= temperature <= 1:
            raise UpstreamBadRequest(
                f"temperature must be between 0 and 1 for Anthropic models, got {temperature}",
                param="temperature")
        body["temperature"] = temperature
    if params.get("top_p") is not None:
        body["top_p"] = params["top_p"]
    if params.get("stop"):
        stop = params["stop"]
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if params.get("tools"):
        body["tools"] = [anthropic_tool(tool, i) for i, tool in enumerate(params["tools"])]
    tool_choice = anthropic_tool_choice(params.get("tool_choice"),
                                        params.get("parallel_tool_calls"),
                                        has_tools=bool(params.get("tools")))
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    if params.get("user"):
        body["metadata"] = {"user_id": params["user"]}
    for key, value in req.extra.items():
        if key not in _OPENAI_ONLY and key not in _HANDLED:
            body[key] = value
    body["stream"] = stream
    return body


def translate_messages(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Hoist system text; map roles and parts to blocks; merge same-role neighbours."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text_of(message.get("content"), f"messages[{i}].content")
            if text:
                system.append(text)
            continue
        if role == "user":
            role, blocks = "user", _content_blocks(message.get("content"), i)
        elif role == "assistant":
            blocks = _assistant_blocks(message, i)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, i)]
        else:
            raise UpstreamBadRequest(f"unsupported message role {role!r} for Anthropic models",
                                     param=f"messages[{i}].role")
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)  # Anthropic requires alternating roles
        else:
            out.append({"role": role, "content": blocks})
    for message in out:
        content = message["content"]
        if len(content) == 1 and content[0]["type"] == "text" and len(content[0]) == 2:
            message["content"] = content[0]["text"]  # the plain form, when it is just text
    return "\n\n".join(system), out


def _text_of(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for j, part in enumerate(content):
        if part.get("type") != "text":
            raise UpstreamBadRequest(f"only text parts are allowed in {where}",
                                     param=f"{where}[{j}].type")
        parts.append(part.get("text") or "")
    return "\n".join(parts)


def _content_blocks(content: Any, i: int) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text" or kind == "refusal":
            text = part.get(kind)
            if not text:
                continue  # Anthropic rejects empty text blocks
            block: dict[str, Any] = {"type": "text", "text": text}
        elif kind == "image_url":
            block = {"type": "image", "source": image_source(part, f"messages[{i}].content[{j}]")}
        else:
            raise UpstreamBadRequest(f"content part type {kind!r} is not supported for "
                                     "Anthropic models", param=f"messages[{i}].content[{j}].type")
        if "cache_control" in part:  # Anthropic prompt caching, sent by some clients
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _assistant_blocks(message: Mapping[str, Any], i: int) -> list[dict[str, Any]]:
    blocks = _content_blocks(message.get("content"), i)
    for j, call in enumerate(message.get("tool_calls") or ()):
        where = f"messages[{i}].tool_calls[{j}]"
        function = call.get("function") or {}
        arguments = tool_input(function.get("arguments"))
        if not isinstance(arguments, dict):
            raise UpstreamBadRequest("tool call arguments must be a JSON object",
                                     param=f"{where}.function.arguments")
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                       "input": arguments})
    return blocks


def _tool_result(message: Mapping[str, Any], i: int) -> dict[str, Any]:
    content = message.get("content")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
    if isinstance(content, list):
        result["content"] = _content_blocks(content, i)
    elif content:
        result["content"] = content
    return result
