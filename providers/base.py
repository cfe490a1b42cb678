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
class ReasoningDelta:
    """A piece of the model's reasoning (Anthropic's thinking) for choice ``index``: never
    part of the answer's text; OpenAI-shaped answers carry it as ``reasoning_content``."""

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
    reasoning_tokens: int | None = None  # of completion_tokens, when the upstream says

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


Chunk = TextDelta | ReasoningDelta | ToolCallDelta | Finish | Usage


@dataclass(frozen=True, slots=True)
class Relayed:
    """An upstream's own answer bytes (one SSE event, or a whole JSON body), for an inbound
    API of the upstream's own dialect, which relays them untouched. The chunks parsed from
    them follow, for the gateway's accounting."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat request in OpenAI's shape, addressed to an upstream model.

    ``messages`` are OpenAI chat messages (content a string or a list of parts).
    ``params`` holds the known optional fields that were set (temperature, top_p,
    max_tokens, stop (always a list), n, tools, tool_choice, parallel_tool_calls,
    response_format, seed, user, reasoning_effort, logprobs, top_logprobs, the
    penalties, logit_bias). ``extra`` holds unknown top-level fields.
    """

    model: str
    messages: list[dict[str, Any]]
    params: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


EmbeddingInput = str | list[str] | list[int] | list[list[int]]

# What a model can be called for: /v1/chat/completions and /v1/embeddings.
CHAT = "chat"
EMBEDDINGS = "embeddings"


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """A validated embeddings request in OpenAI's shape, addressed to an upstream model.

    ``input`` is a string, a list of strings, a list of token ids or a list of those;
    ``encoding_format`` is None when the caller did not say (OpenAI's default: float).
    ``extra`` holds unknown top-level fields, passed through."""

    model: str
    input: EmbeddingInput
    encoding_format: str | None = None
    dimensions: int | None = None
    user: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def embedding_items(value: EmbeddingInput) -> list[str] | list[list[int]]:
    """The inputs one by one: a lone string or token array is one input."""
    if isinstance(value, str):
        return [value]
    if value and isinstance(value[0], int):
        return [value]  # type: ignore[list-item]
    return list(value)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """One vector per input, in input order: a list of floats, or the upstream's own
    base64 string (little-endian float32) kept untouched. ``prompt_tokens`` is None when
    the upstream did not say."""

    vectors: list[list[float] | str]
    prompt_tokens: int | None


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


@runtime_checkable
class Embedder(Protocol):
    """The optional embeddings capability of a provider."""

    async def embed(self, req: EmbeddingRequest, ctx: CallContext) -> EmbeddingResult:
        """One upstream embeddings call; the same typed errors as chat."""
        ...


def capabilities(provider: Provider, upstream: str) -> frozenset[str]:
    """What a provider's ``upstream`` model can be called for. A provider may say per model
    (``capabilities(upstream)``, as the demo does); otherwise every model chats, and embeds
    too when the provider has ``embed`` (an OpenAI-compatible upstream alone knows which of
    its models embed)."""
    own = getattr(provider, "capabilities", None)
    if callable(own):
        return frozenset(own(upstream))
    return frozenset({CHAT, EMBEDDINGS}) if isinstance(provider, Embedder) else frozenset({CHAT})


def dropped_params(provider: Provider, req: ChatRequest) -> tuple[str, ...]:
    """The parameters of ``req`` that ``provider`` neither sends nor emulates, in a stable
    order: what the gateway lists in ``x-gateway-dropped-params``. A provider says with
    ``dropped_params(req)`` (Anthropic drops ``seed``, ``logprobs``, ...); one that does
    not say drops nothing. A parameter whose loss would change the answer's contract is
    never dropped: the provider refuses it (``UpstreamBadRequest`` naming it) instead."""
    own = getattr(provider, "dropped_params", None)
    return tuple(own(req)) if callable(own) else ()


class ProviderFactory(Protocol):
    def __call__(self, config: ProviderConfig,
                 transport: httpx.AsyncBaseTransport) -> Provider: ...
