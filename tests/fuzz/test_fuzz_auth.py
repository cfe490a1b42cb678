"""Fuzzing /auth: register and login bodies (arbitrary JSON, near-valid, deeply nested, raw
bytes), API key creation, and credentials: arbitrary header values and tokens signed with
the gateway's own secret but carrying arbitrary claims."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jose import jwt

from tests.conftest import SECRET
from tests.fuzz import strategies as fz
from tests.fuzz.support import Bystander, Fuzzer, fuzz_settings

# Login throttling would answer most examples with a 429 before the code under test runs.
GATEWAY_SETTINGS = {"login_attempts_per_account": 1_000_000,
                    "login_attempts_per_ip": 1_000_000}
PASSWORD = "correct horse 42"
BODY_ROUTES = ("/auth/register", "/auth/login")
routes = st.sampled_from(BODY_ROUTES)
emails = st.emails() | fz.texts | fz.texts.map(lambda t: f"{t}@example.com")
passwords = st.just(PASSWORD) | fz.texts
# Printable Latin-1: what an HTTP header value can carry.
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                      exclude_characters="\x7f"), max_size=80)


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_the_near_valid_bodies_start_out_valid(fuzzer: Fuzzer, route: str) -> None:
    body = {"email": "valid.user@example.com", "password": PASSWORD}
    r = fuzzer.send("POST", route, content=fz.encode(body), auth=False)
    assert r.status_code in (201, 409) if route == "/auth/register" else r.status_code == 200


@fuzz_settings
@given(route=routes, body=fz.json_values)
def test_arbitrary_json(fuzzer: Fuzzer, route: str, body: Any) -> None:
    fuzzer.send("POST", route, content=fz.encode(body), auth=False)


@fuzz_settings
@given(route=routes, email=emails, password=passwords, extra=fz.json_objects)
def test_near_valid_credentials(fuzzer: Fuzzer, route: str, email: str, password: str,
                                extra: dict[str, Any]) -> None:
    body = {**extra, "email": email, "password": password}
    fuzzer.send("POST", route, content=fz.encode(body), auth=False)


@fuzz_settings
@given(route=routes, field=st.sampled_from(("email", "password", "z")),
       value=fz.json_values | fz.deep_values)
def test_one_field_replaced(fuzzer: Fuzzer, route: str, field: str, value: Any) -> None:
    body = {"email": f"fuzz-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD,
            field: value}
    fuzzer.send("POST", route, content=fz.encode(body), auth=False)


@fuzz_settings
@given(route=routes, raw=fz.raw_bodies, content_type=fz.content_types)
def test_raw_bytes_and_content_types(fuzzer: Fuzzer, route: str, raw: bytes,
                                     content_type: str | None) -> None:
    fuzzer.send("POST", route, content=raw, content_type=content_type, auth=False)


@fuzz_settings
@given(name=fz.json_values, limits=fz.json_values | fz.json_objects
       | st.dictionaries(st.sampled_from(("requests_per_minute", "tokens_per_minute",
                                          "concurrent_requests")), fz.numbers))
def test_key_creation(fuzzer: Fuzzer, name: Any, limits: Any) -> None:
    fuzzer.send("POST", "/auth/keys", content=fz.encode({"name": name, "limits": limits}))


@fuzz_settings
@given(header=st.sampled_from(("authorization", "x-api-key")),
       scheme=st.sampled_from(("Bearer ", "bearer ", "Basic ", "", "Bearer  ")),
       value=header_values | st.sampled_from(("gw-", "gw-" + "x" * 43, "a.b.c", "..")))
def test_arbitrary_credentials(fuzzer: Fuzzer, header: str, scheme: str, value: str) -> None:
    # HTTP/1.1 forbids whitespace around a header value; h11 refuses to send it.
    sent = (scheme + value).strip(" \t").encode("latin-1")
    fuzzer.send("GET", "/auth/me", auth=False, headers={header: sent} if sent else {})


CLAIMS = ("sub", "iss", "aud", "iat", "exp", "nbf", "jti")


@fuzz_settings
@given(claim=st.sampled_from(CLAIMS), value=fz.json_values,
       algorithm=st.sampled_from(("HS256", "HS384")))
def test_signed_tokens_with_arbitrary_claims(fuzzer: Fuzzer, claim: str, value: Any,
                                             algorithm: str) -> None:
    now = int(time.time())
    claims = {"sub": str(uuid.uuid4()), "iss": "llm-gateway", "aud": "llm-gateway",
              "iat": now, "exp": now + 60, claim: value}
    try:
        token = jwt.encode(claims, SECRET, algorithm=algorithm)
    except (TypeError, ValueError, OverflowError):
        return  # not even encodable as a JWT: nothing to send
    fuzzer.send("GET", "/auth/me", auth=False,
                headers={"authorization": f"Bearer {token}".encode()})


def test_bystander_calls_are_all_stored(bystander: Bystander) -> None:
    bystander.assert_all_stored()
