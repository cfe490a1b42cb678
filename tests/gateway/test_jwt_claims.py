"""A token signed with the right secret but carrying claims of the wrong type is simply
invalid (found by tests/fuzz: python-jose raised TypeError, a 500 on every route)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from jose import jwt

from gateway.auth.credentials import JwtCodec

SECRET = "s" * 40


def codec() -> JwtCodec:
    return JwtCodec(SECRET, issuer="llm-gateway", audience="llm-gateway", ttl_seconds=60)


def signed(**override: Any) -> str:
    now = int(time.time())
    claims = {"sub": str(uuid.uuid4()), "iss": "llm-gateway", "aud": "llm-gateway",
              "iat": now, "exp": now + 60}
    claims.update(override)
    return jwt.encode(claims, SECRET, algorithm="HS256")


def test_a_well_formed_token_is_accepted() -> None:
    user = uuid.uuid4()
    assert codec().verify(codec().issue(user)) == user


@pytest.mark.parametrize("override", [
    {"iat": None}, {"iat": []}, {"iat": {}}, {"exp": {}}, {"exp": None}, {"exp": "soon"},
    {"nbf": []}, {"sub": 5}, {"sub": []}, {"sub": None}, {"aud": 7}, {"iss": []},
])
def test_claims_of_the_wrong_type_make_the_token_invalid(override: dict[str, Any]) -> None:
    assert codec().verify(signed(**override)) is None
