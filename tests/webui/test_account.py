"""Accounts in the browser: sign up/in/out, expired sessions, server errors at their field,
and the API keys dialog checked against the real API."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.webui.chat_page import PASSWORD, ChatPage
from tests.webui.conftest import register

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="needs playwright").expect


def me(base_url: str, key: str) -> httpx.Response:
    return httpx.get(base_url + "/auth/me", headers={"authorization": f"Bearer {key}"})


def test_sign_out_then_sign_in_again(ui: ChatPage) -> None:
    page = ui.page
    ui.open()
    email = ui.sign_up()
    assert ui.token
    assert page.locator("#account-email").text_content() == email
    page.reload()  # the session survives a reload
    ui.wait_in_chat()

    # An unsent draft and the chosen model are this user's: sign-out forgets them.
    page.get_by_label("Message").fill("a private draft, never sent")
    page.locator("#model-select").select_option("gateway-demo")
    assert page.evaluate("localStorage.getItem('gateway.model')") == "gateway-demo"
    page.get_by_role("button", name="Sign out").click()
    assert page.locator("#auth-view").is_visible()
    assert page.locator("#app-view").is_hidden()
    assert page.locator("#auth-notice").text_content() == "You have signed out."
    assert ui.token is None
    assert page.locator("#prompt").input_value() == ""
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('gateway.'))") == []
    assert "a private draft" not in page.content()

    ui.problems.allow("/auth/login", 401)
    ui.sign_in(email, "wrong password 99")
    expect(page.locator("#auth-error")).to_have_text("Incorrect email or password.")
    expect(page.locator("#auth-error")).to_have_attribute("role", "alert")
    assert page.locator("#app-view").is_hidden()

    ui.sign_in(email)
    ui.wait_in_chat()
    assert page.locator("#account-email").text_content() == email
    assert page.locator("#account-plan").text_content() == "free"
    assert ui.model == "gateway-demo"
    # The key is shown at sign-up only; the next user of the browser finds no draft.
    assert not page.locator("#keys-dialog").evaluate("d => d.open")
    expect(page.get_by_label("Message")).to_be_focused()
    expect(page.get_by_label("Message")).to_have_value("")


def test_expired_session_returns_to_sign_in(ui: ChatPage) -> None:
    page = ui.page
    for path in ("/auth/me", "/rate-limit", "/stats", "/v1/models"):
        ui.problems.allow(path, 401)
    ui.open()
    ui.sign_up()
    page.evaluate("localStorage.setItem('gateway.token', 'expired.or.forged')")
    page.get_by_role("button", name="Usage").click()
    page.locator("#auth-view").wait_for(state="visible")
    assert "session has expired" in page.locator("#auth-notice").text_content()
    assert ui.token is None
    assert not page.locator("#usage-dialog").evaluate("d => d.open")

    page.evaluate("localStorage.setItem('gateway.token', 'another.forged.token')")
    page.reload()
    page.locator("#auth-view").wait_for(state="visible")
    assert "session has expired" in page.locator("#auth-notice").text_content()


def test_sign_up_errors_show_the_servers_message_at_the_field(ui: ChatPage) -> None:
    page = ui.page
    ui.problems.allow("/auth/register", 400)
    ui.problems.allow("/auth/register", 409)
    ui.open()
    page.get_by_role("tab", name="Create account").click()
    email = f"weak-{uuid.uuid4().hex[:8]}@example.com"
    weak = "aaaaaaaaaaaa"
    server = httpx.post(ui.base_url + "/auth/register", json={"email": email, "password": weak})
    assert server.status_code == 400 and server.json()["error"]["param"] == "password"

    ui.fill_credentials(email, weak)
    page.locator("#auth-submit").click()
    error = page.locator("#auth-password-error")
    error.wait_for(state="visible")
    assert error.text_content() == server.json()["error"]["message"]
    password = page.get_by_label("Password", exact=True)
    assert password.get_attribute("aria-invalid") == "true"
    assert "auth-password-error" in password.get_attribute("aria-describedby")
    assert page.locator("#auth-email-error").is_hidden()

    taken = register(ui.base_url)["email"]
    ui.fill_credentials(taken, PASSWORD)
    page.locator("#auth-submit").click()
    page.locator("#auth-email-error").wait_for(state="visible")
    assert page.locator("#auth-email-error").text_content() == \
        "An account with this email already exists."
    assert page.locator("#auth-password-error").is_hidden()
    assert password.get_attribute("aria-invalid") is None
    assert page.locator("#app-view").is_hidden()


def test_api_keys_create_show_once_revoke_and_regenerate(ui: ChatPage) -> None:
    page = ui.page
    ui.open()
    ui.sign_up(keep_key_dialog=True)
    # The sign-up key is shown once, in the keys dialog that opened by itself (not above
    # the chat), with the base URL to use it with; Done forgets it.
    dialog = page.get_by_role("dialog", name="API keys")
    expect(dialog).to_be_visible()
    first_key = ui.signup_key()
    assert first_key.startswith("gw-") and me(ui.base_url, first_key).status_code == 200
    assert f"{ui.base_url}/v1" in dialog.text_content()
    expect(dialog.locator("#key-reveal").get_by_role("button", name="Copy")).to_be_focused()
    assert page.locator("#chat-scroll").get_by_text("API key").count() == 0
    dialog.locator("#key-reveal").get_by_role("button", name="Done").click()
    assert first_key not in page.content()
    page.keyboard.press("Escape")

    page.get_by_role("button", name="API keys").click()
    rows = dialog.locator(".key-row")
    rows.first.wait_for()
    assert rows.count() == 1
    masked = rows.first.locator(".key-masked").text_content()
    assert first_key.startswith(masked.split("…")[0]) and first_key.endswith(masked.split("…")[1])
    assert first_key not in page.content()

    # Create: the full key is shown once, with a Copy button, and it works.
    dialog.get_by_label("New key name").fill("ci key")
    dialog.get_by_role("button", name="Create key").click()
    new_key = dialog.locator("#key-reveal input.key-value").input_value()
    assert new_key.startswith("gw-") and new_key != first_key
    assert dialog.locator("#key-reveal").get_by_role("button", name="Copy").is_visible()
    assert me(ui.base_url, new_key).status_code == 200
    rows.nth(1).wait_for()
    assert rows.count() == 2
    dialog.locator("#key-reveal").get_by_role("button", name="Done").click()
    assert new_key not in page.content()

    # Revoke asks for confirmation, then the key stops working.
    row = rows.filter(has_text="ci key")
    row.get_by_role("button", name="Revoke ci key").click()
    assert me(ui.base_url, new_key).status_code == 200  # not yet: confirm first
    row.get_by_role("button", name="Confirm revoke").click()
    row.locator(".badge.revoked").wait_for()
    assert row.get_by_role("button", name="Revoke ci key").count() == 0
    assert me(ui.base_url, new_key).status_code == 401

    # Regenerate the sign-up key: the old one dies, the new one (shown once) works.
    row = rows.filter(has_text="default")
    row.get_by_role("button", name="Regenerate default").click()
    row.get_by_role("button", name="Confirm regenerate").click()
    regenerated = dialog.locator("#key-reveal input.key-value")
    regenerated.wait_for()
    value = regenerated.input_value()
    assert value not in (first_key, new_key)
    assert me(ui.base_url, first_key).status_code == 401
    assert me(ui.base_url, value).status_code == 200

    page.keyboard.press("Escape")
    assert not page.locator("#keys-dialog").evaluate("d => d.open")
    assert value not in page.content()  # closing the dialog forgets the shown key
