"""Targets with PASS/MISS, and the Markdown report (the JSON is the results dict itself)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

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


@dataclass(frozen=True)
class Threshold:
    """A headline metric: what it is called, its target as written, and the test of a value."""

    name: str
    target: str
    ok: Callable[[Any], bool]


# The one table of targets (one gateway core, SQLite + memory limiter, auth and persistence
# on); `targets` (one run) and bench.median (several runs) both judge values against it.
THRESHOLDS: dict[str, Threshold] = {
    "rps": Threshold("non-streaming req/s", "≥ 2,500 (stretch 4,000)", lambda v: v >= 2500),
    "cpu_us_per_req": Threshold("CPU µs per request (same run)", "≤ 300", lambda v: v <= 300),
    "rps_256_pct": Threshold("req/s at 256 conns, % of best", "≥ 80 (no collapse)",
                             lambda v: v >= 80),
    "added_p50_ms": Threshold("added latency, one at a time, p50 (ms)", "≤ 0.5",
                              lambda v: v <= 0.5),
    "added_p99_ms": Threshold("added latency, one at a time, p99 (ms)", "≤ 2.0",
                              lambda v: v <= 2.0),
    "fixed_p99_ms": Threshold("p99 at 50% of capacity (ms)", "≤ 5", lambda v: v <= 5),
    "fixed_best_rate": Threshold("highest fixed rate with p99 ≤ 5 ms (req/s)",
                                 "≥ 1,250 (50% of 2,500)", lambda v: v >= 1250),
    "events_per_s": Threshold("SSE events/s at saturation", "≥ 20,000", lambda v: v >= 20000),
    "cpu_us_per_event": Threshold("CPU µs per SSE event", "≤ 50", lambda v: v <= 50),
    "added_ttft_p50_ms": Threshold("added TTFT p50 (ms)", "≤ 1", lambda v: v <= 1),
    "idle_rss_mb": Threshold("idle RSS (MB)", "≤ 100", lambda v: v <= 100),
    "streams_open_pct": Threshold("% of streams open within the time budget", "100",
                                  lambda v: v >= 100),
    "streams_per_gb": Threshold("marginal open streams per GB of RSS", "≥ 10,000",
                                lambda v: v >= 10000),
    "soak_rss_growth_pct": Threshold("soak RSS growth after warm-up (%)", "≤ 5 (levels off)",
                                     lambda v: v <= 5),
    "soak_writer_drops": Threshold("soak writer drops", "0", lambda v: v == 0),
    # Issue 17: the gateway against the bare relay (bench/bare_relay.py) of the same run.
    "rps_x_bare": Threshold("non-streaming req/s ÷ bare relay, best of 16/64 conns", "≥ 0.7",
                            lambda v: v >= 0.7),
    "added_p50_over_bare_ms": Threshold("p50 one at a time − bare relay's (ms)", "≤ 0.2",
                                        lambda v: v <= 0.2),
    "stream_rps_x_bare": Threshold("streamed req/s at saturation ÷ bare relay", "≥ 0.8",
                                   lambda v: v >= 0.8),
    "events_x_bare": Threshold("SSE events/s at saturation ÷ bare relay", "≥ 0.8",
                               lambda v: v >= 0.8),
    "cpu_event_x_bare": Threshold("CPU µs per SSE event ÷ bare relay", "≤ 1.25",
                                  lambda v: v <= 1.25),
    "backends_rps_x_bare": Threshold(
        "PostgreSQL + Redis: non-streaming req/s ÷ bare relay, best of 16/64 conns", "≥ 0.6",
        lambda v: v >= 0.6),
}
# The metrics judged as the gateway's ratio to (or difference from) the bare relay.
VERSUS_BARE = ("rps_x_bare", "added_p50_over_bare_ms", "stream_rps_x_bare", "events_x_bare",
               "cpu_event_x_bare", "backends_rps_x_bare")
# Absolute metrics that also read as a ratio of the gateway's figure to each reference's.
RATIOS = ("rps", "cpu_us_per_req", "events_per_s", "cpu_us_per_event", "idle_rss_mb")


class Reading(NamedTuple):
    """One run's value of a THRESHOLDS metric, with the mock-direct and nginx references."""

    metric: str
    gateway: Any
    direct: Any = None
    nginx: Any = None
    which: str = ""  # tells apart rows of one metric ("20 chunks"): part of the row's identity
    note: str = ""  # this run's context ("best at 16 conns"): not part of it
    bare: Any = None  # the bare relay's figure (bench/bare_relay.py)


def label(metric: str, which: str = "", note: str = "") -> str:
    return THRESHOLDS[metric].name + (f", {which}" if which else "") + (
        f" ({note})" if note else "")


def verdict(metric: str, value: Any) -> str:
    return "n/a" if value is None else ("PASS" if THRESHOLDS[metric].ok(value) else "MISS")


def ratio(part: Any, whole: Any) -> float | None:
    """``part / whole`` to three decimals, or None when either is missing (or ``whole`` 0)."""
    return round(part / whole, 3) if part is not None and whole else None


def ratios(x: Reading) -> tuple[float | None, float | None, float | None]:
    """The gateway's figure over the bare relay's, nginx's and the mock's (for RATIOS)."""
    if x.metric not in RATIOS:
        return None, None, None
    return ratio(x.gateway, x.bare), ratio(x.gateway, x.nginx), ratio(x.gateway, x.direct)


def best_rps(r: dict[str, Any], name: str, conns: tuple[str, ...] = ("16", "64")) -> Any:
    """``name``'s best non-streaming req/s over ``conns`` connections (over every count run
    when none of those was)."""
    rows = r.get("throughput") or {}
    counts = [c for c in rows if c in conns] or list(rows)
    values = [v for c in counts if (v := _get(rows, c, name, "rps")) is not None]
    return max(values, default=None)


def versus_bare(r: dict[str, Any], *, backends: bool = False) -> list[Reading]:
    """Issue 17's ratios: the gateway next to the bare relay measured in the same run.
    ``backends``: ``r`` is the PostgreSQL + Redis part, judged on throughput alone."""
    rps = ratio(best_rps(r, "gateway"), best_rps(r, "bare"))
    if backends:
        return [Reading("backends_rps_x_bare", rps)] if rps is not None else []
    out: list[Reading] = []
    if rps is not None:
        out.append(Reading("rps_x_bare", rps))
    seq = r.get("sequential") or {}
    gw_p50, bare_p50 = _get(seq, "gateway", "p50_ms"), _get(seq, "bare", "p50_ms")
    if gw_p50 is not None and bare_p50 is not None:
        out.append(Reading("added_p50_over_bare_ms", round(gw_p50 - bare_p50, 3)))
    stream = r.get("streaming") or {}
    for c in sorted(stream, key=int):
        sat = stream[c]["saturation"]
        for metric, key in (("stream_rps_x_bare", "rps"), ("events_x_bare", "events_per_s"),
                            ("cpu_event_x_bare", "cpu_us_per_event")):
            value = ratio(_get(sat, "gateway", key), _get(sat, "bare", key))
            if value is not None:
                out.append(Reading(metric, value, which=f"{c} chunks"))
    backend = r.get("backends") or {}
    if backend and not backend.get("skipped"):
        out += versus_bare(backend, backends=True)
    return out


def _pct(part: Any, whole: Any) -> float | None:
    return round(100 * part / whole, 1) if part is not None and whole else None


def _pct_at_256(r: dict[str, Any], name: str) -> float | None:
    """Requests/s at 256 connections as a % of the best over all connection counts."""
    rows = r.get("throughput") or {}
    best = max((_get(by, name, "rps") or 0 for by in rows.values()), default=0)
    return _pct(_get(rows, "256", name, "rps"), best)


def _last_point(held: Row) -> Row:
    return (held.get("points") or [{}])[-1]


def _per_gb(point: Row) -> int | None:
    kb = point.get("kb_per_stream")
    return round(2**20 / kb) if kb else None


def readings(r: dict[str, Any], *, backends: bool = False) -> list[Reading]:
    """The headline numbers of one run (or, ``backends``, of its PostgreSQL + Redis part),
    the ratios to the bare relay last."""
    out: list[Reading] = []
    conns, best = _best_tput(r)
    gw = best.get("gateway", {})
    out.append(Reading("rps", gw.get("rps"), _get(best, "direct", "rps"),
                       _get(best, "nginx", "rps"), note=f"best at {conns} conns" if conns else "",
                       bare=_get(best, "bare", "rps")))
    out.append(Reading("cpu_us_per_req", gw.get("cpu_us_per_req"),
                       _get(best, "direct", "cpu_us_per_req"),
                       _get(best, "nginx", "cpu_us_per_req"),
                       bare=_get(best, "bare", "cpu_us_per_req")))
    if _get(r, "throughput", "256") is not None:
        out.append(Reading("rps_256_pct", *(_pct_at_256(r, n)
                                            for n in ("gateway", "direct", "nginx"))))
    seq = r.get("sequential") or {}
    for p in ("p50", "p99"):
        out.append(Reading(f"added_{p}_ms", _get(seq, "gateway", f"added_{p}_ms"),
                           _get(seq, "direct", f"{p}_ms"), _get(seq, "nginx", f"added_{p}_ms"),
                           bare=_get(seq, "bare", f"added_{p}_ms")))
    fixed = r.get("fixed_rate") or {}
    if fixed:
        out.append(Reading("fixed_p99_ms", _get(fixed, "at_50pct", "p99_ms"),
                           _get(fixed, "direct_at_50pct", "p99_ms")))
        out.append(Reading("fixed_best_rate", fixed.get("best_rate")))
    stream = r.get("streaming") or {}
    if stream:
        chunks = max(stream, key=int)
        sat = stream[chunks]["saturation"]
        out.append(Reading("events_per_s", *(_get(sat, n, "events_per_s")
                                             for n in ("gateway", "direct", "nginx")),
                           note=f"{chunks} chunks", bare=_get(sat, "bare", "events_per_s")))
        out.append(Reading("cpu_us_per_event", *(_get(sat, n, "cpu_us_per_event")
                                                 for n in ("gateway", "direct", "nginx")),
                           bare=_get(sat, "bare", "cpu_us_per_event")))
        for c in sorted(stream, key=int):
            lat = stream[c]["latency"]
            out.append(Reading("added_ttft_p50_ms", _get(lat, "gateway", "added_ttft_p50_ms"),
                               _get(lat, "direct", "ttft_p50_ms"),
                               _get(lat, "nginx", "added_ttft_p50_ms"), which=f"{c} chunks",
                               bare=_get(lat, "bare", "added_ttft_p50_ms")))
    held = _get(r, "open_streams", "gateway") or {}
    if held:
        ngx = _get(r, "open_streams", "nginx") or {}
        last, ngx_last = _last_point(held), _last_point(ngx)
        out.append(Reading("idle_rss_mb", held.get("idle_rss_mb"), None, ngx.get("idle_rss_mb")))
        out.append(Reading("streams_open_pct", _pct(last.get("started"), last.get("streams")),
                           None, _pct(ngx_last.get("started"), ngx_last.get("streams")),
                           note=f"{fmt(last.get('streams'))} asked"))
        out.append(Reading("streams_per_gb", _per_gb(last), None, _per_gb(ngx_last),
                           note=f"at {fmt(last.get('started'))} open"))
    soak = r.get("soak") or {}
    if soak:
        out.append(Reading("soak_rss_growth_pct", soak.get("rss_growth_after_warmup_pct")))
        out.append(Reading("soak_writer_drops", soak.get("writer_dropped")))
    return out + versus_bare(r, backends=backends)


def targets(r: dict[str, Any]) -> list[Row]:
    """Each headline result of one run next to its target, with PASS/MISS."""
    rows = []
    for x in readings(r):
        x_bare, x_nginx, x_direct = ratios(x)
        rows.append({"metric": label(x.metric, x.which, x.note), "key": x.metric,
                     "versus_bare": x.metric in VERSUS_BARE, "gateway": x.gateway,
                     "bare": x.bare, "direct": x.direct, "nginx": x.nginx, "x_bare": x_bare,
                     "x_nginx": x_nginx, "x_direct": x_direct,
                     "target": THRESHOLDS[x.metric].target,
                     "result": verdict(x.metric, x.gateway)})
    return rows


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
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
    rows = r.get("targets", [])
    versus = [t for t in rows if t.get("versus_bare")]
    if versus:
        md += ["## Against the bare relay (issue 17)", "",
               "The gateway's figure over the bare relay's measured in the same run "
               "(bench/bare_relay.py), or for latency the difference.", ""]
        md += table(["metric", "gateway vs bare", "target", "result"],
                    [[t["metric"], t["gateway"], t["target"], t["result"]] for t in versus])
    md += ["## Targets", ""]
    md += table(["metric", "gateway", "bare relay", "mock direct", "nginx", "÷ bare", "÷ nginx",
                 "÷ direct", "target", "result"],
                [[t["metric"], t["gateway"], t.get("bare"), t["direct"], t["nginx"],
                  t.get("x_bare"), t.get("x_nginx"), t.get("x_direct"), t["target"],
                  t["result"]] for t in rows if not t.get("versus_bare")])
    if (mock := r.get("mock_selfcheck")):
        md += [f"Mock alone: {fmt(mock.get('rps'))} req/s, {fmt(mock.get('cpu_us_per_req'))} "
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
        md += table(["target", "p50 ms", "p99 ms", "added p50", "added p99", "CPU µs/req"],
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
        md += table(["target @ conns", *_LOAD_COLS, "writer drops", "db+redis µs/req"], rows)
    if (burst := r.get("after_burst")):
        g = burst["gateway"]
        md += [f"Right after the {burst['after_conns']}-connection step, without a restart, one "
               f"request at a time: p50 {fmt(g.get('p50_ms'))} ms, p99 {fmt(g.get('p99_ms'))} "
               f"ms, {fmt(g.get('cpu_us_per_req'))} µs CPU/req (fresh gateway: p50 "
               f"{fmt(burst.get('fresh_p50_ms'))} ms, {fmt(burst.get('fresh_cpu_us_per_req'))}"
               " µs CPU/req).", ""]
    if (fixed := r.get("fixed_rate")):
        md += [f"{level} 2b. Fixed rate (open loop, latency from the scheduled send time)", "",
               f"Capacity {fmt(fixed['capacity_rps'])} req/s; highest rate tried with p99 ≤ "
               f"{fixed['budget_p99_ms']} ms: **{fmt(fixed.get('best_rate'))} req/s**.", ""]
        rows = [_load_row(f"gateway {p['fraction']:.0%}", p) for p in fixed["points"]]
        if fixed.get("direct_at_50pct"):
            rows.append(_load_row("direct at 50%", fixed["direct_at_50pct"]))
        md += table(["rate", *_LOAD_COLS], rows)
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
        md += table(["target", "TTFT p50", "TTFT p99", "added TTFT p50", "gap p50", "gap p99",
                      "added gap p50", "added gap p99"], rows)
        rows = []
        for chunks, d in stream.items():
            for name, v in d["saturation"].items():
                rows.append([f"{name}, {chunks} chunks", v.get("conns"), v.get("events_per_s"),
                             v.get("cpu_us_per_event"), v.get("cpu_cores"),
                             v.get("ttft_p99_ms"), v.get("errors"),
                             v.get("db_redis_cpu_us_per_req")])
        md += ["Saturation (many concurrent streams):", ""]
        md += table(["target", "streams", "events/s", "CPU µs/event", "CPU cores",
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
        md += table(["run", "req/s", "events/s", "CPU µs/req", "CPU µs/event", "p99 ms",
                      "errors"], rows)
    if (res := r.get("resilience")):
        summary = res["summary"]
        md += [f"{level} Routing layer on the happy path ({summary['conns']} conns; two "
               "interleaved rounds)", ""]
        rows = [[name, *summary[name]["p50_ms"], *summary[name]["rps"],
                 *summary[name]["cpu_us_per_req"]]
                for name in ("plain", "balanced", "dead_primary") if name in summary]
        md += table(["route", "p50 ms (1)", "p50 ms (2)", "req/s (1)", "req/s (2)",
                      "CPU µs/req (1)", "CPU µs/req (2)"], rows)
    if (held := r.get("open_streams")):
        md += [f"{level} 4. Open streams (upstream sends one chunk a second)", ""]
        rows = []
        for name, d in held.items():
            for p in d["points"]:
                rows.append([name, d["idle_rss_mb"], p["streams"], p["started"], p["failed"],
                             p["rss_mb"], p["kb_per_stream"], p["cpu_cores_holding"],
                             p["open_seconds"], d.get("rss_after_close_mb"),
                             d.get("upstream_left_open")])
        md += table(["target", "idle RSS MB", "streams", "started", "failed", "RSS MB",
                      "kB/stream", "CPU cores", "open s", "RSS after close",
                      "upstream left open"], rows)
    if (soak := r.get("soak")):
        md += [f"{level} 5. Soak ({fmt(soak['seconds'])} s at {fmt(soak['rate'])} req/s + "
               f"{soak['streams']} looping streams)", ""]
        md += table(["RSS start", "after warm-up", "end", "max", "growth MB", "slope MB/min",
                      "writer drops", "max pending", "written", "p99 ms", "errors"],
                     [[soak["rss_start_mb"], soak["rss_after_warmup_mb"], soak["rss_end_mb"],
                       soak["rss_max_mb"], soak["rss_growth_after_warmup_mb"],
                       soak["rss_slope_after_warmup_mb_per_min"], soak["writer_dropped"],
                       soak["writer_pending_max"], soak["writer_written"],
                       soak["plain"]["p99_ms"],
                       soak["plain"]["errors"] + soak["stream"]["errors"]]])
    return md
