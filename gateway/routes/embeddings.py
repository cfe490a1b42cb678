"""``POST /v1/embeddings``: OpenAI's embeddings API over every model that embeds."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.answering import WATCH_AFTER, gone
from gateway.cache import HEADER as CACHE_HEADER
from gateway.embeddings.call import EmbeddingCall
from gateway.embeddings.encode import embeddings_body
from gateway.embeddings.request import parse_embeddings
from gateway.errors import invalid
from gateway.http import CancelOnDisconnect, JSONResponse, json_object, request_id
from providers.base import EMBEDDINGS


async def create_embeddings(request: Request) -> Response:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    req = parse_embeddings(await json_object(request))
    route = state.catalog.resolve(req.model, principal)
    if EMBEDDINGS not in route.capabilities:
        # Refused before admission: nothing counted, nothing stored.
        raise invalid("model", f"The model '{req.model}' does not create embeddings; "
                      "/v1/models lists 'embeddings' in the capabilities of those that do.",
                      code="model_not_embeddings")
    call = EmbeddingCall(state.call_services, principal, route, req,
                         request_id=request_id(request))
    cache = request.headers.get(CACHE_HEADER)
    if cache is not None or route.cache:
        slot = state.cache.embeddings_slot(cache, route, principal.user_id, req)
        if slot is not None:
            await call.use_cache(state.cache, slot)
    await call.admit()
    # A client leaving cancels the upstream call and frees its slot, as for chat.
    with CancelOnDisconnect(request.scope, request.receive, after=WATCH_AFTER) as watch:
        result = await call.embed()
    if watch.disconnected:
        return await gone(call)
    await call.finish()
    assert call.usage is not None
    return JSONResponse(embeddings_body(result.vectors, req.encoding_format, call.model,
                                        call.usage), headers=call.headers)


routes = [Route("/v1/embeddings", create_embeddings, methods=["POST"])]
