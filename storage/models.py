"""SQLModel tables: the seed's data model, portable between SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel

# JSONB on PostgreSQL, JSON text elsewhere.
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True), **kw)


def _uuid_pk() -> Any:
    return Field(default_factory=uuid.uuid4, primary_key=True)


class SubscriptionPlan(SQLModel, table=True):
    __tablename__ = "subscription_plans"

    id: uuid.UUID = _uuid_pk()
    name: str = Field(max_length=50, unique=True)
    price_monthly: float = Field(default=0, sa_type=sa.Numeric(10, 2))
    requests_per_minute: int
    concurrent_requests: int
    tokens_per_minute: int
    features: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    monthly_budget_usd: float | None = None  # the whole user's spend per calendar month
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: uuid.UUID = _uuid_pk()
    email: str = Field(max_length=320, unique=True)
    password_hash: str = Field(max_length=100)
    subscription_tier: str = Field(default="free", max_length=50,
                                   foreign_key="subscription_plans.name")
    status: str = Field(default="active", max_length=20)
    # May read the operator views (/admin/*); granted with `gateway set-admin`. The server
    # default gives existing rows (and inserts that omit it) the safe answer: no.
    is_admin: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    # Raised by a password reset: sessions (JWTs) carry the generation they were issued
    # under and stop working once it moves on (gateway/auth/principal.py).
    session_generation: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    password_changed_at: datetime | None = Field(default=None,
                                                 sa_type=sa.DateTime(timezone=True))
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: uuid.UUID = _uuid_pk()
    user_id: uuid.UUID = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    name: str = Field(default="default", max_length=100)
    key_hash: str = Field(max_length=64, unique=True)
    key_prefix: str = Field(max_length=16)
    key_suffix: str = Field(max_length=8)
    status: str = Field(default="active", max_length=20)
    # Optional per-key overrides, tighter than the plan.
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None
    budget_usd: float | None = None  # spend allowed per budget_period (day | month | total)
    budget_period: str | None = Field(default=None, max_length=10)
    last_used_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    revoked_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class PasswordResetToken(SQLModel, table=True):
    """A single-use password reset link; only the keyed hash of its token is stored."""

    __tablename__ = "password_reset_tokens"

    id: uuid.UUID = _uuid_pk()
    user_id: uuid.UUID = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    token_hash: str = Field(max_length=64, unique=True)
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True))
    # Set when the token is used, or when a newer request for the same account replaces it.
    used_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    created_at: datetime = _ts()


class InferenceRequest(SQLModel, table=True):
    __tablename__ = "inference_requests"
    __table_args__ = (
        sa.Index("ix_inference_requests_user_created", "user_id", "created_at"),
        sa.Index("ix_inference_requests_status_created", "status", "created_at"),
        sa.Index("ix_inference_requests_conversation_created", "conversation_id",
                 "created_at"),
    )

    id: uuid.UUID = _uuid_pk()
    user_id: uuid.UUID = Field(foreign_key="users.id", ondelete="CASCADE")
    api_key_id: uuid.UUID | None = Field(default=None, foreign_key="api_keys.id",
                                         ondelete="SET NULL")
    request_id: str | None = Field(default=None, max_length=64)
    source: str = Field(default="v1", max_length=10)  # v1 | legacy | embed | messages | responses
    model: str = Field(max_length=200)
    provider: str = Field(default="", max_length=100)
    upstream_model: str | None = Field(default=None, max_length=200)
    messages: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    parameters: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    prompt: str | None = Field(default=None, sa_type=sa.Text)  # searchable text of the prompt
    response: str | None = Field(default=None, sa_type=sa.Text)
    tool_calls: list[dict[str, Any]] | None = Field(default=None, sa_type=JSONType)
    finish_reason: str | None = Field(default=None, max_length=30)
    status: str = Field(default="pending", max_length=20)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    tokens_estimated: bool = False
    processing_time_ms: int | None = None
    time_to_first_token_ms: int | None = None
    error: str | None = Field(default=None, sa_type=sa.Text)
    # The target that answered ("provider/upstream") and every upstream attempt of the call
    # (retries, fallbacks), in order; None for rows from before they were recorded.
    served_by: str | None = Field(default=None, max_length=200)
    upstream_attempts: list[Any] | None = Field(default=None, sa_type=JSONType)
    # The conversation the call belongs to (the x-gateway-conversation header), if any. No
    # foreign key on purpose: the writer stores a call that ends after its conversation was
    # deleted without a refused batch, then deletes it (storage/conversations.py).
    conversation_id: uuid.UUID | None = None
    cost_usd: float = Field(default=0.0, sa_column_kwargs={"server_default": "0"})
    cached: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    # Legacy job bookkeeping (issue: /inference jobs).
    attempts: int = 0
    lease_owner: str | None = Field(default=None, max_length=100)
    lease_expires_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    created_at: datetime = _ts()
    started_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    completed_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    updated_at: datetime = _ts()


class Conversation(SQLModel, table=True):
    """A chat thread of one user; its turns are derived from its latest call's row."""

    __tablename__ = "conversations"
    __table_args__ = (sa.Index("ix_conversations_user_updated", "user_id", "updated_at"),)

    id: uuid.UUID = _uuid_pk()
    user_id: uuid.UUID = Field(foreign_key="users.id", ondelete="CASCADE")
    # None until the first call names it after its first user message (or a PATCH does).
    title: str | None = Field(default=None, max_length=200)
    system_prompt: str | None = Field(default=None, sa_type=sa.Text)
    temperature: float | None = None
    max_tokens: int | None = None
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class StoredResponse(SQLModel, table=True):
    """A Responses API answer kept for ``GET /v1/responses/{id}`` and for a later call's
    ``previous_response_id`` (storage/responses.py); the call itself is its
    ``inference_requests`` row (``request_row_id``)."""

    __tablename__ = "responses"
    __table_args__ = (sa.Index("ix_responses_user_created", "user_id", "created_at"),)

    id: str = Field(primary_key=True, max_length=64)  # resp_…
    user_id: uuid.UUID = Field(foreign_key="users.id", ondelete="CASCADE")
    # No foreign key: the writer stores the call's row in its next batch, after this one.
    request_row_id: uuid.UUID
    model: str = Field(max_length=200)
    instructions: str | None = Field(default=None, sa_type=sa.Text)
    input_items: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    output_items: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    previous_response_id: str | None = Field(default=None, max_length=64)
    status: str = Field(max_length=20)  # completed | incomplete | failed
    usage: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    # ``metadata`` is SQLAlchemy's own attribute on a mapped class: the column keeps the
    # API's name, the attribute does not.
    metadata_: dict[str, Any] = Field(default_factory=dict,
                                      sa_column=sa.Column("metadata", JSONType,
                                                          nullable=False))
    # What the answer echoes (temperature, tools, text, ...), the reason it is incomplete
    # and the error it failed with, as the response object shows them.
    parameters: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    incomplete_reason: str | None = Field(default=None, max_length=30)
    error: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    created_at: datetime = _ts()


class UsageDaily(SQLModel, table=True):
    """Per user, day and model counters, upserted in batches by the writer."""

    __tablename__ = "usage_daily"
    __table_args__ = (sa.UniqueConstraint("user_id", "day", "model", name="uq_usage_daily"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", ondelete="CASCADE")
    day: date
    model: str = Field(max_length=200)
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    processing_time_ms: int = 0
    time_to_first_token_ms: int = 0
    ttft_samples: int = 0
    cost_usd: float = Field(default=0.0, sa_column_kwargs={"server_default": "0"})


class RateLimitBucket(SQLModel, table=True):
    """Counters for the ``sql`` limiter backend (one row per user, bucket type and key)."""

    __tablename__ = "rate_limit_buckets"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "bucket_type", "bucket_key", name="uq_rate_limit_bucket"),
        sa.Index("ix_rate_limit_buckets_expires", "expires_at"),
    )

    id: uuid.UUID = _uuid_pk()
    user_id: str = Field(max_length=64)
    bucket_type: str = Field(max_length=20)  # lock | window | concurrent | hit
    bucket_key: str = Field(max_length=100)
    request_count: int = 0
    value: float = 0.0
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True))


class AuditLog(SQLModel, table=True):
    __tablename__ = "audit_logs"
    __table_args__ = (sa.Index("ix_audit_logs_user_created", "user_id", "created_at"),)

    id: uuid.UUID = _uuid_pk()
    user_id: uuid.UUID | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL")
    action: str = Field(max_length=50)
    resource_type: str | None = Field(default=None, max_length=50)
    resource_id: str | None = Field(default=None, max_length=64)
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=400)
    request_id: str | None = Field(default=None, max_length=64)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    created_at: datetime = _ts()
