"""The report's judgement against the bare relay (issue 17), on planted results: each
ratio is the gateway's figure over the bare relay's of the same run, judged PASS/MISS at
the issue's bounds, in one run's report and in the median of several."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from bench import median, report


def _load(rps: float, cpu: float = 500.0) -> dict[str, Any]:
    return {"rps": rps, "cpu_us_per_req": cpu, "p50_ms": 1.0, "p99_ms": 2.0}


def _run(*, gw64: float = 800.0, bare_cpu_event: float = 30.0) -> dict[str, Any]:
    """A run's results as the runner writes them, with the bare relay measured beside."""
    return {
        "meta": {"mode": "quick", "started": "now", "git": "abc", "variant": None},
        "throughput": {
            "16": {"gateway": _load(700), "bare": _load(1000), "direct": _load(5000)},
            "64": {"gateway": _load(gw64), "bare": _load(1200), "direct": _load(5000)},
            # The best of all counts, but the ratio is judged over 16 and 64 only.
            "256": {"gateway": _load(2000, 400), "bare": _load(5000, 200),
                    "direct": _load(8000, 100), "nginx": _load(4000, 250)},
        },
        "sequential": {"direct": {"p50_ms": 0.5, "p99_ms": 0.9},
                       "bare": {"p50_ms": 0.95, "added_p50_ms": 0.45},
                       "gateway": {"p50_ms": 1.1, "added_p50_ms": 0.6, "added_p99_ms": 1.0}},
        "streaming": {"20": {
            "latency": {"gateway": {"added_ttft_p50_ms": 0.4}},
            "saturation": {
                "gateway": {"rps": 400.0, "events_per_s": 8000.0, "cpu_us_per_event": 40.0},
                "bare": {"rps": 500.0, "events_per_s": 10000.0,
                         "cpu_us_per_event": bare_cpu_event}}}},
        "backends": {"label": "PostgreSQL + Redis",
                     "throughput": {"64": {"gateway": _load(700), "bare": _load(1000)}}},
    }


def _by_metric(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["metric"]: row for row in rows}


def test_each_ratio_is_judged_against_the_issue_bounds() -> None:
    rows = _by_metric(report.targets(_run()))
    expected = {
        # 800 / 1200: the best of 16/64 on both sides, not 2000 / 5000 at 256.
        "non-streaming req/s ÷ bare relay, best of 16/64 conns": (0.667, "MISS"),
        "p50 one at a time − bare relay's (ms)": (0.15, "PASS"),
        "streamed req/s at saturation ÷ bare relay, 20 chunks": (0.8, "PASS"),
        "SSE events/s at saturation ÷ bare relay, 20 chunks": (0.8, "PASS"),
        "CPU µs per SSE event ÷ bare relay, 20 chunks": (1.333, "MISS"),
        "PostgreSQL + Redis: non-streaming req/s ÷ bare relay, best of 16/64 conns":
            (0.7, "PASS"),
    }
    for metric, (value, result) in expected.items():
        assert rows[metric]["versus_bare"] is True
        assert (rows[metric]["gateway"], rows[metric]["result"]) == (value, result), metric

    # The bounds themselves pass: ≥ 0.7 at 0.7, ≤ 1.25 at 1.25.
    at_bounds = _by_metric(report.targets(_run(gw64=840.0, bare_cpu_event=32.0)))
    assert at_bounds["non-streaming req/s ÷ bare relay, best of 16/64 conns"]["result"] == "PASS"
    assert at_bounds["CPU µs per SSE event ÷ bare relay, 20 chunks"]["gateway"] == 1.25
    assert at_bounds["CPU µs per SSE event ÷ bare relay, 20 chunks"]["result"] == "PASS"


def test_absolute_figures_read_as_ratios_to_every_reference() -> None:
    rows = _by_metric(report.targets(_run()))
    rps = rows["non-streaming req/s (best at 256 conns)"]
    assert (rps["gateway"], rps["bare"], rps["direct"], rps["nginx"]) == (2000, 5000, 8000, 4000)
    assert (rps["x_bare"], rps["x_nginx"], rps["x_direct"]) == (0.4, 0.5, 0.25)
    cpu = rows["CPU µs per request (same run)"]
    assert (cpu["x_bare"], cpu["x_nginx"], cpu["x_direct"]) == (2.0, 1.6, 4.0)
    # A latency difference is no ratio of two figures: no ratio columns.
    p50 = rows["added latency, one at a time, p50 (ms)"]
    assert (p50["bare"], p50["x_bare"], p50["x_direct"]) == (0.45, None, None)


def test_the_markdown_puts_the_ratios_first_with_their_verdicts() -> None:
    results = _run()
    results["targets"] = report.targets(results)
    md = report.markdown(results)
    versus = md.index("## Against the bare relay (issue 17)")
    assert versus < md.index("## Targets")
    lines = md[versus:md.index("## Targets")].splitlines()
    assert ("| non-streaming req/s ÷ bare relay, best of 16/64 conns | 0.667 | ≥ 0.7 | MISS |"
            in lines)
    assert "| CPU µs per SSE event ÷ bare relay, 20 chunks | 1.333 | ≤ 1.25 | MISS |" in lines
    assert "| p50 one at a time − bare relay's (ms) | 0.150 | ≤ 0.2 | PASS |" in lines


def test_a_run_without_the_bare_relay_has_no_ratio_rows() -> None:
    results = _run()
    for by in results["throughput"].values():
        by.pop("bare", None)
    del results["sequential"]["bare"], results["streaming"]["20"]["saturation"]["bare"]
    del results["backends"]
    rows = report.targets(results)
    assert rows and not any(row["versus_bare"] for row in rows)
    assert all(row["x_bare"] is None for row in rows)


def test_the_median_judges_the_median_ratio(tmp_path: Path) -> None:
    runs = []
    # 960 / 1200, 700 / 1200 (16 conns did better than 64), 900 / 1200: the median passes.
    for gw64 in (960.0, 600.0, 900.0):
        run = copy.deepcopy(_run(gw64=gw64))
        runs.append(run)
    paths = [tmp_path / f"run{i}.json" for i in range(3)]
    md = median.markdown(paths, runs)
    line = next(ln for ln in md.splitlines()
                if ln.startswith("| non-streaming req/s ÷ bare relay, best of 16/64 conns |"))
    assert "| 0.750 [0.583–0.800] |" in line and line.endswith("| PASS |")
    backends = md[md.index("## Same with PostgreSQL + Redis"):]
    assert "| PostgreSQL + Redis: non-streaming req/s ÷ bare relay, best of 16/64 conns | " \
           "0.700 [0.700–0.700] |" in backends
    assert "| non-streaming req/s ÷ bare relay, best of 16/64 conns |" not in backends
