"""405 Method Not Allowed with the path's real ``Allow`` list, in OpenAI's error shape.

Starlette answers a wrong method with the first matching route's methods only, and not at
all when a later route matches every path: the static UI mounted at ``/`` then answered
``PUT /v1/chat/completions`` with its own 405 (``Allow: GET, HEAD``) and ``GET`` with a
404. ``MethodNotAllowed`` goes after the API routes and before that mount.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from starlette.routing import BaseRoute, Match, Route, get_route_path
from starlette.types import Receive, Scope, Send

from gateway.errors import APIError


class MethodNotAllowed(BaseRoute):
    """Matches any request whose path an API route serves (with other methods: the routes
    before it took the rest) and answers 405 naming every method served there."""

    def __init__(self, routes: Sequence[BaseRoute],
                 fast: Iterable[tuple[str, str]] = ()) -> None:
        """``fast``: the ``(method, path)`` pairs served ahead of the router
        (``gateway.middleware.FastRoutes``)."""
        self._paths: list[tuple[re.Pattern[str], list[str]]] = []
        for route in routes:
            if isinstance(route, Route) and route.methods:
                self._paths.append((route.path_regex, _ordered(route.methods)))
        for method, path in fast:
            self._paths.append((re.compile("^" + re.escape(path) + "$"), [method]))

    def allowed(self, path: str) -> list[str]:
        """Every method some route serves ``path`` with, in declaration order."""
        allow: list[str] = []
        for regex, methods in self._paths:
            if regex.match(path):
                allow += [m for m in methods if m not in allow]
        return allow

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and (allow := self.allowed(get_route_path(scope))):
            return Match.FULL, {"allow": allow}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        allow = ", ".join(scope["allow"])
        raise APIError(405, f"{scope['method']} is not allowed here; use {allow}.",
                       code="method_not_allowed", headers={"Allow": allow})


def _ordered(methods: set[str]) -> list[str]:
    # Starlette keeps a set; a stable, readable order: GET, HEAD, then the rest by name.
    first = [m for m in ("GET", "HEAD") if m in methods]
    return first + sorted(methods - {"GET", "HEAD"})
