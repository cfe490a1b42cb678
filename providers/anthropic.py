"""Anthropic's Messages API, translated to and from the OpenAI shape."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import httpx
import orjson

from providers.anthropic_format import STOP_REASONS, tool_arguments
from providers.anthropic_request import (
    DEFAULT_MAX_TOKENS,
    build_anthropic_body,
    dropped_params,
    structured_output_tool,
)
from providers.base import (
    CallContext,
    ChatRequest,
    Chunk,
    Finish,
    ProviderConfig,
    ReasoningDelta,
    Relayed,
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
    HTTPStreamProvider,
    UpstreamCall,
    error_class_for_status,
    load_json,
    make_error,
    parse_retry_after,
    unreadable_body,
    upstream_headers,
)

ANTHROPIC_VERSION = "2023-06-01"

ERROR_TYPES: dict[str, type[ProviderError]] = {
    "invalid_request_error": UpstreamBadRequest,
    "request_too_large": UpstreamBadRequest,
    "authentication_error": UpstreamAuthError,
    "permission_error": UpstreamAuthError,
    "not_found_error": UpstreamNotFound,
    "rate_limit_error": UpstreamRateLimited,
    "overloaded_error": UpstreamUnavailable,
    "timeout_error": UpstreamTimeout,
    "timeout": UpstreamTimeout,
    "api_error": ProviderError,
}


def error_from_anthropic_payload(upstream: str, payload: Any, *, status: int | None = None,
                                 retry_after: float | None = None) -> ProviderError | None:
    """A typed error from ``{"type": "error", "error": {"type", "message"}}``, if it is one."""
    if not isinstance(payload, dict) or not isinstance(payload.get("error"), dict):
        return None
    error = payload["error"]
    kind = error.get("type")
    if status is not None:
        cls = error_class_for_status(status)  # the status decides: 529 overloaded → 503
    else:
        cls = ERROR_TYPES.get(kind, ProviderError) if isinstance(kind, str) else ProviderError
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = kind if isinstance(kind, str) and kind else "unknown error"
    return make_error(cls, upstream, message, retry_after=retry_after, upstream_status=status,
                      upstream_code=kind if isinstance(kind, str) and kind else None)


def usage_from_anthropic(usage: Any) -> list[Chunk]:
    """Anthropic usage counted the OpenAI way (prompt tokens include cached ones); [] if
    there is none, or its main counts are not counts (the gateway then estimates)."""
    if not isinstance(usage, dict) or ("input_tokens" not in usage
                                       and "output_tokens" not in usage):
        return []
    prompt = required_count(usage, "input_tokens")
    completion = required_count(usage, "output_tokens")
    if prompt is None or completion is None:
        return []
    cache_read = token_count(usage.get("cache_read_input_tokens"))
    cache_creation = token_count(usage.get("cache_creation_input_tokens"))
    return [Usage(prompt_tokens=prompt + (cache_read or 0) + (cache_creation or 0),
                  completion_tokens=completion,
                  cached_tokens=cache_read, cache_creation_tokens=cache_creation)]


def finish_reason(stop_reason: str, *, structured: bool, caller_calls: int) -> str:
    """Anthropic's stop reason as OpenAI's finish reason: a structured answer given through
    its forced tool (and no tool of the caller's) is a plain stop."""
    if stop_reason == "tool_use" and structured and not caller_calls:
        return "stop"
    return STOP_REASONS.get(stop_reason, "stop")


class AnthropicStreamParser:
    """Turns Messages stream events into chunks; tool calls are numbered 0, 1, ... .

    Thinking becomes ``ReasoningDelta``; its signature and redacted thinking (opaque, only
    meaningful to Anthropic) are left out. The input of ``output_tool`` (a structured
    output's forced tool) becomes text: the answer's JSON."""

    def __init__(self, upstream: str, output_tool: str | None = None) -> None:
        self.upstream = upstream
        self.done = False
        self._output_tool = output_tool
        self._usage: dict[str, Any] = {}
        self._calls: dict[int, int] = {}  # content block index → our tool call index
        self._call_input: dict[int, Any] = {}  # block index → the start event's input
        self._outputs: set[int] = set()  # block indexes of the output tool's blocks
        self._got_arguments: set[int] = set()
        self._finished = False

    def feed(self, event: SSEEvent) -> list[Chunk]:
        """Chunks for one event; ``ping`` and unknown events yield nothing."""
        try:
            obj = orjson.loads(event.data)
        except orjson.JSONDecodeError as exc:
            raise unreadable_body(UpstreamProtocolError, self.upstream,
                                  "sent a stream event that is not JSON",
                                  event.data[:500].encode()) from exc
        if not isinstance(obj, dict):
            raise unreadable_body(UpstreamProtocolError, self.upstream,
                                  "sent a stream event that is not a JSON object",
                                  event.data[:500].encode())
        handler = self._HANDLERS.get(obj.get("type", event.event))
        return handler(self, obj) if handler is not None else []

    def _message_start(self, obj: dict[str, Any]) -> list[Chunk]:
        self._update_usage((obj.get("message") or {}).get("usage"))
        return []

    def _block_start(self, obj: dict[str, Any]) -> list[Chunk]:
        block = obj.get("content_block") or {}
        kind = block.get("type")
        if kind == "text":
            return [TextDelta(block["text"])] if block.get("text") else []
        if kind == "thinking":
            return [ReasoningDelta(block["thinking"])] if block.get("thinking") else []
        if kind != "tool_use":
            return []  # redacted thinking, server tools: nothing the OpenAI shape carries
        index = index_of(obj.get("index"))
        if self._output_tool is not None and block.get("name") == self._output_tool:
            self._outputs.add(index)
            self._call_input[index] = block.get("input")
            return []
        call_index = self._calls[index] = len(self._calls)
        self._call_input[index] = block.get("input")
        return [ToolCallDelta(call_index, id=block.get("id"), name=block.get("name"))]

    def _block_delta(self, obj: dict[str, Any]) -> list[Chunk]:
        delta = obj.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [TextDelta(delta["text"])] if delta.get("text") else []
        if kind == "thinking_delta":
            return [ReasoningDelta(delta["thinking"])] if delta.get("thinking") else []
        if kind == "input_json_delta" and delta.get("partial_json"):
            index = index_of(obj.get("index"))
            if index in self._outputs:
                self._got_arguments.add(index)
                return [TextDelta(delta["partial_json"])]
            if index in self._calls:
                self._got_arguments.add(index)
                return [ToolCallDelta(self._calls[index], arguments=delta["partial_json"])]
        return []

    def _block_stop(self, obj: dict[str, Any]) -> list[Chunk]:
        index = index_of(obj.get("index"))
        if index in self._got_arguments:
            return []
        # No input_json_delta at all (a tool without arguments): OpenAI clients expect
        # a JSON object in arguments, never an empty string; so does a JSON answer.
        tool_input = self._call_input.get(index)
        if index in self._outputs:
            return [TextDelta(tool_arguments(tool_input))]
        if index not in self._calls:
            return []
        return [ToolCallDelta(self._calls[index], arguments=tool_arguments(tool_input))]

    def _message_delta(self, obj: dict[str, Any]) -> list[Chunk]:
        self._update_usage(obj.get("usage"))
        reason = (obj.get("delta") or {}).get("stop_reason")
        if not reason or self._finished:
            return []
        self._finished = True
        return [Finish(finish_reason(reason, structured=bool(self._outputs),
                                     caller_calls=len(self._calls)))]

    def _message_stop(self, obj: dict[str, Any]) -> list[Chunk]:
        self.done = True
        return []

    def _error(self, obj: dict[str, Any]) -> list[Chunk]:
        raise error_from_anthropic_payload(self.upstream, obj) or unreadable_body(
            ProviderError, self.upstream, "sent an error event we could not read",
            orjson.dumps(obj)[:500])

    _HANDLERS: ClassVar[dict[str, Any]] = {
        "message_start": _message_start,
        "content_block_start": _block_start,
        "content_block_delta": _block_delta,
        "content_block_stop": _block_stop,
        "message_delta": _message_delta,
        "message_stop": _message_stop,
        "error": _error,
    }

    def _update_usage(self, usage: Any) -> None:
        # message_delta usage is cumulative and newer API versions repeat input counts.
        # A main count that is not a count poisons the usage (the gateway estimates);
        # anything else that is not a count (nulls, nested objects) is skipped.
        if isinstance(usage, dict):
            for key, value in usage.items():
                count = token_count(value)
                if count is not None:
                    self._usage[key] = count
                elif key in ("input_tokens", "output_tokens") and value is not None:
                    self._usage[key] = value

    def at_eof(self) -> None:
        """No ``message_stop``: fine once the stop reason arrived, truncated otherwise."""
        if not self._finished:
            raise make_error(UpstreamProtocolError, self.upstream,
                             "the stream ended before the answer finished")

    def finish(self) -> list[Chunk]:
        """Usage, counted the OpenAI way: prompt tokens include cached ones."""
        return usage_from_anthropic(self._usage)


class AnthropicProvider(HTTPStreamProvider):
    """Streams ``POST {base_url}/v1/messages``; ``n > 1`` is not supported."""

    kind: ClassVar[str] = "anthropic"
    supports_n: ClassVar[bool] = False
    default_base_url: ClassVar[str] = "https://api.anthropic.com"

    def __init__(self, config: ProviderConfig, transport: httpx.AsyncBaseTransport) -> None:
        super().__init__(config, transport)
        # Built once per provider, not per call.
        self._messages_url = httpx.URL(f"{self._base_url}/v1/messages")
        self._default_max = int(config.options.get("default_max_tokens", DEFAULT_MAX_TOKENS))
        headers = {"content-type": "application/json", "accept": "text/event-stream",
                   "anthropic-version": ANTHROPIC_VERSION}
        if config.api_key:
            headers["x-api-key"] = config.api_key
        self._stream_headers = upstream_headers(headers, config)
        self._json_headers = upstream_headers({**headers, "accept": "application/json"}, config)

    def prepare(self, req: ChatRequest, ctx: CallContext, *, stream: bool) -> UpstreamCall:
        """Translate the request (raises UpstreamBadRequest for what cannot be)."""
        return UpstreamCall(url=self._messages_url,
                            body=build_anthropic_body(req, stream=stream,
                                                      default_max_tokens=self._default_max),
                            headers=self._stream_headers if stream else self._json_headers)

    def stream_parser(self, req: ChatRequest | None = None) -> AnthropicStreamParser:
        return AnthropicStreamParser(self.config.name,
                                     structured_output_tool(req) if req is not None else None)

    def dropped_params(self, req: ChatRequest) -> tuple[str, ...]:
        """``seed``, ``logprobs``, the penalties, ... and, while thinking, the sampling
        parameters it forbids (providers/anthropic_request.py)."""
        return dropped_params(req)

    def completion_chunks(self, payload: dict[str, Any],
                          req: ChatRequest | None = None) -> list[Chunk]:
        """A non-streamed Messages response: thinking blocks as reasoning, text blocks
        joined, tool_use blocks as calls (the structured output's tool as the text)."""
        content = payload.get("content")
        if payload.get("type") != "message" or not isinstance(content, list):
            raise make_error(UpstreamProtocolError, self.config.name,
                             "sent a body that is not a message")
        output_tool = structured_output_tool(req) if req is not None else None
        reasoning = "".join(block.get("thinking") or "" for block in content
                            if block.get("type") == "thinking")
        out: list[Chunk] = [ReasoningDelta(reasoning)] if reasoning else []
        text = "".join(block.get("text") or "" for block in content
                       if block.get("type") == "text")
        text += "".join(tool_arguments(block.get("input")) for block in content
                        if block.get("type") == "tool_use" and output_tool is not None
                        and block.get("name") == output_tool)
        if text:
            out.append(TextDelta(text))
        tools = [block for block in content if block.get("type") == "tool_use"
                 and (output_tool is None or block.get("name") != output_tool)]
        for call_index, block in enumerate(tools):
            tool_input = block.get("input")
            out.append(ToolCallDelta(call_index, id=block.get("id"), name=block.get("name"),
                                     arguments=tool_arguments(tool_input)))
        reason = payload.get("stop_reason")
        if reason:
            out.append(Finish(finish_reason(reason, structured=output_tool is not None,
                                            caller_calls=len(tools))))
        return out + usage_from_anthropic(payload.get("usage"))

    def error_from_response(self, status: int, headers: Mapping[str, str],
                            raw: bytes) -> ProviderError:
        """Map a non-2xx response; the status decides, 529 counts as 503."""
        retry_after = parse_retry_after(headers)
        error = error_from_anthropic_payload(self.config.name, load_json(raw), status=status,
                                             retry_after=retry_after)
        return error or unreadable_body(error_class_for_status(status), self.config.name,
                                        f"answered HTTP {status} with a non-JSON body", raw,
                                        status=status, retry_after=retry_after)

    def error_from_payload(self, payload: Any) -> ProviderError | None:
        """Map an Anthropic error object."""
        return error_from_anthropic_payload(self.config.name, payload)

    # -- pass-through for the inbound Messages API (gateway/messages/call.py) ---------------

    def relay_messages(self, body: dict[str, Any],
                       ctx: CallContext) -> AsyncIterator[Chunk | Relayed]:
        """A Messages ``body`` (its ``model`` already the upstream's) sent as it is; each
        event of the answer relayed as it comes, then the chunks parsed from it (usage
        last). An ``error`` event raises its typed error instead of being relayed."""
        return self.stream_events(self._messages_url, self._stream_headers,
                                  orjson.dumps({**body, "stream": True}), ctx, relay=True)

    async def complete_messages(self, body: dict[str, Any],
                                ctx: CallContext) -> list[Chunk | Relayed]:
        """A Messages ``body`` sent as it is, not streamed: the answer's bytes untouched,
        then its chunks."""
        return await self.fetch_answer(
            self._messages_url, self._json_headers, {**body, "stream": False}, ctx,
            lambda payload, raw: [Relayed(raw), *self.completion_chunks(payload)],
            "a message")
