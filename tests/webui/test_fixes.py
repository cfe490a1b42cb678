"""The fixes from the trial: the Model picker and the Usage dialog show what this user can
call (and say what their plan leaves out), a 429 says when to retry once, and the limits
card counts down to each reset."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.webui.chat_page import ChatPage
from tests.webui.conftest import LOCKED_MODEL, UPSTREAM_MODEL

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="needs playwright").expect


def test_models_outside_the_plan_are_shown_disabled_and_usage_lists_callable_ones(
        ui: ChatPage) -> None:
    page = ui.page
    ui.open()
    ui.sign_up()
    picker = page.get_by_label("Model")
    locked = picker.locator(f"option[value='{LOCKED_MODEL}']")
    expect(locked).to_have_text(f"{LOCKED_MODEL} (not in your plan)")
    assert locked.is_disabled()
    assert picker.locator("option:not([disabled])").all_text_contents() == [
        "gateway-demo", UPSTREAM_MODEL]
    assert ui.model == "gateway-demo"

    page.get_by_role("button", name="Usage").click()
    dialog = page.get_by_role("dialog", name="Usage")
    models = dialog.locator("#usage-models")
    expect(models).to_be_visible()
    # What /v1/models offers, not the plan's list (which names models not served here).
    # The Model picker is for chat; this card lists embedding models too.
    assert models.locator(".badge").all_text_contents() == [
        "gateway-demo", "gateway-demo-embed", UPSTREAM_MODEL]
    expect(models.locator(".models-locked")).to_have_text(
        f"Served here but not in your plan: {LOCKED_MODEL}.")
    assert "gpt-3.5-turbo" not in dialog.text_content()


def test_rate_limit_says_when_to_retry_once_and_limits_count_down(ui: ChatPage) -> None:
    page = ui.page
    ui.problems.allow("/v1/chat/completions", 429)
    ui.open()
    ui.sign_up()
    # Spend the free plan's 20 requests of this minute through the API.
    for _ in range(20):
        r = httpx.post(ui.base_url + "/v1/chat/completions", timeout=30,
                       headers={"authorization": f"Bearer {ui.signup_key()}"},
                       json={"model": "gateway-demo", "max_tokens": 1,
                             "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text

    ui.send("One more?")
    error = page.locator("#chat-error")
    expect(error).to_be_visible()
    text = error.text_content()
    assert re.fullmatch(r"Rate limit reached for requests per minute: limit 20\. "
                        r"Try again in \d+s\.", text), text
    expect(page.get_by_label("Message")).to_have_value("One more?")

    page.get_by_role("button", name="Usage").click()
    limits = page.get_by_role("dialog", name="Usage").locator("#usage-limits")
    reset = limits.locator(".reset").first
    expect(reset).to_have_text(re.compile(r"resets in \d+ s"))
    assert re.search(r"Requests\s*0 of 20 left · resets in \d+ s", limits.text_content())
    first = int(re.search(r"\d+", reset.text_content()).group())
    # The countdown runs in the page, without another click.
    page.wait_for_function(
        "n => Number(document.querySelector('#usage-limits .reset').textContent"
        ".match(/\\d+/)[0]) < n", arg=first, timeout=5_000)
