"""Wrong types anywhere in a chat body are a 400 naming the field, never a 500, and store
nothing (found by tests/fuzz: unhashable values reached set lookups and the token count)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Account
from tests.servers import GatewayServer

TOOL_CALL = {"id": "call_1", "type": "function",
             "function": {"name": "f", "arguments": "{}"}}


def body(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"model": "gateway-demo", "messages": list(messages)}


CASES = [
    (body({"role": [], "content": "hi"}), "messages[0].role"),
    (body({"role": {}, "content": "hi"}), "messages[0].role"),
    (body({"role": "user", "content": [{"type": []}]}), "messages[0].content[0].type"),
    (body({"role": "user", "content": [{"type": [[None]]}]}), "messages[0].content[0].type"),
    (body({"role": "user", "content": [{"type": {"a": 1}, "text": "x"}]}),
     "messages[0].content[0].type"),
    (body({"role": "user", "content": "hi"},
          {"role": "assistant", "content": None,
           "tool_calls": [{**TOOL_CALL, "function": {"name": "f", "arguments": [[None]]}}]},
          {"role": "tool", "tool_call_id": "call_1", "content": "ok"}),
     "messages[1].tool_calls[0].function.arguments"),
    (body({"role": "user", "content": "hi"},
          {"role": "assistant", "content": None,
           "tool_calls": [{**TOOL_CALL, "function": {"name": "f", "arguments": 5}}]},
          {"role": "tool", "tool_call_id": "call_1", "content": "ok"}),
     "messages[1].tool_calls[0].function.arguments"),
]


@pytest.mark.parametrize(("payload", "param"), CASES)
@pytest.mark.parametrize("stream", [False, True])
def test_wrong_types_are_a_400_naming_the_field(gateway: GatewayServer, account: Account,
                                                payload: dict[str, Any], param: str,
                                                stream: bool) -> None:
    r = httpx.post(gateway.url + "/v1/chat/completions", json={**payload, "stream": stream},
                   headers={"authorization": f"Bearer {account.api_key}"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    history = httpx.get(gateway.url + "/history",
                        headers={"authorization": f"Bearer {account.api_key}"}).json()
    assert history["data"] == []
