"""One embeddings call: the lifecycle of ``gateway.call.Call`` (limits, routing with
retries and fallbacks, usage counted once, the stored row) around one upstream ``embed``.

The row's ``source`` is ``embed``; it holds the inputs' text (cut short, as the prompt)
and the parameters, never the vectors.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.auth.principal import Principal
from gateway.cache import HEADER as CACHE_HEADER
from gateway.cache import CachedEmbeddings, CacheSlot, ResponseCache
from gateway.call import Call, CallServices, new_record
from gateway.catalog import Route
from gateway.embeddings.request import prompt_preview
from providers.base import (
    EMBEDDINGS,
    EmbeddingRequest,
    EmbeddingResult,
    Usage,
    embedding_items,
)

SOURCE = "embed"


class EmbeddingCall(Call):
    """``admit``, ``embed``, ``finish``; ``result`` holds the vectors once answered."""

    def __init__(self, svc: CallServices, principal: Principal, route: Route,
                 req: EmbeddingRequest, *, request_id: str) -> None:
        parameters = {"inputs": len(embedding_items(req.input)), **req.extra}
        for name in ("encoding_format", "dimensions", "user"):
            if (value := getattr(req, name)) is not None:
                parameters[name] = value
        super().__init__(svc, principal, route, new_record(
            principal, route, model=req.model, source=SOURCE, request_id=request_id,
            prompt=prompt_preview(req), parameters=parameters))
        self.request = req
        self.result: EmbeddingResult | None = None
        # The response cache, when it applies: the vectors found (a hit), or where to keep
        # them once the call completes (a miss).
        self._cache: ResponseCache | None = None
        self._slot: CacheSlot | None = None
        self._cached: CachedEmbeddings | None = None

    async def use_cache(self, cache: ResponseCache, slot: CacheSlot) -> None:
        """Look the call up before admission: a hit is answered from ``cache`` without
        the upstream (and reserves no tokens); a miss keeps its vectors there."""
        self._cache, self._slot = cache, slot
        self._cached = await cache.get_embeddings(slot)
        if self._cached is not None:
            record = self.record
            record.cached = True
            record.provider = self._cached.provider
            record.upstream_model = self._cached.upstream

    async def admit(self) -> None:
        await super().admit()
        if self._slot is not None:
            self.headers[CACHE_HEADER] = "hit" if self._cached is not None else "miss"

    def _texts_and_ids(self) -> tuple[list[str], int]:
        items = embedding_items(self.request.input)
        texts = [item for item in items if isinstance(item, str)]
        return texts, sum(len(item) for item in items if isinstance(item, list))

    def _estimate(self) -> int:
        if self._cached is not None:
            return 0  # a hit counts as a request, never against the plan's tokens
        # Token ids are exact; text is estimated on the safe side. Nothing is generated.
        texts, ids = self._texts_and_ids()
        return self.svc.tokens.estimate_texts(texts) + ids

    def _count(self) -> Usage:
        """The upstream's count; else tiktoken's (estimated), also for a failed call,
        which spent nothing upstream that can be known better."""
        if self.result is not None and self.result.prompt_tokens is not None:
            return Usage(prompt_tokens=self.result.prompt_tokens, completion_tokens=0)
        texts, ids = self._texts_and_ids()
        return Usage(prompt_tokens=sum(map(self.svc.tokens.text, texts)) + ids,
                     completion_tokens=0, estimated=True)

    async def embed(self) -> EmbeddingResult:
        """Route the request to a deployment that embeds, until one answers."""
        if self._cached is not None:
            self.result = self._cached.result
        else:
            ctx = self._context()
            self.result = await self._route(
                lambda target: target.provider.embed(  # type: ignore[attr-defined]
                    replace(self.request, model=target.upstream), ctx),
                needs=EMBEDDINGS)
        self._settle()
        return self.result

    async def finish(self) -> None:
        """``Call.finish``; then a miss that completed keeps its vectors in the cache."""
        if self._finished:
            return
        await super().finish()
        if (self._cached is None and self._slot is not None and self._cache is not None
                and self._status == "completed" and self.result is not None):
            await self._cache.put(self._slot, CachedEmbeddings(
                self.result, provider=self.record.provider,
                upstream=self.record.upstream_model))
