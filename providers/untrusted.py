"""Values an upstream sends, made safe to use: header numbers, token counts, relayed text.

An upstream is another program on the network: its headers and bodies may hold NaN,
negative or enormous numbers, the wrong types, or a whole HTML page where a message was
expected. Whatever it sends, the gateway answers its own client with sane values.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping
from typing import Any

# A retry hint is clamped into this range: longer waits than an hour are not plausible
# advice, and a client must never be told to wait a negative or infinite time.
MAX_RETRY_AFTER = 3600.0

# Token counts above any context window are clamped so a lying upstream cannot overflow
# a 32-bit column (prompt + completion stays under 2**31) or poison the token limiter.
MAX_TOKENS = 100_000_000

# What of an upstream's error message is relayed to the client.
MAX_MESSAGE_CHARS = 300
MAX_PARAM_CHARS = 100

# C0 and C1 controls, DEL, and the bidirectional overrides that can reorder what a log
# viewer or terminal shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]+")


def clamp_seconds(value: float) -> float | None:
    """``value`` within 0..MAX_RETRY_AFTER; None for NaN."""
    if math.isnan(value):
        return None
    return min(max(value, 0.0), MAX_RETRY_AFTER)


def _seconds(value: str, scale: float) -> float | None:
    try:
        return clamp_seconds(float(value) / scale)
    except ValueError:  # float() refuses garbage; "nan", "inf" and "1e999" parse
        return None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date),
    clamped to 0..MAX_RETRY_AFTER; None when neither says anything usable."""
    value = headers.get("retry-after-ms")
    if value:
        seconds = _seconds(value, 1000.0)
        if seconds is not None:
            return seconds
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value, 1.0)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
        return clamp_seconds(when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def token_count(value: Any) -> int | None:
    """A usage number as an int clamped to MAX_TOKENS; None when it is not a count at all
    (negative, NaN, strings, booleans, objects)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return MAX_TOKENS if value > 0 else None
        value = int(value)
    if not isinstance(value, int) or value < 0:
        return None
    return min(value, MAX_TOKENS)


def required_count(usage: Mapping[str, Any], key: str) -> int | None:
    """A main usage count: absent means 0 (some servers omit one); present but not a
    count means None, and the caller drops the whole usage so the gateway counts itself
    rather than bill a nonsense number."""
    value = usage.get(key)
    return 0 if value is None else token_count(value)


def index_of(value: Any, *, limit: int = 1024) -> int:
    """A choice or tool-call index; absent means 0. Raises ValueError for anything but a
    small non-negative integer (the provider turns it into a protocol error)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
        raise ValueError(f"bad index {value!r:.40}")
    return value


def clean_text(value: Any, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Upstream text fit to relay: controls replaced by spaces, runs of whitespace
    collapsed, at most ``limit`` characters (an ellipsis marks the cut)."""
    text = str(value)[:limit * 4]  # never clean a whole body to keep 300 characters of it
    text = " ".join(_CONTROL.sub(" ", text).split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"
