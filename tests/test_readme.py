"""The README's run command, executed as written in a fresh copy and virtual environment,
serves /health on the embedded defaults."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    return re.search(r"```sh\n(.*?)\n```", section, re.S).group(1).strip()


def test_readme_commands_match_ci() -> None:
    """.ci/run must run exactly the README's test command."""
    assert readme_block("Test it") in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_run_command_serves_health(tmp_path: Path) -> None:
    command = readme_block("Run it")
    assert command.endswith("gateway serve"), command
    checkout = tmp_path / "checkout"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        src = ROOT / name
        if src.is_file():
            dest = checkout / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWAY_", "VIRTUAL_ENV")) and k not in ("DATABASE_URL",
                                                                           "REDIS_URL")}
    env["GATEWAY_PORT"] = str(port)
    proc = subprocess.Popen(["bash", "-c", command], cwd=checkout, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail("the run command exited:\n" + proc.stdout.read().decode()[-3000:])
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("no /health within 10 minutes")
        assert r.json() == {"status": "ok"}
        assert (checkout / "data" / "gateway.db").exists()
        models = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert models.status_code == 200 and "text/html" in models.headers["content-type"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
