"""Conversations in the browser against the real /conversations API: a new chat becomes a
conversation on its first send, the sidebar lists them newest first with search, rename
and delete, settings and message actions shape what is sent, and all of it survives a
reload."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.servers import GatewayServer
from tests.webui.chat_page import ChatPage

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="needs playwright").expect


@pytest.fixture
def conversations_served(missing_endpoints: frozenset[str]) -> None:
    if "/conversations" in missing_endpoints:
        pytest.skip("this gateway does not serve /conversations yet")


def is_chat_request(request: Any) -> bool:
    return request.url.endswith("/v1/chat/completions") and request.method == "POST"


def server(ui: ChatPage, path: str) -> httpx.Response:
    return httpx.get(ui.base_url + path, headers={"authorization": f"Bearer {ui.token}"})


def titles(nav: Any) -> list[str]:
    return nav.locator(".conversation-title").all_text_contents()


@pytest.mark.usefixtures("conversations_served")
def test_conversations_settings_actions_and_reload(ui: ChatPage,
                                                   webui_gateway: GatewayServer) -> None:
    page = ui.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=ui.base_url)
    ui.open()
    ui.sign_up()
    nav = page.get_by_role("navigation", name="Conversations")
    expect(nav).to_be_visible()
    expect(nav.get_by_text("No conversations yet.")).to_be_visible()

    # Settings chosen before the first send go with the conversation it creates.
    page.get_by_role("button", name="Chat settings").click()
    settings = page.get_by_role("dialog", name="Chat settings")
    settings.get_by_label("System prompt").fill("Answer like a pirate.")
    settings.get_by_label("Temperature").fill("0.5")
    settings.get_by_label("Max tokens").fill("200")
    settings.get_by_role("button", name="Save settings").click()
    expect(settings).to_be_hidden()

    alpha = "alpha: tell me about apples"
    with page.expect_request(is_chat_request) as sent:
        ui.send(alpha)
    request = sent.value
    alpha_id = request.headers["x-gateway-conversation"]
    body = request.post_data_json
    assert body["messages"] == [{"role": "system", "content": "Answer like a pirate."},
                                {"role": "user", "content": alpha}]
    assert body["temperature"] == 0.5 and body["max_tokens"] == 200
    ui.wait_idle()
    assert page.url.endswith(f"#conversation={alpha_id}")
    stored = server(ui, f"/conversations/{alpha_id}").json()
    assert stored["title"] == alpha and stored["system_prompt"] == "Answer like a pirate."
    expect(nav.get_by_role("link", name=alpha)).to_be_visible()

    with page.expect_request(is_chat_request) as sent:
        ui.send("and pears?")
    assert sent.value.headers["x-gateway-conversation"] == alpha_id
    ui.wait_idle()
    first_answer, second_answer = ui.reply_text(0), ui.reply_text(1)

    # New chat: another conversation, listed first.
    page.get_by_role("button", name="New chat").click()
    assert page.locator(".msg").count() == 0
    beta = "beta: tell me about bananas"
    with page.expect_request(is_chat_request) as sent:
        ui.send(beta)
    beta_id = sent.value.headers["x-gateway-conversation"]
    assert beta_id != alpha_id
    assert sent.value.post_data_json["messages"] == [{"role": "user", "content": beta}]
    ui.wait_idle()
    webui_gateway.flush()
    expect(nav.locator(".conversation-title")).to_have_text([beta, alpha])

    # A reload reopens the open conversation; the other opens from the sidebar whole.
    page.reload()
    ui.wait_in_chat()
    expect(page.locator("#chat-title")).to_have_text(beta)
    assert page.locator(".msg.user .msg-body").all_text_contents() == [beta]
    nav.get_by_role("link", name=alpha).click()
    expect(page.locator("#chat-title")).to_have_text(alpha)
    expect(page.locator(".msg")).to_have_count(4)
    assert page.locator(".msg.user .msg-body").all_text_contents() == [alpha, "and pears?"]
    assert [ui.reply_text(0), ui.reply_text(1)] == [first_answer, second_answer]

    # Search covers what was said, not only titles.
    nav.get_by_label("Search conversations").fill("pears")
    expect(nav.locator(".conversation-title")).to_have_text([alpha])
    nav.get_by_label("Search conversations").fill("")
    expect(nav.locator(".conversation-title")).to_have_text([beta, alpha])

    # Rename.
    nav.get_by_role("button", name=f"Rename “{alpha}”").click()
    title_box = nav.get_by_label("New title")
    title_box.fill("Fruit talk")
    title_box.press("Enter")
    expect(nav.get_by_role("link", name="Fruit talk")).to_be_visible()
    expect(page.locator("#chat-title")).to_have_text("Fruit talk")
    assert server(ui, f"/conversations/{alpha_id}").json()["title"] == "Fruit talk"

    # Copy an answer; regenerate the last answer: the thread goes without it.
    answers = page.locator(".msg.assistant")
    answers.nth(0).get_by_role("button", name="Copy answer").click()
    assert page.evaluate("navigator.clipboard.readText()") == first_answer
    system = {"role": "system", "content": "Answer like a pirate."}
    thread = [system, {"role": "user", "content": alpha},
              {"role": "assistant", "content": first_answer},
              {"role": "user", "content": "and pears?"}]
    with page.expect_request(is_chat_request) as sent:
        answers.nth(1).get_by_role("button", name="Regenerate").click()
    assert sent.value.post_data_json["messages"] == thread
    assert sent.value.headers["x-gateway-conversation"] == alpha_id
    ui.wait_idle()
    expect(page.locator(".msg")).to_have_count(4)

    # Edit and resend the last prompt.
    page.locator(".msg.user").nth(1).get_by_role("button", name="Edit").click()
    page.get_by_label("Edit prompt").fill("and plums?")
    with page.expect_request(is_chat_request) as sent:
        page.get_by_role("button", name="Save", exact=True).click()
    assert sent.value.post_data_json["messages"] == [*thread[:3],
                                                     {"role": "user", "content": "and plums?"}]
    ui.wait_idle()
    assert page.locator(".msg.user .msg-body").all_text_contents() == [alpha, "and plums?"]
    webui_gateway.flush()
    shown = [{"role": m["role"], "content": m["content"]}
             for m in server(ui, f"/conversations/{alpha_id}").json()["messages"]]
    assert shown == [*thread[1:3], {"role": "user", "content": "and plums?"},
                     {"role": "assistant", "content": ui.reply_text(1)}]

    # Settings of an existing conversation: shown as saved; an emptied field clears it.
    page.get_by_role("button", name="Chat settings").click()
    expect(settings.get_by_label("System prompt")).to_have_value("Answer like a pirate.")
    expect(settings.get_by_label("Temperature")).to_have_value("0.5")
    settings.get_by_label("Temperature").fill("")
    settings.get_by_role("button", name="Save settings").click()
    expect(settings).to_be_hidden()
    stored = server(ui, f"/conversations/{alpha_id}").json()
    assert stored["temperature"] is None and stored["max_tokens"] == 200

    # Delete asks twice; the conversation is gone from the list and the server.
    nav.get_by_role("button", name=f"Delete “{beta}”").click()
    nav.get_by_role("button", name="Delete", exact=True).click()
    expect(nav.locator(".conversation-title")).to_have_text(["Fruit talk"])
    assert server(ui, f"/conversations/{beta_id}").status_code == 404

    # And once more across a reload: the edited thread of the open conversation.
    page.reload()
    ui.wait_in_chat()
    expect(page.locator("#chat-title")).to_have_text("Fruit talk")
    expect(page.locator(".msg.user .msg-body")).to_have_text([alpha, "and plums?"])
