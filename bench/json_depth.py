"""What the request depth check (``gateway.http.too_deep``) costs next to orjson's own parse
of the same 1-10 KB chat bodies. Run: ``python -m bench.json_depth``."""

from __future__ import annotations

import timeit
from typing import Any

import orjson

from gateway.http import too_deep


def chat_body(messages: int, words: int) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [
        {"role": "user" if i % 2 else "assistant", "content": "word " * words}
        for i in range(messages)]}


def ordinary_bodies() -> dict[str, dict[str, Any]]:
    """1-10 KB bodies: short and long conversations, and one with tools (many small
    objects: the most values to visit per byte)."""
    tools = [{"type": "function", "function": {
        "name": f"tool_{i}", "description": "d" * 40, "parameters": {
            "type": "object", "properties": {"city": {"type": "string"},
                                             "unit": {"enum": ["c", "f"]}}}}}
             for i in range(8)]
    return {"1 KB, 4 messages": chat_body(4, 45), "7 KB, 30 messages": chat_body(30, 40),
            "10 KB, 2 messages": chat_body(2, 1000),
            "8.6 KB, 30 messages and 8 tools": {**chat_body(30, 40), "tools": tools}}


def cost(fn: Any) -> float:
    """Microseconds per call: the best of many short runs, so a busy machine's pauses
    (other processes) fall between runs rather than into the figure."""
    return min(timeit.repeat(fn, number=100, repeat=100)) / 100 * 1e6


if __name__ == "__main__":
    for name, body in ordinary_bodies().items():
        raw = orjson.dumps(body)
        parse, check = cost(lambda raw=raw: orjson.loads(raw)), cost(
            lambda body=body: too_deep(body, 64))
        print(f"{name:32} {len(raw):6} B  parse {parse:5.1f} µs  depth check {check:5.1f} µs")
