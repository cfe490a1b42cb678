"""Server-side conversations: /conversations and the x-gateway-conversation header, end to
end on the real app (SQLite and PostgreSQL), with the official SDK as the chat client and
byte-exact upstream recordings."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from datetime import datetime
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa

from storage.models import Conversation, InferenceRequest
from tests.conftest import Account, register
from tests.servers import (
    FIXTURES,
    FakeUpstream,
    GatewayServer,
    Reply,
    recorded_openai,
    recording_events,
    wait_for,
)

HEADER = "x-gateway-conversation"
ANSWER = json.loads((FIXTURES / "openai_text.json").read_text())["choices"][0]["message"][
    "content"]
STREAMED, _ = recorded_openai("openai_text.sse")


def sdk(gateway: GatewayServer, account: Account) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=account.api_key,
                         max_retries=0, timeout=20)


def api(gateway: GatewayServer, account: Account, method: str, path: str,
        **kw: Any) -> httpx.Response:
    return httpx.request(method, gateway.url + path, timeout=20,
                         headers={"Authorization": f"Bearer {account.token}"}, **kw)


def new_conversation(gateway: GatewayServer, account: Account, **body: Any) -> dict:
    r = api(gateway, account, "POST", "/conversations", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def chat(gateway: GatewayServer, account: Account, cid: str, messages: list[dict],
         *, stream: bool = False) -> str:
    """One call of the conversation through the SDK; the answer's text."""
    client = sdk(gateway, account)
    if stream:
        chunks = client.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                                stream=True, extra_headers={HEADER: cid})
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    done = client.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                          extra_headers={HEADER: cid})
    return done.choices[0].message.content or ""


def rows(gateway: GatewayServer, user_id: str) -> list[Any]:
    """The user's stored calls, oldest first (after the writer flushed)."""
    async def run() -> list[Any]:
        await gateway.state.writer.flush()
        async with gateway.state.engine.connect() as conn:
            return list((await conn.execute(
                sa.select(InferenceRequest.__table__)
                .where(InferenceRequest.user_id == uuid.UUID(user_id))
                .order_by(InferenceRequest.created_at))).all())
    return gateway.run(run())


def conversation_rows(gateway: GatewayServer, user_id: str) -> int:
    async def run() -> int:
        async with gateway.state.engine.connect() as conn:
            return (await conn.execute(sa.select(sa.func.count()).select_from(
                Conversation.__table__).where(
                Conversation.user_id == uuid.UUID(user_id)))).scalar_one()
    return gateway.run(run())


def thread(gateway: GatewayServer, account: Account, cid: str) -> dict:
    gateway.flush()
    r = api(gateway, account, "GET", f"/conversations/{cid}")
    assert r.status_code == 200, r.text
    return r.json()


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def turns(body: dict) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in body["messages"]]


def test_two_turns_make_one_thread(gateway: GatewayServer, upstream: FakeUpstream,
                                   account: Account) -> None:
    created = new_conversation(gateway, account)
    assert created["messages"] == [] and created["title"] is None
    assert set(created) == {"id", "object", "title", "system_prompt", "temperature",
                            "max_tokens", "created_at", "updated_at", "messages"}
    cid = created["id"]
    upstream.script(Reply.recording("openai_text.json"))
    first = [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": "Say hello in French"}]
    assert chat(gateway, account, cid, first) == ANSWER
    upstream.script(Reply.recording("openai_text.sse"))
    second = [*first, {"role": "assistant", "content": ANSWER},
              {"role": "user", "content": "And in Japanese?"}]
    assert chat(gateway, account, cid, second, stream=True) == STREAMED
    # The header stays at the gateway.
    assert all(HEADER not in r.headers for r in upstream.received)

    body = thread(gateway, account, cid)
    assert turns(body) == [("user", "Say hello in French"), ("assistant", ANSWER),
                           ("user", "And in Japanese?"), ("assistant", STREAMED)]
    calls = rows(gateway, account.user_id)
    assert [str(c.conversation_id) for c in calls] == [cid, cid]
    answers = body["messages"][1::2]
    assert [m["request_id"] for m in answers] == [c.request_id for c in calls]
    assert [m["status"] for m in answers] == ["completed", "completed"]
    assert [m["model"] for m in answers] == ["gpt-4o-mini", "gpt-4o-mini"]
    assert all("created_at" in m for m in body["messages"])
    assert body["title"] == "Say hello in French"  # the first prompt names it
    assert when(body["updated_at"]) > when(created["updated_at"])

    # API calls stay in /history; turns of a conversation do not, unless asked for.
    upstream.script(Reply.recording("openai_text.json"))
    sdk(gateway, account).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "plain API call"}])
    gateway.flush()
    history = api(gateway, account, "GET", "/history").json()["data"]
    assert [h["conversation_id"] for h in history] == [None]
    everything = api(gateway, account, "GET", "/history",
                     params={"include_conversations": "true"}).json()["data"]
    assert [h["conversation_id"] for h in everything] == [None, cid, cid]
    assert api(gateway, account, "GET", "/stats").json()["totals"]["requests"] == 3
    assert rows(gateway, account.user_id)[-1].conversation_id is None
    bad = api(gateway, account, "GET", "/history", params={"include_conversations": "1"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "include_conversations"


def test_regenerate_and_edit_replace_the_tail(gateway: GatewayServer, upstream: FakeUpstream,
                                              account: Account) -> None:
    cid = new_conversation(gateway, account, title="Greetings")["id"]
    upstream.script(Reply.recording("openai_text.json"))
    base = [{"role": "user", "content": "Say hello in French"},
            {"role": "assistant", "content": ANSWER}]
    chat(gateway, account, cid, base[:1])
    chat(gateway, account, cid, [*base, {"role": "user", "content": "And in German?"}])
    # Regenerate: the same thread without its last answer.
    chat(gateway, account, cid, [*base, {"role": "user", "content": "And in German?"}])
    body = thread(gateway, account, cid)
    calls = rows(gateway, account.user_id)
    assert turns(body) == [*[(m["role"], m["content"]) for m in base],
                           ("user", "And in German?"), ("assistant", ANSWER)]
    assert body["messages"][-1]["request_id"] == calls[-1].request_id
    # Edit and resend: the last prompt changed.
    chat(gateway, account, cid, [*base, {"role": "user", "content": "And in Dutch?"}])
    body = thread(gateway, account, cid)
    assert turns(body)[2:] == [("user", "And in Dutch?"), ("assistant", ANSWER)]
    assert len(body["messages"]) == 4
    assert body["title"] == "Greetings"  # a given title is kept


def test_rename_and_settings(gateway: GatewayServer, account: Account) -> None:
    created = new_conversation(gateway, account, title="  Draft  ", system_prompt="Be terse.",
                               temperature=0.5, max_tokens=300)
    assert (created["title"], created["system_prompt"], created["temperature"],
            created["max_tokens"]) == ("Draft", "Be terse.", 0.5, 300)
    cid = created["id"]
    r = api(gateway, account, "PATCH", f"/conversations/{cid}", json={"title": "Final"})
    assert r.status_code == 200, r.text
    assert r.json()["title"] == "Final" and r.json()["max_tokens"] == 300
    assert r.json()["messages"] == []
    r = api(gateway, account, "PATCH", f"/conversations/{cid}",
            json={"system_prompt": None, "temperature": None, "max_tokens": None})
    body = r.json()
    assert (body["title"], body["system_prompt"], body["temperature"],
            body["max_tokens"]) == ("Final", None, None, None)
    assert when(body["updated_at"]) >= when(created["updated_at"])
    assert thread(gateway, account, cid)["title"] == "Final"


BAD_FIELDS = [
    ({"title": ""}, "title"), ({"title": "   "}, "title"), ({"title": None}, "title"),
    ({"title": 5}, "title"), ({"title": "t" * 201}, "title"), ({"title": "a\x00b"}, "title"),
    ({"system_prompt": ["x"]}, "system_prompt"), ({"temperature": 2.5}, "temperature"),
    ({"temperature": -0.1}, "temperature"), ({"temperature": "1"}, "temperature"),
    ({"temperature": True}, "temperature"), ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 1.5}, "max_tokens"), ({"max_tokens": 2**31}, "max_tokens"),
    ({"max_tokens": False}, "max_tokens"), ({"colour": "red"}, "colour"),
]


@pytest.fixture(scope="module")
def owner(gateway: GatewayServer) -> tuple[Account, str]:
    """One user and conversation for the whole table: these requests change nothing."""
    account = register(gateway.url)
    return account, new_conversation(gateway, account, title="Kept")["id"]


@pytest.mark.parametrize(("body", "param"), BAD_FIELDS)
def test_bad_fields_are_400_naming_them(gateway: GatewayServer, owner: tuple[Account, str],
                                        body: dict, param: str) -> None:
    account, cid = owner
    r = api(gateway, account, "POST", "/conversations", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert conversation_rows(gateway, account.user_id) == 1  # nothing stored
    r = api(gateway, account, "PATCH", f"/conversations/{cid}", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert thread(gateway, account, cid)["title"] == "Kept"


def test_search_and_pagination(gateway: GatewayServer, upstream: FakeUpstream,
                               account: Account) -> None:
    ids = [new_conversation(gateway, account, title=f"Chat {i}")["id"] for i in range(5)]
    upstream.script(Reply.recording("openai_text.json"))
    chat(gateway, account, ids[1], [{"role": "user", "content": "Recipe for 100% CAFE_au lait"}])
    gateway.flush()
    # Newest-updated first: the one with a call comes first, then the rest newest first.
    order = [ids[1], ids[4], ids[3], ids[2], ids[0]]
    seen, after = [], None
    while True:
        params = {"limit": "2", **({"after": after} if after else {})}
        page = api(gateway, account, "GET", "/conversations", params=params).json()
        seen += [c["id"] for c in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == order
    assert "messages" not in page["data"][0]

    def search(q: str) -> list[str]:
        r = api(gateway, account, "GET", "/conversations", params={"q": q})
        assert r.status_code == 200, r.text
        return [c["id"] for c in r.json()["data"]]

    assert search("chat 3") == [ids[3]]  # title, case-insensitive
    # Prompt text, with LIKE's wildcards literal. (SQLite folds the case of ASCII only.)
    assert search("cafe_AU") == [ids[1]]
    assert search("100%") == [ids[1]]
    assert search("bonjour") == [ids[1]]  # answer text
    assert search("_") == [ids[1]]
    assert search("nothing like it") == []
    for params, param in [({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"),
                          ({"after": "nope"}, "after"), ({"after": str(uuid.uuid4())}, "after"),
                          ({"q": "a\x00"}, "q")]:
        r = api(gateway, account, "GET", "/conversations", params=params)
        assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_delete_takes_its_turns(gateway: GatewayServer, upstream: FakeUpstream,
                                account: Account) -> None:
    cid = new_conversation(gateway, account)["id"]
    upstream.script(Reply.recording("openai_text.json"))
    chat(gateway, account, cid, [{"role": "user", "content": "Say hello in French"}])
    assert len(rows(gateway, account.user_id)) == 1
    r = api(gateway, account, "DELETE", f"/conversations/{cid}")
    assert r.status_code == 204 and r.content == b""
    assert rows(gateway, account.user_id) == []  # its calls' rows went with it
    for method in ("GET", "PATCH", "DELETE"):
        r = api(gateway, account, method, f"/conversations/{cid}",
                **({"json": {"title": "x"}} if method == "PATCH" else {}))
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    # Usage counters are kept apart: the call still counts.
    assert api(gateway, account, "GET", "/stats").json()["totals"]["requests"] == 1
    with pytest.raises(openai.NotFoundError):
        chat(gateway, account, cid, [{"role": "user", "content": "again"}])


def test_other_users_and_bad_ids_are_404(gateway: GatewayServer, upstream: FakeUpstream,
                                         account: Account) -> None:
    theirs = new_conversation(gateway, register(gateway.url), title="Private")["id"]
    upstream.script(Reply.recording("openai_text.json"))
    for cid in (theirs, "not-a-uuid", str(uuid.uuid4())):
        for method, kw in [("GET", {}), ("PATCH", {"json": {"title": "Mine"}}),
                           ("PATCH", {"json": {"title": ""}}), ("DELETE", {})]:
            r = api(gateway, account, method, f"/conversations/{cid}", **kw)
            assert r.status_code == 404, (method, cid, r.text)
            assert r.json()["error"]["type"] == "invalid_request_error"
        with pytest.raises(openai.NotFoundError):
            chat(gateway, account, cid, [{"role": "user", "content": "hi"}])
        with pytest.raises(openai.NotFoundError):
            chat(gateway, account, cid, [{"role": "user", "content": "hi"}], stream=True)
    assert upstream.hits() == 0
    assert rows(gateway, account.user_id) == []
    assert api(gateway, account, "GET", "/stats").json()["totals"]["requests"] == 0
    # Theirs is untouched.
    assert api(gateway, account, "GET", "/conversations").json()["data"] == []


def test_calls_without_the_header_are_unchanged(gateway: GatewayServer, upstream: FakeUpstream,
                                                account: Account) -> None:
    new_conversation(gateway, account)
    upstream.script(Reply.recording("openai_text.json"))
    sdk(gateway, account).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello in French"}])
    (row,) = rows(gateway, account.user_id)
    assert row.conversation_id is None and row.response == ANSWER
    (listed,) = api(gateway, account, "GET", "/conversations").json()["data"]
    assert listed["title"] is None and listed["updated_at"] == listed["created_at"]


def raw_stream(gateway: GatewayServer, account: Account, cid: str,
               messages: list[dict]) -> socket.socket:
    """A streamed call on a raw socket, so the test can leave mid-answer."""
    payload = json.dumps({"model": "gpt-4o-mini", "messages": messages,
                          "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\n"
                 + f"Authorization: Bearer {account.api_key}\r\n{HEADER}: {cid}\r\n"
                   f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return sock


def read_events(sock: socket.socket, count: int) -> None:
    seen = b""
    sock.settimeout(5)
    while seen.count(b"data: ") < count:
        piece = sock.recv(65536)
        assert piece, seen
        seen += piece
    assert seen.startswith(b"HTTP/1.1 200")


def partial_text(events: int) -> str:
    """The text of a recording's first ``events`` events."""
    out = []
    for event in recording_events("openai_text.sse")[:events]:
        chunk = json.loads(event.decode().removeprefix("data: "))
        out += [c["delta"].get("content") or "" for c in chunk["choices"]]
    return "".join(out)


def test_a_cancelled_stream_leaves_its_partial_answer(gateway: GatewayServer,
                                                      upstream: FakeUpstream,
                                                      account: Account) -> None:
    cid = new_conversation(gateway, account)["id"]
    upstream.script(Reply.by_event("openai_text.sse", hang_after=3))
    sock = raw_stream(gateway, account, cid, [{"role": "user", "content": "Say hello"}])
    read_events(sock, 3)
    sock.close()
    assert wait_for(lambda: [r.status for r in rows(gateway, account.user_id)] == ["cancelled"])
    partial = partial_text(3)
    assert partial and partial != STREAMED
    body = thread(gateway, account, cid)
    assert turns(body) == [("user", "Say hello"), ("assistant", partial)]
    assert body["messages"][-1]["status"] == "cancelled"
    assert body["title"] == "Say hello"


def test_a_call_ending_after_its_conversation_was_deleted_is_not_kept(
        gateway: GatewayServer, upstream: FakeUpstream, account: Account) -> None:
    """Deleted mid-call: the call is still counted, but its row goes as its turns did."""
    cid = new_conversation(gateway, account)["id"]
    gate = threading.Event()
    upstream.script(Reply.by_event("openai_text.sse", hang_after=2, gate=gate))
    sock = raw_stream(gateway, account, cid, [{"role": "user", "content": "Say hello"}])
    try:
        read_events(sock, 2)
        assert api(gateway, account, "DELETE", f"/conversations/{cid}").status_code == 204
        gate.set()
        sock.settimeout(5)
        received = b""
        while b"[DONE]" not in received:
            piece = sock.recv(65536)
            assert piece, received
            received += piece
    finally:
        sock.close()
    assert wait_for(lambda: api(gateway, account, "GET", "/stats")
                    .json()["totals"]["requests"] == 1)
    assert rows(gateway, account.user_id) == []
    assert api(gateway, account, "GET", "/history",
               params={"include_conversations": "true"}).json()["data"] == []
