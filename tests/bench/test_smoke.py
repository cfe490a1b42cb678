"""The benchmark harness runs end to end in smoke mode and writes a well-formed result.

No timing thresholds: the numbers of a few-second run on a shared machine mean little;
this only proves the mock, the gateway process, the load tools and the report all work.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("uvloop", reason="the bench extra is not installed (pip install -e '.[bench]')")


@pytest.fixture(scope="module")
def smoke_result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The JSON of one smoke run, shared by the tests of this module (it runs once)."""
    out = tmp_path_factory.mktemp("smoke")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--smoke", "--no-backends", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(out.glob("*-smoke.json"))
    assert len(results) == 1, list(out.iterdir())
    return results[0]


def _median(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", "median", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)


def test_smoke_run_writes_a_well_formed_result(smoke_result: Path) -> None:
    data = json.loads(smoke_result.read_text())
    assert smoke_result.with_suffix(".md").read_text().startswith("# ")

    assert data["meta"]["mode"] == "smoke"
    check = data["check"]
    assert check["plain_status"] == 200 and check["plain_content"]
    assert check["stream_status"] == 200 and check["stream_done"]

    assert data["mock_selfcheck"]["ok"] > 0
    for name in ("direct", "bare", "gateway"):
        row = data["sequential"][name]
        assert row["ok"] > 0 and row["errors"] == 0
        assert row["p50_ms"] is not None and row["cpu_s"] >= 0
    tput = next(iter(data["throughput"].values()))
    assert tput["gateway"]["ok"] > 0 and "cpu_us_per_req" in tput["gateway"]
    assert tput["bare"]["ok"] > 0 and tput["bare"]["errors"] == 0
    assert tput["gateway"]["writer"]["dropped"] == 0

    stream = data["streaming"]["20"]
    for name in ("direct", "bare", "gateway"):
        lat = stream["latency"][name]
        assert lat["ok"] > 0 and lat["events"] > 0 and lat["ttft_p50_ms"] is not None
        assert stream["saturation"][name]["events_per_s"] > 0
    assert stream["latency"]["gateway"]["gap_p50_ms"] is not None

    held = data["open_streams"]["gateway"]
    assert held["idle_rss_mb"] > 0
    assert held["points"] and held["points"][0]["started"] > 0

    soak = data["soak"]
    assert soak["samples"] and soak["writer_dropped"] == 0

    assert data["targets"] and all(t["result"] in ("PASS", "MISS", "n/a")
                                   for t in data["targets"])
    # Issue 17's ratios, each judged: the bare relay answered every step.
    versus = {t["key"] for t in data["targets"] if t["versus_bare"]}
    assert versus == {"rps_x_bare", "added_p50_over_bare_ms", "stream_rps_x_bare",
                      "events_x_bare", "cpu_event_x_bare"}
    assert all(t["result"] in ("PASS", "MISS") for t in data["targets"] if t["versus_bare"])


def test_median_of_three_runs(smoke_result: Path, tmp_path: Path) -> None:
    """Three copies of the one smoke result, with planted numbers: the median is the middle."""
    data = json.loads(smoke_result.read_text())
    paths = []
    for i, rps in enumerate((2000.0, 9000.0, 3000.0)):
        run = json.loads(json.dumps(data))
        run["meta"]["git"] = f"commit{i}"
        for by in run["throughput"].values():
            by["gateway"]["rps"] = rps
        if i == 1:
            run["soak"]["writer_dropped"] = 7
        else:
            del run["soak"]
        paths.append(tmp_path / f"run{i}-smoke.json")
        paths[-1].write_text(json.dumps(run))

    out = tmp_path / "median.md"
    proc = _median(*map(str, paths), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = out.read_text()
    assert md.startswith("# Gateway benchmark — median of 3 smoke runs")
    assert all(f"| run{i}-smoke.json |" in md and f"commit{i}" in md for i in range(3))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines()}
    rps = next(line for name, line in rows.items() if name.startswith("non-streaming req/s"))
    assert "| 3,000 [2,000–9,000] |" in rps and rps.endswith("| PASS |")
    assert "| 7 (n=1) |" in rows["soak writer drops"] and rows["soak writer drops"].endswith(
        "| MISS |")

    data["meta"]["mode"] = "quick"
    paths[0].write_text(json.dumps(data))
    proc = _median(*map(str, paths), "--out", str(tmp_path / "mixed.md"))
    assert proc.returncode != 0 and "mix modes" in proc.stderr
    assert not (tmp_path / "mixed.md").exists()
