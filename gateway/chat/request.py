"""Validate an OpenAI chat-completions body once, at the edge, naming the bad field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import invalid
from providers.base import ChatRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
# Fields we understand and hand to providers in ``params``; anything else goes to ``extra``.
KNOWN = frozenset({"model", "messages", "stream", "stream_options", "temperature", "top_p",
                   "max_tokens", "max_completion_tokens", "stop", "n", "tools", "tool_choice",
                   "parallel_tool_calls", "response_format", "seed", "user",
                   "reasoning_effort", "logprobs", "top_logprobs", "presence_penalty",
                   "frequency_penalty", "logit_bias"})
# OpenAI's reasoning_effort values ("none" as its newest models take it: no reasoning).
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high")


@dataclass(frozen=True, slots=True)
class ParsedChat:
    model: str
    stream: bool
    include_usage: bool
    n: int
    max_tokens: int | None
    request: ChatRequest  # ``model`` is the public name until routed


def _number(data: dict, name: str, lo: float, hi: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(name, f"'{name}' must be a number")
    if not lo <= value <= hi:
        raise invalid(name, f"'{name}' must be between {lo:g} and {hi:g}; got {value}")
    return value


def _int(data: dict, name: str, lo: int, hi: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, f"'{name}' must be an integer")
    if not lo <= value <= hi:
        raise invalid(name, f"'{name}' must be between {lo} and {hi}; got {value}")
    return value


def _bool(data: dict, name: str, default: bool) -> bool:
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(name, f"'{name}' must be a boolean")
    return value


def _content(content: Any, where: str, role: str, has_tool_calls: bool) -> None:
    if content is None:
        if role == "assistant" and has_tool_calls:
            return
        raise invalid(where, f"'{where}' is required for {role} messages")
    if isinstance(content, str):
        return
    if not isinstance(content, list) or (not content and role != "assistant"):
        raise invalid(where, f"'{where}' must be a string or a non-empty array of content parts")
    for j, part in enumerate(content):
        ppath = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str) or kind not in PART_TYPES:
            raise invalid(f"{ppath}.type", f"'{ppath}.type' must be one of "
                          f"{', '.join(sorted(PART_TYPES))}")
        if kind == "text" and not isinstance(part.get("text"), str):
            raise invalid(f"{ppath}.text", f"'{ppath}.text' must be a string")
        if kind == "image_url":
            image = part.get("image_url")
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                raise invalid(f"{ppath}.image_url.url", f"'{ppath}.image_url.url' must be a "
                              "string (an https URL or a data: URL)")


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise invalid("messages", "'messages' must be a non-empty array")
    for i, msg in enumerate(raw):
        path = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise invalid(path, f"'{path}' must be an object")
        role = msg.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise invalid(f"{path}.role", f"'{path}.role' must be one of "
                          "system, developer, user, assistant, tool")
        tool_calls = msg.get("tool_calls")
        if tool_calls is not None:
            if role != "assistant" or not isinstance(tool_calls, list):
                raise invalid(f"{path}.tool_calls", f"'{path}.tool_calls' must be an array on "
                              "an assistant message")
            for j, call in enumerate(tool_calls):
                fn = call.get("function") if isinstance(call, dict) else None
                if (not isinstance(fn, dict) or not isinstance(fn.get("name"), str)
                        or not isinstance(call.get("id"), str)):
                    raise invalid(f"{path}.tool_calls[{j}]", f"'{path}.tool_calls[{j}]' needs "
                                  "an id and function.name")
                if not isinstance(fn.get("arguments", ""), str):
                    where = f"{path}.tool_calls[{j}].function.arguments"
                    raise invalid(where, f"'{where}' must be a string (JSON-encoded arguments)")
        if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
            raise invalid(f"{path}.tool_call_id", f"'{path}.tool_call_id' is required for "
                          "tool messages")
        _content(msg.get("content"), f"{path}.content", role, bool(tool_calls))
    return raw


def _tools(data: dict) -> None:
    tools = data.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid("tools", "'tools' must be an array")
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if (not isinstance(tool, dict) or tool.get("type") != "function"
                    or not isinstance(fn, dict) or not isinstance(fn.get("name"), str)):
                raise invalid(f"tools[{i}]", f"'tools[{i}]' must be "
                              "{\"type\": \"function\", \"function\": {\"name\": ...}}")
            params = fn.get("parameters")
            if params is not None and not isinstance(params, dict):
                raise invalid(f"tools[{i}].function.parameters",
                              f"'tools[{i}].function.parameters' must be a JSON Schema object")
    choice = data.get("tool_choice")
    if choice is not None:
        ok = choice in ("none", "auto", "required") or (
            isinstance(choice, dict) and choice.get("type") == "function"
            and isinstance(choice.get("function"), dict)
            and isinstance(choice["function"].get("name"), str))
        if not ok:
            raise invalid("tool_choice", "'tool_choice' must be 'none', 'auto', 'required' or "
                          "{\"type\": \"function\", \"function\": {\"name\": ...}}")
        if choice != "none" and not tools:
            raise invalid("tool_choice", "'tool_choice' is only allowed when 'tools' are given")


def _sampling(data: dict) -> None:
    """reasoning_effort, logprobs and the penalties, in OpenAI's ranges."""
    effort = data.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise invalid("reasoning_effort", "'reasoning_effort' must be one of "
                      + ", ".join(REASONING_EFFORTS))
    _bool(data, "logprobs", False)
    _int(data, "top_logprobs", 0, 20)
    _number(data, "presence_penalty", -2, 2)
    _number(data, "frequency_penalty", -2, 2)
    bias = data.get("logit_bias")
    if bias is not None and (not isinstance(bias, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and -100 <= v <= 100
            for v in bias.values())):
        raise invalid("logit_bias", "'logit_bias' must map token ids to numbers between "
                      "-100 and 100")


def parse_chat(data: dict[str, Any]) -> ParsedChat:
    """Check every field we understand; raise a 400 ``APIError`` naming the first bad one."""
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid("model", "'model' is required and must be a string")
    messages = _messages(data.get("messages"))
    stream = _bool(data, "stream", False)
    include_usage = False
    stream_options = data.get("stream_options")
    if stream_options is not None:
        if not stream:
            raise invalid("stream_options", "'stream_options' is only allowed when 'stream' "
                          "is true")
        if not isinstance(stream_options, dict):
            raise invalid("stream_options", "'stream_options' must be an object")
        include_usage = _bool(stream_options, "include_usage", False)
    _number(data, "temperature", 0, 2)
    _number(data, "top_p", 0, 1)
    max_tokens = _int(data, "max_completion_tokens", 1, 10_000_000)
    legacy_max = _int(data, "max_tokens", 1, 10_000_000)
    max_tokens = max_tokens if max_tokens is not None else legacy_max
    n = _int(data, "n", 1, 128) or 1
    _int(data, "seed", -(2**63), 2**63 - 1)
    _bool(data, "parallel_tool_calls", True)
    stop = data.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if (not isinstance(stop, list) or len(stop) > 4
                or not all(isinstance(s, str) and s for s in stop)):
            raise invalid("stop", "'stop' must be a string or an array of up to 4 strings")
    _tools(data)
    fmt = data.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") not in
                            ("text", "json_object", "json_schema")):
        raise invalid("response_format", "'response_format.type' must be 'text', "
                      "'json_object' or 'json_schema'")
    if fmt is not None and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise invalid("response_format.json_schema", "'response_format.json_schema' must "
                          "be an object with a 'name' (and the 'schema')")
        if spec.get("schema") is not None and not isinstance(spec["schema"], dict):
            raise invalid("response_format.json_schema.schema",
                          "'response_format.json_schema.schema' must be a JSON Schema object")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid("user", "'user' must be a string")
    _sampling(data)
    params = {k: v for k, v in data.items() if k in KNOWN and v is not None
              and k not in ("model", "messages", "stream", "stream_options")}
    if stop is not None:
        params["stop"] = stop
    extra = {k: v for k, v in data.items() if k not in KNOWN}
    return ParsedChat(model=model, stream=stream, include_usage=include_usage, n=n,
                      max_tokens=max_tokens,
                      request=ChatRequest(model=model, messages=messages, params=params,
                                          extra=extra))
