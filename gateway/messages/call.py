"""One Messages API call: a chat call (gateway/chat/call.py) whose upstream call, on a
target that speaks the Messages API itself (the ``anthropic`` provider), is the caller's
body passed through (only ``model`` replaced by the upstream's) and its answer relayed as
it comes, rather than a translation round trip; other targets get the translated request.
Usage is read from the relayed answer either way, for limits, metrics and the row."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from gateway.auth.principal import Principal
from gateway.call import CallServices
from gateway.catalog import Route
from gateway.chat.call import ChatCall
from gateway.messages.request import ParsedMessages
from gateway.resilience.balance import Deployment
from providers.base import CallContext, Chunk, Relayed

SOURCE = "messages"


def relays(provider: Any) -> bool:
    """Whether ``provider`` takes a Messages body as it is (``relay_messages``)."""
    return callable(getattr(provider, "relay_messages", None))


class MessagesCall(ChatCall):
    """A ``ChatCall`` for ``POST /v1/messages``; ``relayed`` once the target that answered
    passed the body through, with ``answer`` the whole relayed body of a plain call."""

    def __init__(self, svc: CallServices, principal: Principal, route: Route,
                 parsed: ParsedMessages, *, request_id: str,
                 row_id: uuid.UUID | None = None) -> None:
        super().__init__(svc, principal, route, parsed.chat, source=SOURCE,
                         request_id=request_id, row_id=row_id)
        self.body = parsed.body
        self.answer: bytes | None = None

    @property
    def relayed(self) -> bool:
        return self.served is not None and relays(self.served.deployment.provider)

    def _upstream_body(self, target: Deployment) -> dict[str, Any]:
        return {**self.body, "model": target.upstream}

    def _stream_on(self, target: Deployment, ctx: CallContext) -> AsyncIterator[Chunk]:
        if relays(target.provider):
            return target.provider.relay_messages(  # type: ignore[attr-defined, no-any-return]
                self._upstream_body(target), ctx)
        return super()._stream_on(target, ctx)

    def _complete_on(self, target: Deployment, ctx: CallContext) -> Awaitable[list[Chunk]]:
        if relays(target.provider):
            return target.provider.complete_messages(  # type: ignore[attr-defined, no-any-return]
                self._upstream_body(target), ctx)
        return super()._complete_on(target, ctx)

    def _dropped(self, deployment: Deployment) -> tuple[str, ...]:
        # A relayed body reaches its upstream whole: nothing of it is dropped.
        return () if relays(deployment.provider) else super()._dropped(deployment)

    def _note(self, chunk: Chunk | Relayed) -> None:
        if isinstance(chunk, Relayed):
            self.answer = chunk.data  # the last one: a plain call's whole body
            return
        super()._note(chunk)
