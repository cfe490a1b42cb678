"""The provider contract: canonical request in, an async stream of typed chunks out.

A provider never writes SSE, never touches storage and never reads ``os.environ``;
everything it needs arrives through ``ProviderConfig`` and the shared ``httpx.AsyncBaseTransport``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import httpx


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of assistant text for choice ``index``."""

    text: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a tool call: ``id``/``name`` on the first fragment, ``arguments`` after."""

    call_index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    index: int = 0


@dataclass(frozen=True, slots=True)
class Finish:
    """The choice ended: ``reason`` is one of stop, length, tool_calls, content_filter."""

    reason: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage for the whole call; always the last chunk a provider yields."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


Chunk = TextDelta | ToolCallDelta | Finish | Usage


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat request in OpenAI's shape, addressed to an upstream model.

    ``messages`` are OpenAI chat messages (content a string or a list of parts).
    ``params`` holds the known optional fields that were set (temperature, top_p,
    max_tokens, stop (always a list), n, tools, tool_choice, parallel_tool_calls,
    response_format, seed, user). ``extra`` holds unknown top-level fields.
    """

    model: str
    messages: list[dict[str, Any]]
    params: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallContext:
    """Per-call facts a provider may use (for headers, logs and time limits), never for
    routing.

    ``deadline`` is an absolute ``time.monotonic()`` by which the whole call, every retry
    included, must end: one attempt never runs past it, whatever its ``total_timeout``."""

    request_id: str
    user_id: str | None = None
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One configured upstream: a provider kind plus its connection settings."""

    name: str
    kind: str
    base_url: str | None = None
    api_key: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    total_timeout: float = 600.0  # connect, first byte and the whole body of one call
    max_event_bytes: int = 1 << 20  # one SSE line, or one event's data lines together
    max_response_bytes: int = 32 << 20  # one non-streamed body
    headers: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model a provider can serve, as listed by ``/v1/models``."""

    id: str
    owned_by: str


@runtime_checkable
class Provider(Protocol):
    """What every provider plugin implements. Build one with ``Kind(config, transport)``."""

    kind: ClassVar[str]
    supports_n: ClassVar[bool]

    def stream_chat(self, req: ChatRequest, ctx: CallContext) -> AsyncIterator[Chunk]:
        """Yield chunks as they arrive; raise ``providers.errors.ProviderError`` on failure."""
        ...

    async def complete_chat(self, req: ChatRequest, ctx: CallContext) -> list[Chunk]:
        """The whole answer from one non-streamed upstream call, as the chunks
        ``stream_chat`` would yield (usage last); the same typed errors."""
        ...

    async def aclose(self) -> None:
        """Release anything the provider holds (not the shared transport)."""
        ...


class ProviderFactory(Protocol):
    def __call__(self, config: ProviderConfig,
                 transport: httpx.AsyncBaseTransport) -> Provider: ...
