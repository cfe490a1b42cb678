"""Targets with PASS/MISS, and the Markdown report (the JSON is the results dict itself)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Row = dict[str, Any]


def _get(d: Any, *path: str | int) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(str(key))
    return d


def _best_tput(r: dict[str, Any]) -> tuple[str | None, Row]:
    rows = r.get("throughput") or {}
    if not rows:
        return None, {}
    conns = max(rows, key=lambda c: rows[c]["gateway"].get("rps") or 0)
    return conns, rows[conns]


def _target(metric: str, value: Any, target: str, ok: Callable[[Any], bool],
            direct: Any = None, nginx: Any = None) -> Row:
    result = "n/a" if value is None else ("PASS" if ok(value) else "MISS")
    return {"metric": metric, "gateway": value, "direct": direct, "nginx": nginx,
            "target": target, "result": result}


def targets(r: dict[str, Any]) -> list[Row]:
    """Each result next to its target (SQLite + memory limiter, auth and persistence on)."""
    rows: list[Row] = []
    conns, best = _best_tput(r)
    gw = best.get("gateway", {})
    rows.append(_target(f"non-streaming req/s (best, {conns} conns)", gw.get("rps"),
                        "≥ 2,500 (stretch 4,000)", lambda v: v >= 2500,
                        _get(best, "direct", "rps"), _get(best, "nginx", "rps")))
    rows.append(_target("CPU µs per request (same run)", gw.get("cpu_us_per_req"), "≤ 300",
                        lambda v: v <= 300, _get(best, "direct", "cpu_us_per_req"),
                        _get(best, "nginx", "cpu_us_per_req")))
    top = _get(r, "throughput", "256", "gateway", "rps")
    if top is not None and gw.get("rps"):
        rows.append(_target("req/s at 256 conns vs best", top,
                            f"no collapse (≥ 80% of {gw['rps']:.0f})",
                            lambda v: v >= 0.8 * gw["rps"], _get(r, "throughput", "256", "direct",
                                                                "rps"),
                            _get(r, "throughput", "256", "nginx", "rps")))
    seq = r.get("sequential") or {}
    for p, limit in (("p50", 0.5), ("p99", 2.0)):
        rows.append(_target(f"added latency, one at a time, {p} (ms)",
                            _get(seq, "gateway", f"added_{p}_ms"), f"≤ {limit}",
                            lambda v, lim=limit: v <= lim, _get(seq, "direct", f"{p}_ms"),
                            _get(seq, "nginx", f"added_{p}_ms")))
    fixed = r.get("fixed_rate") or {}
    if fixed:
        rows.append(_target("p99 at 50% of capacity (ms)", _get(fixed, "at_50pct", "p99_ms"),
                            "≤ 5", lambda v: v <= 5, _get(fixed, "direct_at_50pct", "p99_ms")))
        rows.append(_target("highest fixed rate with p99 ≤ 5 ms (req/s)", fixed.get("best_rate"),
                            "≥ 1,250 (50% of 2,500)", lambda v: v >= 1250))
    stream = r.get("streaming") or {}
    if stream:
        chunks = max(stream, key=int)
        sat = stream[chunks]["saturation"]
        lat = {c: stream[c]["latency"] for c in stream}
        rows.append(_target(f"SSE events/s at saturation ({chunks} chunks)",
                            _get(sat, "gateway", "events_per_s"), "≥ 20,000",
                            lambda v: v >= 20000, _get(sat, "direct", "events_per_s"),
                            _get(sat, "nginx", "events_per_s")))
        rows.append(_target("CPU µs per SSE event", _get(sat, "gateway", "cpu_us_per_event"),
                            "≤ 50", lambda v: v <= 50, _get(sat, "direct", "cpu_us_per_event"),
                            _get(sat, "nginx", "cpu_us_per_event")))
        for c in sorted(lat, key=int):
            rows.append(_target(f"added TTFT p50, {c} chunks (ms)",
                                _get(lat[c], "gateway", "added_ttft_p50_ms"), "≤ 1",
                                lambda v: v <= 1, _get(lat[c], "direct", "ttft_p50_ms"),
                                _get(lat[c], "nginx", "added_ttft_p50_ms")))
    held = _get(r, "open_streams", "gateway") or {}
    if held:
        rows.append(_target("idle RSS (MB)", held.get("idle_rss_mb"), "≤ 100",
                            lambda v: v <= 100, None, _get(r, "open_streams", "nginx",
                                                           "idle_rss_mb")))
        last = (held.get("points") or [{}])[-1]
        kb = last.get("kb_per_stream")
        per_gb = round(2**20 / kb) if kb else None
        nginx_kb = (_get(r, "open_streams", "nginx", "points") or [{}])[-1].get("kb_per_stream")
        rows.append(_target(f"streams open of {last.get('streams')} asked (within the time budget)",
                            last.get("started"), f"{last.get('streams')}",
                            lambda v: v >= (last.get("streams") or 0), None,
                            ((_get(r, "open_streams", "nginx", "points") or [{}])[-1]
                             .get("started"))))
        rows.append(_target(f"open streams per GB of RSS (marginal, at {last.get('started')})",
                            per_gb,
                            "≥ 10,000", lambda v: v >= 10000, None,
                            round(2**20 / nginx_kb) if nginx_kb else None))
    soak = r.get("soak") or {}
    if soak:
        rows.append(_target("soak RSS growth after warm-up (%)",
                            soak.get("rss_growth_after_warmup_pct"), "≤ 5 (levels off)",
                            lambda v: v <= 5))
        rows.append(_target("soak writer drops", soak.get("writer_dropped"), "0",
                            lambda v: v == 0))
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return [*out, ""]


_LOAD_COLS = ["req/s", "p50 ms", "p99 ms", "CPU µs/req", "CPU cores", "errors",
              "other load core 0"]


def _load_row(name: str, d: Row) -> list[Any]:
    return [name, d.get("rps"), d.get("p50_ms"), d.get("p99_ms"), d.get("cpu_us_per_req"),
            d.get("cpu_cores"), d.get("errors"), d.get("core0_other_load")]


def markdown(r: dict[str, Any]) -> str:
    """The report a person reads; every number is also in the JSON."""
    meta = r.get("meta", {})
    md = [f"# Gateway benchmark — {meta.get('mode')} run, {meta.get('started')}", ""]
    md += [f"- {n}" for n in r.get("notes", [])] + [""]
    md += ["## Targets", ""]
    md += _table(["metric", "gateway", "mock direct", "nginx", "target", "result"],
                 [[t["metric"], t["gateway"], t["direct"], t["nginx"], t["target"], t["result"]]
                  for t in r.get("targets", [])])
    if (mock := r.get("mock_selfcheck")):
        md += [f"Mock alone: {_fmt(mock.get('rps'))} req/s, {_fmt(mock.get('cpu_us_per_req'))} "
               "µs CPU/req (it shares a core with the load generator).", ""]
    md += _sections(r)
    if (backends := r.get("backends")):
        md += [f"## Same with {backends.get('label')}", ""]
        if backends.get("skipped"):
            md += [f"Skipped: {backends['skipped']}", ""]
        md += ["CPU columns are the gateway process; `db+redis µs/req` is PostgreSQL "
               "(postmaster and backends) plus Redis, measured apart.", ""]
        md += _sections(backends, level="###")
    return "\n".join(md)


def _sections(r: dict[str, Any], level: str = "##") -> list[str]:
    md: list[str] = []
    if (seq := r.get("sequential")):
        md += [f"{level} 1. Non-streaming, one request at a time", ""]
        md += _table(["target", "p50 ms", "p99 ms", "added p50", "added p99", "CPU µs/req"],
                     [[n, d.get("p50_ms"), d.get("p99_ms"), d.get("added_p50_ms"),
                       d.get("added_p99_ms"), d.get("cpu_us_per_req")] for n, d in seq.items()])
    if (tput := r.get("throughput")):
        md += [f"{level} 2. Non-streaming throughput (closed loop)", ""]
        rows = []
        for conns, by in tput.items():
            for name, d in by.items():
                row = _load_row(f"{name} @ {conns}", d)
                row.append(_get(d, "writer", "dropped"))
                row.append(d.get("db_redis_cpu_us_per_req"))
                rows.append(row)
        md += _table(["target @ conns", *_LOAD_COLS, "writer drops", "db+redis µs/req"], rows)
    if (burst := r.get("after_burst")):
        g = burst["gateway"]
        md += [f"Right after the {burst['after_conns']}-connection step, without a restart, one "
               f"request at a time: p50 {_fmt(g.get('p50_ms'))} ms, p99 {_fmt(g.get('p99_ms'))} "
               f"ms, {_fmt(g.get('cpu_us_per_req'))} µs CPU/req (fresh gateway: p50 "
               f"{_fmt(burst.get('fresh_p50_ms'))} ms, {_fmt(burst.get('fresh_cpu_us_per_req'))}"
               " µs CPU/req).", ""]
    if (fixed := r.get("fixed_rate")):
        md += [f"{level} 2b. Fixed rate (open loop, latency from the scheduled send time)", "",
               f"Capacity {_fmt(fixed['capacity_rps'])} req/s; highest rate tried with p99 ≤ "
               f"{fixed['budget_p99_ms']} ms: **{_fmt(fixed.get('best_rate'))} req/s**.", ""]
        rows = [_load_row(f"gateway {p['fraction']:.0%}", p) for p in fixed["points"]]
        if fixed.get("direct_at_50pct"):
            rows.append(_load_row("direct at 50%", fixed["direct_at_50pct"]))
        md += _table(["rate", *_LOAD_COLS], rows)
    if (stream := r.get("streaming")):
        md += [f"{level} 3. Streaming (upstream chunks 1 ms apart)", ""]
        rows = []
        for chunks, d in stream.items():
            for name, v in d["latency"].items():
                rows.append([f"{name}, {chunks} chunks", v.get("ttft_p50_ms"),
                             v.get("ttft_p99_ms"), v.get("added_ttft_p50_ms"),
                             v.get("gap_p50_ms"), v.get("gap_p99_ms"), v.get("added_gap_p50_ms"),
                             v.get("added_gap_p99_ms")])
        md += ["One stream at a time:", ""]
        md += _table(["target", "TTFT p50", "TTFT p99", "added TTFT p50", "gap p50", "gap p99",
                      "added gap p50", "added gap p99"], rows)
        rows = []
        for chunks, d in stream.items():
            for name, v in d["saturation"].items():
                rows.append([f"{name}, {chunks} chunks", v.get("conns"), v.get("events_per_s"),
                             v.get("cpu_us_per_event"), v.get("cpu_cores"),
                             v.get("ttft_p99_ms"), v.get("errors"),
                             v.get("db_redis_cpu_us_per_req")])
        md += ["Saturation (many concurrent streams):", ""]
        md += _table(["target", "streams", "events/s", "CPU µs/event", "CPU cores",
                      "TTFT p99 ms", "errors", "db+redis µs/stream"], rows)
    if (anth := r.get("anthropic")):
        md += [f"{level} Anthropic route (OpenAI in, Messages API upstream)", ""]
        rows = []
        for kind, d in anth.items():
            for name in ("direct", "gateway"):
                v = d.get(name, {})
                rows.append([f"{kind} {name}", v.get("rps"), v.get("events_per_s"),
                             v.get("cpu_us_per_req"), v.get("cpu_us_per_event"), v.get("p99_ms"),
                             v.get("errors")])
        md += _table(["run", "req/s", "events/s", "CPU µs/req", "CPU µs/event", "p99 ms",
                      "errors"], rows)
    if (held := r.get("open_streams")):
        md += [f"{level} 4. Open streams (upstream sends one chunk a second)", ""]
        rows = []
        for name, d in held.items():
            for p in d["points"]:
                rows.append([name, d["idle_rss_mb"], p["streams"], p["started"], p["failed"],
                             p["rss_mb"], p["kb_per_stream"], p["cpu_cores_holding"],
                             p["open_seconds"], d.get("rss_after_close_mb"),
                             d.get("upstream_left_open")])
        md += _table(["target", "idle RSS MB", "streams", "started", "failed", "RSS MB",
                      "kB/stream", "CPU cores", "open s", "RSS after close",
                      "upstream left open"], rows)
    if (soak := r.get("soak")):
        md += [f"{level} 5. Soak ({_fmt(soak['seconds'])} s at {_fmt(soak['rate'])} req/s + "
               f"{soak['streams']} looping streams)", ""]
        md += _table(["RSS start", "after warm-up", "end", "max", "growth MB", "slope MB/min",
                      "writer drops", "max pending", "written", "p99 ms", "errors"],
                     [[soak["rss_start_mb"], soak["rss_after_warmup_mb"], soak["rss_end_mb"],
                       soak["rss_max_mb"], soak["rss_growth_after_warmup_mb"],
                       soak["rss_slope_after_warmup_mb_per_min"], soak["writer_dropped"],
                       soak["writer_pending_max"], soak["writer_written"],
                       soak["plain"]["p99_ms"],
                       soak["plain"]["errors"] + soak["stream"]["errors"]]])
    return md
