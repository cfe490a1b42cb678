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


def test_smoke_run_writes_a_well_formed_result(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--smoke", "--no-backends", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(tmp_path.glob("*-smoke.json"))
    assert len(results) == 1, list(tmp_path.iterdir())
    data = json.loads(results[0].read_text())
    assert (tmp_path / results[0].name.replace(".json", ".md")).read_text().startswith("# ")

    assert data["meta"]["mode"] == "smoke"
    check = data["check"]
    assert check["plain_status"] == 200 and check["plain_content"]
    assert check["stream_status"] == 200 and check["stream_done"]

    assert data["mock_selfcheck"]["ok"] > 0
    for name in ("direct", "gateway"):
        row = data["sequential"][name]
        assert row["ok"] > 0 and row["errors"] == 0
        assert row["p50_ms"] is not None and row["cpu_s"] >= 0
    tput = next(iter(data["throughput"].values()))
    assert tput["gateway"]["ok"] > 0 and "cpu_us_per_req" in tput["gateway"]
    assert tput["gateway"]["writer"]["dropped"] == 0

    stream = data["streaming"]["20"]
    for name in ("direct", "gateway"):
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
