"""/v1/chat/completions (SSE and plain) and /v1/models."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.chat.call import ChatCall
from gateway.chat.encode import DONE, ChunkEncoder, usage_body
from gateway.chat.request import parse_chat
from gateway.errors import APIError, internal_error
from gateway.http import CancelOnDisconnect, JSONResponse, json_object, request_id
from gateway.routes.conversations import HEADER as CONVERSATION_HEADER
from gateway.routes.conversations import owned_conversation
from gateway.sse import EventStreamResponse
from providers.base import Chunk
from providers.errors import ProviderError

log = logging.getLogger("gateway")

# Watch for the client leaving only once a call has taken this long: most are over sooner,
# and a timer costs less than the watching task (gateway/http.py). Well under the second
# within which a gone client's upstream call is cancelled and its slot freed.
WATCH_AFTER = 0.05

# nginx's "client closed request": the answer to a client that left; nobody reads it (the
# server drops what is sent after a disconnect), it only gives the code one return type.
CLIENT_GONE = 499


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
    await call.admit()
    completion_id = "chatcmpl-" + rid.removeprefix("req_")
    created = int(time.time())
    if not parsed.stream:
        return await _complete(request, call, completion_id, created)
    # The upstream's first chunk can take long; a client leaving meanwhile cancels it too.
    with CancelOnDisconnect(request.scope, request.receive, after=WATCH_AFTER) as watch:
        first = await call.open()
    if watch.disconnected:
        return await _gone(call)
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


async def _sse(call: ChatCall, first: Chunk | None, encoder: ChunkEncoder
               ) -> AsyncGenerator[bytes, None]:
    tail: list[bytes] = []
    try:
        if first is not None:
            if data := encoder.encode(first):
                yield data
            async for chunk in call.relay():
                if data := encoder.encode(chunk):
                    yield data
        if call.usage is not None and (data := encoder.usage(call.usage)):
            tail.append(data)
    except ProviderError as exc:
        # After the first byte an error can only travel inside the stream.
        tail.append(encoder.error(call.error(exc)))
    finally:
        # Finished before the last bytes go out, so a client that got [DONE] has its row
        # in the crash spool even if the process is killed the next instant.
        with anyio.CancelScope(shield=True):
            await call.finish()
    for data in tail:
        yield data
    yield DONE


async def _gone(call: ChatCall) -> Response:
    """The client left. Its cancellation has normally finished the call already; should
    the upstream have answered in the same instant, the call is finished here instead
    (``finish`` runs once), so no slot, lease or row is left behind."""
    with anyio.CancelScope(shield=True):
        await call.finish()
    return Response(status_code=CLIENT_GONE)


async def _complete(request: Request, call: ChatCall, completion_id: str,
                    created: int) -> Response:
    # Streams stop when their client leaves; so does a plain call: it cancels the upstream
    # request, frees the concurrency slot and is stored as cancelled.
    with CancelOnDisconnect(request.scope, request.receive, after=WATCH_AFTER) as watch:
        await call.complete()
    if watch.disconnected:
        return await _gone(call)
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
