"""Serve the static UI from the installed package (works from a wheel, not just a checkout)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles


class RevalidatedStaticFiles(StaticFiles):
    """Static files that browsers revalidate (ETag) so an upgrade never runs stale JS."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = "no-cache"
        return response


def mount() -> Mount:
    return Mount("/", app=RevalidatedStaticFiles(packages=[("webui", "static")], html=True),
                 name="webui")
