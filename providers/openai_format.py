"""OpenAI chat-completions wire format: request body, stream chunks, error bodies.

Shared by every OpenAI-compatible provider; Together subclasses the parser to normalise
its deviations before the common code sees a chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from providers.base import (
    ChatRequest,
    Chunk,
    Finish,
    ModelInfo,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from providers.errors import (
    ProviderError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from providers.sse import SSEEvent
from providers.untrusted import index_of, required_count, token_count
from providers.upstream import (
    error_class_for_status,
    load_json,
    make_error,
    parse_retry_after,
    unreadable_body,
)

FINISH_REASONS: dict[str, str] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "function_call": "tool_calls",  # the legacy single-function form
}

# For in-stream errors, which carry no HTTP status: OpenAI's error "type" / "code".
_ERROR_TYPES: dict[str, type[ProviderError]] = {
    "invalid_request_error": UpstreamBadRequest,
    "authentication_error": UpstreamAuthError,
    "permission_error": UpstreamAuthError,
    "not_found_error": UpstreamNotFound,
    "rate_limit_error": UpstreamRateLimited,
    "rate_limit_exceeded": UpstreamRateLimited,
    "server_error": UpstreamUnavailable,
    "service_unavailable": UpstreamUnavailable,
    "overloaded_error": UpstreamUnavailable,
    "timeout": UpstreamTimeout,
}


def build_openai_body(req: ChatRequest, *, stream: bool = True,
                      include_usage: bool = True) -> dict[str, Any]:
    """The upstream JSON body: the request passed through; a stream asks for usage."""
    body: dict[str, Any] = {"model": req.model, "messages": req.messages}
    body.update(req.params)
    body.update(req.extra)
    body["stream"] = stream
    if not stream:
        body.pop("stream_options", None)  # OpenAI rejects it without stream
    elif include_usage:
        # Always ask: the gateway strips usage later if the client did not want it.
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        body["stream_options"] = options
    return body


def error_from_openai_payload(upstream: str, payload: Any, *, status: int | None = None,
                              retry_after: float | None = None) -> ProviderError | None:
    """A typed error from an OpenAI-style ``{"error": {...}}`` body, or None if it is not one."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, str):  # some compatible servers send {"error": "text"}
        error = {"message": error}
    if not isinstance(error, dict):
        if status is None or "message" not in payload:
            return None
        error = payload  # Together's older flat shape: {"message": ..., "type_": ...}
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = "unknown error"
    code = error.get("code")
    if status is None and type(code) is int and 400 <= code <= 599:
        status = code  # vLLM and friends put the HTTP status in "code"
    if status is not None:
        cls = error_class_for_status(status)
    else:
        kind = error.get("type") or error.get("type_")
        cls = (_ERROR_TYPES.get(code) if isinstance(code, str) else None) \
            or _ERROR_TYPES.get(kind if isinstance(kind, str) else "") or ProviderError
    param = error.get("param")
    return make_error(cls, upstream, message,
                      param=param if isinstance(param, str) else None,
                      retry_after=retry_after, upstream_status=status,
                      # OpenAI's own codes are strings ("context_length_exceeded"); vLLM's
                      # integer status in "code" was used above and is no code.
                      upstream_code=code if isinstance(code, str) and code else None)


def error_from_openai_response(upstream: str, status: int, headers: Mapping[str, str],
                               raw: bytes) -> ProviderError:
    """Map a non-2xx OpenAI-compatible response (status decides the class)."""
    retry_after = parse_retry_after(headers)
    error = error_from_openai_payload(upstream, load_json(raw), status=status,
                                      retry_after=retry_after)
    if error is not None:
        return error
    return unreadable_body(error_class_for_status(status), upstream,
                           f"answered HTTP {status} with a non-JSON body", raw,
                           status=status, retry_after=retry_after)


def parse_model_list(payload: Any, default_owner: str) -> list[ModelInfo]:
    """Models from ``{"data": [...]}`` (OpenAI) or a bare array (Together)."""
    items = payload.get("data") if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        return []
    return [ModelInfo(id=item["id"], owned_by=str(item.get("owned_by")  # Together: organization
                                                  or item.get("organization") or default_owner))
            for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]


def usage_from_openai(usage: Any) -> Usage | None:
    """Our Usage from an OpenAI usage object (cached tokens from prompt_tokens_details);
    None if it is not one or its main counts are not counts (the gateway then estimates)."""
    if not isinstance(usage, Mapping) or not usage:
        return None
    prompt = required_count(usage, "prompt_tokens")
    completion = required_count(usage, "completion_tokens")
    if prompt is None or completion is None:
        return None
    details = usage.get("prompt_tokens_details")
    cached = token_count(details.get("cached_tokens")) if isinstance(details, Mapping) else None
    if cached is None:
        cached = token_count(usage.get("cached_tokens"))  # some servers flatten it
    completion_details = usage.get("completion_tokens_details")
    reasoning = (token_count(completion_details.get("reasoning_tokens"))
                 if isinstance(completion_details, Mapping) else None)
    # Only a count of some: OpenAI reports 0 for every model that does not reason, and
    # answers that did not reason keep the usage shape they always had.
    return Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached,
                 reasoning_tokens=reasoning or None)


def reasoning_of(message: Mapping[str, Any]) -> str | None:
    """The reasoning text of a delta or message: DeepSeek's (and vLLM's, LiteLLM's)
    ``reasoning_content``, or the ``reasoning`` string some other servers use."""
    text = message.get("reasoning_content")
    if not isinstance(text, str) or not text:
        text = message.get("reasoning")
    return text if isinstance(text, str) and text else None


class OpenAIStreamParser:
    """Parses ``chat.completion.chunk`` events; holds usage back until the end."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.done = False
        self._usage: Usage | None = None
        self._finished = False

    def feed(self, event: SSEEvent) -> list[Chunk]:
        """Chunks for one SSE event (``[DONE]`` ends the stream)."""
        data = event.data
        if data == "[DONE]":
            self.done = True
            return []
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise unreadable_body(UpstreamProtocolError, self.upstream,
                                  "sent a stream event that is not JSON",
                                  data[:500].encode()) from exc
        if not isinstance(obj, dict):
            raise unreadable_body(UpstreamProtocolError, self.upstream,
                                  "sent a stream event that is not a JSON object",
                                  data[:500].encode())
        if obj.get("error") or event.event == "error":
            raise error_from_openai_payload(self.upstream, obj) or unreadable_body(
                ProviderError, self.upstream, "sent an error event we could not read",
                data[:500].encode())
        self.normalise(obj)
        out: list[Chunk] = []
        for choice in obj.get("choices") or ():
            self._parse_choice(choice, out)
        usage = obj.get("usage")
        if usage:  # null on every chunk but the last: skip the call
            self._usage = usage_from_openai(usage) or self._usage
        return out

    def normalise(self, obj: dict[str, Any]) -> None:
        """Hook for compatible upstreams to fix up a chunk in place before parsing."""

    def map_finish_reason(self, reason: str) -> str:
        """OpenAI's finish reason, defaulting unknown ones to ``stop``."""
        return FINISH_REASONS.get(reason, "stop")

    def _parse_choice(self, choice: Mapping[str, Any], out: list[Chunk]) -> None:
        index = index_of(choice.get("index"))
        delta = choice.get("delta") or {}
        reasoning = reasoning_of(delta)
        if reasoning:
            out.append(ReasoningDelta(reasoning, index))
        content = delta.get("content")
        if content:
            out.append(TextDelta(content, index))
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {}
            out.append(ToolCallDelta(call_index=index_of(call.get("index")), id=call.get("id"),
                                     name=function.get("name"),
                                     arguments=function.get("arguments") or "", index=index))
        reason = choice.get("finish_reason")
        if reason:
            self._finished = True
            out.append(Finish(self.map_finish_reason(reason), index))

    def completion(self, payload: dict[str, Any]) -> list[Chunk]:
        """A non-streamed ``chat.completion`` as chunks: each choice's whole message."""
        choices = payload.get("choices")
        if not isinstance(choices, list):
            raise make_error(UpstreamProtocolError, self.upstream,
                             "sent a completion without choices")
        self.normalise(payload)
        out: list[Chunk] = []
        for choice in choices:
            index = index_of(choice.get("index"))
            message = choice.get("message") or {}
            if "message" not in choice and isinstance(choice.get("text"), str):
                message = {"content": choice["text"]}  # completion-style choices
            reasoning = reasoning_of(message)
            if reasoning:
                out.append(ReasoningDelta(reasoning, index))
            if message.get("content"):
                out.append(TextDelta(message["content"], index))
            for call_index, call in enumerate(message.get("tool_calls") or ()):
                function = call.get("function") or {}
                out.append(ToolCallDelta(call_index=call_index, id=call.get("id"),
                                         name=function.get("name"),
                                         arguments=function.get("arguments") or "",
                                         index=index))
            reason = choice.get("finish_reason")
            if reason:
                out.append(Finish(self.map_finish_reason(reason), index))
        usage = usage_from_openai(payload.get("usage"))
        if usage is not None:
            out.append(usage)
        return out

    def at_eof(self) -> None:
        """No ``[DONE]``: fine if every answer finished, a truncated stream otherwise."""
        if not self._finished:
            raise make_error(UpstreamProtocolError, self.upstream,
                             "the stream ended before the answer finished")

    def finish(self) -> list[Chunk]:
        """Usage last, if the upstream reported it (otherwise the gateway estimates)."""
        return [self._usage] if self._usage is not None else []
