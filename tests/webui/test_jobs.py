"""The Jobs dialog against the real /inference API: submit a job, watch it run with live
progress, open a result, cancel a running job."""

from __future__ import annotations

import re

import httpx
import pytest

from providers.demo import compose_reply
from tests.servers import FakeUpstream, Reply, recording_events, wait_for
from tests.webui.chat_page import ChatPage
from tests.webui.conftest import UPSTREAM_MODEL

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="needs playwright").expect


def slow_then_silent() -> Reply:
    """Twelve recorded events a quarter of a second apart, then keep-alive comments only:
    the job's progress grows for a while, then it runs until it is cancelled (bounded)."""
    events = recording_events("openai_text.sse")[:13]
    return Reply(pieces=events + [b": keep-alive\n\n"] * 240, delay=0.25)


def server_status(ui: ChatPage, job_id: str) -> str:
    r = httpx.get(f"{ui.base_url}/inference/{job_id}", headers={"authorization":
                                                               f"Bearer {ui.signup_key()}"})
    assert r.status_code == 200, r.text
    return r.json()["status"]


def test_jobs_submit_progress_result_and_cancel(ui: ChatPage,
                                                webui_upstream: FakeUpstream) -> None:
    page = ui.page
    ui.open()
    ui.sign_up()
    page.get_by_role("button", name="Jobs").click()
    dialog = page.get_by_role("dialog", name="Jobs")
    expect(dialog.locator("#jobs-empty")).to_have_text("No jobs yet.")
    rows = dialog.get_by_role("list", name="Your jobs").locator("li")

    # A demo job: it completes, and its result opens rendered.
    question = "What is a background job?"
    dialog.get_by_label("Run with").select_option("gateway-demo")
    dialog.get_by_label("Prompt").fill(question)
    dialog.get_by_role("button", name="Submit job").click()
    expect(rows).to_have_count(1)
    done = rows.filter(has_text=question)
    expect(done.locator(".job-status")).to_have_text("Completed")  # polled until it finished
    done.get_by_role("button", name=f"Open result of “{question}”").click()
    result = dialog.locator("#job-result")
    expect(result.get_by_role("heading", name=f"Result of “{question}”")).to_be_visible()
    expect(result.locator(".job-answer")).to_have_text(
        compose_reply([{"role": "user", "content": question}]))

    # A slow job on the fake upstream: running, its token count grows live, then Cancel.
    webui_upstream.script(slow_then_silent())
    dialog.get_by_label("Run with").select_option(UPSTREAM_MODEL)
    dialog.get_by_label("Prompt").fill("Write slowly")
    dialog.get_by_role("button", name="Submit job").click()
    expect(rows).to_have_count(2)
    assert rows.first.locator(".job-prompt").text_content() == "Write slowly"  # newest first
    running = rows.filter(has_text="Write slowly")
    expect(running.locator(".job-status")).to_have_text("Running")
    expect(running.get_by_role("progressbar", name="Progress of “Write slowly”")).to_be_visible()
    counts = []

    def grew() -> bool:
        text = running.locator(".job-progress-text").text_content() or ""
        match = re.fullmatch(r"(\d+) tokens? so far", text)
        if match:
            counts.append(int(match.group(1)))
        return len(set(counts) - {0}) >= 2 and counts == sorted(counts)

    assert wait_for(grew, 10), counts
    job_id = running.get_attribute("data-job-id")
    assert server_status(ui, job_id) == "processing"
    running.get_by_role("button", name="Cancel “Write slowly”").click()
    expect(running.locator(".job-status")).to_have_text("Cancelled")
    assert running.get_by_role("button", name="Cancel “Write slowly”").count() == 0
    assert wait_for(lambda: webui_upstream.disconnects >= 1, 5)  # the call was stopped
    assert server_status(ui, job_id) == "cancelled"
    expect(done.locator(".job-status")).to_have_text("Completed")
