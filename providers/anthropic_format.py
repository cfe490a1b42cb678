"""The one mapping between Anthropic's Messages format and OpenAI's chat format, used in
both directions: outbound (providers/anthropic_request.py builds a Messages body from an
OpenAI-shaped request) and inbound (``POST /v1/messages`` turns a Messages body into an
OpenAI-shaped request for any routed model, and its answer back into a Messages answer).

Each pair of functions here is one rule read both ways, so the two directions cannot drift.
Inbound functions take a body already validated by gateway/messages/request.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from providers.errors import UpstreamBadRequest

# Anthropic stop_reason → OpenAI finish_reason.
STOP_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# OpenAI finish_reason → Anthropic stop_reason: the inverse, one reason each.
FINISH_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# -- images: an OpenAI image_url part ⇄ an Anthropic image source -------------------------

def image_source(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    """An OpenAI ``image_url`` part as an Anthropic image ``source``."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise UpstreamBadRequest("image_url.url is required", param=f"{where}.image_url.url")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise UpstreamBadRequest("image data URLs must look like data:image/png;base64,...",
                                     param=f"{where}.image_url.url")
        return {"type": "base64", "media_type": media_type, "data": data}
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    raise UpstreamBadRequest("image_url.url must be an http(s) or data: URL",
                             param=f"{where}.image_url.url")


def image_part(source: Mapping[str, Any]) -> dict[str, Any]:
    """An Anthropic image ``source`` as an OpenAI ``image_url`` part (the inverse)."""
    if source.get("type") == "base64":
        url = f"data:{source['media_type']};base64,{source['data']}"
    else:
        url = source["url"]
    return {"type": "image_url", "image_url": {"url": url}}


# -- tools: an OpenAI function tool ⇄ an Anthropic tool -----------------------------------

def anthropic_tool(tool: Mapping[str, Any], i: int) -> dict[str, Any]:
    """An OpenAI function tool as an Anthropic tool."""
    function = tool.get("function")
    if tool.get("type") != "function" or not isinstance(function, dict):
        raise UpstreamBadRequest("only function tools are supported for Anthropic models",
                                 param=f"tools[{i}].type")
    out: dict[str, Any] = {"name": function.get("name")}
    if function.get("description"):
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return out


def openai_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """An Anthropic tool as an OpenAI function tool (the inverse)."""
    function: dict[str, Any] = {"name": tool["name"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


def anthropic_tool_choice(choice: Any, parallel: Any, *,
                          has_tools: bool) -> dict[str, Any] | None:
    """OpenAI's ``tool_choice`` and ``parallel_tool_calls`` as Anthropic's ``tool_choice``."""
    if choice is None:
        out = {"type": "auto"} if has_tools and parallel is False else None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}  # disable_parallel_tool_use is not allowed with none
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise UpstreamBadRequest(f"unsupported tool_choice {choice!r}", param="tool_choice")
    if out is not None and parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def openai_tool_choice(choice: Mapping[str, Any]) -> tuple[Any, bool | None]:
    """Anthropic's ``tool_choice`` as OpenAI's ``tool_choice`` and ``parallel_tool_calls``
    (None: not said), the inverse of ``anthropic_tool_choice``."""
    kind = choice.get("type")
    parallel = False if choice.get("disable_parallel_tool_use") is True else None
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if kind == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    return "auto", parallel


# -- tool calls: OpenAI arguments (a JSON string) ⇄ Anthropic input (a JSON object) ---------

def tool_input(arguments: str | None) -> Any:
    """An OpenAI tool call's ``arguments`` as the Anthropic ``input`` object (None if the
    text is not JSON)."""
    try:
        return orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return None


def tool_arguments(value: Any) -> str:
    """An Anthropic ``input`` as OpenAI ``arguments``: always a JSON object's text."""
    return orjson.dumps(value).decode() if value else "{}"


# -- usage ------------------------------------------------------------------------------

def anthropic_usage(prompt_tokens: int, completion_tokens: int, cached: int | None,
                    creation: int | None) -> dict[str, int]:
    """OpenAI-counted usage (prompt tokens include cached ones) the Anthropic way, where
    ``input_tokens`` excludes the cache reads and writes counted beside it."""
    return {"input_tokens": max(0, prompt_tokens - (cached or 0) - (creation or 0)),
            "cache_creation_input_tokens": creation or 0,
            "cache_read_input_tokens": cached or 0,
            "output_tokens": completion_tokens}


# -- a whole request, inbound: Messages body → OpenAI chat fields ---------------------------

def _text_part(block: Mapping[str, Any]) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "text", "text": block.get("text") or ""}
    if "cache_control" in block:  # kept: an Anthropic target sends it on
        part["cache_control"] = block["cache_control"]
    return part


def _parts(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for block in blocks:
        if block["type"] == "text":
            out.append(_text_part(block))
        elif block["type"] == "image":
            out.append(image_part(block["source"]))
    return out


def _plain(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """The plain string form when the parts are just text (what every OpenAI upstream
    takes), else the parts."""
    if all(p["type"] == "text" and len(p) == 2 for p in parts):
        return "".join(p["text"] for p in parts) if len(parts) == 1 else "\n".join(
            p["text"] for p in parts)
    return parts


def openai_messages(system: Any, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic ``system`` and ``messages`` as OpenAI chat messages: ``tool_result``
    blocks become ``tool`` messages ahead of the user's other blocks, ``tool_use`` blocks
    the assistant's ``tool_calls``. Thinking blocks have no OpenAI form and are left out."""
    out: list[dict[str, Any]] = []
    if isinstance(system, str) and system:
        out.append({"role": "system", "content": system})
    elif isinstance(system, list) and system:
        out.append({"role": "system", "content": _plain([_text_part(b) for b in system])})
    for message in messages:
        content = message["content"]
        blocks = ([{"type": "text", "text": content}] if isinstance(content, str)
                  else content)
        if message["role"] == "assistant":
            text = "".join(b.get("text") or "" for b in blocks if b["type"] == "text")
            calls = [{"id": b["id"], "type": "function",
                      "function": {"name": b["name"], "arguments": tool_arguments(b.get("input"))}}
                     for b in blocks if b["type"] == "tool_use"]
            reply: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                reply["tool_calls"] = calls
            elif not text:
                reply["content"] = ""
            out.append(reply)
            continue
        for block in blocks:
            if block["type"] == "tool_result":
                result = block.get("content")
                if isinstance(result, list):
                    parts = _parts(result)
                    result = _plain(parts) if parts else ""
                text = result or ""
                if block.get("is_error") and isinstance(text, str):
                    text = f"Error: {text}"  # OpenAI tool messages have no error flag
                out.append({"role": "tool", "tool_call_id": block["tool_use_id"],
                            "content": text})
        parts = _parts([b for b in blocks if b["type"] != "tool_result"])
        if parts:
            out.append({"role": "user", "content": _plain(parts)})
    return out
