// The gateway's HTTP API: JSON calls with the stored JWT, errors in OpenAI's shape,
// and the streaming chat call with a Server-Sent Events parser.

const TOKEN_KEY = "gateway.token";

/** An error answered by the gateway (or a network failure, status 0). */
export class ApiError extends Error {
  constructor(status, message, { param = null, code = null, type = null, retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.param = param;
    this.code = code;
    this.type = type;
    this.retryAfter = retryAfter;
  }
}

export const session = {
  get token() {
    try { return localStorage.getItem(TOKEN_KEY); } catch { return null; }
  },
  set token(value) {
    try {
      if (value) localStorage.setItem(TOKEN_KEY, value);
      else localStorage.removeItem(TOKEN_KEY);
    } catch { /* storage disabled: the session lasts until reload */ }
  },
};

let unauthorized = () => {};

/** Called with (error, token) when a request made with a token gets 401 (expired session). */
export function onUnauthorized(handler) { unauthorized = handler; }

async function errorFrom(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  const err = body && typeof body.error === "object" && body.error ? body.error : {};
  const message = err.message
    || (body && typeof body.error === "string" ? body.error : null)
    || (body && typeof body.message === "string" ? body.message : null)
    || `The gateway answered ${response.status} ${response.statusText || ""}`.trim();
  const retry = Number.parseFloat(response.headers.get("retry-after") || "");
  return new ApiError(response.status, message, {
    param: err.param ?? null, code: err.code ?? null, type: err.type ?? null,
    retryAfter: Number.isFinite(retry) && retry > 0 ? retry : null,
  });
}

/** fetch with JSON body and bearer token; throws ApiError unless the response is 2xx. */
export async function send(path, { method = "GET", body, signal, auth = true,
  accept = "application/json", headers: extra = {} } = {}) {
  const headers = { ...extra, accept };
  if (body !== undefined) headers["content-type"] = "application/json";
  const token = auth ? session.token : null;
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method, headers, signal, cache: "no-store", credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "Can't reach the gateway. Check your connection and try again.");
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (response.status === 401 && token) unauthorized(error, token);
    throw error;
  }
  return response;
}

/** A JSON call; resolves to the parsed body (null for 204). */
export async function api(path, options) {
  const response = await send(path, options);
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** Like api(), but resolves to null when the endpoint doesn't exist on this gateway. */
export async function optionalApi(path, options) {
  try {
    return await api(path, options);
  } catch (error) {
    if (error instanceof ApiError && [404, 405, 501].includes(error.status)) return null;
    throw error;
  }
}

/**
 * Yield the data of each Server-Sent Event in a byte stream. Handles events and
 * multi-byte characters split across reads, LF / CRLF / CR line ends, comments,
 * and multi-line data.
 */
export async function* sseData(stream) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  const lineEnd = /\r\n|\r|\n/g;
  let buffer = "";
  let data = [];
  const take = (line) => {
    if (line === "") {
      const event = data.length ? data.join("\n") : null;
      data = [];
      return event;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    return null;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let start = 0;
      lineEnd.lastIndex = 0;
      for (let m = lineEnd.exec(buffer); m; m = lineEnd.exec(buffer)) {
        // A lone CR at the end may be the first half of a CRLF still in flight.
        if (!done && m[0] === "\r" && m.index === buffer.length - 1) break;
        const event = take(buffer.slice(start, m.index));
        start = m.index + m[0].length;
        if (event !== null) yield event;
      }
      buffer = buffer.slice(start);
      if (done) {
        if (buffer) take(buffer);
        const last = take("");
        if (last !== null) yield last;
        return;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * POST /v1/chat/completions with stream: true (params: more body fields, e.g.
 * temperature; headers: e.g. the conversation's). Calls onDelta(text) for each piece of
 * content; resolves to {text, usage, finishReason, ttftMs, totalMs, complete}.
 * A mid-stream error rejects with an ApiError carrying `partial` (the text so far).
 */
export async function streamChat({ model, messages, signal, onDelta = () => {},
  params = {}, headers = {} }) {
  const started = performance.now();
  const response = await send("/v1/chat/completions", {
    method: "POST", signal, accept: "text/event-stream", headers,
    body: { model, messages, ...params, stream: true, stream_options: { include_usage: true } },
  });
  const result = { text: "", usage: null, finishReason: null, ttftMs: null, totalMs: null,
    complete: false };
  for await (const data of sseData(response.body)) {
    if (data === "[DONE]") { result.complete = true; break; }
    let event;
    try { event = JSON.parse(data); } catch { continue; }
    if (event && event.error) {
      const e = event.error;
      const error = new ApiError(Number(e.status) || 502,
        e.message || "The model stopped with an error.", { code: e.code, type: e.type });
      error.partial = result.text;
      throw error;
    }
    if (event.usage) result.usage = event.usage;
    for (const choice of event.choices || []) {
      if ((choice.index ?? 0) !== 0) continue;
      const piece = choice.delta && choice.delta.content;
      if (typeof piece === "string" && piece) {
        if (result.ttftMs === null) result.ttftMs = performance.now() - started;
        result.text += piece;
        onDelta(piece);
      }
      if (choice.finish_reason) result.finishReason = choice.finish_reason;
    }
  }
  result.totalMs = performance.now() - started;
  return result;
}
