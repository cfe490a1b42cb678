"""Profile the gateway under load with py-spy and summarise where its CPU goes.

``python -m bench profile nonstream|stream`` starts the mock and a gateway exactly as the
benchmark does, drives it (wrk for non-streaming, the streaming client for SSE), records
the gateway with ``py-spy record --format raw`` (collapsed stacks, idle frames dropped)
and prints: self time by library, the top functions by self and by inclusive time, and the
hottest lines of our own code (gateway/, providers/, storage/) by inclusive time.
"""

from __future__ import annotations

import linecache
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import load, procs, services, wrk
from bench.harness import openai_body
from bench.services import NONSTREAM, PACED, Backends

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+|<[^>]+>)(?::(?P<line>\d+))?\)$")
OWN = ("gateway/", "providers/", "storage/")
BUCKETS = [("gateway/", "ours: gateway"), ("providers/", "ours: providers"),
           ("storage/", "ours: storage"), ("sse_starlette/", "sse-starlette"),
           ("starlette/", "starlette"), ("uvicorn/", "uvicorn"), ("httpx/", "httpx"),
           ("httpcore/", "httpcore"), ("h11/", "h11 (httpcore's parser)"), ("anyio/", "anyio"),
           ("sqlalchemy/", "sqlalchemy"), ("aiosqlite/", "aiosqlite"), ("sqlmodel/", "sqlmodel"),
           ("asyncpg/", "asyncpg"), ("redis/", "redis-py"), ("tiktoken", "tiktoken"),
           ("pydantic", "pydantic"), ("jose/", "python-jose"),
           ("asyncio/", "asyncio (stdlib)"),
           ("uvloop/", "uvloop"), ("logging/", "logging (stdlib)"), ("uuid", "uuid (stdlib)"),
           ("email", "email (stdlib)"), ("json/", "json (stdlib)"), ("re/", "re (stdlib)")]


# The phases of a call, by the innermost of these functions on the stack (func prefix).
PHASES = [
    ("Authenticator.", "auth (key hash + cache)"), ("json_object", "request body + orjson"),
    ("parse_chat", "validation (parse_chat)"), ("TokenCounter.", "token counts"),
    # Call (gateway/call.py) holds the lifecycle every kind of call shares; ChatCall, chat's part.
    ("ChatCall.__init__", "call setup"), ("Call.__init__", "call setup"),
    ("Call.admit", "rate limiter (admit)"),
    # The upstream call itself, under the routing layer that chose and judged it.
    ("HTTPStreamProvider.", "upstream call (provider + transport)"),
    ("OpenAIProvider.", "upstream call (provider + transport)"),
    ("TogetherProvider.", "upstream call (provider + transport)"),
    ("AnthropicProvider.", "upstream call (provider + transport)"),
    ("DemoProvider.", "upstream call (provider + transport)"),
    ("Router.", "routing (balancer, breakers, retries)"),
    ("ChatCall.complete", "non-streaming: the call (ours)"),
    ("ChatCall.open", "stream: open (ours)"),
    ("ChatCall.relay", "stream: relay (ours)"), ("ChatCall._count", "usage"),
    ("Call.finish", "finish: release + record + enqueue"), ("ChunkEncoder.", "SSE encoding"),
    ("_sse", "SSE generator (ours, other)"), ("EventStreamResponse.", "SSE response"),
    ("_complete", "non-streaming: JSON response"), ("Envelope.", "envelope (ids, headers)"),
    ("ModelCatalog.", "model routing"), ("chat_completions", "route handler (other)"),
    ("RequestWriter.", "writer task (batched inserts)"), ("LeaseRenewer.", "lease renewer"),
    ("RequestResponseCycle.", "uvicorn ASGI cycle + starlette"),
    ("HttpToolsProtocol.", "uvicorn HTTP protocol (parse, write)"),
    ("_connection_worker_thread", "SQLite thread (aiosqlite)"),
]


def phase(frames: list[Frame]) -> str:
    for func, file, _ in reversed(frames):
        for prefix, name in PHASES:
            if func.startswith(prefix) and (file.startswith(OWN) or "/" in file):
                return name
    return "event loop (uvloop C, callbacks)" if frames[-1][0] == "Runner.run" else "other"


def bucket(file: str) -> str:
    for prefix, name in BUCKETS:
        if prefix in file:
            return name
    return "other: " + file.split("/")[0]


Frame = tuple[str, str, int]
# Blocking calls py-spy cannot tell from work (a thread parked in C, e.g. aiosqlite's
# worker in SimpleQueue.get): a leaf line whose source holds one of these is idle.
_BLOCKING = (".get()", ".wait(", ".acquire(", "select(", ".poll(", "sleep(")


def _source(file: str, line: int) -> str:
    for base in sys.path:
        path = Path(base) / file
        if path.is_file():
            return linecache.getline(str(path), line)
    return ""


def is_idle(leaf: Frame) -> bool:
    text = _source(leaf[1], leaf[2]) if leaf[2] else ""
    return any(b in text for b in _BLOCKING)


def parse(raw: str) -> list[tuple[str, list[Frame], int]]:
    """Collapsed stacks → [(thread, frames root→leaf as (func, file, line), count)]."""
    stacks = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        thread = "?"
        for part in stack.split(";"):
            if part.startswith("thread ("):
                thread = part.split(": ", 1)[-1]
                continue
            m = _FRAME.match(part.strip())
            if m:
                frames.append((m["func"], m["file"], int(m["line"] or 0)))
            else:
                frames.append((part.strip(), "?", 0))
        if frames:
            stacks.append((thread, frames, int(count)))
    return stacks


def summarise(raw: str, top: int = 25) -> dict[str, Any]:
    """Self time by library, top functions (self, inclusive), hottest own lines."""
    stacks = [s for s in parse(raw) if not is_idle(s[1][-1])]
    total = sum(c for _, _, c in stacks) or 1
    threads: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    by_bucket: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    own_lines: Counter[str] = Counter()
    for thread, frames, count in stacks:
        threads[thread] += count
        phases[phase(frames)] += count
        leaf = frames[-1]
        by_bucket[bucket(leaf[1])] += count
        self_fn[f"{leaf[0]} ({leaf[1]})"] += count
        for key in {f"{f} ({file})" for f, file, _ in frames}:
            incl_fn[key] += count
        for key in {f"{file}:{line} {f}" for f, file, line in frames
                    if file.startswith(OWN)}:
            own_lines[key] += count

    def pct(c: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100.0 * v / total, 1)) for k, v in c.most_common(top)]

    return {"samples": total, "threads": pct(threads), "phases": pct(phases),
            "self_by_library": pct(by_bucket),
            "self_functions": pct(self_fn), "inclusive_functions": pct(incl_fn),
            "own_lines_inclusive": pct(own_lines)}


def _short(path: str) -> str:
    """Paths as py-spy prints them: relative to site-packages, the stdlib or the repo."""
    for marker in ("site-packages/", "/lib/python3.11/", str(services.REPO) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def pyinstrument_stacks(tree: dict[str, Any], unit_s: float = 1e-5) -> str:
    """pyinstrument's JSON frame tree → collapsed stacks (count = self time / ``unit_s``),
    with the event loop's own time (uvloop's C loop, idle wait included) left out."""
    lines: list[str] = []

    def walk(frame: dict[str, Any], path: list[str]) -> None:
        func = frame.get("function")
        if frame.get("class_name"):
            func = f"{frame['class_name']}.{func}"
        name = f"{func} ({_short(frame.get('file_path') or '?')}:{frame.get('line_no') or 0})"
        here = [*path, name]
        children = frame.get("children") or []
        own = frame.get("time", 0.0) - sum(c.get("time", 0.0) for c in children)
        if own > 0 and frame.get("function") not in ("Runner.run", "run_until_complete",
                                                      "[self]", "[await]"):
            lines.append(f"{';'.join(here)} {round(own / unit_s)}")
        for child in children:
            walk(child, here)

    walk(tree["root_frame"], ["thread (0): MainThread"])
    return "\n".join(line for line in lines if not line.endswith(" 0"))


def render(summary: dict[str, Any]) -> str:
    out = [f"py-spy samples: {summary['samples']} busy samples over all threads (idle ones "
           "and threads parked in a blocking call excluded); percentages are of those."]
    for key, title in (("threads", "Busy samples by thread"),
                       ("phases", "Where a call's time goes (innermost phase on the stack)"),
                       ("self_by_library", "Self time by library"),
                       ("self_functions", "Top functions by self time"),
                       ("inclusive_functions", "Top functions by inclusive time"),
                       ("own_lines_inclusive", "Our code: hottest lines (inclusive)")):
        out += ["", f"## {title}", "", "| % | where |", "|---|---|"]
        out += [f"| {p} | `{k}` |" for k, p in summary[key]]
    return "\n".join(out)


def _drive(kind: str, gateway: procs.Proc, key: str, seconds: float, conns: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    if kind == "nonstream" and wrk.available():
        wrk.run(gateway.port, "/v1/chat/completions", openai_body(NONSTREAM, False), headers,
                conns=conns, duration=seconds)
        return
    from bench.client import build_request
    from bench.runner import _loop_run

    stream = kind == "stream"
    body = openai_body(PACED[64] if stream else NONSTREAM, stream)
    request = build_request("/v1/chat/completions", body, port=gateway.port, headers=headers)
    _loop_run(load.closed_loop("127.0.0.1", gateway.port, request, conns=conns,
                               duration=seconds, stream=stream))


def run(kind: str, *, seconds: float = 20, rate: int = 250, conns: int = 64,
        out_dir: Path | None = None, variant: str | None = None,
        profiler: str = "py-spy") -> Path:
    """Profile one kind of load; write the raw stacks and the summary; return the summary.

    py-spy (default) samples from outside; its default blocking mode stops the process at
    each sample, which over-weights frames that make system calls (on Python 3.11
    ``asyncio.get_running_loop`` calls ``getpid()``). pyinstrument samples from inside
    (wall clock, main thread, some overhead) and has no such bias: compare the two.
    """
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if profiler == "py-spy" and not Path(pyspy).exists():
        raise SystemExit("py-spy not found: pip install py-spy")
    procs.raise_nofile()
    procs.pin_self(procs.LOAD_CORE)
    out_dir = out_dir or Path(__file__).resolve().parent / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gateway-profile-"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tag = f"-{variant.replace(',', '+')}" if variant else ""
    raw_path = out_dir / f"profile-{kind}{tag}-{profiler}-{stamp}.raw"
    tree_path = work / "pyinstrument.json"
    wrap = ([sys.executable, "-m", "pyinstrument", "-r", "json", "-o", str(tree_path),
             "-i", "0.0005"] if profiler == "pyinstrument" else None)
    mock = services.start_mock(work)
    gateway = None
    try:
        env = services.gateway_env(work, mock.port, Backends("sqlite"), variant)
        key = services.prepare_gateway(env)
        gateway = services.start_gateway(env, work, "sqlite", wrap=wrap)
        _drive(kind, gateway, key, 3, conns)  # warm-up
        with procs.CpuMeter(gateway) as cpu:
            if profiler == "py-spy":
                driver = threading.Thread(target=_drive,
                                          args=(kind, gateway, key, seconds + 3, conns))
                driver.start()
                time.sleep(1.5)
                subprocess.run([*procs.taskset(procs.LOAD_CORE), pyspy, "record", "--pid",
                                str(gateway.popen.pid), "--duration", str(int(seconds)),
                                "--rate", str(rate), "--threads", "--format", "raw",
                                "-o", str(raw_path)], check=True, capture_output=True)
                driver.join()
            else:
                _drive(kind, gateway, key, seconds, conns)
        if profiler == "pyinstrument":
            # uvicorn re-raises SIGTERM after shutdown (no output); SIGINT ends in a
            # KeyboardInterrupt that pyinstrument catches before writing its report.
            gateway.popen.send_signal(signal.SIGINT)
            gateway.popen.wait(60)
            import orjson

            raw_path.write_text(pyinstrument_stacks(orjson.loads(tree_path.read_bytes())))
    finally:
        if gateway is not None:
            gateway.stop()
        mock.stop()
        if profiler != "pyinstrument" or raw_path.exists():
            shutil.rmtree(work, ignore_errors=True)
    text = render(summarise(raw_path.read_text()))
    how = (f"py-spy {rate} Hz" if profiler == "py-spy"
           else "pyinstrument 0.5 ms, whole process life incl. start-up and warm-up")
    text = (f"# Gateway profile: {kind}{' (variant ' + variant + ')' if variant else ''}, "
            f"{conns} connections, {seconds:.0f} s, {how}\n\n"
            f"Gateway CPU while recording: {cpu.utilisation:.2f} cores.\n\n" + text)
    md_path = raw_path.with_suffix(".md")
    md_path.write_text(text + "\n")
    print(text)
    print(f"\nraw stacks: {raw_path}\nsummary: {md_path}", file=sys.stderr)
    return md_path
