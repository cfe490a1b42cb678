"""/auth: register, login, me, and API key management."""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

from email_validator import EmailNotValidError, validate_email
from starlette.requests import Request
from starlette.routing import Route

from gateway.audit import audit
from gateway.auth.credentials import mask_key
from gateway.auth.principal import Principal
from gateway.errors import APIError, invalid, not_found
from gateway.http import JSONResponse, aware, client_ip, json_object
from gateway.ratelimit.spend import DEFAULT_PERIOD, MAX_BUDGET_USD, PERIODS
from storage.accounts import EmailTaken
from storage.models import ApiKey, User


def user_view(user: User) -> dict[str, Any]:
    return {"id": str(user.id), "email": user.email, "subscription_tier": user.subscription_tier,
            "status": user.status, "created_at": aware(user.created_at)}


LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "concurrent_requests")
BUDGET_FIELDS = ("budget_usd", "budget_period")


def key_view(key: ApiKey) -> dict[str, Any]:
    return {"id": str(key.id), "name": key.name, "masked": mask_key(key.key_prefix, key.key_suffix),
            "status": key.status, "created_at": aware(key.created_at),
            "last_used_at": aware(key.last_used_at), "revoked_at": aware(key.revoked_at),
            "limits": {f: getattr(key, f) for f in (*LIMIT_FIELDS, *BUDGET_FIELDS)
                       if getattr(key, f) is not None}}


def _key_limits(data: dict[str, Any]) -> dict[str, Any]:
    """Optional per-key limits (they can only tighten the plan's) and spend budget."""
    raw = data.get("limits") or {}
    if not isinstance(raw, dict):
        raise invalid("limits", "limits must be an object")
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name in BUDGET_FIELDS:
            continue
        if name not in LIMIT_FIELDS:
            raise invalid(f"limits.{name}", f"unknown limit {name!r}; use one of "
                          + ", ".join((*LIMIT_FIELDS, *BUDGET_FIELDS)))
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise invalid(f"limits.{name}", f"limits.{name} must be a positive integer")
        out[name] = value
    return {**out, **_key_budget(raw)}


def _key_budget(raw: dict[str, Any]) -> dict[str, Any]:
    """``budget_usd`` (a positive number of dollars) per ``budget_period`` (default month)."""
    budget, period = raw.get("budget_usd"), raw.get("budget_period")
    if budget is None:
        if period is not None:
            raise invalid("limits.budget_period", "limits.budget_period needs "
                          "limits.budget_usd: a period without a budget limits nothing")
        return {}
    if (isinstance(budget, bool) or not isinstance(budget, int | float)
            or not math.isfinite(budget) or budget <= 0 or budget > MAX_BUDGET_USD):
        raise invalid("limits.budget_usd", f"limits.budget_usd must be a positive number "
                      f"of US dollars, at most {MAX_BUDGET_USD:.0f}")
    if period is None:
        period = DEFAULT_PERIOD
    if period not in PERIODS:
        raise invalid("limits.budget_period", "limits.budget_period must be one of "
                      + ", ".join(PERIODS))
    return {"budget_usd": float(budget), "budget_period": period}


def parse_email(data: dict[str, Any]) -> str:
    raw = data.get("email")
    if not isinstance(raw, str) or not raw.strip():
        raise invalid("email", "email is required")
    try:
        info = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise invalid("email", f"email is not valid: {exc}") from None
    return info.normalized.lower()


def parse_password(data: dict[str, Any]) -> str:
    password = data.get("password")
    if not isinstance(password, str) or not password:
        raise invalid("password", "password is required")
    return password


def _key_name(data: dict[str, Any]) -> str:
    name = data.get("name", "default")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100:
        raise invalid("name", "name must be a string of 1 to 100 characters")
    return name.strip()


async def register(request: Request) -> JSONResponse:
    state = request.app.state
    data = await json_object(request)
    email = parse_email(data)
    password = parse_password(data)
    state.passwords.check_policy(password)
    # Counted once the request is valid, so a typo does not use up the address's quota.
    await state.throttle.admit_registration(client_ip(request) or "unknown")
    password_hash = await asyncio.to_thread(state.passwords.hash, password)
    new_key = state.hasher.generate()
    try:
        user, key = await state.accounts.create_user(email, password_hash, new_key.key_hash,
                                                     new_key.prefix, new_key.suffix)
    except EmailTaken:
        raise APIError(409, "An account with this email already exists.", param="email",
                       code="email_taken") from None
    state.metrics.signups.inc()
    audit(request, "user.register", user_id=user.id, resource_type="user", resource_id=user.id)
    audit(request, "api_key.create", user_id=user.id, resource_type="api_key",
          resource_id=key.id)
    return JSONResponse({"token": state.jwt.issue(user.id), "user": user_view(user),
                         "apiKey": new_key.plaintext, "apiKeyInfo": key_view(key)},
                        status_code=201)


async def login(request: Request) -> JSONResponse:
    state = request.app.state
    data = await json_object(request)
    email = parse_email(data)
    password = parse_password(data)
    ip = client_ip(request) or "unknown"
    # Looked up first: the account's failure counters start afresh after a password reset.
    user = await state.accounts.user_by_email(email)
    epoch = user.session_generation if user is not None else 0
    try:
        await state.throttle.admit_login(email, ip, epoch=epoch)
    except APIError:
        audit(request, "auth.login_throttled", user_id=None, details={"email": email})
        raise
    hashed = user.password_hash if user is not None else state.passwords.dummy_hash
    ok = await asyncio.to_thread(state.passwords.verify, password, hashed)
    if user is None or not ok or user.status != "active":
        # Unknown emails count too: the answers must not tell which accounts exist.
        await state.throttle.login_failed(email, ip, epoch=epoch)
        state.metrics.logins_failed.inc()
        audit(request, "auth.login_failed", user_id=user.id if user else None,
              details={"email": email})
        raise APIError(401, "Incorrect email or password.", code="invalid_credentials")
    audit(request, "auth.login", user_id=user.id, resource_type="user", resource_id=user.id)
    token = state.jwt.issue(user.id, generation=user.session_generation)
    return JSONResponse({"token": token, "token_type": "bearer",
                         "expires_in": state.jwt.ttl_seconds, "user": user_view(user)})


async def me(request: Request) -> JSONResponse:
    principal = await request.app.state.auth.authenticate(request)
    plan = principal.plan
    return JSONResponse({"id": str(principal.user_id), "email": principal.email,
                         "subscription_tier": plan.name, "authenticated_via": principal.via,
                         "plan": {"name": plan.name, "price_monthly": plan.price_monthly,
                                  "requests_per_minute": plan.requests_per_minute,
                                  "tokens_per_minute": plan.tokens_per_minute,
                                  "concurrent_requests": plan.concurrent_requests,
                                  "features": plan.features}})


async def session_principal(request: Request) -> Principal:
    """The caller signed in with a session (JWT); API keys may not manage keys.

    Otherwise a leaked or deliberately limited key could mint itself an unlimited
    sibling, or regenerate its way out of a revocation.
    """
    principal = await request.app.state.auth.authenticate(request)
    if principal.via != "jwt":
        raise APIError(403, "Managing API keys needs a signed-in session: send the token "
                       "from POST /auth/login as 'Authorization: Bearer <token>', not an "
                       "API key.", code="permission_denied")
    return principal


async def list_keys(request: Request) -> JSONResponse:
    principal = await session_principal(request)
    keys = await request.app.state.accounts.list_keys(principal.user_id)
    return JSONResponse({"object": "list", "data": [key_view(k) for k in keys]})


async def create_key(request: Request) -> JSONResponse:
    state = request.app.state
    principal = await session_principal(request)
    data = await json_object(request)
    name = _key_name(data)
    limits = _key_limits(data)
    new_key = state.hasher.generate()
    key = await state.accounts.create_key(principal.user_id, name, new_key.key_hash,
                                          new_key.prefix, new_key.suffix, limits=limits)
    audit(request, "api_key.create", user_id=principal.user_id, resource_type="api_key",
          resource_id=key.id, details={"name": name})
    return JSONResponse({**key_view(key), "key": new_key.plaintext}, status_code=201)


async def _owned_key(request: Request) -> tuple[Principal, ApiKey]:
    state = request.app.state
    principal = await session_principal(request)
    try:
        key_id = uuid.UUID(request.path_params["key_id"])
    except ValueError:
        raise not_found("API key") from None
    key = await state.accounts.get_key(principal.user_id, key_id)
    if key is None:
        raise not_found("API key")
    return principal, key


async def regenerate_key(request: Request) -> JSONResponse:
    state = request.app.state
    principal, key = await _owned_key(request)
    new_key = state.hasher.generate()
    updated = await state.accounts.replace_key_hash(key, new_key.key_hash, new_key.prefix,
                                                    new_key.suffix)
    if updated is None:
        raise APIError(409, "This API key is revoked and stays revoked; create a new key "
                       "instead.", code="api_key_revoked")
    state.auth.forget_key(key.key_hash)
    audit(request, "api_key.regenerate", user_id=principal.user_id, resource_type="api_key",
          resource_id=key.id)
    return JSONResponse({**key_view(updated), "key": new_key.plaintext})


async def revoke_key(request: Request) -> JSONResponse:
    state = request.app.state
    principal, key = await _owned_key(request)
    if key.status != "revoked":
        await state.accounts.revoke_key(key)
        state.auth.forget_key(key.key_hash)
        audit(request, "api_key.revoke", user_id=principal.user_id, resource_type="api_key",
              resource_id=key.id)
    revoked = await state.accounts.get_key(principal.user_id, key.id)
    return JSONResponse(key_view(revoked))


routes = [
    Route("/auth/register", register, methods=["POST"]),
    Route("/auth/login", login, methods=["POST"]),
    Route("/auth/me", me, methods=["GET"]),
    Route("/auth/keys", list_keys, methods=["GET"]),
    Route("/auth/keys", create_key, methods=["POST"]),
    Route("/auth/keys/{key_id}/regenerate", regenerate_key, methods=["POST"]),
    Route("/auth/keys/{key_id}", revoke_key, methods=["DELETE"]),
]
