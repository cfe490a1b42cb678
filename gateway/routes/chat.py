"""/v1/chat/completions (SSE and plain) and /v1/models."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.answering import WATCH_AFTER, finish_before_tail, gone
from gateway.cache import HEADER as CACHE_HEADER
from gateway.chat.call import ChatCall
from gateway.chat.encode import DONE, ChunkEncoder, usage_body
from gateway.chat.request import parse_chat
from gateway.errors import APIError, internal_error
from gateway.http import CancelOnDisconnect, JSONResponse, json_object, request_id
from gateway.routes.conversations import HEADER as CONVERSATION_HEADER
from gateway.routes.conversations import owned_conversation
from gateway.sse import EventStreamResponse
from providers.base import Chunk

log = logging.getLogger("gateway")

async def chat_completions(request: Request) -> Response | EventStreamResponse:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    parsed = parse_chat(await json_object(request))
    route = state.catalog.resolve(parsed.model, principal)
    # A call without the header pays one header lookup; with it, one ownership check,
    # before anything is admitted, sent upstream or stored. The header is never forwarded
    # (providers build their own requests).
    conversation = request.headers.get(CONVERSATION_HEADER)
    if conversation is not None:
        conversation_id = await owned_conversation(state.conversations, principal.user_id,
                                                   conversation)
    rid = request_id(request)
    call = ChatCall(state.call_services, principal, route, parsed, source="v1",
                    request_id=rid)
    if conversation is not None:
        call.record.conversation_id = conversation_id
    # The response cache costs a call that does not use it one header lookup and one
    # attribute read; a call that does is looked up before admission (a hit reserves no
    # tokens).
    cache = request.headers.get(CACHE_HEADER)
    if cache is not None or route.cache:
        slot = state.cache.slot(cache, route, principal.user_id, parsed)
        if slot is not None:
            await call.use_cache(state.cache, slot)
    await call.admit()
    completion_id = "chatcmpl-" + rid.removeprefix("req_")
    created = int(time.time())
    if not parsed.stream:
        return await _complete(request, call, completion_id, created)
    # The upstream's first chunk can take long; a client leaving meanwhile cancels it too.
    with CancelOnDisconnect(request.scope, request.receive, after=WATCH_AFTER) as watch:
        first = await call.open()
    if watch.disconnected:
        return await gone(call)
    encoder = ChunkEncoder(completion_id, created, call.model, parsed.include_usage)
    return EventStreamResponse(_sse(call, first, encoder), headers=call.headers)


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /v1/chat/completions`` as a bare ASGI app, the route's only entry point: the
    hot path skips Starlette's router and exception layers (gateway/middleware.py says
    why), so it answers its own errors."""
    request = Request(scope, receive)
    try:
        response = await chat_completions(request)
    except APIError as exc:
        response = exc.response()
    except ClientDisconnect:
        return  # gone while sending its body: nobody to answer, nothing went wrong
    except Exception:
        log.exception("unhandled error in POST %s", scope["path"])
        response = internal_error().response()
    await response(scope, receive, send)


def _sse(call: ChatCall, first: Chunk | None, encoder: ChunkEncoder) -> AsyncIterator[bytes]:
    async def events() -> AsyncIterator[bytes]:
        if first is not None:
            if data := encoder.encode(first):
                yield data
            async for chunk in call.relay():
                if data := encoder.encode(chunk):
                    yield data

    def tail() -> list[bytes]:
        usage = encoder.usage(call.usage) if call.usage is not None else None
        return [usage, DONE] if usage else [DONE]

    return finish_before_tail(call, events(), tail,
                              lambda exc: [encoder.error(call.error(exc)), DONE])


async def _complete(request: Request, call: ChatCall, completion_id: str,
                    created: int) -> Response:
    # Streams stop when their client leaves; so does a plain call: it cancels the upstream
    # request, frees the concurrency slot and is stored as cancelled.
    with CancelOnDisconnect(request.scope, request.receive, after=WATCH_AFTER) as watch:
        await call.complete()
    if watch.disconnected:
        return await gone(call)
    await call.finish()
    assert call.usage is not None
    return JSONResponse({
        "id": completion_id, "object": "chat.completion", "created": created,
        "model": call.model, "choices": call.transcript.choices(call.parsed.n),
        "usage": usage_body(call.usage), "system_fingerprint": None,
    }, headers=call.headers)


async def list_models(request: Request) -> JSONResponse:
    principal = await request.app.state.auth.authenticate(request)
    return JSONResponse({"object": "list",
                         "data": request.app.state.catalog.visible_to(principal)})


async def get_model(request: Request) -> JSONResponse:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    route = state.catalog.resolve(request.path_params["model"], principal)
    return JSONResponse(state.catalog.describe(route))


FAST = {("POST", "/v1/chat/completions"): endpoint}
"""The hot routes, dispatched by ``gateway.middleware.FastRoutes`` ahead of the router."""

routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", get_model, methods=["GET"]),
]
