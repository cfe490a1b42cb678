"""A gateway that serves API keys does not load what only other features use: python-jose
(with cryptography, ~10 MB of RSS) comes with the first session token, aiosmtplib with the
first mail, alembic only when migrating (bench/README.md has the measurements)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Builds the app and runs its whole lifespan on a migrated SQLite data dir, then issues and
# checks one session token; prints which of the lazy modules were loaded at each point.
SCRIPT = """
import asyncio, json, sys
from gateway.app import create_app
from gateway.settings import load_settings

LAZY = ("jose", "cryptography", "aiosmtplib", "alembic")

async def main():
    app = create_app(load_settings())
    inbox, outbox = asyncio.Queue(), asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"},
                                    "state": {}}, inbox.get, outbox.put))
    started = (await outbox.get())["type"]
    up = [m for m in LAZY if m in sys.modules]
    jwt = app.state.jwt
    user = __import__("uuid").uuid4()
    checked = jwt.verify(jwt.issue(user)) == user
    after_token = [m for m in LAZY if m in sys.modules]
    await inbox.put({"type": "lifespan.shutdown"})
    await outbox.get()
    await task
    print(json.dumps({"started": started, "up": up, "checked": checked,
                      "after_token": after_token}))

asyncio.run(main())
"""


def test_serving_loads_neither_jose_nor_smtp_nor_alembic(tmp_path: Path) -> None:
    env = {"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_DEMO_ENABLED": "false",
           "GATEWAY_ENV": "development", "PATH": "/usr/bin:/bin"}
    migrated = subprocess.run([sys.executable, "-m", "gateway.cli", "migrate"], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=120,
                              check=False)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    # As `gateway serve` runs the server: migrated beforehand, in another process.
    env["GATEWAY_MIGRATE_ON_START"] = "false"
    run = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["started"] == "lifespan.startup.complete"
    assert seen["up"] == []
    # The first session token loads python-jose, and tokens work as before.
    assert seen["checked"] is True
    assert "jose" in seen["after_token"] and "aiosmtplib" not in seen["after_token"]
