"""/auth/forgot-password and /auth/reset-password (the service is gateway/auth/resets.py)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.routing import Route

from gateway.audit import audit
from gateway.auth.resets import MAX_TOKEN_LENGTH
from gateway.errors import invalid
from gateway.http import JSONResponse, client_ip, json_object
from gateway.routes.accounts import parse_email, parse_password

BAD_TOKEN = ("This password reset link is invalid, expired or already used; ask for a new "
             "one with POST /auth/forgot-password.")


async def forgot_password(request: Request) -> JSONResponse:
    state = request.app.state
    data = await json_object(request)
    email = parse_email(data)
    await state.throttle.admit_forgot_password(email, client_ip(request) or "unknown")
    state.password_resets.request(email)
    # The same answer whether or not the address has an account.
    return JSONResponse({"status": "accepted",
                         "message": "If an account uses this address, a link to reset its "
                                    "password is on its way."}, status_code=202)


async def reset_password(request: Request) -> JSONResponse:
    state = request.app.state
    data = await json_object(request)
    token = data.get("token")
    if not isinstance(token, str) or not token.strip():
        raise invalid("token", "token is required: the one from the reset link")
    password = parse_password(data)
    await state.throttle.admit_password_reset(client_ip(request) or "unknown")
    state.passwords.check_policy(password)
    token = token.strip()
    if len(token) > MAX_TOKEN_LENGTH:
        raise invalid("token", BAD_TOKEN)
    password_hash = await asyncio.to_thread(state.passwords.hash, password)
    reset = await state.password_resets.spend(token, password_hash)
    if reset is None:
        raise invalid("token", BAD_TOKEN)
    state.auth.forget_user(reset.user_id)  # this process refuses old sessions at once
    audit(request, "auth.password_reset", user_id=reset.user_id, resource_type="user",
          resource_id=reset.user_id)
    return JSONResponse({"status": "password_reset", "email": reset.email})


routes = [
    Route("/auth/forgot-password", forgot_password, methods=["POST"]),
    Route("/auth/reset-password", reset_password, methods=["POST"]),
]
