"""Closed-loop non-streaming load with ``wrk`` (C, epoll) and a Lua script; Python fallback.

The Lua ``done`` hook prints one JSON line with wrk's own latency histogram percentiles
(microsecond resolution), so nothing is scraped from wrk's human-readable output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from bench.procs import LOAD_CORE, taskset

_LUA = """
wrk.method = "POST"
wrk.body = {body}
{headers}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"bytes":%d,'
    .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def _lua_string(value: str) -> str:
    return "[==[" + value + "]==]"


def script(body: Mapping[str, Any], headers: Mapping[str, str]) -> str:
    """The Lua script that POSTs ``body`` with ``headers`` on every request."""
    lines = [f'wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}' for k, v in
             {"Content-Type": "application/json", **headers}.items()]
    return _LUA.format(body=_lua_string(orjson.dumps(body).decode()), headers="\n".join(lines))


def run(port: int, path: str, body: Mapping[str, Any], headers: Mapping[str, str], *,
        conns: int, duration: float, threads: int = 1, timeout: float = 5.0) -> dict[str, Any]:
    """Run wrk against 127.0.0.1:port and return requests/s, latency percentiles, errors."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script(body, headers))
        lua = Path(fh.name)
    secs = max(1, round(duration))
    argv = [*taskset(LOAD_CORE), "wrk", f"-t{min(threads, conns)}", f"-c{conns}", f"-d{secs}s",
            f"--timeout={timeout:g}s", "-s", str(lua), f"http://127.0.0.1:{port}{path}"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60,
                              check=False)
    finally:
        lua.unlink(missing_ok=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    raw = json.loads(line[len("WRKJSON "):])
    duration_s = raw["duration_us"] / 1e6
    errors = {k: raw[k] for k in ("connect", "read", "write", "status", "timeout") if raw[k]}
    ok = raw["requests"] - raw["status"]
    return {
        "tool": "wrk", "conns": conns, "duration_s": round(duration_s, 3),
        "ok": ok, "errors": sum(errors.values()), "error_kinds": errors,
        "rps": round(ok / duration_s, 1) if duration_s else None,
        "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000, "p999_ms": raw["p999_us"] / 1000,
        "max_ms": raw["max_us"] / 1000, "mean_ms": round(raw["mean_us"] / 1000, 3),
    }
