"""/conversations: the caller's chat threads (create, list and search, read, change, delete).

Another user's conversation, a malformed id and a deleted one are all "not found" (404).
Calls join a conversation with the ``x-gateway-conversation`` header (gateway/routes/chat.py).
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.audit import audit
from gateway.errors import APIError, invalid, not_found
from gateway.http import JSONResponse, aware, int_param, json_object, text_param
from gateway.routes.history import MAX_QUERY_CHARS
from storage.conversations import SETTINGS, ConversationStore

HEADER = "x-gateway-conversation"
MAX_LIMIT = 100
MAX_TITLE_CHARS = 200  # the column's length
MAX_SYSTEM_PROMPT_CHARS = 100_000
MAX_TOKENS = 2**31 - 1  # the column is a 32-bit integer


def parse_id(raw: str | None) -> uuid.UUID:
    """A conversation id; a malformed one is as unknown as someone else's."""
    try:
        return uuid.UUID(raw or "")
    except ValueError:
        raise not_found("conversation") from None


async def owned_conversation(store: ConversationStore, user_id: uuid.UUID,
                             raw: str) -> uuid.UUID:
    """The id of the header, once it is known to be the caller's; else a 404."""
    cid = parse_id(raw)
    if not await store.owns(user_id, cid):
        raise not_found("conversation")
    return cid


def _text(name: str, value: Any, max_chars: int, *, nullable: bool) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        kind = "a string or null" if nullable else "a string"
        raise invalid(name, f"'{name}' must be {kind}")
    if "\x00" in value:
        raise invalid(name, f"'{name}' must not contain NUL characters")
    if len(value) > max_chars:
        raise invalid(name, f"'{name}' must be at most {max_chars} characters")
    return value


def settings_from(body: dict[str, Any]) -> dict[str, Any]:
    """The fields of a POST or PATCH body, checked; any other field is a 400 naming it."""
    for name in body:
        if name not in SETTINGS:
            raise invalid(name, f"Unknown field '{name}'; a conversation has "
                          f"{', '.join(SETTINGS)}.")
    values: dict[str, Any] = {}
    if "title" in body:
        title = _text("title", body["title"], MAX_TITLE_CHARS, nullable=False)
        assert title is not None
        if not title.strip():
            raise invalid("title", "'title' must not be empty")
        values["title"] = title.strip()
    if "system_prompt" in body:
        values["system_prompt"] = _text("system_prompt", body["system_prompt"],
                                        MAX_SYSTEM_PROMPT_CHARS, nullable=True)
    if "temperature" in body:
        value = body["temperature"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value) or not 0 <= value <= 2):
            raise invalid("temperature", "'temperature' must be a number from 0 to 2, or null")
        values["temperature"] = float(value) if value is not None else None
    if "max_tokens" in body:
        value = body["max_tokens"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 1 <= value <= MAX_TOKENS):
            raise invalid("max_tokens", f"'max_tokens' must be an integer from 1 to "
                          f"{MAX_TOKENS}, or null")
        values["max_tokens"] = value
    return values


def summary_view(row: Any) -> dict[str, Any]:
    return {"id": str(row.id), "object": "conversation", "title": row.title,
            "system_prompt": row.system_prompt, "temperature": row.temperature,
            "max_tokens": row.max_tokens, "created_at": aware(row.created_at),
            "updated_at": aware(row.updated_at)}


async def _detail(request: Request, user_id: uuid.UUID, row: Any) -> dict[str, Any]:
    turns = await request.app.state.conversations.thread(user_id, row.id)
    messages = []
    for turn in turns:
        message: dict[str, Any] = {"role": turn.role, "content": turn.content}
        for name in ("model", "status", "request_id"):
            if getattr(turn, name) is not None:
                message[name] = getattr(turn, name)
        if turn.created_at is not None:
            message["created_at"] = aware(turn.created_at)
        messages.append(message)
    return {**summary_view(row), "messages": messages}


async def create(request: Request) -> JSONResponse:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    values = settings_from(await json_object(request))
    row = await state.conversations.create(principal.user_id, values)
    return JSONResponse({**summary_view(row), "messages": []}, status_code=201)


async def list_conversations(request: Request) -> JSONResponse:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    limit = int_param(request, "limit", 20, 1, MAX_LIMIT)
    text = text_param(request, "q", MAX_QUERY_CHARS)
    after = None
    if raw := request.query_params.get("after"):
        try:
            after = await state.conversations.position(principal.user_id, uuid.UUID(raw))
        except ValueError:
            pass
        if after is None:
            raise invalid("after", "'after' must be the id of a conversation of the "
                          "previous page")
    rows, more = await state.conversations.page(principal.user_id, text, limit, after)
    return JSONResponse({
        "object": "list", "data": [summary_view(row) for row in rows], "has_more": more,
        "first_id": str(rows[0].id) if rows else None,
        "last_id": str(rows[-1].id) if rows else None})


async def get_conversation(request: Request) -> JSONResponse:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    row = await state.conversations.get(principal.user_id,
                                        parse_id(request.path_params["id"]))
    if row is None:
        raise not_found("conversation")
    return JSONResponse(await _detail(request, principal.user_id, row))


async def update(request: Request) -> JSONResponse:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    cid = parse_id(request.path_params["id"])
    try:
        values = settings_from(await json_object(request))
    except APIError:
        # Someone else's id is a 404 whatever the body: a 400 would confirm it exists.
        if not await state.conversations.owns(principal.user_id, cid):
            raise not_found("conversation") from None
        raise
    row = (await state.conversations.update(principal.user_id, cid, values) if values
           else await state.conversations.get(principal.user_id, cid))
    if row is None:
        raise not_found("conversation")
    return JSONResponse(await _detail(request, principal.user_id, row))


async def delete(request: Request) -> Response:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    cid = parse_id(request.path_params["id"])
    if not await state.conversations.delete(principal.user_id, cid):
        raise not_found("conversation")
    audit(request, "conversation.delete", user_id=principal.user_id,
          resource_type="conversation", resource_id=cid)
    return Response(status_code=204)


routes = [
    Route("/conversations", list_conversations, methods=["GET"]),
    Route("/conversations", create, methods=["POST"]),
    Route("/conversations/{id}", get_conversation, methods=["GET"]),
    Route("/conversations/{id}", delete, methods=["DELETE"]),
    Route("/conversations/{id}", update, methods=["PATCH"]),
]
