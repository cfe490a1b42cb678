"""The record of one call, as the call path hands it to storage.

A typed object rather than a dict keyed by column names: the call fills it in as it goes
(identity at admission, outcome at the end) and storage turns it into the row once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any


@dataclass(slots=True, kw_only=True)
class CallRecord:
    """One ``inference_requests`` row: who asked what (known at admission), and how the call
    went (set when it ends)."""

    id: uuid.UUID
    user_id: uuid.UUID
    api_key_id: uuid.UUID | None
    request_id: str | None
    source: str  # v1 | legacy | embed
    model: str  # the public model name the caller asked for
    provider: str  # the target that served the call (or was tried last)
    upstream_model: str | None
    prompt: str
    created_at: datetime
    messages: list[dict[str, Any]] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    response: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    status: str = "processing"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    tokens_estimated: bool = False
    processing_time_ms: int | None = None
    time_to_first_token_ms: int | None = None
    error: str | None = None
    attempts: int = 0  # upstream calls made (v1); a job's own attempts are counted by its store
    served_by: str | None = None  # "provider/upstream" of the target that answered
    upstream_attempts: list[dict[str, Any]] | None = None
    conversation_id: uuid.UUID | None = None  # the x-gateway-conversation of the call
    cost_usd: float = 0.0  # at the price of the model that answered (gateway/pricing.py)
    cached: bool = False  # answered from the response cache: no upstream call, no cost
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None

    def values(self) -> dict[str, Any]:
        """The row's columns and values."""
        return {name: getattr(self, name) for name in COLUMNS}

    def identity(self) -> dict[str, Any]:
        """What is known when the call starts (the spool's ``started`` entry)."""
        return {name: getattr(self, name) for name in IDENTITY}


COLUMNS = tuple(f.name for f in fields(CallRecord))
IDENTITY = ("id", "user_id", "api_key_id", "request_id", "source", "model", "provider",
            "upstream_model", "prompt", "created_at", "conversation_id")
