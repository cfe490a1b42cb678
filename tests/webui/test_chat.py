"""The chat page in a real browser against a real gateway: streaming, multi-turn, Stop."""

from __future__ import annotations

import re
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.servers import wait_for
from tests.webui.chat_page import ChatPage

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="needs playwright").expect

SCREENSHOT = "/tmp/webui-chat.png"


def complete(base_url: str, key: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    """The same conversation through the API, not streamed: the reference answer."""
    r = httpx.post(base_url + "/v1/chat/completions", timeout=30,
                   headers={"authorization": f"Bearer {key}"},
                   json={"model": "gateway-demo", "messages": messages})
    assert r.status_code == 200, r.text
    return r.json()


def reference(base_url: str, key: str, messages: list[dict[str, str]]) -> Future:
    """complete() in the background, so it runs while the browser streams (saves time)."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="reference")
    try:
        return pool.submit(complete, base_url, key, messages)
    finally:
        pool.shutdown(wait=False)


def statuses(base_url: str, key: str) -> list[str]:
    """The statuses of the user's calls, as the gateway stored them (a chat in the page is
    a conversation's call: /history lists those only when asked to)."""
    r = httpx.get(base_url + "/history", params={"include_conversations": "true"},
                  headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return [item["status"] for item in r.json()["data"]]


def is_chat_request(request: Any) -> bool:
    return request.url.endswith("/v1/chat/completions") and request.method == "POST"


def test_sign_up_then_chat_streams_two_turns(ui: ChatPage) -> None:
    page = ui.page
    ui.open()
    ui.sign_up()
    assert ui.model == "gateway-demo"
    assert page.locator("#chat-model").text_content() == "gateway-demo"
    key = ui.signup_key()
    assert key.startswith("gw-")

    # First turn: the reply streams in piece by piece, then matches the API's answer.
    first = "What is the capital of France?"
    ui.watch_stream()
    expected_first = reference(ui.base_url, key, [{"role": "user", "content": first}])
    with page.expect_request(is_chat_request) as sent:
        ui.send(first)
    body = sent.value.post_data_json
    assert body["model"] == "gateway-demo"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": first}]
    ui.wait_idle()
    lengths = ui.streamed_lengths()
    reply = ui.reply_text()
    assert len({n for n in lengths if 0 < n < len(reply)}) >= 5, lengths
    assert lengths == sorted(lengths)
    expected = expected_first.result()
    assert reply == expected["choices"][0]["message"]["content"]
    usage = expected["usage"]
    meta = ui.replies().nth(0).locator(".msg-meta").text_content()
    assert f"{usage['total_tokens']} tokens ({usage['prompt_tokens']} prompt + " \
           f"{usage['completion_tokens']} completion)" in meta
    assert re.search(r"first token \d+(\.\d)? m?s", meta), meta
    assert page.locator("#chat-title").text_content() == first
    assert page.get_by_label("Message").input_value() == ""

    # Second turn: the whole conversation goes up; Shift+Enter made a newline, not a send.
    box = page.get_by_label("Message")
    box.fill("And of Italy?")
    box.press("Shift+Enter")
    box.type("Answer briefly.")
    assert page.locator(".msg.user").count() == 1
    with page.expect_request(is_chat_request) as sent:
        box.press("Enter")
    second = "And of Italy?\nAnswer briefly."
    history = [{"role": "user", "content": first}, {"role": "assistant", "content": reply},
               {"role": "user", "content": second}]
    assert sent.value.post_data_json["messages"] == history
    expected_second = reference(ui.base_url, key, history)
    ui.wait_idle()
    expected = expected_second.result()
    assert ui.reply_text() == expected["choices"][0]["message"]["content"]
    assert page.locator(".msg.user").nth(1).locator(".msg-body").text_content() == second
    assert ui.replies().nth(1).locator(".msg-meta").is_visible()
    page.screenshot(path=SCREENSHOT)

    # New chat forgets the conversation.
    page.get_by_role("button", name="New chat").click()
    assert page.locator(".msg").count() == 0
    assert page.locator("#empty-state").is_visible()
    assert page.locator("#chat-title").text_content() == "New chat"


def test_stop_aborts_a_slow_stream(ui: ChatPage) -> None:
    page = ui.page
    ui.open()
    ui.sign_up()
    key = ui.signup_key()
    # A long question makes a long echo (~90 words, over a second at the demo's pace), so
    # Stop lands mid-reply even when the machine is busy.
    prompt = "Tell me a long story about gateways" + ", routers, proxies and queues" * 8 + "."
    full = reference(ui.base_url, key, [{"role": "user", "content": prompt}])
    ui.watch_stream()
    ui.send(prompt)
    page.wait_for_function(
        "() => document.querySelector('.msg.assistant .msg-body').textContent.length > 0")
    with page.expect_event("requestfailed", is_chat_request) as aborted:
        page.get_by_role("button", name="Stop").click()
    assert "ABORTED" in (aborted.value.failure or ""), aborted.value.failure
    ui.wait_idle()
    stopped = ui.reply_text()
    # The gateway saw the browser go: once it has recorded the call as cancelled it sends
    # nothing more, and the aborted fetch could not have delivered it anyway.
    assert wait_for(lambda: "cancelled" in statuses(ui.base_url, key), 10)
    assert ui.reply_text() == stopped, "text kept arriving after Stop"
    assert max(ui.streamed_lengths()) == len(stopped)
    assert 0 < len(stopped) < len(full.result()["choices"][0]["message"]["content"])
    assert ui.replies().nth(0).locator(".msg-note").text_content() == "Stopped."
    assert page.get_by_role("button", name="Stop").is_hidden()
    assert page.get_by_role("button", name="Send").is_enabled()

    # Ready again: the next turn carries the partial reply and completes.
    with page.expect_request(is_chat_request) as sent:
        ui.send("Go on.")
    assert sent.value.post_data_json["messages"] == [
        {"role": "user", "content": prompt}, {"role": "assistant", "content": stopped},
        {"role": "user", "content": "Go on."}]
    ui.wait_idle()
    assert ui.replies().nth(1).locator(".msg-meta").is_visible()
    assert "Go on." in ui.reply_text()


def test_sse_parser_handles_events_split_anywhere(ui: ChatPage) -> None:
    ui.open()
    result = ui.page.evaluate("""async () => {
      const { sseData } = await import('/js/api.js');
      const text = 'data: {"a":"é€😀"}\\r\\n\\r\\n: keep-alive\\n\\n'
        + 'event: x\\ndata: line1\\ndata:line2\\n\\n\\n'
        + 'data: cr-only\\r\\rdata: [DONE]\\n\\ndata: tail-without-blank-line';
      const bytes = new TextEncoder().encode(text);
      const out = [];
      for (const size of [1, 2, 3, 5, 7, bytes.length]) {
        const stream = new ReadableStream({ start(c) {
          for (let i = 0; i < bytes.length; i += size) c.enqueue(bytes.slice(i, i + size));
          c.close();
        } });
        const events = [];
        for await (const data of sseData(stream)) events.push(data);
        out.push(events);
      }
      return out;
    }""")
    expected = ['{"a":"é€😀"}', "line1\nline2", "cr-only", "[DONE]", "tail-without-blank-line"]
    assert result == [expected] * 6


def test_errors_before_and_during_a_stream(ui: ChatPage) -> None:
    """The gateway's documented error shapes, replayed at the network boundary: a 429
    before streaming gives the text back; an error event mid-stream keeps the partial reply."""
    page = ui.page
    ui.problems.allow("/v1/chat/completions", 429)
    ui.open()
    ui.sign_up()
    limited = ('{"error": {"message": "Rate limit reached: 20 requests per minute.", '
               '"type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}}')
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=429, body=limited, content_type="application/json",
        headers={"retry-after": "7"}), times=1)
    ui.send("Too fast?")
    expect(page.locator("#chat-error")).to_have_text(
        "Rate limit reached: 20 requests per minute. Try again in 7 s.")
    expect(page.get_by_label("Message")).to_have_value("Too fast?")
    assert page.locator(".msg").count() == 0
    assert page.locator("#empty-state").is_visible()

    broken = (
        'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
        '"finish_reason":null}],"usage":null}\n\n'
        'data: {"choices":[{"index":0,"delta":{"content":"Half an ans"},'
        '"finish_reason":null}],"usage":null}\n\n'
        'data: {"error": {"message": "The upstream timed out.", "type": "api_error", '
        '"param": null, "code": "upstream_timeout"}}\n\n'
        "data: [DONE]\n\n")
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, body=broken, content_type="text/event-stream"), times=1)
    page.get_by_label("Message").press("Enter")
    ui.wait_idle()
    assert ui.reply_text() == "Half an ans"
    expect(ui.replies().first.locator(".msg-note")).to_have_text(
        "Error: The upstream timed out.")
    assert page.locator("#chat-error").is_hidden()

    # The real gateway again; the partial reply stays part of the conversation.
    with page.expect_request(is_chat_request) as sent:
        ui.send("Try again")
    assert sent.value.post_data_json["messages"] == [
        {"role": "user", "content": "Too fast?"},
        {"role": "assistant", "content": "Half an ans"},
        {"role": "user", "content": "Try again"}]
    ui.wait_idle()
    assert ui.replies().nth(1).locator(".msg-meta").is_visible()
