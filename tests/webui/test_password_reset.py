"""Forgot password in the browser, through a real SMTP server (aiosmtpd, in-process):
ask for a link, open the mailed link, set a new password, sign in with it (only)."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.webui.chat_page import PASSWORD, ChatPage
from tests.webui.conftest import PUBLIC_URL, register

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="needs playwright").expect

NEW_PASSWORD = "a brand new passphrase 9"
LINK = re.compile(re.escape(PUBLIC_URL) + r"/#reset=([A-Za-z0-9_-]+)")


def test_forgot_password_mail_link_new_password(ui: ChatPage, smtp: object) -> None:
    page = ui.page
    email = register(ui.base_url)["email"]
    for path, status in (("/auth/login", 401), ("/auth/reset-password", 400)):
        ui.problems.allow(path, status)
    ui.open()

    page.get_by_role("link", name="Forgot password?").click()
    expect(page.get_by_role("heading", name="Reset your password")).to_be_visible()
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Send reset link").click()
    expect(page.locator("#auth-notice")).to_contain_text("Check your mail")
    expect(page.locator("#auth-notice")).to_contain_text(email)

    [message] = smtp.inbox.wait(email)
    body = message.get_body(("plain",)).get_content()
    token = LINK.search(body).group(1)

    # The mailed link (the gateway's public URL + #reset=<token>) opened on this gateway.
    page.goto(f"{ui.base_url}/#reset={token}")
    expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    assert "#reset=" not in page.url  # the token does not stay in the address bar
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_label("Confirm password").fill(NEW_PASSWORD + "x")
    page.get_by_role("button", name="Set password").click()
    expect(page.locator("#reset-confirm-error")).to_have_text(
        "The two passwords are not the same.")
    # The gateway's own password policy answers at the New password field.
    page.get_by_label("New password").fill("aaaaaaaaaaaa")
    page.get_by_label("Confirm password").fill("aaaaaaaaaaaa")
    page.get_by_role("button", name="Set password").click()
    expect(page.locator("#reset-password-error")).to_be_visible()
    assert page.get_by_label("New password").get_attribute("aria-invalid") == "true"

    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_label("Confirm password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Set password").click()
    expect(page.locator("#auth-notice")).to_have_text("Your password is set. Sign in with it.")
    expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    expect(page.get_by_label("Email")).to_have_value(email)

    # The old password no longer works; the new one does.
    ui.sign_in(email, PASSWORD)
    expect(page.locator("#auth-error")).to_have_text("Incorrect email or password.")
    ui.sign_in(email, NEW_PASSWORD)
    ui.wait_in_chat()
    assert page.locator("#account-email").text_content() == email

    # The link was spent: opening it again says so, with no way to submit.
    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{ui.base_url}/#reset={token}")
    page.get_by_label("New password").fill("yet another passphrase 3")
    page.get_by_label("Confirm password").fill("yet another passphrase 3")
    page.get_by_role("button", name="Set password").click()
    expect(page.locator("#auth-error")).to_contain_text("invalid, expired or already used")
    assert httpx.post(ui.base_url + "/auth/login", json={
        "email": email, "password": "yet another passphrase 3"}).status_code == 401
