"""What a real ``gateway serve`` writes to stderr: with GATEWAY_LOG_FORMAT=json one JSON
object per line from every source (ours, uvicorn's in the supervisor and in each worker,
alembic's in the migrating child), request lines with their fields and no credentials or
prompt text; as text, readable lines without alembic's plugin chatter."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import openai
import pytest

from gateway.logs import ACCESS_LOGGER
from gateway.middleware import Envelope
from gateway.observe import RequestObserver
from tests.processes import GatewayProcess, gateway_env

PASSWORD = "correct horse 42"
WRONG_PASSWORD = "not my horse 77"


def sdk(proc: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proc.url + "/v1", api_key=key, max_retries=0, timeout=30)


def register(proc: GatewayProcess) -> dict:
    r = httpx.post(proc.url + "/auth/register",
                   json={"email": f"logs-{uuid.uuid4().hex[:8]}@example.com",
                         "password": PASSWORD}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


def serve(tmp_path: Path, *args: str, **env: str) -> tuple[GatewayProcess, Path]:
    log = tmp_path / "serve.log"
    proc = GatewayProcess(gateway_env(tmp_path / "data", **env), log,
                          args=["--log-level", "info", "--access-log", *args])
    return proc, log


def test_json_logs_every_line_an_object_with_request_fields_and_no_secrets(
        tmp_path: Path) -> None:
    proc, log = serve(tmp_path, "--workers", "2", GATEWAY_LOG_FORMAT="json")
    try:
        proc.wait_ready()
        account = register(proc)
        key, jwt = account["apiKey"], account["token"]
        prompt = f"the secret plan is zanzibar-{uuid.uuid4().hex}"
        messages = [{"role": "user", "content": prompt}]
        raw = sdk(proc, key).chat.completions.with_raw_response.create(
            model="gateway-demo", messages=messages)
        plain, plain_id = raw.parse(), raw.headers["x-request-id"]
        raw = sdk(proc, key).chat.completions.with_raw_response.create(
            model="gateway-demo", messages=messages, stream=True,
            stream_options={"include_usage": True})
        stream_id = raw.headers["x-request-id"]
        [streamed_usage] = [c.usage for c in raw.parse() if c.usage is not None]
        refused = httpx.post(proc.url + "/auth/login", timeout=30,
                             json={"email": account["user"]["email"],
                                   "password": WRONG_PASSWORD})
        assert refused.status_code == 401, refused.text
        me = httpx.get(proc.url + "/auth/me", headers={"Authorization": f"Bearer {jwt}"})
        assert me.status_code == 200, me.text
    finally:
        proc.stop()  # its shutdown lines are checked too

    text = log.read_text()
    records = []
    for line in text.splitlines():
        record = json.loads(line)  # every line, whoever wrote it
        assert isinstance(record, dict), line
        assert record["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, line
        assert datetime.fromisoformat(record["timestamp"]).tzinfo is not None, line
        records.append(record)
    loggers = {r["logger"] for r in records}
    assert {"gateway.cli", "gateway", "uvicorn.error", "alembic.runtime.migration",
            "gateway.access"} <= loggers, loggers
    assert "alembic.runtime.plugins" not in loggers
    # Both workers started and stopped in the one format: uvicorn applied it in each.
    started = [r for r in records if r["message"].startswith("Started server process")]
    assert len(started) == 2, started

    lines = {r.get("request_id"): r for r in records if r["logger"] == "gateway.access"}
    user_id = account["user"]["id"]
    for rid, usage in ((plain_id, plain.usage), (stream_id, streamed_usage)):
        line = lines[rid]
        assert line["method"] == "POST" and line["path"] == "/v1/chat/completions", line
        assert line["status"] == 200 and line["duration_ms"] > 0, line
        assert line["user_id"] == user_id and line["model"] == "gateway-demo", line
        assert (line["prompt_tokens"], line["completion_tokens"], line["total_tokens"]) == (
            usage.prompt_tokens, usage.completion_tokens, usage.total_tokens), line
        assert line["call_status"] == "completed", line
    failed = lines[refused.headers["x-request-id"]]
    assert (failed["method"], failed["path"], failed["status"]) == ("POST", "/auth/login", 401)
    assert lines[me.headers["x-request-id"]]["status"] == 200

    for secret in (PASSWORD, WRONG_PASSWORD, key, jwt, prompt, "zanzibar"):
        assert secret not in text, secret


def test_text_logs_are_readable_without_alembic_plugin_lines(tmp_path: Path) -> None:
    proc, log = serve(tmp_path)
    try:
        proc.wait_ready()
        key = register(proc)["apiKey"]
        raw = sdk(proc, key).chat.completions.with_raw_response.create(
            model="gateway-demo", messages=[{"role": "user", "content": "Hello"}])
        rid = raw.headers["x-request-id"]
    finally:
        proc.stop()
    text = log.read_text()
    assert "Running upgrade" in text  # the fresh database was migrated, and said so
    assert "alembic.runtime.plugins" not in text and "setup plugin" not in text, text
    assert not any(line.startswith("{") for line in text.splitlines()), text
    assert "gateway: serving on http://127.0.0.1:" in text
    [line] = [line for line in text.splitlines() if f"request_id={rid}" in line]
    assert " INFO gateway.access POST /v1/chat/completions 200 " in line, line
    assert "model=gateway-demo" in line and "call_status=completed" in line, line


def test_json_logs_turn_tracebacks_and_warnings_into_single_lines() -> None:
    program = ("import warnings\n"
               "from gateway import logs\n"
               "logs.configure('json')\n"
               "warnings.warn('mind the gap')\n"
               "raise RuntimeError('boom')\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    warned, crashed = (json.loads(line) for line in done.stderr.splitlines())
    assert warned["logger"] == "py.warnings" and "mind the gap" in warned["message"]
    assert crashed["level"] == "CRITICAL" and crashed["message"] == "uncaught exception"
    assert "RuntimeError: boom" in crashed["exc_info"]


@pytest.fixture
def access_logger() -> logging.Logger:
    logger = logging.getLogger(ACCESS_LOGGER)
    level = logger.level
    yield logger
    logger.setLevel(level)


async def test_request_lines_are_opt_in_and_cover_answers_before_the_app(
        access_logger: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def call(envelope: RequestObserver, headers: list) -> list[dict]:
        sent: list[dict] = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        await envelope({"type": "http", "method": "POST", "path": "/x", "headers": headers,
                        "query_string": b"api_key=sk-in-the-query", "client": ("10.1.2.3", 5)},
                       receive, send)
        return sent

    def observed() -> RequestObserver:
        return RequestObserver(Envelope(app, max_body_bytes=100), state=None, fast=())

    with caplog.at_level(logging.INFO):  # INFO for every logger is no reason for them
        assert not observed().log_lines
    access_logger.setLevel(logging.INFO)  # what `gateway serve --access-log` configures
    envelope = observed()
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        answered = await call(envelope, [])
        refused = await call(envelope, [(b"content-length", b"1000")])  # 413 before the app
    lines = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert [(r.method, r.path, r.status, r.client) for r in lines] == [
        ("POST", "/x", 204, "10.1.2.3"), ("POST", "/x", 413, "10.1.2.3")]
    assert [r.request_id for r in lines] == [
        dict(sent[0]["headers"])[b"x-request-id"].decode() for sent in (answered, refused)]
    assert "sk-in-the-query" not in caplog.text
