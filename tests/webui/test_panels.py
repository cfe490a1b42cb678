"""The sidebar history and the Usage dialog, against the real /history, /rate-limit and
/stats; and their graceful absence on a gateway that lacks them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.servers import FakeUpstream, GatewayServer, Reply, wait_for
from tests.webui.chat_page import ChatPage
from tests.webui.conftest import UPSTREAM_MODEL

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="needs playwright").expect


@pytest.fixture
def endpoints(missing_endpoints: frozenset[str]) -> None:
    missing = missing_endpoints & {"/history", "/rate-limit", "/stats"}
    if missing:
        pytest.skip(f"this gateway does not serve {', '.join(sorted(missing))} yet")


def definitions(card: object) -> dict[str, str]:
    """A card's <dl> as {term: value}."""
    return dict(card.locator("dl > div").evaluate_all(
        "divs => divs.map(d => [d.querySelector('dt').textContent,"
        " d.querySelector('dd').textContent])"))


def history_items(ui: ChatPage) -> list[dict]:
    r = httpx.get(ui.base_url + "/history", headers={"authorization": f"Bearer {ui.token}"})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def api_call(ui: ChatPage, question: str) -> str:
    """A plain API call (not a conversation's): the answer."""
    r = httpx.post(ui.base_url + "/v1/chat/completions", timeout=30,
                   headers={"authorization": f"Bearer {ui.signup_key()}"},
                   json={"model": "gateway-demo",
                         "messages": [{"role": "user", "content": question}]})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


@pytest.mark.usefixtures("endpoints")
def test_history_lists_searches_opens_and_deletes(ui: ChatPage,
                                                  webui_gateway: GatewayServer) -> None:
    """The sidebar's API calls (chats made in the page are conversations, listed apart)."""
    page = ui.page
    ui.open()
    ui.sign_up()
    items = page.locator("#history-list .history-item")
    expect(page.locator("#history")).to_be_visible()
    expect(page.locator("#history-empty")).to_be_visible()

    alpha, beta = "alpha: tell me about apples", "beta: tell me about bananas"
    alpha_reply = api_call(ui, alpha)
    api_call(ui, beta)
    webui_gateway.flush()
    page.get_by_label("Search history").fill("a")  # a new search reloads the list
    assert wait_for(lambda: items.count() == 2, timeout=5), items.all_text_contents()
    assert items.first.locator(".history-prompt").text_content() == beta  # newest first
    assert "gateway-demo" in items.first.locator(".history-meta").text_content()

    page.get_by_label("Search history").fill("apples")
    assert wait_for(lambda: items.count() == 1, timeout=5)
    assert items.first.locator(".history-prompt").text_content() == alpha

    # Opening an entry restores that exchange, and it can go on from there.
    items.first.locator(".history-open").click()
    expect(page.locator("#chat-title")).to_have_text(alpha)
    assert page.locator(".msg.user .msg-body").all_text_contents() == [alpha]
    assert ui.reply_text() == alpha_reply
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as sent:
        ui.send("and pears?")
    assert sent.value.post_data_json["messages"] == [
        {"role": "user", "content": alpha}, {"role": "assistant", "content": alpha_reply},
        {"role": "user", "content": "and pears?"}]
    ui.wait_idle()

    # Delete asks for a second click.
    page.get_by_label("Search history").fill("")
    target = items.filter(has_text="bananas")
    target.wait_for()
    before = items.count()
    target.get_by_role("button", name=f"Delete “{beta}”").click()
    assert items.count() == before
    target.get_by_role("button", name="Delete", exact=True).click()
    assert wait_for(lambda: items.count() == before - 1, timeout=5)
    previews = [i["prompt_preview"] for i in history_items(ui)]
    assert beta not in previews and alpha in previews
    assert len(previews) == items.count()


@pytest.mark.usefixtures("endpoints")
def test_usage_dialog_shows_plan_budget_and_stats(ui: ChatPage,
                                                  webui_gateway: GatewayServer) -> None:
    page = ui.page
    ui.open()
    ui.sign_up()
    ui.send("How many tokens is this?")
    ui.wait_idle()
    meta = ui.replies().first.locator(".msg-meta").text_content()
    total = int(re.search(r"(\d+) tokens", meta).group(1))
    webui_gateway.flush()

    page.get_by_role("button", name="Usage").click()
    dialog = page.get_by_role("dialog", name="Usage")
    plan = dialog.locator("#usage-plan")
    plan.get_by_text("Requests / minute").wait_for()
    assert definitions(plan)["Plan"] == "free"
    assert definitions(plan)["Price"] == "Free"
    assert definitions(plan)["Requests / minute"] == "20"
    limits = dialog.locator("#usage-limits")
    limits.wait_for()
    text = limits.text_content()
    assert re.search(r"Requests\s*1?\d of 20 left · resets in \d+ s", text), text
    assert re.search(r"Concurrent requests\s*\d of 2 in use", text), text
    # The free plan's monthly budget for the whole user, from /rate-limit's "budgets" (the
    # demo model is free: nothing spent yet).
    budgets = dialog.locator("#usage-budgets")
    budgets.wait_for()
    text = budgets.text_content()
    assert "free plan · monthly" in text, text
    assert "$0.00 of $1.00 spent · $1.00 left · resets " in text, text
    now = datetime.now(UTC)
    month_end = (datetime(now.year, now.month, 1, tzinfo=UTC) + timedelta(days=32)).replace(day=1)
    assert (budgets.locator("time.budget-reset").get_attribute("datetime")
            == month_end.strftime("%Y-%m-%dT%H:%M:%SZ"))
    stats = dialog.locator("#usage-stats")
    stats.wait_for()
    numbers = definitions(stats)
    assert numbers["Requests"] == "1", numbers
    assert numbers["Success rate"] == "100%"
    assert numbers["Prompt tokens"] != "—" and numbers["Avg response time"].endswith("s")
    by_model = stats.locator("table:not(.spend-by-day) tbody tr")
    assert by_model.count() == 1
    # The demo model is free: its cost is $0.00, and it is priced (not marked).
    assert by_model.first.locator("td").all_text_contents()[:4] == [
        "gateway-demo", "1", f"{total}", "$0.00"]
    assert numbers["Cost"] == "$0.00"
    assert stats.locator(".bar").count() == 30
    assert stats.locator(".unpriced-note").count() == 0
    dialog.get_by_role("button", name="Close").click()
    assert not page.locator("#usage-dialog").evaluate("d => d.open")


@pytest.mark.usefixtures("endpoints")
def test_usage_dialog_shows_spend(ui: ChatPage, webui_gateway: GatewayServer,
                                  webui_upstream: FakeUpstream) -> None:
    """What the calls cost: the total, per model beside its tokens, per day; a model the
    gateway has no price for is marked instead of shown as free."""
    page = ui.page
    ui.open()
    ui.sign_up()
    webui_upstream.script(Reply.recording("openai_text.json"))
    r = httpx.post(ui.base_url + "/v1/chat/completions", timeout=30,
                   headers={"authorization": f"Bearer {ui.signup_key()}"},
                   json={"model": UPSTREAM_MODEL, "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200, r.text
    api_call(ui, "and a free one")
    webui_gateway.flush()
    # gpt-4o-mini's list price: 141 uncached prompt tokens at $0.15, 1,920 cached at $0.075
    # and 22 completion tokens at $0.60 per million.
    usage = r.json()["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (2061, 22)
    stats = httpx.get(ui.base_url + "/stats", headers={"authorization": f"Bearer {ui.token}"})
    assert stats.json()["totals"]["cost_usd"] == 0.00017835

    page.get_by_role("button", name="Usage").click()
    dialog = page.get_by_role("dialog", name="Usage")
    card = dialog.locator("#usage-stats")
    card.get_by_text("Cost", exact=True).first.wait_for()
    assert definitions(card)["Cost"] == "$0.000178"
    rows = {cells[0]: cells for cells in card.locator("table:not(.spend-by-day) tbody tr")
            .evaluate_all("trs => trs.map(tr => [...tr.cells].map(td => td.textContent))")}
    assert rows[UPSTREAM_MODEL][1:4] == ["1", "2,083", "$0.000178"]
    assert rows["gateway-demo"][3] == "$0.00"
    days = card.locator("table.spend-by-day tbody tr")
    assert days.count() == 1
    assert days.first.locator("td").all_text_contents()[1:] == [
        "2", f"{2083 + int(rows['gateway-demo'][2].replace(',', '')):,}", "$0.000178"]
    assert "$0.000178" in card.locator(".bar").last.get_attribute("title")
    dialog.get_by_role("button", name="Close").click()

    # A model without a price: the real /stats answer, as a gateway that had no price for
    # gateway-demo would give it (priced false, named in unpriced_models).
    def unpriced(route: object) -> None:
        body = route.fetch().json()
        for item in body["by_model"]:
            if item["model"] == "gateway-demo":
                item["priced"] = False
        body["unpriced_models"] = ["gateway-demo"]
        route.fulfill(json=body)

    page.route(re.compile(r"/stats\?"), unpriced)
    page.get_by_role("button", name="Usage").click()
    note = card.locator(".unpriced-note")
    note.wait_for()
    assert note.text_content() == "Not in the cost: gateway-demo (no price set)."
    cell = card.locator("tbody tr", has_text="gateway-demo").locator("td.unpriced")
    assert cell.text_content() == "no price"


def test_panels_hide_on_a_gateway_without_history_or_stats(ui: ChatPage) -> None:
    """An older gateway answers 404: the history list and the usage cards just stay away."""
    page = ui.page
    for path in ("/history", "/rate-limit", "/stats"):
        ui.problems.allow(path, 404)
    body = '{"error": {"message": "Not Found", "type": "invalid_request_error"}}'
    page.route(re.compile(r"/(history|rate-limit|stats)(\?|/|$)"), lambda route: route.fulfill(
        status=404, body=body, content_type="application/json"))
    ui.open()
    ui.sign_up()
    ui.send("Hello")
    ui.wait_idle()
    assert page.locator("#history").is_hidden()
    page.get_by_role("button", name="Usage").click()
    dialog = page.get_by_role("dialog", name="Usage")
    dialog.locator("#usage-plan").get_by_text("Requests / minute").wait_for()
    assert dialog.locator("#usage-limits").is_hidden()
    assert dialog.locator("#usage-budgets").is_hidden()
    assert dialog.locator("#usage-stats").is_hidden()
    assert dialog.locator("#usage-error").is_hidden()
