"""Audit rows (register, login, key changes, deletions), written by the background writer."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request

from gateway.http import client_ip, request_id
from storage.models import utcnow


def audit(request: Request, action: str, *, user_id: uuid.UUID | None,
          resource_type: str | None = None, resource_id: Any = None,
          details: dict[str, Any] | None = None) -> None:
    """Queue one audit row with who, from where and which request; never blocks."""
    request.app.state.writer.submit_audit({
        "id": uuid.uuid4(), "user_id": user_id, "action": action,
        "resource_type": resource_type,
        "resource_id": str(resource_id) if resource_id is not None else None,
        "ip": client_ip(request), "user_agent": (request.headers.get("user-agent") or "")[:400],
        "request_id": request_id(request), "details": details or {}, "created_at": utcnow(),
    })
