"""/history (browse, read, delete the caller's requests from both APIs) and /stats (/usage).

A request of another user is "not found" (404), never "forbidden": ids reveal nothing.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.routing import Route

from gateway.audit import audit
from gateway.errors import invalid, not_found
from gateway.http import JSONResponse, aware, choices_param, int_param, text_param
from gateway.pricing import PriceTable, usd
from storage.history import USAGE_COUNTERS, HistoryFilter

STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
SOURCES = ("v1", "legacy", "embed", "messages", "responses")
MAX_LIMIT = 100
MAX_STATS_DAYS = 366
MAX_QUERY_CHARS = 500
MAX_MODEL_CHARS = 200  # the column's length: a longer name matches nothing
MAX_CURSOR_CHARS = 200  # a real cursor is about 100


def path_id(request: Request) -> uuid.UUID:
    """The ``{id}`` of the path; a malformed id is as unknown as someone else's."""
    try:
        return uuid.UUID(request.path_params["id"])
    except ValueError:
        raise not_found("inference request") from None


def usage_view(row: Any) -> dict[str, Any]:
    return {"prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens,
            "total_tokens": row.total_tokens, "estimated": row.tokens_estimated}


def summary_view(row: Any) -> dict[str, Any]:
    """One history list entry (prompt and response cut to a preview)."""
    return {"id": str(row.id), "object": "inference", "source": row.source, "model": row.model,
            "status": row.status, "created_at": aware(row.created_at),
            "started_at": aware(row.started_at), "completed_at": aware(row.completed_at),
            "prompt_preview": row.prompt_preview, "response_preview": row.response_preview,
            "usage": usage_view(row), "processing_time_ms": row.processing_time_ms,
            "time_to_first_token_ms": row.time_to_first_token_ms,
            "finish_reason": row.finish_reason, "error": row.error, "attempts": row.attempts,
            "served_by": row.served_by, "conversation_id": _id(row.conversation_id),
            "cost_usd": usd(row.cost_usd), "cached": row.cached}


def detail_view(row: Any) -> dict[str, Any]:
    """One request in full: messages, parameters, response, tool calls."""
    return {"id": str(row.id), "object": "inference", "source": row.source, "model": row.model,
            "status": row.status, "request_id": row.request_id,
            "created_at": aware(row.created_at), "started_at": aware(row.started_at),
            "completed_at": aware(row.completed_at), "messages": row.messages,
            "parameters": row.parameters, "prompt": row.prompt, "response": row.response,
            "tool_calls": row.tool_calls, "finish_reason": row.finish_reason,
            "usage": usage_view(row), "processing_time_ms": row.processing_time_ms,
            "time_to_first_token_ms": row.time_to_first_token_ms, "error": row.error,
            "attempts": row.attempts, "served_by": row.served_by,
            "upstream_attempts": row.upstream_attempts,
            "conversation_id": _id(row.conversation_id), "cost_usd": usd(row.cost_usd),
            "cached": row.cached}


def _id(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None


def encode_cursor(created_at: datetime, item_id: uuid.UUID) -> str:
    raw = orjson.dumps([aware(created_at).isoformat(), item_id.hex])  # type: ignore[union-attr]
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) a ``next_cursor`` was made of; anything else is a 400."""
    bad = invalid("cursor", "'cursor' is not valid; pass back the 'next_cursor' of the "
                  "previous page unchanged.")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise bad
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        # Any JSON decodes: only the exact shape encode_cursor writes is accepted.
        if not (isinstance(parts, list) and len(parts) == 2
                and all(isinstance(part, str) for part in parts)):
            raise bad
        created = datetime.fromisoformat(parts[0])
        if created.tzinfo is None:
            raise bad
        return created.astimezone(UTC), uuid.UUID(hex=parts[1])
    except (ValueError, OverflowError, binascii.Error, orjson.JSONDecodeError):
        raise bad from None


def _when(request: Request, name: str, *, end: bool) -> datetime | None:
    """An ISO date or datetime in UTC; a bare ``to`` date includes that whole day.

    Date arithmetic can leave datetime's range (years 1 to 9999) at either end: the
    bound after 9999-12-31, or 0001-01-01 in a zone east of UTC. That is the caller's
    value out of range, a 400, like any other bad value.
    """
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        if len(raw) == 10:
            start = datetime.combine(date.fromisoformat(raw), time(), UTC)
            return start + timedelta(days=1) if end else start
        value = aware(datetime.fromisoformat(raw)).astimezone(UTC)  # type: ignore[union-attr]
        return value + timedelta(microseconds=1) if end else value
    except ValueError:
        raise invalid(name, f"'{name}' must be an ISO date (2026-01-31) or datetime") from None
    except OverflowError:
        raise invalid(name, f"'{name}' is out of range: it must fall within the years "
                      "0001 to 9999 in UTC") from None


def _filters(request: Request) -> HistoryFilter:
    query = request.query_params
    statuses = choices_param(request, "status", STATUSES)
    source = query.get("source") or None
    if source is not None and source not in SOURCES:
        raise invalid("source", "'source' must be 'v1', 'legacy', 'embed', 'messages' or "
                      "'responses'")
    model = text_param(request, "model", MAX_MODEL_CHARS)
    text = text_param(request, "q", MAX_QUERY_CHARS)
    since, until = _when(request, "from", end=False), _when(request, "to", end=True)
    if since is not None and until is not None and since >= until:
        raise invalid("from", "'from' must be before 'to'")
    flag = query.get("include_conversations") or "false"
    if flag not in ("true", "false"):
        raise invalid("include_conversations", "'include_conversations' must be 'true' or "
                      "'false'")
    return HistoryFilter(model=model, statuses=statuses, source=source,
                         since=since, until=until, text=text, conversations=flag == "true")


async def list_history(request: Request) -> JSONResponse:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    limit = int_param(request, "limit", 20, 1, MAX_LIMIT)
    cursor = request.query_params.get("cursor")
    after = decode_cursor(cursor) if cursor else None
    rows, more = await state.history.page(principal.user_id, _filters(request), limit, after)
    last = rows[-1] if rows else None
    return JSONResponse({
        "object": "list", "data": [summary_view(row) for row in rows], "has_more": more,
        "next_cursor": encode_cursor(last.created_at, last.id) if more and last else None})


async def get_item(request: Request) -> JSONResponse:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    row = await state.history.item(principal.user_id, path_id(request))
    if row is None:
        raise not_found("inference request")
    return JSONResponse(detail_view(row))


async def delete_item(request: Request) -> JSONResponse:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    item_id = path_id(request)
    if not await state.history.delete(principal.user_id, item_id):
        raise not_found("inference request")
    state.jobs.stop_local(item_id, "lost")  # a job still running here stops at once
    audit(request, "history.delete", user_id=principal.user_id,
          resource_type="inference_request", resource_id=item_id)
    return JSONResponse({"id": str(item_id), "object": "inference", "deleted": True})


def summarise(counts: dict[str, Any]) -> dict[str, Any]:
    """The stats card's numbers from summed usage_daily counters."""
    requests, ok, failed = counts["requests"], counts["succeeded"], counts["failed"]
    samples = counts["ttft_samples"]
    return {
        "requests": requests, "succeeded": ok, "failed": failed,
        "cancelled": counts["cancelled"],
        # Cancelled calls are the caller's choice, not a failure of the service.
        "success_rate": round(ok / (ok + failed), 4) if ok + failed else None,
        "avg_response_time_ms": round(counts["processing_time_ms"] / requests)
        if requests else None,
        "avg_time_to_first_token_ms": round(counts["time_to_first_token_ms"] / samples)
        if samples else None,
        "prompt_tokens": counts["prompt_tokens"],
        "completion_tokens": counts["completion_tokens"],
        "total_tokens": counts["prompt_tokens"] + counts["completion_tokens"],
        "cost_usd": usd(counts["cost_usd"]),
    }


def _day(request: Request, name: str) -> date | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise invalid(name, f"'{name}' must be an ISO date (2026-01-31)") from None


def _stats_range(request: Request) -> tuple[date, date]:
    days = int_param(request, "days", 30, 1, MAX_STATS_DAYS)
    last = _day(request, "to") or datetime.now(UTC).date()
    first = _day(request, "from")
    if first is None:
        try:
            first = last - timedelta(days=days - 1)
        except OverflowError:  # the range would start before 0001-01-01
            raise invalid("to", f"'to' must leave room for {days} days after 0001-01-01; "
                          "pass 'from' or fewer 'days'") from None
    if first > last:
        raise invalid("from", "'from' must not be after 'to'")
    if (last - first).days >= MAX_STATS_DAYS:
        raise invalid("from", f"the range may span at most {MAX_STATS_DAYS} days")
    return first, last


async def stats(request: Request) -> JSONResponse:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    first, last = _stats_range(request)
    rows = await state.history.usage(principal.user_id, first, last)
    zero = dict.fromkeys(USAGE_COUNTERS, 0)
    total, by_model, by_day = dict(zero), {}, {}
    for row in rows:
        model = by_model.setdefault(row["model"], dict(zero))
        day = by_day.setdefault(row["day"], dict(zero))
        for name in USAGE_COUNTERS:
            total[name] += row[name]
            model[name] += row[name]
            day[name] += row[name]
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    prices: PriceTable = state.call_services.prices
    models = sorted(by_model.items(), key=lambda kv: (-kv[1]["requests"], kv[0]))
    return JSONResponse({
        "object": "usage", "from": first.isoformat(), "to": last.isoformat(), "timezone": "UTC",
        "totals": summarise(total),
        # Priced by today's table: a model without a price cost 0, and the totals say
        # nothing about it, so the answer names it.
        "by_model": [{"model": name, **summarise(c), "priced": prices.priced(name)}
                     for name, c in models],
        "by_day": [{"day": d.isoformat(), **summarise(by_day.get(d, zero))} for d in days],
        "unpriced_models": sorted(name for name in by_model if not prices.priced(name)),
    })


routes = [
    Route("/history", list_history, methods=["GET"]),
    Route("/history/{id}", get_item, methods=["GET"]),
    Route("/history/{id}", delete_item, methods=["DELETE"]),
    Route("/stats", stats, methods=["GET"]),
    Route("/usage", stats, methods=["GET"]),
]
