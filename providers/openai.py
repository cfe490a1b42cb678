"""OpenAI, and any OpenAI-compatible upstream (vLLM, Ollama, LiteLLM, ...) by base_url."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from providers.base import (
    CallContext,
    ChatRequest,
    Chunk,
    EmbeddingRequest,
    EmbeddingResult,
    ModelInfo,
    ProviderConfig,
    embedding_items,
)
from providers.errors import ProviderError
from providers.openai_embeddings import embeddings_body, parse_embeddings
from providers.openai_format import (
    OpenAIStreamParser,
    build_openai_body,
    error_from_openai_payload,
    error_from_openai_response,
    parse_model_list,
)
from providers.upstream import (
    HeaderList,
    HTTPStreamProvider,
    UpstreamCall,
    load_json,
    upstream_headers,
)


class OpenAIProvider(HTTPStreamProvider):
    """Streams ``POST {base_url}/chat/completions``; params and unknown fields pass through."""

    kind: ClassVar[str] = "openai"
    supports_n: ClassVar[bool] = True
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"
    # Whether to send stream_options.include_usage (an upstream that rejects it can opt out).
    send_stream_options: ClassVar[bool] = True
    parser_class: ClassVar[type[OpenAIStreamParser]] = OpenAIStreamParser

    def __init__(self, config: ProviderConfig, transport: httpx.AsyncBaseTransport) -> None:
        super().__init__(config, transport)
        # Built once: parsing the URL and merging headers per call showed up in profiles.
        self._chat_url = httpx.URL(f"{self._base_url}/chat/completions")
        self._models_url = httpx.URL(f"{self._base_url}/models")
        self._embeddings_url = httpx.URL(f"{self._base_url}/embeddings")
        self._stream_headers = self._headers("text/event-stream")
        self._json_headers = self._headers("application/json")
        self._include_usage = bool(config.options.get("stream_options",
                                                      self.send_stream_options))

    def prepare(self, req: ChatRequest, ctx: CallContext, *, stream: bool) -> UpstreamCall:
        """The request passed through as-is; a stream asks for usage."""
        # OpenAI logs this id, so a support ticket can name our request.
        headers = [*(self._stream_headers if stream else self._json_headers),
                   ("x-client-request-id", ctx.request_id)]
        return UpstreamCall(url=self._chat_url,
                            body=build_openai_body(req, stream=stream,
                                                   include_usage=self._include_usage),
                            headers=headers)

    def stream_parser(self, req: ChatRequest | None = None) -> OpenAIStreamParser:
        return self.parser_class(self.config.name)

    def completion_chunks(self, payload: dict[str, Any],
                          req: ChatRequest | None = None) -> list[Chunk]:
        return self.parser_class(self.config.name).completion(payload)

    async def embed(self, req: EmbeddingRequest, ctx: CallContext) -> EmbeddingResult:
        """``POST {base_url}/embeddings``, read whole within the call's limits."""
        headers = [*self._json_headers, ("x-client-request-id", ctx.request_id)]
        count = len(embedding_items(req.input))
        return await self.fetch_answer(self._embeddings_url, headers, embeddings_body(req), ctx,
                                       lambda payload, _raw: parse_embeddings(payload, count),
                                       "embeddings")

    async def list_models(self) -> list[ModelInfo]:
        """The upstream's ``GET /models`` (either list shape)."""
        raw = await self.fetch_json("GET", self._models_url, self._json_headers)
        return parse_model_list(load_json(raw), self.config.name)

    def error_from_response(self, status: int, headers: Mapping[str, str],
                            raw: bytes) -> ProviderError:
        """Map a non-2xx response with an OpenAI error body."""
        return error_from_openai_response(self.config.name, status, headers, raw)

    def error_from_payload(self, payload: Any) -> ProviderError | None:
        """Map an OpenAI ``{"error": ...}`` object."""
        return error_from_openai_payload(self.config.name, payload)

    def _headers(self, accept: str) -> HeaderList:
        headers = {"content-type": "application/json", "accept": accept}
        if self.config.api_key:
            headers["authorization"] = f"Bearer {self.config.api_key}"
        return upstream_headers(headers, self.config)
