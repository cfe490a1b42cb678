"""How the OpenAPI document (gateway/openapi.py) describes things: schema builders, the
error statuses and their shared responses, headers, security schemes, and ``operation()``,
which adds to each operation the error responses it really gives, so no endpoint carries a
copy of that boilerplate."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STR, INT, NUM, BOOL = ({"type": "string"}, {"type": "integer"}, {"type": "number"},
                       {"type": "boolean"})
OBJ: Schema = {"type": "object"}
TIME: Schema = {"type": "string", "format": "date-time"}
# One server-sent event as a client (and schemathesis) reads it: its fields, each a string.
SSE_EVENT: Schema = {"type": "object", "properties": {
    "event": STR, "data": STR, "id": STR, "retry": STR}}


def null(schema: Schema) -> Schema:
    """``schema`` or JSON null (3.1 has no ``nullable``)."""
    return {"anyOf": [schema, {"type": "null"}]}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None,
        *, closed: bool = False) -> Schema:
    """An object with these (required, then optional) properties; ``closed`` when the
    gateway rejects unknown fields rather than ignoring them."""
    out: Schema = {"type": "object", "properties": {**required, **(optional or {})},
                   "required": list(required)}
    if closed:
        out["additionalProperties"] = False
    return out


def array(items: Schema, **kw: Any) -> Schema:
    return {"type": "array", "items": items, **kw}


def list_of(name: str) -> Schema:
    return obj({"object": {"const": "list"}, "data": array(ref(name))})


# Each error status: its component's name and when the gateway answers it.
ERRORS = {
    400: ("BadRequest", "The request is not valid; `error.param` names the field."),
    401: ("Unauthorized", "The credential is missing, unknown, revoked or expired."),
    403: ("Forbidden", "The credential may not do this."),
    404: ("NotFound", "No such resource, or not the caller's."),
    405: ("MethodNotAllowed", "The path does not take this method; `Allow` lists those it "
          "takes."),
    409: ("Conflict", "The resource is not in a state that allows this."),
    413: ("PayloadTooLarge", "The body is larger than GATEWAY_MAX_BODY_BYTES."),
    415: ("UnsupportedMediaType", "The body is not sent as JSON."),
    429: ("TooManyRequests", "A rate limit was reached; `retry-after` says when to come back."),
    500: ("InternalError", "The gateway hit an internal error; it has been logged."),
    502: ("BadGateway", "The upstream provider failed or answered something unusable."),
    503: ("ServiceUnavailable", "The rate limiter or every upstream is unavailable."),
    504: ("GatewayTimeout", "The upstream provider did not answer in time."),
}
ALWAYS = (500,)  # any route can fail unexpectedly
JSON_BODY = (400, 413, 415)  # json_object(): bad JSON, body too large, not JSON
AUTHED = (401,)
UPSTREAM = (404, 429, 502, 503, 504)

RATE_LIMIT_HEADERS = {
    f"x-ratelimit-{what}-{kind}": (INT if what != "reset" else STR, text)
    for kind in ("requests", "tokens")
    for what, text in (("limit", f"The {kind} allowed per minute."),
                       ("remaining", f"The {kind} left in the current minute."),
                       ("reset", "When the window resets, as 1s, 6m0s or 20ms."))}
RETRY_HEADERS = {"retry-after": (INT, "Whole seconds to wait (at least 1)."),
                 "retry-after-ms": (INT, "Milliseconds to wait.")}


def headers(spec: dict[str, tuple[Schema, str]], *, required: bool) -> dict[str, Any]:
    return {name: {"schema": schema, "description": text, "required": required}
            for name, (schema, text) in spec.items()}


REQUEST_ID = {"x-request-id": {"schema": STR, "required": True,
                               "description": "The request's id (an incoming sane "
                               "`x-request-id` is kept); it is in the logs and history."}}


def json_response(description: str, schema: Schema, *,
                  extra_headers: dict[str, Any] | None = None) -> Schema:
    return {"description": description, "headers": {**REQUEST_ID, **(extra_headers or {})},
            "content": {"application/json": {"schema": schema}}}


def error_response(status: int) -> Schema:
    text = ERRORS[status][1]
    extra: dict[str, Any] = {}
    if status == 405:
        extra = {"Allow": {"schema": STR, "required": True,
                           "description": "The methods this path takes."}}
    elif status == 429:
        # An upstream's own 429 carries them only when the upstream said when to retry.
        extra = {**headers(RETRY_HEADERS, required=False),
                 **headers(RATE_LIMIT_HEADERS, required=False)}
    elif status == 503:
        extra = headers(RETRY_HEADERS, required=False)
    return json_response(text, ref("Error"), extra_headers=extra)


BEARER = [{"bearer": []}, {"apiKeyHeader": []}]
SESSION = [{"session": []}]
PUBLIC: list[dict[str, list[str]]] = []


def operation(tag: str, summary: str, ok: dict[int, Schema], *, errors: tuple[int, ...] = (),
              security: list[dict[str, list[str]]] = BEARER, body: Schema | None = None,
              parameters: list[Schema] | None = None) -> Schema:
    """One operation: its answers, the shared error responses it really gives (401 and 500
    added for authenticated routes, 400/413/415 for JSON bodies), its security."""
    codes = set(errors) | set(ALWAYS)
    if security is not PUBLIC:
        codes |= set(AUTHED)
    if body is not None:
        codes |= set(JSON_BODY)
    responses: dict[str, Any] = {str(status): answer for status, answer in ok.items()}
    for status in sorted(codes):
        responses[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    op: Schema = {"tags": [tag], "summary": summary, "security": security,
                  "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": body}}}
    if parameters:
        op["parameters"] = parameters
    return op


def path_param(name: str, schema: Schema, text: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema,
            "description": text}


def query(name: str, schema: Schema, text: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": text}


def ok(schema: Schema, text: str = "OK", **kw: Any) -> dict[int, Schema]:
    return {200: json_response(text, schema, **kw)}


SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "An API key (`sk-...`) or a session token from /auth/login."},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key",
                     "description": "An API key, for clients that cannot set Authorization."},
    "session": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "A session token from /auth/login or /auth/register."},
    "metricsToken": {"type": "http", "scheme": "bearer",
                     "description": "The value of GATEWAY_METRICS_TOKEN."},
}
