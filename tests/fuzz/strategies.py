"""Hypothesis strategies for hostile request bodies and query strings.

Arbitrary JSON (any shape, type, unicode, numbers beyond 64 bits), near-valid bodies with
one field swapped for arbitrary or very deeply nested JSON, raw bytes, and content types.
"""

from __future__ import annotations

import base64
import json
from datetime import date, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

# Characters that have broken JSON handling elsewhere: NUL and other controls, line and
# paragraph separators, the BOM, non-characters, astral plane (emoji with a modifier).
SPECIAL_CHARS = "\x00\x01\x1f\x7f\u0085\u2028\u2029\ufeff\ufffe\uffff\U0001f44b\U0001f3fd"
# Every code point but surrogates: those cannot be encoded as UTF-8 by the client
# (lone surrogate escapes are sent in ``raw_bodies`` instead).
chars = st.characters(codec="utf-8") | st.sampled_from(SPECIAL_CHARS)
texts = st.text(chars, max_size=40)

# Integers well beyond 64 bits either way (orjson turns them into floats), the edges of
# int64, and floats up to the largest finite double.
huge_ints = st.integers(min_value=2**63 - 2, max_value=2**200) | st.integers(
    min_value=-(2**200), max_value=-(2**63) + 2)
numbers = st.integers() | huge_ints | st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | numbers | texts

json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(texts, children, max_size=5),
    max_leaves=25,
)
json_objects = st.dictionaries(texts, json_values, max_size=6)

# ``recursive`` stays shallow; nesting is built explicitly to the depths that matter:
# orjson refuses to serialize beyond 255, a depth limit would sit near 64.
DEPTHS = (2, 63, 64, 65, 128, 254, 255, 256, 257, 300)
depths = st.sampled_from(DEPTHS) | st.integers(min_value=1, max_value=300)


def nest(depth: int, leaf: Any, shape: str) -> Any:
    """``leaf`` inside ``depth`` levels of arrays, objects, or both alternating."""
    value = leaf
    for level in range(depth):
        if shape == "array" or (shape == "mixed" and level % 2):
            value = [value]
        else:
            value = {"z": value}
    return value


shapes = st.sampled_from(("array", "object", "mixed"))
deep_values = st.builds(nest, depths, scalars, shapes)


def encode(value: Any, ascii_only: bool = False) -> bytes:
    """JSON as a client would send it (``ensure_ascii`` escapes all non-ASCII)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")


# Not JSON, or JSON that a strict parser refuses (non-finite numbers, lone surrogates,
# trailing data, a byte order mark, comments), or JSON in another encoding.
RAW_SAMPLES = (
    b"", b" ", b"null", b"[]", b"\"text\"", b"{", b"}", b"{\"model\":", b"NaN", b"Infinity",
    b"{\"model\": NaN}", b"{\"temperature\": -Infinity}", b"{\"a\": 1e999}",
    b"{\"model\": \"\\ud800\"}", b"{\"model\": \"\\udc00\\ud800\"}", b"{\"a\":1}{\"b\":2}",
    b"\xef\xbb\xbf{}", b"{/* c */}", b"{'model': 'x'}", b"\x00", b"\xff\xfe{\x00}\x00",
    "{\"model\": \"é\"}".encode("latin-1"), "{\"model\": \"x\"}".encode("utf-16"),
    b"[" * 5000 + b"]" * 5000, b"{\"a\":" * 3000 + b"1" + b"}" * 3000,
)
raw_bodies = st.sampled_from(RAW_SAMPLES) | st.binary(max_size=200)

CONTENT_TYPES = (
    None, "application/json", "application/json; charset=utf-8", "text/plain",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
    "application/octet-stream", "text/event-stream", "application/jsonp",
    "application/vnd.api+json", "", "json", ";", "application/json; charset=latin-1",
)
content_types = st.sampled_from(CONTENT_TYPES)


def replace_at(body: Any, path: tuple[str | int, ...], value: Any) -> Any:
    """A copy of ``body`` with the value at ``path`` (keys and indexes) set to ``value``."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(body, list):
        out_list = list(body)
        out_list[head] = replace_at(body[head], rest, value)  # type: ignore[index]
        return out_list
    out = dict(body)
    out[head] = replace_at(body.get(head, {}), rest, value)
    return out


def valid_chat(model: str, stream: bool) -> dict[str, Any]:
    """A chat body every part of which the gateway accepts."""
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    body: dict[str, Any] = {
        "model": model, "stream": stream, "temperature": 0.5, "top_p": 1, "max_tokens": 32,
        "stop": ["\n\n"], "seed": 7, "user": "fuzz", "tools": tools, "tool_choice": "auto",
        "response_format": {"type": "text"},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "user", "content": "Thanks"},
        ],
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


# Where a near-valid body gets its one bad value, by area: every field the parser reads,
# the places it passes through untouched (tool schemas, unknown fields), and inside each
# kind of message. One test per area, so a crash in one area cannot hide the others.
Path = tuple[str | int, ...]
CHAT_AREAS: dict[str, tuple[Path, ...]] = {
    "parameters": (
        ("model",), ("stream",), ("stream_options",), ("stream_options", "include_usage"),
        ("temperature",), ("top_p",), ("max_tokens",), ("max_completion_tokens",), ("n",),
        ("seed",), ("stop",), ("user",), ("tool_choice",), ("parallel_tool_calls",),
        ("response_format",)),
    "passthrough": (
        ("z",), ("logit_bias",), ("metadata",), ("response_format", "json_schema"),
        ("tools", 0, "function", "parameters"),
        ("tools", 0, "function", "parameters", "properties", "city")),
    "messages": (
        ("messages",), ("messages", 0), ("messages", 0, "role"), ("messages", 0, "content"),
        ("messages", 0, "name"), ("messages", 0, "z"), ("messages", 3, "tool_call_id"),
        ("messages", 3, "content"), ("messages", 4, "content")),
    "content_parts": (
        ("messages", 1, "content"), ("messages", 1, "content", 0),
        ("messages", 1, "content", 0, "type"), ("messages", 1, "content", 0, "text"),
        ("messages", 1, "content", 0, "z")),
    "tool_calls": (
        ("tools",), ("tools", 0), ("tools", 0, "function", "name"),
        ("messages", 2, "tool_calls"), ("messages", 2, "tool_calls", 0),
        ("messages", 2, "tool_calls", 0, "id"), ("messages", 2, "tool_calls", 0, "function"),
        ("messages", 2, "tool_calls", 0, "function", "name"),
        ("messages", 2, "tool_calls", 0, "function", "arguments")),
}

LEGACY_PATHS: tuple[Path, ...] = (
    ("model",), ("prompt",), ("messages",), ("parameters",), ("parameters", "temperature"),
    ("parameters", "maxTokens"), ("parameters", "max_tokens"), ("parameters", "top_p"),
    ("parameters", "stop"), ("parameters", "seed"), ("parameters", "z"), ("z",),
    ("messages", 0), ("messages", 0, "content"), ("messages", 0, "content", 0),
    ("messages", 0, "content", 0, "text"), ("messages", 0, "content", 0, "z"),
    ("messages", 0, "role"), ("messages", 0, "z"),
)


def valid_legacy(model: str, with_messages: bool) -> dict[str, Any]:
    """A legacy job body the gateway accepts, as a prompt or as messages."""
    body: dict[str, Any] = {"model": model,
                            "parameters": {"temperature": 0.2, "maxTokens": 16, "seed": 3}}
    if with_messages:
        body["messages"] = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    else:
        body["prompt"] = "Hi"
    return body


# What a cursor decodes to: arrays above all, the shape of a real cursor
# (``[iso timestamp, uuid hex]``) with either part of any type or at the calendar's ends.
cursor_payloads = st.lists(json_values, max_size=3) | json_values | st.tuples(
    texts | st.sampled_from(("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                             "2026-01-01T00:00:00", "2026-01-01")),
    texts | numbers | st.sampled_from(("0" * 32, "f" * 32, "not-a-uuid"))).map(list)


def b64(value: Any) -> str:
    """A cursor as the gateway writes one: unpadded URL-safe base64 of JSON."""
    return base64.urlsafe_b64encode(encode(value)).decode().rstrip("=")


cursors = cursor_payloads.map(b64) | texts

# Dates at the ends of the calendar, where a day or a timezone offset more overflows, and
# other near misses of ISO 8601; then any date, any datetime at any offset, any text.
EDGE_DATES = ("9999-12-31", "0001-01-01", "9999-12-31T23:59:59.999999",
              "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00")
ODD_DATES = ("0000-00-00", "2026-02-30", "2026-01-01T00:00:00Z", "2026-01-01T25:00",
             "+002026-01-01", "2026-W01-1", "20260101", "1e9", "NaN")
offsets = st.none() | st.timedeltas(min_value=-timedelta(hours=23, minutes=59),
                                    max_value=timedelta(hours=23, minutes=59)).map(timezone)
dates = (st.sampled_from(EDGE_DATES) | st.sampled_from(ODD_DATES)
         | st.dates().map(date.isoformat)
         | st.builds(lambda when, tz: when.replace(tzinfo=tz).isoformat(), st.datetimes(),
                     offsets)
         | texts)
int_strings = st.integers().map(str) | huge_ints.map(str) | st.sampled_from(
    ("", "0", "-1", "1e3", "0x10", " 5", "٣", "1_000", "9" * 5000)) | texts
