"""API keys, JWTs and passwords: generation, hashing and verification."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import bcrypt

from gateway.errors import invalid

KEY_PREFIX = "gw-"
_KEY_BYTES = 32  # 256 bits of entropy


@dataclass(frozen=True, slots=True)
class NewApiKey:
    plaintext: str
    key_hash: str
    prefix: str
    suffix: str


class ApiKeyHasher:
    """Keyed hash (HMAC-SHA256) of API keys; the plaintext is never stored."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def hash(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    def generate(self) -> NewApiKey:
        key = KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)
        return NewApiKey(plaintext=key, key_hash=self.hash(key), prefix=key[:7], suffix=key[-4:])

    @staticmethod
    def looks_like_key(value: str) -> bool:
        return value.startswith(KEY_PREFIX) and 20 <= len(value) <= 100

    @staticmethod
    def matches(stored_hash: str, candidate_hash: str) -> bool:
        return hmac.compare_digest(stored_hash, candidate_hash)


def mask_key(prefix: str, suffix: str) -> str:
    """What lists show of a key: ``gw-abcd…wxyz``."""
    return f"{prefix}…{suffix}"


@cache
def _jose() -> Any:
    """python-jose, imported at the first session token: with ``cryptography`` under it,
    it is ~10 MB of RSS a gateway serving only API keys never needs (bench/README.md)."""
    import jose
    import jose.jwt

    return jose


class JwtCodec:
    """HS256 access tokens with issuer, audience and expiry checked."""

    algorithm = "HS256"

    def __init__(self, secret: str, *, issuer: str, audience: str, ttl_seconds: int) -> None:
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self.ttl_seconds = ttl_seconds

    def issue(self, user_id: uuid.UUID, *, now: float | None = None,
              generation: int = 0) -> str:
        """A session token; ``generation`` is the user's session generation, which a
        password reset raises to end every session issued before it."""
        iat = int(now if now is not None else time.time())
        claims = {"sub": str(user_id), "iss": self._issuer, "aud": self._audience,
                  "iat": iat, "exp": iat + self.ttl_seconds, "jti": uuid.uuid4().hex,
                  "gen": generation}
        return _jose().jwt.encode(claims, self._secret, algorithm=self.algorithm)

    def verify(self, token: str) -> uuid.UUID | None:
        """The user id of a valid token, or None (bad signature, alg, expiry, iss or aud)."""
        session = self.verify_session(token)
        return session[0] if session is not None else None

    def verify_session(self, token: str) -> tuple[uuid.UUID, int] | None:
        """The user id and session generation of a valid token, or None.

        Tokens from before generations existed carry no ``gen``: they count as 0.
        """
        jose = _jose()
        try:
            # Only HS256 is accepted, so "alg": "none" and key-confusion tokens fail here.
            claims = jose.jwt.decode(token, self._secret, algorithms=[self.algorithm],
                                audience=self._audience, issuer=self._issuer,
                                options={"require_exp": True, "require_iat": True,
                                         "require_sub": True})
            generation = claims.get("gen", 0)
            if isinstance(generation, bool) or not isinstance(generation, int):
                return None
            return uuid.UUID(claims["sub"]), generation
        except (jose.JWTError, ValueError, KeyError, TypeError, AttributeError):
            # python-jose compares claims without checking their types first: a token signed
            # with our secret but carrying ``"iat": null`` raises TypeError, not JWTError.
            return None


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of the most common passwords (lowercase), read once per process."""
    text = resources.files("gateway.auth").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


class PasswordHasher:
    """bcrypt for passwords, and the password policy."""

    def __init__(self, *, rounds: int = 12, min_length: int = 10,
                 common: frozenset[str] | None = None) -> None:
        self._rounds = rounds
        self.min_length = min_length
        self._common = common_passwords() if common is None else common
        # Verifying against this keeps unknown-email logins as slow as wrong-password ones.
        self.dummy_hash = bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(rounds)).decode()

    def check_policy(self, password: str) -> None:
        if len(password) < self.min_length:
            raise invalid("password", f"password must be at least {self.min_length} characters")
        if len(password.encode()) > 72:
            raise invalid("password", "password must be at most 72 bytes (bcrypt's limit)")
        if password.lower() in self._common:
            raise invalid("password", "this password is one of the most commonly used ones "
                          "and among the first an attacker tries; choose another")
        if password.isalpha() or password.isdigit() or len(set(password)) < 4:
            raise invalid("password",
                          "password must mix letters with digits or symbols and not repeat "
                          "one character")

    def hash(self, password: str) -> str:
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(self._rounds)).decode()

    def verify(self, password: str, password_hash: str) -> bool:
        try:
            return bcrypt.checkpw(password.encode()[:72], password_hash.encode())
        except ValueError:
            return False
