"""What the writer's crash spool costs per call, measured in isolation (the full benchmark
on a shared machine moves by more than the spool's share from run to run).

``python -m bench.spool_cost [--rows 20000]`` times, for a row shaped like a chat call's:
the event loop's share (``Spool.started`` + ``append``, which encodes and writes a finished
call's row at once), and the whole spool's CPU per row (that, plus the thread's fdatasync
and bookkeeping, in 100 ms batches at the target rate of 2,500 calls/s). Both run on this
process's CPU clock.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from storage.models import utcnow
from storage.spool import Spool

TARGET_RATE = 2500  # calls/s: the benchmark's non-streaming target on one core


def _row(i: int) -> dict[str, Any]:
    now = utcnow()
    text = "Tell me about the weather in Paris today, briefly. " * 2
    return {"id": uuid.uuid4(), "user_id": uuid.uuid4(), "api_key_id": uuid.uuid4(),
            "request_id": f"req_{uuid.uuid4().hex}", "source": "v1", "model": "gpt-4o-mini",
            "provider": "openai", "upstream_model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": "You are helpful."},
                         {"role": "user", "content": text}],
            "parameters": {"temperature": 0.7, "max_tokens": 64}, "prompt": text,
            "response": "It is sunny and mild, around 18 degrees. " * 3, "tool_calls": None,
            "finish_reason": "stop", "status": "completed", "prompt_tokens": 30,
            "completion_tokens": 40, "total_tokens": 70, "tokens_estimated": False,
            "processing_time_ms": 12, "time_to_first_token_ms": 3, "error": None,
            "attempts": 1, "created_at": now, "started_at": now, "completed_at": now,
            "updated_at": now}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args(argv)
    rows = [_row(i) for i in range(args.rows)]
    started = [{k: r[k] for k in ("id", "user_id", "api_key_id", "request_id", "source",
                                  "model", "provider", "upstream_model", "prompt",
                                  "created_at")} for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        # The loop's share: what a call adds on the event loop with the spool on.
        spool = Spool(Path(tmp) / "loop", sync_seconds=3600)  # thread idle: loop side only
        spool.open()
        t0 = time.process_time()
        for s, r in zip(started, rows, strict=True):
            spool.started(s)
            spool.append(("request", r))
        loop_us = (time.process_time() - t0) / len(rows) * 1e6
        spool._pending.clear()
        spool.close()

        # Loop and thread together: the same rows, then the thread's turn, per 100 ms batch.
        spool = Spool(Path(tmp) / "thread", sync_seconds=3600)
        spool.open()
        batch = TARGET_RATE // 10
        t0, w0 = time.process_time(), time.perf_counter()
        for start in range(0, len(rows), batch):
            for s, r in zip(started[start:start + batch], rows[start:start + batch],
                            strict=True):
                spool.started(s)
                spool.append(("request", r))
            spool._sync()
        thread_us = (time.process_time() - t0) / len(rows) * 1e6
        wall_ms = (time.perf_counter() - w0) / (len(rows) / batch) * 1e3
        size = sum(p.stat().st_size for p in (Path(tmp) / "thread").glob("*.jsonl"))
        spool.committed(len(rows))
        spool.close()
    print(f"rows: {len(rows)}, {size / len(rows):.0f} bytes spooled per call "
          "(a call started and ended within one turn spools only its row)")
    print(f"event loop, per call: {loop_us:.2f} µs CPU")
    print(f"loop and thread, per call: {thread_us:.2f} µs CPU (batches of {batch}, "
          f"{wall_ms:.2f} ms wall per batch incl. fdatasync)")


if __name__ == "__main__":
    main()
