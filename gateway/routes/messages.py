"""``POST /v1/messages`` (SSE and plain) and ``POST /v1/messages/count_tokens``:
Anthropic's Messages API over every routed model.

A call is a chat call (gateway/messages/call.py over gateway/chat/call.py: limits,
routing with retries and fallbacks, usage counted once, the stored row with source
``messages``). An Anthropic upstream's answer is relayed as it came; any other's is encoded
here in Anthropic's shape, and so are the errors, on every path of these routes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.answering import WATCH_AFTER, finish_before_tail, gone
from gateway.errors import APIError, internal_error
from gateway.http import CancelOnDisconnect, JSONResponse, json_object, request_id
from gateway.messages.call import MessagesCall
from gateway.messages.encode import EventEncoder, error_response, message_body
from gateway.messages.request import parse_messages
from gateway.observe import CLIENT_LEFT
from gateway.sse import EventStreamResponse
from providers.base import Chunk, Relayed

log = logging.getLogger("gateway")

# The relayed event held back until the call is finished (gateway/answering.py).
LAST_EVENT = b"event: message_stop\n"


def anthropic_errors(handler: Callable[[Request], Awaitable[Response]]
                     ) -> Callable[[Request], Awaitable[Response]]:
    """Every error of ``handler`` in Anthropic's shape and status."""
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except APIError as exc:
            return error_response(exc)
        except ClientDisconnect:
            return Response(status_code=CLIENT_LEFT)  # gone while sending its body
        except Exception:
            log.exception("unhandled error in POST %s", request.url.path)
            return error_response(internal_error())
    return endpoint


async def create_message(request: Request) -> Response:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    parsed = parse_messages(await json_object(request))
    chat = parsed.chat
    route = state.catalog.resolve(chat.model, principal)
    rid = request_id(request)
    call = MessagesCall(state.call_services, principal, route, parsed, request_id=rid)
    await call.admit()
    message_id = "msg_" + rid.removeprefix("req_")
    if not chat.stream:
        with CancelOnDisconnect(request.scope, request.receive, after=WATCH_AFTER) as watch:
            await call.complete()
        if watch.disconnected:
            return await gone(call)
        await call.finish()
        assert call.usage is not None
        if call.relayed and call.answer is not None:
            return Response(call.answer, media_type="application/json", headers=call.headers)
        return JSONResponse(message_body(message_id, call.model, call.transcript, call.usage),
                            headers=call.headers)
    with CancelOnDisconnect(request.scope, request.receive, after=WATCH_AFTER) as watch:
        first = await call.open()
    if watch.disconnected:
        return await gone(call)
    if call.relayed:
        return EventStreamResponse(_relayed(call, first), headers=call.headers)
    encoder = EventEncoder(message_id, call.model,
                           state.call_services.tokens.messages(chat.request.messages))
    return EventStreamResponse(_events(call, first, encoder), headers=call.headers)


def _events(call: MessagesCall, first: Chunk | None, encoder: EventEncoder
            ) -> AsyncIterator[bytes]:
    async def events() -> AsyncIterator[bytes]:
        yield encoder.start()
        if first is not None:
            if data := encoder.encode(first):
                yield data
            async for chunk in call.relay():
                if data := encoder.encode(chunk):
                    yield data

    def tail() -> list[bytes]:
        assert call.usage is not None
        return [encoder.end(call.usage)]

    return finish_before_tail(call, events(), tail,
                              lambda exc: [encoder.error(call.error(exc))])


def _relayed(call: MessagesCall, first: Chunk | Relayed | None) -> AsyncIterator[bytes]:
    """An Anthropic upstream's events as they come (its own message_start, pings, blocks
    and stop), the chunks parsed from them left to the call's accounting. Its last event
    is held back until the call is finished."""
    last: list[bytes] = []

    async def events() -> AsyncIterator[bytes]:
        if isinstance(first, Relayed):
            yield first.data
        async for item in call.relay():
            if isinstance(item, Relayed):
                if item.data.startswith(LAST_EVENT):
                    last.append(item.data)
                else:
                    yield item.data

    return finish_before_tail(call, events(), lambda: last,
                              lambda exc: [EventEncoder.error(call.error(exc))])


async def count_tokens(request: Request) -> Response:
    """``{"input_tokens": n}``: tiktoken's count of the translated prompt (and tools) for
    the routed model, whatever its provider; nothing is admitted, sent or stored."""
    state = request.app.state
    principal = await state.auth.authenticate(request)
    parsed = parse_messages(await json_object(request), count_only=True)
    state.catalog.resolve(parsed.chat.model, principal)  # 404 for a model it cannot use
    tokens = state.call_services.tokens
    chat = parsed.chat.request
    count = tokens.messages(chat.messages)
    if chat.params.get("tools"):
        count += tokens.text(orjson.dumps(chat.params["tools"]).decode())
    return JSONResponse({"input_tokens": count})


routes = [
    Route("/v1/messages", anthropic_errors(create_message), methods=["POST"]),
    Route("/v1/messages/count_tokens", anthropic_errors(count_tokens), methods=["POST"]),
]
