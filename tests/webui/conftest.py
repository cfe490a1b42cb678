"""Fixtures for the web UI tests: Debian's Chromium under Playwright, and a real gateway."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.app import create_app
from tests.conftest import ONE_TRY, make_settings
from tests.gateway.test_password_reset import SmtpServer
from tests.servers import FakeUpstream, GatewayServer, running
from tests.webui.chat_page import PASSWORD, ChatPage

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# The demo model's pacing: slow enough to watch a reply stream and to press Stop mid-way,
# fast enough to keep the suite short (a reply is ~45 words).
DEMO_DELAY_MS = 15
OPTIONAL_ENDPOINTS = ("/history", "/rate-limit", "/stats", "/conversations")
# Served by a fake OpenAI upstream: gpt-4o-mini is in the free plan, gpt-4o is not (the
# UI must say so).
UPSTREAM_MODEL = "gpt-4o-mini"
# Reset links are mailed with this base; the tests open their #reset=<token> part here.
PUBLIC_URL = "https://chat.example.test"
MAIL_FROM = "LLM Gateway <gateway@example.test>"
LOCKED_MODEL = "gpt-4o"

# Records CSP violations from inside the page (Playwright's init scripts are exempt from CSP).
_CSP_PROBE = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}`);
});
"""


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("web UI tests need Chromium at /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="web UI tests need the playwright package")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def webui_upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd, in-process) the gateway mails reset links through."""
    server = SmtpServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def webui_gateway(tmp_path_factory: pytest.TempPathFactory, webui_upstream: FakeUpstream,
                  smtp: SmtpServer) -> Iterator[GatewayServer]:
    """The real app (fresh SQLite, in-memory limiter, paced demo model, a fake OpenAI
    upstream, mail through ``smtp``) under uvicorn."""
    providers = {"fake-openai": {
        "kind": "openai", "base_url": webui_upstream.url + "/v1", "api_key": "sk-up",
        "models": {UPSTREAM_MODEL: UPSTREAM_MODEL, LOCKED_MODEL: LOCKED_MODEL}, **ONE_TRY}}
    settings = make_settings(tmp_path_factory.mktemp("webui"), migrate_on_start=True,
                             demo_delay_ms=DEMO_DELAY_MS, providers=providers,
                             smtp_url=f"smtp://127.0.0.1:{smtp.port}", mail_from=MAIL_FROM,
                             public_url=PUBLIC_URL)
    with running(create_app(settings)) as server:
        yield server


@pytest.fixture(scope="session")
def missing_endpoints(webui_gateway: GatewayServer) -> frozenset[str]:
    """Which of the optional endpoints this gateway doesn't serve yet (404 for the UI)."""
    body = register(webui_gateway.url)
    headers = {"authorization": f"Bearer {body['token']}"}
    missing = set()
    for path in OPTIONAL_ENDPOINTS:
        r = httpx.get(webui_gateway.url + path, headers=headers)
        if r.status_code == 404:
            missing.add(path)
    return frozenset(missing)


def register(base_url: str, email: str | None = None) -> dict[str, Any]:
    email = email or f"api-{uuid.uuid4().hex[:10]}@example.com"
    r = httpx.post(base_url + "/auth/register", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return {**r.json(), "email": email}


class BrowserProblems:
    """Console errors, uncaught exceptions and CSP violations seen by a page."""

    def __init__(self, page: Any, allowed: set[tuple[str, int]]) -> None:
        self.page = page
        self.allowed = allowed  # (path, status) pairs whose failed loads are expected
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def allow(self, path: str, status: int) -> None:
        self.allowed.add((path, status))

    def _console(self, msg: Any) -> None:
        if msg.type not in ("error", "warning"):
            return
        text = msg.text
        url = (msg.location or {}).get("url", "")
        if text.startswith("Failed to load resource: the server responded with a status of"):
            status = int(text.split("status of ")[1].split()[0])
            if (urlsplit(url).path, status) in self.allowed:
                return
        self.errors.append(f"console.{msg.type}: {text} ({url})")

    def check(self) -> None:
        csp: list[str] = []
        if not self.page.is_closed():
            csp = self.page.evaluate("window.__cspViolations || []")
        assert not self.errors, self.errors
        assert not csp, csp


@pytest.fixture
def ui_context(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 820})
    context.add_init_script(_CSP_PROBE)
    yield context
    context.close()


@pytest.fixture
def ui(ui_context: Any, webui_gateway: GatewayServer,
       missing_endpoints: frozenset[str]) -> Iterator[ChatPage]:
    """The chat page on a fresh browser context; fails the test on console errors or CSP
    violations (failed loads of the optional endpoints the gateway lacks are expected)."""
    page = ui_context.new_page()
    page.set_default_timeout(10_000)
    watcher = BrowserProblems(page, {(path, 404) for path in missing_endpoints})
    yield ChatPage(page, webui_gateway.url, watcher)
    watcher.check()
