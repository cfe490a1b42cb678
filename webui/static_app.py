"""Serve the static UI from the installed package (works from a wheel, not just a checkout)."""

from __future__ import annotations

from starlette.routing import Mount
from starlette.staticfiles import StaticFiles


def mount() -> Mount:
    return Mount("/", app=StaticFiles(packages=[("webui", "static")], html=True), name="webui")
