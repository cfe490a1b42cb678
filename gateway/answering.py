"""How every kind of call sends its answer: a stream whose last bytes go out only once the
call is finished, and the answer to a client that left.

Finishing first means the call's row is in the writer's crash spool (storage/spool.py)
before the client has the whole answer: a client that got the end of its answer has its
call stored even if the process is killed the next instant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import anyio
from starlette.responses import Response

from gateway.call import Call
from gateway.observe import CLIENT_LEFT
from providers.errors import ProviderError

# Watch for the client leaving only once a call has taken this long: most are over sooner,
# and a timer costs less than the watching task (gateway/http.py). Well under the second
# within which a gone client's upstream call is cancelled and its slot freed.
WATCH_AFTER = 0.05


async def finish_before_tail(call: Call, events: AsyncIterator[bytes],
                             tail: Callable[[], list[bytes]],
                             failed: Callable[[ProviderError], list[bytes]]
                             ) -> AsyncIterator[bytes]:
    """``events`` as they come; then the call is finished (shielded: a client leaving
    cannot cut it short), and only then ``tail()``, or ``failed(exc)`` when the upstream
    failed mid-way (after the first byte an error can only travel inside the stream)."""
    end: list[bytes] = []
    try:
        async with aclosing(events):
            async for data in events:
                yield data
        end = tail()
    except ProviderError as exc:
        end = failed(exc)
    finally:
        with anyio.CancelScope(shield=True):
            await call.finish()
    for data in end:
        yield data


async def gone(call: Call) -> Response:
    """The client left. Its cancellation has normally finished the call already; should
    the upstream have answered in the same instant, the call is finished here instead
    (``finish`` runs once), so no slot, lease or row is left behind. Nobody reads the
    answer (the server drops what is sent after a disconnect): 499, nginx's "client closed
    request", only gives the route one return type."""
    with anyio.CancelScope(shield=True):
        await call.finish()
    return Response(status_code=CLIENT_LEFT)
