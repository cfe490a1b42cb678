"""The seed's job API: submit a prompt (202 and an id), poll its status, fetch the result.

``GET /inference`` lists the caller's jobs (newest first, ``status``/``limit``/``after``
as OpenAI's list endpoints page: ``after`` is the previous page's ``last_id``).
``POST /inference`` validates the body up front with the same ``parse_chat`` as ``/v1``
(errors name the legacy field, e.g. ``parameters.temperature``), stores the job and
answers 202; a worker (:mod:`gateway.jobs`) runs it. An unknown model, or one outside the
caller's plan, is a 400 on ``model`` (code ``model_not_found``), as the seed's validation
answered, rather than ``/v1``'s 404.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from gateway.auth.principal import Principal
from gateway.chat.call import prompt_text
from gateway.chat.request import ParsedChat, parse_chat
from gateway.errors import APIError, invalid, not_found, retry_headers
from gateway.http import (
    JSONResponse,
    aware,
    choices_param,
    int_param,
    json_object,
    request_id,
)
from gateway.limits import duration, limits_for
from gateway.observe import note_model
from gateway.routes.history import path_id, usage_view
from storage.jobs import PREVIEW_CHARS, STATUSES
from storage.models import utcnow
from storage.records import CallRecord

FIELDS = ("model", "prompt", "messages", "parameters")
DEFAULT_PAGE = 20
MAX_PAGE = 100
# Legacy parameter name → OpenAI field.
PARAMETERS = {"temperature": "temperature", "max_tokens": "max_tokens",
              "maxTokens": "max_tokens", "top_p": "top_p", "topP": "top_p", "stop": "stop",
              "seed": "seed"}


def openai_body(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The legacy body as an OpenAI one, and OpenAI field → legacy field for errors."""
    for key in data:
        if key not in FIELDS:
            raise invalid(key, f"Unknown field '{key}'. Send 'model', 'prompt' (or "
                          "'messages') and optionally 'parameters'.")
    prompt, messages = data.get("prompt"), data.get("messages")
    renames: dict[str, str] = {}
    if messages is None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise invalid("prompt", "'prompt' is required and must be a non-empty string "
                          "(or send 'messages').")
        messages = [{"role": "user", "content": prompt}]
        renames["messages"] = "prompt"
    elif prompt is not None:
        raise invalid("prompt", "Send either 'prompt' or 'messages', not both.")
    params = data.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise invalid("parameters", "'parameters' must be an object")
    body: dict[str, Any] = {"model": data.get("model"), "messages": messages}
    for key, value in params.items():
        name = PARAMETERS.get(key)
        if name is None:
            raise invalid(f"parameters.{key}", f"Unknown parameter 'parameters.{key}'; "
                          "supported: temperature, max_tokens, top_p, stop, seed.")
        if name in body:
            raise invalid(f"parameters.{key}", f"'parameters.{key}' is given twice.")
        body[name] = value
        renames[name] = f"parameters.{key}"
    return body, renames


def parse_legacy(data: dict[str, Any]) -> ParsedChat:
    """Validate a legacy body as ``/v1`` would, naming the field the caller sent."""
    body, renames = openai_body(data)
    try:
        return parse_chat(body)
    except APIError as exc:
        param = exc.param or ""
        head = param.split("[", 1)[0].split(".", 1)[0]
        legacy = renames.get(param) or (renames.get(head) if head == "messages" else None)
        if legacy is None:
            raise
        message = exc.message.replace(f"'{param}'", f"'{legacy}'")
        raise APIError(exc.status, message, type=exc.type, param=legacy,
                       code=exc.code) from None


def job_view(row: Any, progress: int | None = None) -> dict[str, Any]:
    """A job's status: timestamps, tokens, timings and progress while it runs."""
    running = row.status == "processing"
    return {
        "id": str(row.id), "object": "inference", "status": row.status, "model": row.model,
        "prompt_preview": (row.prompt or "")[:PREVIEW_CHARS],
        "source": row.source, "created_at": aware(row.created_at),
        "started_at": aware(row.started_at), "completed_at": aware(row.completed_at),
        "attempts": row.attempts, "served_by": row.served_by, "usage": usage_view(row),
        "processing_time_ms": row.processing_time_ms,
        "time_to_first_token_ms": row.time_to_first_token_ms,
        "progress": ({"completion_tokens": row.completion_tokens if progress is None
                      else progress} if running else None),
        "error": row.error, "result_url": f"/inference/{row.id}/result",
    }


async def _throttle(state: Any, principal: Principal) -> None:
    """Submissions count against the plan's requests per minute, as in the seed; the
    calls themselves are limited again (and wait, rather than fail) when they run."""
    limit = limits_for(principal).requests_per_minute
    allowed, retry = await state.limiter.hit(f"inference-submit:{principal.subject}", limit,
                                             60.0)
    if not allowed:
        state.metrics.rate_limit("requests")
        wait = max(retry, 0.001)
        raise APIError(429, f"Too many jobs submitted: your plan allows {limit} a minute. "
                       f"Try again in {duration(wait)}.", type="requests",
                       code="rate_limit_exceeded", headers=retry_headers(wait))


async def submit(request: Request) -> JSONResponse:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    parsed = parse_legacy(await json_object(request))
    await _throttle(state, principal)
    try:
        route = state.catalog.resolve(parsed.model, principal)
    except APIError as exc:
        raise invalid("model", exc.message, code="model_not_found") from None
    note_model(route.public)
    req = parsed.request
    first = route.targets[0][0]  # until a worker routes it
    now = utcnow()
    record = CallRecord(
        id=uuid.uuid4(), user_id=principal.user_id, api_key_id=principal.api_key_id,
        request_id=request_id(request) or None, source="legacy", model=parsed.model,
        provider=first.provider_name, upstream_model=first.upstream, messages=req.messages,
        parameters={**req.params, **req.extra}, prompt=prompt_text(req.messages),
        status="pending", created_at=now, updated_at=now)
    await state.jobs.store.submit(record)
    state.jobs.wake()
    location = f"/inference/{record.id}"
    return JSONResponse({"id": str(record.id), "object": "inference", "status": "pending",
                         "model": parsed.model, "created_at": now,
                         "status_url": location, "result_url": location + "/result"},
                        status_code=202, headers={"location": location})


async def _owned(request: Request) -> tuple[Any, uuid.UUID, Any]:
    """(state, job id, row) of the caller's request, or a 404."""
    state = request.app.state
    principal = await state.auth.authenticate(request)
    job_id = path_id(request)
    row = await state.history.item(principal.user_id, job_id)
    if row is None:
        raise not_found("inference request")
    return state, principal.user_id, row


async def status(request: Request) -> JSONResponse:
    state, _, row = await _owned(request)
    return JSONResponse(job_view(row, state.jobs.progress(row.id)))


async def result(request: Request) -> JSONResponse:
    _, _, row = await _owned(request)
    if row.status == "completed":
        return JSONResponse({
            "id": str(row.id), "object": "inference.result", "status": "completed",
            "model": row.model, "response": row.response, "tool_calls": row.tool_calls,
            "finish_reason": row.finish_reason, "usage": usage_view(row),
            "processing_time_ms": row.processing_time_ms,
            "time_to_first_token_ms": row.time_to_first_token_ms,
            "completed_at": aware(row.completed_at)})
    if row.status == "failed":
        raise APIError(409, f"The job failed: {row.error}", code="job_failed")
    if row.status == "cancelled":
        raise APIError(409, "The job was cancelled; it has no result.", code="job_cancelled")
    raise APIError(409, f"The job is still {row.status}; poll GET /inference/{row.id} until "
                   "its status is 'completed'.", code="job_not_finished",
                   headers={"retry-after": "1"})


async def cancel(request: Request) -> JSONResponse:
    state, user_id, row = await _owned(request)
    outcome = await state.jobs.store.cancel(row.id, user_id)
    if outcome is None:  # deleted meanwhile
        raise not_found("inference request")
    if outcome in ("completed", "failed"):
        raise APIError(409, f"The job already {outcome}; there is nothing to cancel.",
                       code="job_finished")
    if outcome == "stopping":
        state.jobs.stop_local(row.id)
    row = await state.history.item(user_id, row.id)
    if row is None:
        raise not_found("inference request")
    return JSONResponse(job_view(row))


def _list_params(request: Request) -> tuple[tuple[str, ...], int, uuid.UUID | None]:
    """``status`` (comma-separated), ``limit`` (1-100, default 20) and ``after`` (a job id:
    the ``last_id`` of the previous page)."""
    statuses = choices_param(request, "status", STATUSES)
    limit = int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    query = request.query_params
    after = None
    if query.get("after"):
        try:
            after = uuid.UUID(query["after"])
        except ValueError:
            raise invalid("after", "'after' must be the id of one of your jobs (the "
                          "'last_id' of the previous page)") from None
    return statuses, limit, after


async def list_jobs(request: Request) -> JSONResponse:
    """The caller's jobs, newest first, each as ``GET /inference/{id}`` shows it."""
    state = request.app.state
    principal = await state.auth.authenticate(request)
    statuses, limit, after = _list_params(request)
    page = await state.jobs.store.page(principal.user_id, statuses, limit, after)
    if page is None:
        raise invalid("after", "'after' must be the id of one of your jobs (the 'last_id' of "
                      "the previous page)")
    rows, more = page
    data = [job_view(row, state.jobs.progress(row.id)) for row in rows]
    return JSONResponse({"object": "list", "data": data,
                         "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": more})


routes = [
    Route("/inference", submit, methods=["POST"]),
    Route("/inference", list_jobs, methods=["GET"]),
    Route("/inference/{id}", status, methods=["GET"]),
    Route("/inference/{id}", cancel, methods=["DELETE"]),
    Route("/inference/{id}/result", result, methods=["GET"]),
    Route("/inference/{id}/cancel", cancel, methods=["POST"]),
]
