"""Validate a Responses API body once, at the edge, naming the bad field (``input[2].content``,
``tools[0].type``); then the OpenAI chat request every provider takes.

Input items become chat messages (``function_call`` → an assistant message's
``tool_calls``, ``function_call_output`` → a tool message), ``text.format`` becomes the chat
route's own ``response_format`` (so the structured-output mapping each provider has for
chat applies unchanged), ``reasoning.effort`` becomes ``reasoning_effort``. What no
provider can do through a chat call (built-in tools, background mode, stored prompts,
server-side conversations) is refused with a 400 naming it rather than dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.chat.request import ParsedChat
from gateway.errors import APIError, invalid
from providers.base import ChatRequest

MAX_TOKENS = 10_000_000
ROLES = frozenset({"user", "assistant", "system", "developer"})
TOOL_CHOICES = frozenset({"auto", "none", "required"})
EFFORTS = frozenset({"minimal", "low", "medium", "high"})
# Fields with no chat equivalent: refused by name rather than silently dropped. The
# gateway keeps no server-side conversations, prompt templates or background queue, and
# its answers carry neither encrypted reasoning nor logprobs.
REFUSED = {
    "background": "background mode is not supported: send the request without it (the "
                  "answer can be streamed instead)",
    "conversation": "server-side conversations are not supported: use "
                    "previous_response_id, or send the earlier turns in input",
    "prompt": "stored prompt templates are not supported: send instructions and input",
    "include": "no extra output can be included by this gateway",
    "max_tool_calls": "max_tool_calls is not supported",
    "top_logprobs": "logprobs are not supported on /v1/responses",
}
# Built-in (hosted) tools run on OpenAI's servers; no upstream chat API runs them.
BUILT_IN = ("web_search", "web_search_preview", "file_search", "code_interpreter",
            "computer_use_preview", "image_generation", "mcp", "local_shell", "shell",
            "apply_patch", "custom")
# Responses fields the chat API has under the same name: handed on as they are.
PASSED = ("service_tier", "safety_identifier", "prompt_cache_key")
KNOWN = frozenset({"model", "input", "instructions", "max_output_tokens", "temperature",
                   "top_p", "tools", "tool_choice", "parallel_tool_calls", "text",
                   "reasoning", "metadata", "user", "store", "stream", "stream_options",
                   "previous_response_id", "truncation", *REFUSED, *PASSED})


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    """A validated Responses request: its own items (``input``, as stored for a later
    ``previous_response_id``), what the answer echoes (``echo``), and ``chat``, the chat
    request of this turn alone; the route prepends the earlier turns of a chain."""

    model: str
    stream: bool
    store: bool
    instructions: str | None
    input: list[dict[str, Any]]
    previous_response_id: str | None
    metadata: dict[str, str]
    echo: dict[str, Any]
    max_tokens: int | None
    params: dict[str, Any]
    extra: dict[str, Any]

    def chat(self, earlier: list[dict[str, Any]]) -> ParsedChat:
        """The chat call for ``earlier`` items (a chain's turns, oldest first) then ours."""
        messages = [{"role": "system", "content": self.instructions}] if self.instructions \
            else []
        messages += chat_messages([*earlier, *self.input])
        request = ChatRequest(model=self.model, messages=messages, params=self.params,
                              extra=self.extra)
        return ParsedChat(model=self.model, stream=self.stream, include_usage=True, n=1,
                          max_tokens=self.max_tokens, request=request)


def _number(data: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise invalid(name, f"'{name}' must be a number between {lo:g} and {hi:g}")
    return value


def _bool(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(name, f"'{name}' must be a boolean")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise invalid(where, f"'{where}' must be a string")
    return value


def _part(part: Any, where: str, role: str) -> None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "refusal"):
        field = "refusal" if kind == "refusal" else "text"
        _string(part.get(field), f"{where}.{field}")
        if kind != "input_text" and role != "assistant":
            raise invalid(f"{where}.type", f"'{where}.type' {kind} belongs to assistant "
                          "messages; use input_text")
    elif kind == "input_image":
        if not isinstance(part.get("image_url"), str):
            raise invalid(f"{where}.image_url", f"'{where}.image_url' must be a string (an "
                          "https URL or a data: URL); file_id images are not supported")
    elif kind == "input_file":
        if not isinstance(part.get("file_data"), str):
            raise invalid(f"{where}.file_data", f"'{where}.file_data' must be a string (a "
                          "data: URL); file_id and file_url are not supported")
    else:
        raise invalid(f"{where}.type", f"'{where}.type' must be one of input_text, "
                      "input_image, input_file (output_text, refusal on assistant messages)")


def _item(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise invalid(where, f"'{where}' must be an object")
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise invalid(f"{where}.role", f"'{where}.role' must be one of user, assistant, "
                          "system, developer")
        content = item.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                _part(part, f"{where}.content[{j}]", role)
        elif not isinstance(content, str):
            raise invalid(f"{where}.content", f"'{where}.content' must be a string or an "
                          "array of content parts")
        return {"type": "message", "role": role, "content": content}
    if kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            _string(item.get(name), f"{where}.{name}")
        return {k: item[k] for k in ("type", "call_id", "name", "arguments")}
    if kind == "function_call_output":
        _string(item.get("call_id"), f"{where}.call_id")
        output = item.get("output")
        if isinstance(output, list):
            for j, part in enumerate(output):
                _part(part, f"{where}.output[{j}]", "tool")
        elif not isinstance(output, str):
            raise invalid(f"{where}.output", f"'{where}.output' must be a string or an "
                          "array of content parts")
        return {"type": kind, "call_id": item["call_id"], "output": output}
    if kind == "reasoning":
        # A reasoning item handed back from an earlier answer: accepted, not sent upstream
        # (no chat API takes another model's reasoning back).
        return {k: v for k, v in item.items() if k in ("type", "id", "summary", "content")}
    raise invalid(f"{where}.type", f"'{where}.type' must be one of message, function_call, "
                  f"function_call_output, reasoning; {kind!r} is not supported")


def _input(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise invalid("input", "'input' is required: a string or a non-empty array of items")
    return [_item(item, f"input[{i}]") for i, item in enumerate(raw)]


def _tools(raw: Any) -> list[dict[str, Any]] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise invalid("tools", "'tools' must be an array")
    out = []
    for i, tool in enumerate(raw):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind in BUILT_IN or (isinstance(kind, str) and kind.startswith("web_search")):
            raise invalid(f"tools[{i}].type", f"'tools[{i}].type': the built-in tool {kind!r} "
                          "is not supported by this gateway (no upstream chat API runs it); "
                          "only function tools are")
        if kind != "function" or not isinstance(tool.get("name"), str):
            raise invalid(f"tools[{i}]", f"'tools[{i}]' must be {{\"type\": \"function\", "
                          "\"name\": ..., \"parameters\": {...}}")
        if not isinstance(tool.get("parameters", {}), dict | None):
            raise invalid(f"tools[{i}].parameters", f"'tools[{i}].parameters' must be a JSON "
                          "Schema object")
        if not isinstance(tool.get("description", ""), str | None):
            raise invalid(f"tools[{i}].description", f"'tools[{i}].description' must be a "
                          "string")
        if not isinstance(tool.get("strict", False), bool | None):
            raise invalid(f"tools[{i}].strict", f"'tools[{i}].strict' must be a boolean")
        out.append(tool)
    return out


def _tool_choice(choice: Any, tools: list[dict[str, Any]] | None) -> Any:
    if isinstance(choice, str) and choice in TOOL_CHOICES:
        mapped: Any = choice
    elif (isinstance(choice, dict) and choice.get("type") == "function"
          and isinstance(choice.get("name"), str)):
        mapped = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise invalid("tool_choice", "'tool_choice' must be 'none', 'auto', 'required' or "
                      "{\"type\": \"function\", \"name\": ...}; built-in tool choices are not "
                      "supported")
    if choice != "none" and not tools:
        raise invalid("tool_choice", "'tool_choice' is only allowed when 'tools' are given")
    return mapped


def _format(text: Any) -> dict[str, Any] | None:
    """``text.format`` → the chat ``response_format`` (None for plain text)."""
    if not isinstance(text, dict):
        raise invalid("text", "'text' must be an object")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise invalid("text.format.type", "'text.format.type' must be 'text', "
                      "'json_object' or 'json_schema'")
    _string(fmt.get("name"), "text.format.name")
    if not isinstance(fmt.get("schema"), dict):
        raise invalid("text.format.schema", "'text.format.schema' must be a JSON Schema "
                      "object")
    schema = {k: fmt[k] for k in ("name", "schema", "description", "strict")
              if fmt.get(k) is not None}
    return {"type": "json_schema", "json_schema": schema}


def _metadata(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > 16 or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
            for k, v in raw.items()):
        raise invalid("metadata", "'metadata' must be an object of at most 16 string values "
                      "(keys up to 64 characters, values up to 512)")
    return raw


def parse_response(data: dict[str, Any]) -> ParsedResponse:
    """Check every field; raise a 400 naming the first bad one."""
    for name in data:
        if name not in KNOWN:
            raise APIError(400, f"Unknown parameter: '{name}'.", param=name,
                           code="unknown_parameter")
    for name, why in REFUSED.items():
        if data.get(name) not in (None, False, []):
            raise invalid(name, f"'{name}': {why}", code="unsupported_parameter")
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid("model", "'model' is required and must be a string")
    items = _input(data.get("input"))
    instructions = data.get("instructions")
    if instructions is not None:
        _string(instructions, "instructions")
    previous = data.get("previous_response_id")
    if previous is not None:
        _string(previous, "previous_response_id")
    if data.get("truncation") not in (None, "disabled"):
        raise invalid("truncation", "'truncation' must be 'disabled': the gateway never "
                      "drops earlier turns silently")
    params: dict[str, Any] = {}
    echo: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0, "max_output_tokens": None,
                            "tools": [], "tool_choice": "auto", "parallel_tool_calls": True,
                            "text": {"format": {"type": "text"}},
                            "reasoning": {"effort": None, "summary": None}, "user": None,
                            "truncation": "disabled"}
    for name, hi in (("temperature", 2), ("top_p", 1)):
        if (value := _number(data, name, 0, hi)) is not None:
            params[name] = echo[name] = value
    max_tokens = data.get("max_output_tokens")
    if max_tokens is not None:
        if (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                or not 1 <= max_tokens <= MAX_TOKENS):
            raise invalid("max_output_tokens", "'max_output_tokens' must be an integer of at "
                          "least 1")
        params["max_tokens"] = echo["max_output_tokens"] = max_tokens
    tools = _tools(data.get("tools"))
    if tools:
        echo["tools"] = tools
        params["tools"] = [{"type": "function", "function": {
            k: tool[k] for k in ("name", "description", "parameters", "strict")
            if tool.get(k) is not None}} for tool in tools]
    if data.get("tool_choice") is not None:
        params["tool_choice"] = _tool_choice(data["tool_choice"], tools)
        echo["tool_choice"] = data["tool_choice"]
    if data.get("parallel_tool_calls") is not None:
        params["parallel_tool_calls"] = echo["parallel_tool_calls"] = _bool(
            data, "parallel_tool_calls", True)
    extra: dict[str, Any] = {}
    text = data.get("text")
    if text is not None:
        if (fmt := _format(text)) is not None:
            params["response_format"] = fmt
        echo["text"] = {"format": {"type": "text"}, **text}
        if text.get("verbosity") is not None:
            extra["verbosity"] = text["verbosity"]
    reasoning = data.get("reasoning")
    if reasoning is not None:
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else "?"
        if effort is not None and (not isinstance(effort, str) or effort not in EFFORTS):
            raise invalid("reasoning.effort", "'reasoning.effort' must be one of "
                          f"{', '.join(sorted(EFFORTS))}")
        if effort is not None:
            params["reasoning_effort"] = effort
        echo["reasoning"] = {"effort": effort, "summary": reasoning.get("summary")}
    user = data.get("user")
    if user is not None:
        params["user"] = echo["user"] = _string(user, "user")
    for name in PASSED:
        if data.get(name) is not None:
            extra[name] = data[name]
    stream_options = data.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise invalid("stream_options", "'stream_options' must be an object")
    return ParsedResponse(
        model=model, stream=_bool(data, "stream", False), store=_bool(data, "store", True),
        instructions=instructions, input=items, previous_response_id=previous,
        metadata=_metadata(data.get("metadata")), echo=echo, max_tokens=max_tokens,
        params=params, extra=extra)


def _chat_part(part: dict[str, Any]) -> dict[str, Any]:
    kind = part["type"]
    if kind == "input_image":
        image = {"url": part["image_url"]}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file = {"file_data": part["file_data"]}
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    return {"type": "text", "text": part.get("text", part.get("refusal", ""))}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", p.get("refusal", "")) for p in content
                   if p.get("type") in ("input_text", "output_text", "refusal"))


def chat_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Responses items (validated, or stored from earlier answers) as chat messages:
    consecutive function calls join the assistant message before them, as one turn."""
    out: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role, content = item["role"], item["content"]
            if role == "assistant":
                out.append({"role": "assistant", "content": _text_of(content)})
            elif isinstance(content, str):
                out.append({"role": role, "content": content})
            else:
                out.append({"role": role, "content": [_chat_part(p) for p in content]})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if last["content"] == "":
                    last["content"] = None
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": item["call_id"],
                        "content": _text_of(item["output"])})
    return out
