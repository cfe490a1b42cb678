"""Answers render as Markdown while they stream, through DOMPurify: the rich parts work,
the code blocks copy, and markup a model writes never runs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.webui.chat_page import ChatPage

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="needs playwright").expect

ANSWER = """## Plan

Steps, with a [link](https://example.com/docs) and a [bad one](javascript:window.__xss=3):

- first **item**
- second item

| Model | Tokens |
| --- | ---: |
| demo | 42 |

```python
def greet(name):
    return f"hello {name}"
```

<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>

Done."""
CODE = 'def greet(name):\n    return f"hello {name}"'


def sse(text: str, size: int = 6) -> str:
    """An OpenAI chat stream of ``text`` in pieces of ``size`` characters."""
    def event(delta: dict[str, Any], finish: str | None = None) -> str:
        chunk = {"id": "chatcmpl-md", "object": "chat.completion.chunk", "created": 0,
                 "model": "gateway-demo",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(chunk)}\n\n"
    pieces = [text[i:i + size] for i in range(0, len(text), size)]
    return (event({"role": "assistant", "content": ""})
            + "".join(event({"content": p}) for p in pieces)
            + event({}, "stop") + "data: [DONE]\n\n")


def test_markdown_renders_while_streaming_and_code_copies(ui: ChatPage) -> None:
    page = ui.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=ui.base_url)
    ui.open()
    ui.sign_up()
    # The stream as the gateway sends it, answered at the network boundary, paced so that
    # many deltas arrive while the page renders.
    body = sse(ANSWER)
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, body=body, content_type="text/event-stream"), times=1)
    page.evaluate("""() => {
      window.__firstHeading = null;
      new MutationObserver(() => {
        window.__firstHeading ||= document.querySelector('.msg.assistant .msg-body > h2');
      }).observe(document.getElementById('messages'), {subtree: true, childList: true});
    }""")
    ui.send("Give me a plan")
    ui.wait_idle()
    answer = ui.replies().last.locator(".msg-body")

    expect(answer.get_by_role("heading", name="Plan", level=2)).to_be_visible()
    assert answer.locator("ul > li").all_text_contents() == ["first item", "second item"]
    assert answer.locator("ul > li strong").text_content() == "item"
    assert answer.locator("table th").all_text_contents() == ["Model", "Tokens"]
    assert answer.locator("table td").all_text_contents() == ["demo", "42"]
    link = answer.get_by_role("link", name="link")
    assert link.get_attribute("href") == "https://example.com/docs"
    assert link.get_attribute("target") == "_blank"
    assert link.get_attribute("rel") == "noopener noreferrer"
    # The javascript: link keeps its text but loses its href.
    assert answer.locator("a", has_text="bad one").get_attribute("href") is None

    # Raw HTML from the model is text: no element made, nothing run.
    assert answer.locator("img, script, [onerror]").count() == 0
    assert "<img src=x onerror=" in answer.text_content()
    assert page.evaluate("window.__xss") is None

    # The fenced code is highlighted, and its Copy button copies the code exactly.
    block = answer.locator(".code-block")
    assert block.count() == 1
    assert block.locator("code").text_content() == CODE
    assert block.locator("code .hljs-keyword").first.text_content() == "def"
    assert block.locator(".code-lang").text_content() == "python"
    block.get_by_role("button", name="Copy").click()
    expect(block.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == CODE

    # The heading rendered first was never replaced while the rest streamed in.
    assert page.evaluate("window.__firstHeading === "
                         "document.querySelector('.msg.assistant .msg-body > h2')")


def test_markup_echoed_by_the_model_stays_inert(ui: ChatPage) -> None:
    """The demo model repeats the question: the probe goes through the real gateway."""
    page = ui.page
    ui.open()
    ui.sign_up()
    probe = ('<img src=x onerror="window.__xss=1"> <script>window.__xss=2</script> '
             '[x](javascript:window.__xss=3) **bold**')
    ui.send(probe)
    ui.wait_idle()
    mine = page.locator(".msg.user .msg-body")
    assert mine.text_content() == probe  # the user's message is plain text
    assert mine.locator("*").count() == 0
    answer = ui.replies().last.locator(".msg-body")
    assert "You asked:" in answer.text_content()
    assert answer.locator("strong").text_content() == "bold"
    assert page.locator("#messages").locator("img, script, [onerror], a[href^='javascript']"
                                             ).count() == 0
    assert page.evaluate("window.__xss") is None
