"""The OpenAPI 3.1 description of every API route, served at ``GET /openapi.json``.

Built from data in Python rather than kept as a YAML file: the validation limits come from
the modules that enforce them (``gateway.chat.request``, ``gateway.routes.history``), the
error statuses from one table, and each operation is a call to ``operation()``
(gateway/openapi_build.py), so there is no per-endpoint copy of the error, header and
security boilerplate to drift.
tests/gateway/test_openapi.py keeps this document and the app's route list in step, and
tests/gateway/test_openapi_fuzz.py checks the answers against it with schemathesis.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import orjson

from gateway.cache import HEADER as CACHE_HEADER
from gateway.call import DROPPED_PARAMS_HEADER
from gateway.openapi_build import (
    BOOL,
    ERRORS,
    INT,
    NUM,
    OBJ,
    PUBLIC,
    RATE_LIMIT_HEADERS,
    REQUEST_ID,
    SECURITY_SCHEMES,
    SESSION,
    SSE_EVENT,
    STR,
    TIME,
    UPSTREAM,
    Schema,
    array,
    error_response,
    headers,
    json_response,
    list_of,
    null,
    obj,
    ok,
    operation,
    path_param,
    query,
    ref,
)
from gateway.openapi_chat import (
    CHAT_COMPLETION,
    CHAT_REQUEST,
    EMBEDDINGS,
    EMBEDDINGS_REQUEST,
    MESSAGE,
    SAMPLING,
    TOKENS,
)
from gateway.openapi_messages import MESSAGES_PATHS
from gateway.openapi_responses import RESPONSES_PATHS
from gateway.ratelimit.spend import DEFAULT_PERIOD, MAX_BUDGET_USD, PERIODS
from gateway.routes.accounts import LIMIT_FIELDS
from gateway.routes.conversations import MAX_LIMIT as MAX_CONVERSATIONS
from gateway.routes.conversations import (
    MAX_SYSTEM_PROMPT_CHARS,
    MAX_TITLE_CHARS,
    MAX_TOKENS,
)
from gateway.routes.history import (
    MAX_CURSOR_CHARS,
    MAX_LIMIT,
    MAX_MODEL_CHARS,
    MAX_QUERY_CHARS,
    MAX_STATS_DAYS,
    SOURCES,
    STATUSES,
)
from gateway.routes.legacy import MAX_PAGE as MAX_JOBS_PAGE

# --- schemas --------------------------------------------------------------------------------

PLAN = obj({"name": STR, "price_monthly": NUM, "requests_per_minute": INT,
            "tokens_per_minute": INT, "concurrent_requests": INT, "features": OBJ})
USER = obj({"id": {"type": "string", "format": "uuid"}, "email": STR,
            "subscription_tier": STR, "status": STR, "created_at": TIME})
KEY_LIMITS = obj({}, {
    **{name: {"type": "integer", "minimum": 1} for name in LIMIT_FIELDS},
    "budget_usd": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_BUDGET_USD,
                   "description": "The key's spend budget in USD per budget_period."},
    "budget_period": {"enum": list(PERIODS), "default": DEFAULT_PERIOD,
                      "description": "UTC calendar day or month, or total (never resets); "
                                     "only with budget_usd."},
}, closed=True)
BUDGET = obj({"scope": {"enum": ["key", "plan"]},
              "name": {**STR, "description": "The key's name, or the plan's."},
              "period": {"enum": list(PERIODS)}, "budget_usd": NUM, "spent_usd": NUM,
              "remaining_usd": NUM,
              "resets_at": {**null(TIME), "description": "null for a total budget."}})
API_KEY = obj({"id": {"type": "string", "format": "uuid"}, "name": STR, "masked": STR,
               "status": {"enum": ["active", "revoked"]}, "created_at": TIME,
               "last_used_at": null(TIME), "revoked_at": null(TIME), "limits": KEY_LIMITS})
NEW_KEY = {"allOf": [API_KEY, obj({"key": {**STR, "description": "Shown once."}})]}
CREDENTIALS = obj({"email": {"type": "string", "format": "email"}, "password": STR})
JOB_STATUS = {"enum": list(STATUSES)}
ID = {"type": "string", "format": "uuid"}
JOB_USAGE = obj({"prompt_tokens": null(INT), "completion_tokens": null(INT),
                 "total_tokens": null(INT), "estimated": null(BOOL)})
TIMINGS = {"created_at": TIME, "started_at": null(TIME), "completed_at": null(TIME),
           "processing_time_ms": null(INT), "time_to_first_token_ms": null(INT)}
JOB = obj({"id": ID, "object": {"const": "inference"}, "status": JOB_STATUS, "model": STR,
           "source": {"enum": list(SOURCES)}, **TIMINGS, "attempts": INT,
           "served_by": null(STR), "usage": JOB_USAGE,
           "progress": null(obj({"completion_tokens": null(INT)})), "error": null(STR),
           "result_url": STR, "prompt_preview": null(STR)})
LEGACY_REQUEST = obj({"model": {"type": "string", "minLength": 1}}, {
    "prompt": {**STR, "description": "The user's prompt; or send messages."},
    "messages": array(MESSAGE, minItems=1),
    "parameters": obj({}, {**SAMPLING, "maxTokens": null(TOKENS), "topP": SAMPLING["top_p"]},
                      closed=True)}, closed=True)
# Money: USD at the price of the model that answered, rounded to 8 decimal places.
USD = {"type": "number", "minimum": 0}
HISTORY_ITEM = {"id": ID, "object": {"const": "inference"}, "source": {"enum": list(SOURCES)},
                "model": STR, "status": JOB_STATUS, **TIMINGS, "usage": JOB_USAGE,
                "finish_reason": null(STR), "error": null(STR), "attempts": null(INT),
                "served_by": null(STR), "conversation_id": null(ID), "cost_usd": USD,
                "cached": BOOL}
SUMMARY = obj({**HISTORY_ITEM, "prompt_preview": null(STR), "response_preview": null(STR)})
DETAIL = obj({**HISTORY_ITEM, "request_id": null(STR), "messages": array(OBJ),
              "parameters": null(OBJ), "prompt": null(STR), "response": null(STR),
              "tool_calls": null(array(OBJ)), "upstream_attempts": null(array(OBJ))})
COUNTS = {"requests": INT, "succeeded": INT, "failed": INT, "cancelled": INT,
          "success_rate": null(NUM), "avg_response_time_ms": null(INT),
          "avg_time_to_first_token_ms": null(INT), "prompt_tokens": INT,
          "completion_tokens": INT, "total_tokens": INT, "cost_usd": USD}
DATE = {"type": "string", "format": "date"}
CONVERSATION_SETTINGS = {
    "system_prompt": null({"type": "string", "maxLength": MAX_SYSTEM_PROMPT_CHARS}),
    "temperature": null({"type": "number", "minimum": 0, "maximum": 2}),
    "max_tokens": null({"type": "integer", "minimum": 1, "maximum": MAX_TOKENS})}
CONVERSATION = obj({"id": ID, "object": {"const": "conversation"}, "title": null(STR),
                    **CONVERSATION_SETTINGS, "created_at": TIME, "updated_at": TIME})
TURN = obj({"role": {"enum": ["user", "assistant"]}, "content": STR},
           {"model": STR, "status": JOB_STATUS, "request_id": STR, "created_at": TIME})
CONVERSATION_BODY = obj({}, {"title": {"type": "string", "minLength": 1,
                                       "maxLength": MAX_TITLE_CHARS},
                             **CONVERSATION_SETTINGS}, closed=True)
WINDOW = obj({"limit": INT, "remaining": INT, "used": INT, "reset_seconds": NUM})

SCHEMAS: dict[str, Schema] = {
    "Error": obj({"error": obj({"message": STR, "type": STR, "param": null(STR),
                                "code": null(STR)})}),
    "ChatCompletionRequest": CHAT_REQUEST, "ChatCompletion": CHAT_COMPLETION,
    "Model": obj({"id": STR, "object": {"const": "model"}, "created": INT, "owned_by": STR}),
    "User": USER, "ApiKey": API_KEY, "Job": JOB, "HistorySummary": SUMMARY,
    "Conversation": CONVERSATION,
    "ConversationDetail": {"allOf": [ref("Conversation"), obj({"messages": array(TURN)})]},
}

KEY_ID = [path_param("key_id", ID, "The API key's id.")]
JOB_ID = [path_param("id", STR, "The request's id (a UUID; anything else is a 404).")]
JOBS_QUERY = [
    query("status", STR, "One of " + ", ".join(STATUSES) + "; comma-separated for several."),
    query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_JOBS_PAGE},
          "Page size (default 20)."),
    query("after", STR, "The previous page's last_id."),
]
CONVERSATION_ID = [path_param("id", STR, "The conversation's id (a UUID; anything else, "
                              "or another user's, is a 404).")]
CONVERSATIONS_QUERY = [
    query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_CONVERSATIONS},
          "Page size (default 20)."),
    query("q", {"type": "string", "maxLength": MAX_QUERY_CHARS},
          "Text in the title or in what was asked or answered."),
    query("after", STR, "The previous page's last_id."),
]
HISTORY_QUERY = [
    query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "Page size."),
    query("cursor", {"type": "string", "maxLength": MAX_CURSOR_CHARS},
          "The previous page's next_cursor, unchanged."),
    query("status", STR, "One of " + ", ".join(STATUSES) + "; comma-separated for several."),
    query("source", {"enum": list(SOURCES)}, "The API the request came through."),
    query("model", {"type": "string", "maxLength": MAX_MODEL_CHARS}, "The model name."),
    query("q", {"type": "string", "maxLength": MAX_QUERY_CHARS}, "Text in prompt or response."),
    query("from", STR, "ISO date or datetime (UTC), inclusive."),
    query("to", STR, "ISO date or datetime (UTC); a bare date includes that day."),
    query("include_conversations", {"enum": ["true", "false"]},
          "Also list the calls of the caller's conversations (default false)."),
]
STATS_QUERY = [
    query("days", {"type": "integer", "minimum": 1, "maximum": MAX_STATS_DAYS},
          "Days ending at `to` (default 30)."),
    query("from", DATE, "First day (UTC); overrides `days`."),
    query("to", DATE, "Last day (UTC, default today)."),
]
STATS = obj({"object": {"const": "usage"}, "from": DATE, "to": DATE,
             "timezone": {"const": "UTC"}, "totals": obj(COUNTS),
             "by_model": array(obj({"model": STR, **COUNTS, "priced": BOOL})),
             "by_day": array(obj({"day": DATE, **COUNTS})),
             "unpriced_models": array(STR)})
KEYS = ("Keys need a signed-in session: the token of POST /auth/login, not an API key.")
CACHE_HEADER_TEXT = ("`hit` (answered from the response cache: no upstream call, cost 0) "
                     "or `miss`; only when the cache applied to the call.")
CACHE_ANSWER_HEADER = headers({CACHE_HEADER: ({"enum": ["hit", "miss"]}, CACHE_HEADER_TEXT)},
                              required=False)
CACHE_PARAM = {"name": CACHE_HEADER, "in": "header", "required": False,
               "schema": {"enum": ["on", "off"]},
               "description": "`on`: answer from the response cache when this user asked "
                              "the same before, else keep the answer there; `off`: skip the "
                              "cache even when the model uses it by default (`cache = "
                              "true`). Chat calls with n > 1 are never cached."}
CHAT_OK = {200: {
    "description": "The completion; with `stream: true` server-sent events of "
                   "`chat.completion.chunk` objects ending with `data: [DONE]`.",
    "headers": {**REQUEST_ID, **headers(RATE_LIMIT_HEADERS, required=True),
                **CACHE_ANSWER_HEADER,
                DROPPED_PARAMS_HEADER: {
                    "schema": STR, "required": False,
                    "description": "The request's parameters the model that answered could "
                                   "not honour and left out (comma-separated, alphabetical), "
                                   "e.g. seed,logprobs on Anthropic; absent when none were."}},
    "content": {"application/json": {"schema": ref("ChatCompletion")},
                "text/event-stream": {"schema": SSE_EVENT}}}}
ACCEPTED = {202: json_response(
    "The job is stored; poll status_url.",
    obj({"id": ID, "object": {"const": "inference"}, "status": {"const": "pending"},
         "model": STR, "created_at": TIME, "status_url": STR, "result_url": STR}),
    extra_headers={"location": {"schema": STR, "required": True,
                                "description": "The job's status URL."}})}
RESULT = obj({"id": ID, "object": {"const": "inference.result"},
              "status": {"const": "completed"}, "model": STR, "response": null(STR),
              "tool_calls": null(array(OBJ)), "finish_reason": null(STR), "usage": JOB_USAGE,
              "processing_time_ms": null(INT), "time_to_first_token_ms": null(INT),
              "completed_at": null(TIME)})
READY = obj({"status": {"enum": ["ok", "unavailable"]},
             "checks": {"type": "object", "additionalProperties": STR},
             "writer": obj({"pending": INT, "dropped": INT, "written": INT, "waits": INT})})
TEXT = {"text/plain": {"schema": STR}, "application/openmetrics-text": {"schema": STR}}

PATHS: dict[str, dict[str, Schema]] = {
    "/v1/chat/completions": {"post": operation(
        "chat", "Create a chat completion (plain or streamed)", CHAT_OK, errors=UPSTREAM,
        body=ref("ChatCompletionRequest"), parameters=[CACHE_PARAM])},
    "/v1/embeddings": {"post": operation(
        "embeddings", "Create embeddings", ok(EMBEDDINGS, extra_headers={
            **headers(RATE_LIMIT_HEADERS, required=True), **CACHE_ANSWER_HEADER}),
        errors=UPSTREAM, body=EMBEDDINGS_REQUEST, parameters=[CACHE_PARAM])},
    "/v1/models": {"get": operation("chat", "The models the caller's plan allows",
                                    ok(list_of("Model")))},
    "/v1/models/{model}": {"get": operation(
        "chat", "One model", ok(ref("Model")), errors=(404,),
        parameters=[path_param("model", STR, "The model's id (may contain '/').")])},
    "/auth/register": {"post": operation(
        "auth", "Create an account and its first API key",
        {201: json_response("Created", obj({"token": STR, "user": ref("User"),
                                            "apiKey": STR, "apiKeyInfo": ref("ApiKey")}))},
        errors=(409, 429), security=PUBLIC, body=CREDENTIALS)},
    "/auth/login": {"post": operation(
        "auth", "Sign in: a session token (JWT)",
        ok(obj({"token": STR, "token_type": {"const": "bearer"}, "expires_in": INT,
                "user": ref("User")})),
        errors=(401, 429), security=PUBLIC, body=CREDENTIALS)},
    "/auth/forgot-password": {"post": operation(
        "auth", "Mail a single-use password reset link (always 202: no account enumeration)",
        {202: json_response("Accepted", obj({"status": {"const": "accepted"},
                                             "message": STR}))},
        errors=(429,), security=PUBLIC,
        body=obj({"email": {"type": "string", "format": "email"}}))},
    "/auth/reset-password": {"post": operation(
        "auth", "Set a new password with a reset link's token; ends existing sessions",
        ok(obj({"status": {"const": "password_reset"}, "email": STR})),
        errors=(429,), security=PUBLIC, body=obj({"token": STR, "password": STR}))},
    "/auth/me": {"get": operation(
        "auth", "The caller and their plan",
        ok(obj({"id": ID, "email": STR, "subscription_tier": STR,
                "authenticated_via": {"enum": ["api_key", "jwt"]}, "plan": PLAN})))},
    "/auth/keys": {
        "get": operation("auth", "The caller's API keys. " + KEYS, ok(list_of("ApiKey")),
                         errors=(403,), security=SESSION),
        "post": operation("auth", "Create an API key. " + KEYS,
                          {201: json_response("Created; `key` is shown only now.", NEW_KEY)},
                          errors=(403,), security=SESSION,
                          body=obj({}, {"name": {"type": "string", "minLength": 1,
                                                 "maxLength": 100},
                                        "limits": KEY_LIMITS}))},
    "/auth/keys/{key_id}/regenerate": {"post": operation(
        "auth", "Replace a key's secret. " + KEYS, ok(NEW_KEY), errors=(403, 404, 409),
        security=SESSION, parameters=KEY_ID)},
    "/auth/keys/{key_id}": {"delete": operation(
        "auth", "Revoke a key (idempotent). " + KEYS, ok(ref("ApiKey")), errors=(403, 404),
        security=SESSION, parameters=KEY_ID)},
    "/inference": {
        "post": operation("jobs", "Submit a legacy job", ACCEPTED, errors=(429,),
                          body=LEGACY_REQUEST),
        "get": operation("jobs", "The caller's jobs, newest first",
                         ok(obj({"object": {"const": "list"}, "data": array(ref("Job")),
                                 "has_more": BOOL, "first_id": null(ID),
                                 "last_id": null(ID)})),
                         errors=(400,), parameters=JOBS_QUERY)},
    "/inference/{id}": {
        "get": operation("jobs", "A job's status", ok(ref("Job")), errors=(404,),
                         parameters=JOB_ID),
        "delete": operation("jobs", "Cancel a job", ok(ref("Job")), errors=(404, 409),
                            parameters=JOB_ID)},
    "/inference/{id}/cancel": {"post": operation(
        "jobs", "Cancel a job", ok(ref("Job")), errors=(404, 409), parameters=JOB_ID)},
    "/inference/{id}/result": {"get": operation(
        "jobs", "A completed job's result (409 until then)", ok(RESULT), errors=(404, 409),
        parameters=JOB_ID)},
    "/history": {"get": operation(
        "history", "The caller's requests, newest first",
        ok(obj({"object": {"const": "list"}, "data": array(ref("HistorySummary")),
                "has_more": BOOL, "next_cursor": null(STR)})),
        errors=(400,), parameters=HISTORY_QUERY)},
    "/history/{id}": {
        "get": operation("history", "One request in full", ok(DETAIL), errors=(404,),
                         parameters=JOB_ID),
        "delete": operation("history", "Delete one request",
                            ok(obj({"id": ID, "object": {"const": "inference"},
                                    "deleted": {"const": True}})),
                            errors=(404,), parameters=JOB_ID)},
    "/conversations": {
        "get": operation("conversations", "The caller's conversations, newest first",
                         ok(obj({"object": {"const": "list"},
                                 "data": array(ref("Conversation")), "has_more": BOOL,
                                 "first_id": null(ID), "last_id": null(ID)})),
                         errors=(400,), parameters=CONVERSATIONS_QUERY),
        "post": operation("conversations", "Start a conversation",
                          {201: json_response("Created", ref("ConversationDetail"))},
                          body=CONVERSATION_BODY)},
    "/conversations/{id}": {
        "get": operation("conversations", "A conversation and its thread",
                         ok(ref("ConversationDetail")), errors=(404,),
                         parameters=CONVERSATION_ID),
        "patch": operation("conversations", "Rename it or change its settings",
                           ok(ref("ConversationDetail")), errors=(404,),
                           body=CONVERSATION_BODY, parameters=CONVERSATION_ID),
        "delete": operation("conversations", "Delete it and its calls' rows",
                            {204: {"description": "Deleted", "headers": REQUEST_ID}},
                            errors=(404,), parameters=CONVERSATION_ID)},
    "/stats": {"get": operation("history", "Usage totals, by model and by day", ok(STATS),
                                errors=(400,), parameters=STATS_QUERY)},
    "/usage": {"get": operation("history", "The same as /stats", ok(STATS), errors=(400,),
                                parameters=STATS_QUERY)},
    "/rate-limit": {"get": operation(
        "limits", "The caller's limits, usage and reset times",
        ok(obj({"plan": STR, "limits": obj({f: INT for f in LIMIT_FIELDS}),
                "requests": WINDOW, "tokens": WINDOW,
                "concurrent": obj({"limit": INT, "in_use": INT}),
                "budgets": array(BUDGET),
                "models": obj({"available": array(STR), "not_in_plan": array(STR),
                               "chat": array(STR)})}),
           extra_headers=headers(RATE_LIMIT_HEADERS, required=True)),
        errors=(503,))},
    "/health": {"get": operation("operations", "Liveness (no I/O)",
                                 ok(obj({"status": {"const": "ok"}})), security=PUBLIC)},
    "/ready": {"get": operation(
        "operations", "Readiness: the database (and Redis) reachable",
        {200: json_response("Ready", READY), 503: json_response("Not ready", READY)},
        security=PUBLIC)},
    "/metrics": {"get": operation(
        "operations", "Prometheus metrics; a bearer token when GATEWAY_METRICS_TOKEN is set",
        {200: {"description": "The exposition (OpenMetrics when the Accept header asks).",
               "headers": REQUEST_ID, "content": TEXT}},
        errors=(401,), security=[{}, {"metricsToken": []}])},
    "/admin/upstreams": {"get": operation(
        "operations", "Breakers, load and targets of this process (administrators)",
        ok(obj({"object": {"const": "list"}, "upstreams": array(OBJ),
                "models": array(obj({"id": STR, "strategy": STR, "targets": array(OBJ)}))}),
           extra_headers={"cache-control": {"schema": {"const": "no-store"},
                                            "required": True}}),
        errors=(403,))},
    "/openapi.json": {"get": operation("operations", "This document", ok(OBJ),
                                       security=PUBLIC)},
    **MESSAGES_PATHS,
    **RESPONSES_PATHS,
}

def document() -> dict[str, Any]:
    """The OpenAPI document as data: a copy, so a caller that edits it (schemathesis adds
    links) cannot change what is served."""
    return copy.deepcopy({
        "openapi": "3.1.0",
        "info": {"title": "LLM gateway", "version": "1",
                 "description": "An OpenAI-compatible gateway. Errors have OpenAI's shape "
                 "(`Error`), except Anthropic's on /v1/messages; a method a path does not "
                 "take is a 405 with `Allow`."},
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "responses": {name: error_response(status) for status, (name, _) in ERRORS.items()},
            "securitySchemes": SECURITY_SCHEMES,
        },
    })


@functools.cache
def document_bytes() -> bytes:
    """The document as served: encoded once, on the first request."""
    return orjson.dumps(document())
