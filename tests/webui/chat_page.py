"""A page object for the chat UI: what a user does, in Playwright terms."""

from __future__ import annotations

import uuid
from typing import Any

PASSWORD = "correct horse 42"


class ChatPage:
    def __init__(self, page: Any, base_url: str, problems: Any) -> None:
        self.page = page
        self.base_url = base_url
        self.problems = problems
        self.api_key = ""

    # Navigation and auth
    def open(self) -> None:
        self.page.goto(self.base_url + "/")

    def fill_credentials(self, email: str, password: str) -> None:
        self.page.get_by_label("Email").fill(email)
        self.page.get_by_label("Password", exact=True).fill(password)

    def sign_up(self, email: str | None = None, password: str = PASSWORD, *,
                keep_key_dialog: bool = False) -> str:
        """Create an account. The API keys dialog opens by itself with the new key (shown
        once): its value is kept as ``api_key``, and the dialog closed unless asked not to."""
        email = email or f"ui-{uuid.uuid4().hex[:10]}@example.com"
        self.page.get_by_role("tab", name="Create account").click()
        self.fill_credentials(email, password)
        self.page.locator("#auth-submit").click()
        self.wait_in_chat()
        reveal = self.page.get_by_role("dialog", name="API keys").locator(
            "#key-reveal input.key-value")
        self.api_key = reveal.input_value()
        if not keep_key_dialog:
            self.page.keyboard.press("Escape")
            self.page.wait_for_function("() => !document.getElementById('keys-dialog').open")
        return email

    def sign_in(self, email: str, password: str = PASSWORD) -> None:
        self.page.get_by_role("tab", name="Sign in").click()
        self.fill_credentials(email, password)
        self.page.locator("#auth-submit").click()

    def wait_in_chat(self) -> None:
        self.page.locator("#app-view").wait_for(state="visible")
        self.page.wait_for_function(
            "() => document.getElementById('model-select').options.length > 0")

    @property
    def token(self) -> str | None:
        return self.page.evaluate("localStorage.getItem('gateway.token')")

    def signup_key(self) -> str:
        """The API key shown once at sign-up."""
        return self.api_key

    # Chat
    @property
    def model(self) -> str:
        return self.page.locator("#model-select").input_value()

    def send(self, text: str) -> None:
        box = self.page.get_by_label("Message")
        box.fill(text)
        box.press("Enter")

    def replies(self) -> Any:
        return self.page.locator(".msg.assistant")

    def reply_text(self, index: int = -1) -> str:
        return self.replies().nth(index).locator(".msg-body").text_content() or ""

    def wait_idle(self) -> None:
        """Wait until no reply is streaming and Send is back."""
        self.page.locator(".msg.assistant.streaming").wait_for(state="detached")
        self.page.locator("#send").wait_for(state="visible")

    def watch_stream(self) -> None:
        """Record the length of the last reply each time streamed text lands in it."""
        self.page.evaluate("""() => {
          window.__lengths = [];
          new MutationObserver(() => {
            const body = document.querySelector('.msg.assistant:last-of-type .msg-body');
            if (body) window.__lengths.push(body.textContent.length);
          }).observe(document.getElementById('messages'),
                     {subtree: true, childList: true, characterData: true});
        }""")

    def streamed_lengths(self) -> list[int]:
        return self.page.evaluate("window.__lengths")
