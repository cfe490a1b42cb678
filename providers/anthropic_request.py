"""Translate an OpenAI-shaped chat request into an Anthropic Messages API body.

Choices worth knowing (the README's parameter table says the same, per parameter):

- ``system`` and ``developer`` messages, wherever they appear, are hoisted and joined
  with a blank line into the top-level ``system`` string.
- ``temperature`` above 1 is rejected (``UpstreamBadRequest``, param ``temperature``)
  rather than clamped or rescaled: Anthropic's range is 0..1 and silently changing the
  sampling a caller asked for would be worse than a clear 400.
- ``response_format`` ``json_schema`` (``json_object``: an open object schema) becomes a
  forced tool whose ``input_schema`` is the schema; the parser turns that tool's input
  back into the message's ``content`` (``structured_output_tool`` names it). With caller
  ``tools`` in the same request it is a 400 naming ``response_format``: forcing the output
  tool would forbid the caller's tools, and not forcing it would not enforce the schema.
- ``reasoning_effort`` becomes extended thinking with ``THINKING_BUDGETS[effort]``
  ``budget_tokens`` (``none``: no thinking); ``max_tokens`` at or under the budget is raised
  by it, so the answer keeps the room the caller gave it. While thinking (asked this way
  or by the caller's own ``thinking``), what Anthropic forbids is handled before sending:
  ``temperature`` other than 1, ``top_p`` under 0.95 and ``top_k`` are dropped (and
  reported), a forced ``tool_choice`` or a ``response_format`` schema (itself a forced
  tool) is a 400 naming the parameter that asked for thinking.
- Parameters Anthropic cannot honour and whose loss leaves the answer's contract intact
  (``DROPPED``: ``seed``, ``logprobs``, the penalties, ...) are left out and reported by
  ``dropped_params``; ones whose loss would change the contract (``REFUSED``: audio
  output, the legacy ``functions``, web search) are a 400 naming them. ``n`` > 1 is refused
  by the gateway (``supports_n`` is False).
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

# reasoning_effort → extended thinking's budget_tokens (Anthropic's minimum is 1,024;
# "minimal" is that minimum, "none" turns thinking off).
THINKING_BUDGETS: dict[str, int] = {"minimal": 1024, "low": 2048, "medium": 8192,
                                    "high": 16384}
# The name of the forced tool a json_object response_format becomes (a json_schema one
# is named by its own ``name``).
JSON_OBJECT_TOOL = "json_object"
# While thinking, Anthropic takes top_p only from here up (and temperature only at 1).
THINKING_MIN_TOP_P = 0.95

# OpenAI parameters Anthropic cannot honour and whose loss leaves the answer's contract
# intact: left out, and named in x-gateway-dropped-params (alphabetical, as reported).
DROPPED = ("frequency_penalty", "logit_bias", "logprobs", "metadata", "prediction",
           "presence_penalty", "prompt_cache_key", "safety_identifier", "seed",
           "service_tier", "store", "top_logprobs", "verbosity")
# OpenAI parameters whose loss would change the answer's contract and that Anthropic
# cannot emulate: a 400 naming them, with the reason.
REFUSED: dict[str, str] = {
    "audio": "audio output is not supported for Anthropic models",
    "functions": "the legacy 'functions' are not supported for Anthropic models; use 'tools'",
    "function_call": "the legacy 'function_call' is not supported for Anthropic models; use "
                     "'tool_choice'",
    "web_search_options": "web search is not supported for Anthropic models through the "
                          "chat completions API",
}
# OpenAI fields with no Anthropic equivalent; Anthropic answers 400 to unknown fields.
_OPENAI_ONLY = frozenset({*DROPPED, *REFUSED, "modalities", "reasoning_effort",
                          "stream_options", "max_completion_tokens", "n", "response_format",
                          "parallel_tool_calls"})
_HANDLED = frozenset({"temperature", "top_p", "max_tokens", "stop", "tools", "tool_choice",
                      "user", "model", "messages", "stream", "system"})


def structured_output_tool(req: ChatRequest) -> str | None:
    """The name of the forced tool that carries ``req``'s structured output (its
    ``response_format`` json_schema or json_object), or None if it asks for none."""
    fmt = first_set(req, "response_format")
    if not isinstance(fmt, Mapping):
        return None
    if fmt.get("type") == "json_object":
        return JSON_OBJECT_TOOL
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        name = spec.get("name") if isinstance(spec, Mapping) else None
        return name if isinstance(name, str) and name else "json_schema"
    return None


def dropped_params(req: ChatRequest) -> tuple[str, ...]:
    """What ``build_anthropic_body`` leaves out of ``req`` without a 400, alphabetical."""
    dropped = {name for name in DROPPED if first_set(req, name) is not None}
    source = _thinking_source(req)
    if source is not None:
        dropped.update(_thinking_conflicts(req))
    if req.extra.get("thinking") is not None and first_set(req, "reasoning_effort") is not None:
        dropped.add("reasoning_effort")  # the caller's own thinking setting was used
    return tuple(sorted(dropped))


def _thinking_source(req: ChatRequest) -> str | None:
    """The parameter that turns extended thinking on (None: it is off)."""
    thinking = req.extra.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") == "enabled":
        return "thinking"  # the caller's own Anthropic setting wins over reasoning_effort
    if thinking is None and first_set(req, "reasoning_effort") in THINKING_BUDGETS:
        return "reasoning_effort"
    return None


def _thinking_conflicts(req: ChatRequest) -> list[str]:
    """The sampling parameters thinking forbids that ``req`` sets: dropped."""
    out = []
    temperature = first_set(req, "temperature")
    if temperature is not None and temperature != 1:
        out.append("temperature")
    top_p = first_set(req, "top_p")
    if top_p is not None and top_p < THINKING_MIN_TOP_P:
        out.append("top_p")
    if req.extra.get("top_k") is not None:
        out.append("top_k")
    return out


def build_anthropic_body(req: ChatRequest, *, stream: bool = True,
                         default_max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, Any]:
    """The ``/v1/messages`` body for ``req``; raises UpstreamBadRequest."""
    _refuse(req)
    system, messages = translate_messages(req.messages)
    params = req.params
    max_tokens = first_set(req, "max_completion_tokens", "max_tokens") or default_max_tokens
    thinking = _thinking_source(req)
    effort = first_set(req, "reasoning_effort")
    if thinking == "reasoning_effort":
        budget = THINKING_BUDGETS[effort]
        if max_tokens <= budget:
            max_tokens += budget  # max_tokens counts the thinking too
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
    output_tool = structured_output_tool(req)
    if output_tool is not None:
        if params.get("tools"):
            raise UpstreamBadRequest(
                "response_format with a JSON schema cannot be combined with tools for "
                "Anthropic models (the schema is enforced as a forced tool); send the tools "
                "and the schema in separate requests", param="response_format")
        body["tools"] = [_output_tool(output_tool, first_set(req, "response_format"))]
        tool_choice = {"type": "tool", "name": output_tool}
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    if params.get("user"):
        body["metadata"] = {"user_id": params["user"]}
    for key, value in req.extra.items():
        if key not in _OPENAI_ONLY and key not in _HANDLED:
            body[key] = value
    if thinking is not None:
        _fit_thinking(body, req, thinking)
    if thinking == "reasoning_effort":
        body["thinking"] = {"type": "enabled", "budget_tokens": THINKING_BUDGETS[effort]}
    body["stream"] = stream
    return body


def _refuse(req: ChatRequest) -> None:
    """A 400 for a parameter whose loss would change the answer's contract."""
    for name, reason in REFUSED.items():
        if first_set(req, name) is not None:
            raise UpstreamBadRequest(reason, param=name)
    modalities = first_set(req, "modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        raise UpstreamBadRequest("only text output is supported for Anthropic models",
                                 param="modalities")


def _output_tool(name: str, fmt: Mapping[str, Any]) -> dict[str, Any]:
    """The forced tool a ``response_format`` becomes: its input is the answer."""
    if fmt.get("type") == "json_object":
        return {"name": name, "description": "Respond with a JSON object.",
                "input_schema": {"type": "object", "additionalProperties": True}}
    spec = fmt.get("json_schema")
    spec = spec if isinstance(spec, Mapping) else {}
    schema = spec.get("schema")
    if schema is None:
        schema = {"type": "object", "additionalProperties": True}
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        raise UpstreamBadRequest("response_format.json_schema.schema must describe a JSON "
                                 "object for Anthropic models",
                                 param="response_format.json_schema.schema")
    description = spec.get("description")
    return {"name": name,
            "description": description if isinstance(description, str) and description
            else "Respond with a JSON value matching this schema.",
            "input_schema": dict(schema)}


def _fit_thinking(body: dict[str, Any], req: ChatRequest, source: str) -> None:
    """Leave out what thinking forbids (reported by ``dropped_params``), refuse what
    cannot be left out: a forced tool choice, and so a response_format schema."""
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") in ("any", "tool"):
        forced = ("response_format" if structured_output_tool(req) is not None
                  else "tool_choice")
        raise UpstreamBadRequest(
            f"{source} (extended thinking) cannot be combined with {forced} for Anthropic "
            f"models: thinking allows only tool_choice 'auto' or 'none'", param=source)
    for name in _thinking_conflicts(req):
        body.pop(name, None)


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
