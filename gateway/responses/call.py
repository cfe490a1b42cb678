"""One Responses API call: a chat call (gateway/chat/call.py: limits, routing with
fallbacks, usage counted once, the stored row with source ``responses``) whose chunks also
build the answer's output items (gateway/responses/encode.py ``Output``)."""

from __future__ import annotations

import uuid

from gateway.auth.principal import Principal
from gateway.call import CallServices
from gateway.catalog import Route
from gateway.chat.call import ChatCall
from gateway.chat.request import ParsedChat
from gateway.responses.encode import Event, Output
from providers.base import Chunk

SOURCE = "responses"


class ResponsesCall(ChatCall):
    """A ``ChatCall`` for ``POST /v1/responses``. ``output`` holds the answer's items;
    with ``stream``, ``pending`` the events the chunks made since the route last took
    them (``take``)."""

    def __init__(self, svc: CallServices, principal: Principal, route: Route,
                 parsed: ParsedChat, *, request_id: str,
                 row_id: uuid.UUID | None = None) -> None:
        super().__init__(svc, principal, route, parsed, source=SOURCE,
                         request_id=request_id, row_id=row_id)
        self.output = Output()
        self.pending: list[Event] = []

    def _note(self, chunk: Chunk) -> None:
        super()._note(chunk)
        events = self.output.add(chunk)
        if self.parsed.stream:
            self.pending.extend(events)

    def take(self) -> list[Event]:
        events, self.pending = self.pending, []
        return events
