"""Plumbing shared by the HTTP providers: timeouts, error mapping, the streaming call.

Foreign errors are translated here and only here, the way httpx's
``map_httpcore_exceptions`` does it: one context manager wrapped around sending the
request *and* around iterating its body, so a timeout mid-stream surfaces exactly like
one before the first byte. Every read is bounded in time (``total_timeout``) and size
(``max_event_bytes``, ``max_response_bytes``): see ``providers/reading.py``.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import aclosing, contextmanager
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar

import anyio
import httpx
import orjson

from providers.base import CallContext, ChatRequest, Chunk, ProviderConfig, Relayed
from providers.errors import (
    ProviderError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from providers.reading import Deadline, TimedChunks, read_body, read_error_body
from providers.sse import EventTooLarge, SSEEvent, aiter_sse, sse_bytes
from providers.untrusted import MAX_PARAM_CHARS, clean_text, parse_retry_after

T = TypeVar("T")

__all__ = ["parse_retry_after"]  # re-exported: providers and plugins import it from here

log = logging.getLogger(__name__)

# After the terminal event the body normally ends at once; reading that last bit lets
# httpx return the connection to the keep-alive pool instead of dropping it. Bounded so
# an upstream that idles after [DONE] cannot delay the end of our stream.
DRAIN_TIMEOUT = 0.5

# An attempt whose call deadline has (nearly) passed still gets this long: it then fails
# with UpstreamTimeout like any other attempt out of time, through the same path.
MIN_ATTEMPT_SECONDS = 0.001
# An attempt keeps its own total_timeout (and says so when it runs out) unless the call's
# deadline comes sooner by more than this.
CALL_DEADLINE_SLACK = 1.0

HeaderList = list[tuple[str, str]]
# The methods httpx gives a Content-Length even when their body is empty.
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))

_STATUS_ERRORS: dict[int, type[ProviderError]] = {
    400: UpstreamBadRequest,
    401: UpstreamAuthError,
    403: UpstreamAuthError,
    404: UpstreamNotFound,
    408: UpstreamTimeout,
    413: UpstreamBadRequest,
    422: UpstreamBadRequest,
    429: UpstreamRateLimited,
    504: UpstreamTimeout,
}


def error_class_for_status(status: int) -> type[ProviderError]:
    """The typed error for an upstream HTTP status (5xx other than 504 → unavailable)."""
    if status in _STATUS_ERRORS:
        return _STATUS_ERRORS[status]
    return UpstreamUnavailable if status >= 500 else ProviderError


def make_error(cls: type[ProviderError], upstream: str, message: str, *,
               param: str | None = None, retry_after: float | None = None,
               upstream_status: int | None = None,
               upstream_code: str | None = None) -> ProviderError:
    """Build a typed error whose message names the upstream and, for auth, how to fix it.

    ``message``, ``param`` and ``upstream_code`` may come from the upstream: they are cut
    short and cleaned of control characters, since they reach API clients (and logs,
    stored rows) verbatim."""
    if cls is UpstreamAuthError:
        # Never relay the upstream's text: OpenAI echoes a fragment of the rejected key.
        message = (f"upstream {upstream!r} rejected the gateway's credentials; "
                   f"check the api_key configured for provider {upstream!r}")
    else:
        message = f"upstream {upstream!r}: {clean_text(message)}"
    if param is not None:
        param = clean_text(param, MAX_PARAM_CHARS)
    if upstream_code is not None:
        upstream_code = clean_text(upstream_code, MAX_PARAM_CHARS)
    return cls(message, param=param, retry_after=retry_after, upstream_status=upstream_status,
               upstream_code=upstream_code)


def unreadable_body(cls: type[ProviderError], upstream: str, what: str, raw: bytes, *,
                    status: int | None = None,
                    retry_after: float | None = None) -> ProviderError:
    """An error for a body we could not understand. The client gets no upstream text at
    all (it may be an HTML page with scripts, or binary); the log keeps its start."""
    log.warning("upstream %r: %s; body starts %r", upstream, what, raw[:500])
    return make_error(cls, upstream, what, retry_after=retry_after, upstream_status=status)


def load_json(raw: bytes) -> Any:
    """Parse JSON, returning None for anything unparsable (error bodies may be HTML)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


@contextmanager
def map_transport_errors(upstream: str) -> Iterator[None]:
    """Translate httpx transport errors (and an oversized SSE event) into typed provider
    errors (``raise ... from``).

    Messages name the configured upstream but not its URL: they reach API clients, and
    base URLs can be internal. The chained httpx exception keeps the details for logs.
    """
    try:
        yield
    except EventTooLarge as exc:
        raise UpstreamResponseTooLarge(
            f"upstream {upstream!r} sent an event stream line or event over {exc.limit} "
            "bytes; raise its max_event_bytes if such events are expected") from exc
    except httpx.TimeoutException as exc:  # connect, read (first byte or between chunks), pool
        raise UpstreamTimeout(
            f"upstream {upstream!r} timed out ({type(exc).__name__})") from exc
    except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
        raise UpstreamUnavailable(
            f"upstream {upstream!r} is unreachable ({type(exc).__name__}); "
            "check its base_url and that it is running") from exc
    except httpx.DecodingError as exc:
        raise UpstreamProtocolError(
            f"upstream {upstream!r} sent a body we could not decode") from exc
    except httpx.TransportError as exc:  # UnsupportedProtocol and friends: bad configuration
        raise ProviderError(
            f"cannot call upstream {upstream!r} ({type(exc).__name__}); "
            "check its base_url") from exc


def build_timeout(config: ProviderConfig) -> dict[str, float]:
    """httpx's per-request ``timeout`` extension: read bounds the first byte and every gap
    between chunks; pool bounds the wait for a free connection."""
    return httpx.Timeout(connect=config.connect_timeout, read=config.read_timeout,
                         write=config.read_timeout, pool=config.connect_timeout).as_dict()


class StreamParser(Protocol):
    """Turns upstream SSE events into chunks; one instance per call."""

    done: bool

    def feed(self, event: SSEEvent) -> list[Chunk]:
        """Chunks for one event; raises a typed error for an in-stream error event."""
        ...

    def at_eof(self) -> None:
        """The body ended before the terminal event: raise if the answer is incomplete."""
        ...

    def finish(self) -> list[Chunk]:
        """Chunks owed at the very end (usage), after the response is closed."""
        ...


class UpstreamCall(NamedTuple):
    """Everything needed to make one call (streaming or not)."""

    url: httpx.URL
    body: Mapping[str, Any]
    headers: HeaderList


class HTTPStreamProvider(ABC):
    """Base for providers that POST JSON and read an SSE stream or one JSON body back."""

    kind: ClassVar[str]
    supports_n: ClassVar[bool]
    default_base_url: ClassVar[str]

    def __init__(self, config: ProviderConfig, transport: httpx.AsyncBaseTransport) -> None:
        self.config = config
        self._transport = transport
        self._base_url = (config.base_url or self.default_base_url).rstrip("/")
        self._timeout = build_timeout(config)

    async def aclose(self) -> None:  # noqa: B027  (a default, not an abstract hook)
        """Nothing to release: the shared transport belongs to the gateway."""

    def deadline(self, ctx: CallContext | None) -> Deadline:
        """The time budget of one attempt (connect, first byte, whole body): start it
        first. ``total_timeout``, cut short by the call's own deadline when that comes
        sooner (a retry must not outlive the call); no context (a model listing): the
        ``total_timeout`` alone."""
        seconds, name = self.config.total_timeout, self.config.name
        if ctx is None or ctx.deadline is None:
            return Deadline(seconds, name, self.config.read_timeout)
        left = ctx.deadline - time.monotonic()
        if left >= seconds - CALL_DEADLINE_SLACK:
            # The call's deadline is this attempt's own total_timeout (the first attempt of
            # a call whose deadline is that timeout), give or take the admission's moment.
            return Deadline(seconds, name, self.config.read_timeout)
        # Raising total_timeout would not help here: say what did cut the attempt short.
        left = max(left, MIN_ATTEMPT_SECONDS)
        return Deadline(left, name, self.config.read_timeout,
                        message=f"upstream {name!r} did not finish within the time left for "
                                f"the call ({left:.3g} s)")

    async def send(self, method: str, url: httpx.URL, headers: HeaderList,
                   content: bytes = b"", *, deadline: Deadline) -> httpx.Response:
        """One request through the shared transport, within ``deadline``; the caller
        closes the response.

        Straight to the transport rather than through ``httpx.AsyncClient``: the client's
        per-request flows (cookies, auth, redirects, URL and header merging) cost more CPU
        than aiohttp's whole request, and an upstream call needs none of them.

        The request is built from its parts: the body as a ready stream, with the ``Host``
        and ``Content-Length`` headers httpx would add, so ``httpx.Request`` skips its body
        encoding and its second pass over the headers (a third of the cost; the same
        headers, in the same order, on the wire; bench/README.md has the numbers).
        """
        if content:
            parts = [(b"Host", url.netloc), *headers, (b"Content-Length", b"%d" % len(content))]
        elif method in _BODY_METHODS:
            parts = [(b"Host", url.netloc), (b"Content-Length", b"0"), *headers]
        else:
            parts = [(b"Host", url.netloc), *headers]
        request = httpx.Request(method, url, headers=parts, stream=httpx.ByteStream(content),
                                extensions={"timeout": self._timeout})
        request.read()  # ``request.content``, as httpx sets it (respx matches on it)
        return await deadline.wait(self._transport.handle_async_request(request))

    async def fetch_json(self, method: str, url: httpx.URL, headers: HeaderList,
                         content: bytes = b"", *, ctx: CallContext | None = None) -> bytes:
        """One request whose whole JSON body is read within the call's deadline and
        ``max_response_bytes``; an error status raises its typed error (from the start of
        its body)."""
        deadline = self.deadline(ctx)
        try:
            with map_transport_errors(self.config.name):
                response = await self.send(method, url, headers, content, deadline=deadline)
                try:
                    if response.status_code >= 400:
                        raw = await read_error_body(response, deadline,
                                                    self.config.max_response_bytes)
                        raise self.error_from_response(response.status_code,
                                                       response.headers, raw)
                    return await read_body(response, deadline,
                                           self.config.max_response_bytes, self.config.name)
                finally:
                    await response.aclose()
        finally:
            deadline.cancel()

    @abstractmethod
    def error_from_response(self, status: int, headers: Mapping[str, str],
                            raw: bytes) -> ProviderError:
        """Map a non-2xx upstream response to a typed error."""
        ...

    @abstractmethod
    def error_from_payload(self, payload: Any) -> ProviderError | None:
        """Map an error object found in a 200 JSON body or an SSE event, if it is one."""
        ...

    @abstractmethod
    def prepare(self, req: ChatRequest, ctx: CallContext, *, stream: bool) -> UpstreamCall:
        """Translate the request into the upstream call (raise typed errors for bad input)."""
        ...

    @abstractmethod
    def stream_parser(self, req: ChatRequest | None = None) -> StreamParser:
        """A fresh parser for one streamed answer (to ``req``, when the answer's reading
        depends on what was asked: a structured output sent as a tool)."""
        ...

    @abstractmethod
    def completion_chunks(self, payload: dict[str, Any],
                          req: ChatRequest | None = None) -> list[Chunk]:
        """A non-streamed answer (a JSON object that is not an error) as chunks."""
        ...

    def dropped_params(self, req: ChatRequest) -> tuple[str, ...]:
        """The parameters of ``req`` this provider neither sends nor emulates, in a stable
        order (the gateway names them in ``x-gateway-dropped-params``): none by default."""
        return ()

    async def complete_chat(self, req: ChatRequest, ctx: CallContext) -> list[Chunk]:
        """Ask for the whole answer in one body; the chunks ``stream_chat`` would yield."""
        call = self.prepare(req, ctx, stream=False)
        return await self.fetch_answer(
            call.url, call.headers, call.body, ctx,
            lambda payload, _raw: self.completion_chunks(payload, req), "a completion")

    async def fetch_answer(self, url: httpx.URL, headers: HeaderList, body: Any,
                           ctx: CallContext, read: Callable[[dict[str, Any], bytes], T],
                           what: str) -> T:
        """POST ``body`` and ``read`` the whole JSON answer (the object and its bytes). An
        error object in a 200 (some compatible servers answer errors so) raises that error;
        an answer that is not an object, or that ``read`` finds of the wrong shape, is a
        protocol error about ``what``."""
        raw = await self.fetch_json("POST", url, headers, orjson.dumps(body), ctx=ctx)
        name = self.config.name
        payload = load_json(raw)
        if not isinstance(payload, dict):
            raise unreadable_body(UpstreamProtocolError, name, "expected a JSON object", raw)
        if payload.get("error"):
            raise self.error_from_payload(payload) or unreadable_body(
                UpstreamProtocolError, name, "answered with an error we could not read", raw)
        try:
            return read(payload, raw)
        except (AttributeError, TypeError, KeyError, ValueError) as exc:  # a malformed shape
            raise unreadable_body(UpstreamProtocolError, name,
                                  f"sent {what} of an unexpected shape", raw) from exc

    def stream_chat(self, req: ChatRequest, ctx: CallContext) -> AsyncIterator[Chunk]:
        """Chunks as the upstream streams them; typed errors on failure. The stream itself,
        not a generator around it: no extra hop per event."""
        call = self.prepare(req, ctx, stream=True)
        return self.stream_events(  # type: ignore[return-value]  # no Relayed without relay
            call.url, call.headers, orjson.dumps(call.body), ctx,
            parser=self.stream_parser(req))

    async def stream_events(self, url: httpx.URL, headers: HeaderList, content: bytes,
                            ctx: CallContext, *, relay: bool = False,
                            parser: StreamParser | None = None
                            ) -> AsyncIterator[Chunk | Relayed]:
        """POST ``content`` and yield the chunks parsed from each SSE event as it arrives;
        with ``relay``, each event's own bytes (``Relayed``) before its chunks. Typed errors
        on failure; an error event raises instead of being relayed."""
        parser = parser or self.stream_parser()
        deadline = self.deadline(ctx)
        try:
            with map_transport_errors(self.config.name):
                response = await self.send("POST", url, headers, content, deadline=deadline)
                try:
                    await self._check_response(response, deadline)
                    events = aiter_sse(TimedChunks(response, deadline),
                                       self.config.max_event_bytes)
                    async with aclosing(events):
                        async for event in events:
                            try:
                                chunks = parser.feed(event)
                            except (AttributeError, TypeError, KeyError, ValueError) as exc:
                                raise self._malformed(event, exc) from exc
                            if relay:
                                yield Relayed(sse_bytes(event))
                            for chunk in chunks:
                                yield chunk
                            if parser.done:
                                break
                        if parser.done:
                            await _drain(events)
                        else:
                            parser.at_eof()
                finally:
                    await response.aclose()
        finally:
            deadline.cancel()
        # Usage goes out after the response is closed and its connection back in the pool.
        for chunk in parser.finish():
            yield chunk

    def _malformed(self, event: SSEEvent, exc: Exception) -> ProviderError:
        """A stream event whose shape the parser tripped over (a missing or mistyped
        field): a protocol error, not an unhandled exception."""
        log.warning("upstream %r: unexpected stream event (%s): %r", self.config.name,
                    exc, event.data[:500])
        return make_error(UpstreamProtocolError, self.config.name,
                          "sent a stream event of an unexpected shape")

    async def _check_response(self, response: httpx.Response, deadline: Deadline) -> None:
        if response.status_code >= 400:
            raw = await read_error_body(response, deadline, self.config.max_response_bytes)
            raise self.error_from_response(response.status_code, response.headers, raw)
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            # Some compatible servers answer a streaming call with a JSON error and 200.
            raw = await read_error_body(response, deadline, self.config.max_response_bytes)
            error = self.error_from_payload(load_json(raw))
            raise error or unreadable_body(UpstreamProtocolError, self.config.name,
                                           "expected an event stream, got JSON", raw)


async def _drain(events: AsyncIterator[SSEEvent]) -> None:
    try:
        with anyio.move_on_after(DRAIN_TIMEOUT):
            async for _ in events:
                pass
    except (httpx.HTTPError, ProviderError, EventTooLarge):
        pass  # the answer is complete; the connection is simply not reused


USER_AGENT = "llm-gateway"


def upstream_headers(base: Mapping[str, str], config: ProviderConfig) -> HeaderList:
    """Provider headers overlaid with the configured ones (config wins, any letter case),
    as the list a request is built from. ``accept-encoding: identity``: bodies are small,
    and the stream is read raw (no decoder per chunk)."""
    headers = httpx.Headers({"user-agent": USER_AGENT, "accept-encoding": "identity", **base})
    headers.update(config.headers)
    return headers.multi_items()


def first_set(req: ChatRequest, *names: str) -> Any:
    """The first of ``names`` set in ``req.params`` or ``req.extra`` (None if none is)."""
    for name in names:
        for source in (req.params, req.extra):
            value = source.get(name)
            if value is not None:
                return value
    return None

