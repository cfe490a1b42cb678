"""``POST /v1/responses`` (SSE and plain), ``GET`` and ``DELETE /v1/responses/{id}``:
OpenAI's Responses API over every routed model.

A call is a chat call (gateway/responses/call.py: limits, routing with fallbacks, usage
counted once, the row with source ``responses``). The gateway keeps the conversation state
itself: an answer created with ``store`` (the default) is a ``responses`` row, written
before the answer's last bytes go out (the plain body, or the stream's final
``response.completed`` event), so a retrieve or a chained call right after finds it. A
``previous_response_id`` is resolved here into the earlier turns' items, sent upstream as
one whole conversation: any provider can continue it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.answering import WATCH_AFTER, finish_before_tail, gone
from gateway.errors import APIError, invalid, not_found
from gateway.http import CancelOnDisconnect, JSONResponse, json_object, request_id
from gateway.responses.call import ResponsesCall
from gateway.responses.encode import (
    EventStream,
    ResponseState,
    error_code,
    item_id,
    usage_body,
)
from gateway.responses.request import ParsedResponse, parse_response
from gateway.sse import EventStreamResponse
from providers.errors import ProviderError
from storage.responses import ChainTooDeep, ResponseStore


async def _earlier(store: ResponseStore, user_id: Any, previous: str,
                   max_depth: int) -> list[dict[str, Any]]:
    """The items of the chain ending at ``previous``, oldest first: each answer's input,
    then its output. Instructions are not carried over, as OpenAI's are not."""
    try:
        chain = await store.chain(user_id, previous, max_depth)
    except ChainTooDeep:
        raise invalid("previous_response_id", f"'previous_response_id': the chain of earlier "
                      f"responses is longer than {max_depth} (GATEWAY_RESPONSES_MAX_CHAIN); "
                      "start a new chain with the turns you need in input") from None
    if chain is None:
        raise APIError(404, f"Previous response with id '{previous}' not found.",
                       param="previous_response_id", code="previous_response_not_found")
    items: list[dict[str, Any]] = []
    for row in chain:
        items += row.input_items
        items += row.output_items
    return items


async def create_response(request: Request) -> Response | EventStreamResponse:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    parsed = parse_response(await json_object(request))
    route = state.catalog.resolve(parsed.model, principal)
    earlier: list[dict[str, Any]] = []
    if parsed.previous_response_id is not None:
        earlier = await _earlier(state.responses, principal.user_id,
                                 parsed.previous_response_id,
                                 state.settings.responses_max_chain)
    call = ResponsesCall(state.call_services, principal, route, parsed.chat(earlier),
                         request_id=request_id(request))
    await call.admit()
    answer = ResponseState(
        id=item_id("resp"), created_at=int(time.time()), model=call.model,
        echo=parsed.echo, instructions=parsed.instructions,
        previous_response_id=parsed.previous_response_id, metadata=parsed.metadata,
        store=parsed.store)
    if not parsed.stream:
        with CancelOnDisconnect(request.scope, request.receive, after=WATCH_AFTER) as watch:
            await call.complete()
        if watch.disconnected:
            return await gone(call)
        await call.finish()
        call.output.close()
        _settle(answer, call)
        await _keep(state.responses, parsed, answer, call)
        return JSONResponse(answer.body(), headers=call.headers)
    with CancelOnDisconnect(request.scope, request.receive, after=WATCH_AFTER) as watch:
        await call.open()
    if watch.disconnected:
        return await gone(call)
    return EventStreamResponse(_sse(state.responses, parsed, answer, call),
                               headers=call.headers)


def _settle(answer: ResponseState, call: ResponsesCall) -> None:
    """The finished call's outcome in the answer: its items, status and usage."""
    answer.model = call.model
    answer.output = call.output.items
    answer.status = call.output.status
    answer.incomplete_reason = call.output.incomplete_reason
    answer.usage = usage_body(call.usage)


async def _keep(store: ResponseStore, parsed: ParsedResponse, answer: ResponseState,
                call: ResponsesCall) -> None:
    """Store the answer (``store``: the default); shielded, so that a client leaving at
    the last moment cannot leave the chain without it."""
    if not parsed.store:
        return
    row = {"id": answer.id, "user_id": call.principal.user_id,
           "request_row_id": call.record.id, "model": answer.model,
           "instructions": answer.instructions, "input_items": parsed.input,
           "output_items": answer.output, "previous_response_id": answer.previous_response_id,
           "status": answer.status, "usage": answer.usage, "metadata": answer.metadata,
           "parameters": parsed.echo, "incomplete_reason": answer.incomplete_reason,
           "error": answer.error,
           "created_at": datetime.fromtimestamp(answer.created_at, UTC)}
    with anyio.CancelScope(shield=True):
        await store.save(row)


def _sse(store: ResponseStore, parsed: ParsedResponse, answer: ResponseState,
         call: ResponsesCall) -> AsyncIterator[bytes]:
    """created, in_progress, the items' events as the chunks come, their ``.done``
    events; then the call is finished and the answer stored, and only then the last
    event: ``response.completed`` / ``.incomplete``, or ``response.failed``."""
    stream = EventStream()
    last: list[bytes] = []

    async def events() -> AsyncIterator[bytes]:
        yield stream.encode([{"type": "response.created", "response": answer.body()},
                             {"type": "response.in_progress", "response": answer.body()}])
        if data := stream.encode(call.take()):
            yield data
        async for _ in call.relay():
            if data := stream.encode(call.take()):
                yield data

    def tail() -> list[bytes]:
        closing = stream.encode(call.output.close())
        _settle(answer, call)
        last.append(stream.encode([{"type": f"response.{answer.status}",
                                    "response": answer.body()}]))
        return [closing]

    def failed(exc: ProviderError) -> list[bytes]:
        error = call.error(exc)
        _settle(answer, call)
        answer.status = "failed"
        answer.incomplete_reason = None
        answer.error = {"code": error_code(error), "message": error.message}
        last.append(stream.encode([{"type": "response.failed", "response": answer.body()}]))
        return []

    async def sse() -> AsyncIterator[bytes]:
        async with aclosing(finish_before_tail(call, events(), tail, failed)) as inner:
            async for data in inner:
                yield data
        await _keep(store, parsed, answer, call)
        for data in last:
            yield data

    return sse()


def _response_id(request: Request) -> str:
    return request.path_params["response_id"]


async def retrieve_response(request: Request) -> JSONResponse:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    row = await state.responses.get(principal.user_id, _response_id(request))
    if row is None:
        raise not_found("response")
    answer = ResponseState(
        id=row.id, created_at=int(row.created_at.timestamp()), model=row.model,
        echo=row.parameters, instructions=row.instructions,
        previous_response_id=row.previous_response_id, metadata=row._mapping["metadata"],
        status=row.status, output=row.output_items, usage=row.usage,
        incomplete_reason=row.incomplete_reason, error=row.error)
    return JSONResponse(answer.body())


async def delete_response(request: Request) -> JSONResponse:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    response_id = _response_id(request)
    if not await state.responses.delete(principal.user_id, response_id):
        raise not_found("response")
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


routes = [
    Route("/v1/responses", create_response, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve_response, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
]
