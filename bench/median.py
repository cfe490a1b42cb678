"""The median of several runs: ``python -m bench median A.json B.json C.json [--out PATH]``.

Every headline metric of `report.readings` as its median and range over the runs that
have it, judged against `report.THRESHOLDS` on the median.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import orjson

from bench import report
from bench.runner import RESULTS


class MedianError(ValueError):
    """The files cannot be combined: too few, unreadable, or of different modes or variants."""


def load(paths: list[Path]) -> list[dict[str, Any]]:
    if len(paths) < 2:
        raise MedianError(f"a median needs at least 2 result files, got {len(paths)}")
    runs = []
    for path in paths:
        try:
            runs.append(orjson.loads(path.read_bytes()))
        except (OSError, orjson.JSONDecodeError) as exc:
            raise MedianError(f"{path}: not a readable result JSON ({exc})") from exc
    for key in ("mode", "variant"):
        if len({str(r.get("meta", {}).get(key)) for r in runs}) > 1:
            each = ", ".join(f"{p.name}: {r.get('meta', {}).get(key)}"
                             for p, r in zip(paths, runs, strict=True))
            raise MedianError(f"the runs mix {key}s ({each}); take the median of like runs only")
    return runs


def _median(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _count(values: list[Any], runs: int) -> str:
    n = sum(v is not None for v in values)
    return f" (n={n})" if 0 < n < runs else ""


def _spread(values: list[Any], runs: int) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    mid = report.fmt(statistics.median(present))
    if len(present) > 1:
        mid += f" [{report.fmt(min(present))}–{report.fmt(max(present))}]"
    return mid + _count(values, runs)


def _rows(results: list[dict[str, Any]], runs: int, *,
          backends: bool = False) -> list[list[str]]:
    """One row per metric (and chunk count) found in any of the results, in table order."""
    groups: dict[tuple[str, str], list[report.Reading]] = {}
    for r in results:
        for x in report.readings(r, backends=backends):
            groups.setdefault((x.metric, x.which), []).append(x)
    order = list(report.THRESHOLDS)
    rows: list[list[str]] = []
    for (metric, which), xs in sorted(groups.items(), key=lambda g: order.index(g[0][0])):
        notes = " / ".join(dict.fromkeys(x.note for x in xs if x.note))
        gateway, bare, direct, nginx = ([getattr(x, col) for x in xs]
                                        for col in ("gateway", "bare", "direct", "nginx"))
        rows.append([report.label(metric, which, notes), _spread(gateway, runs),
                     report.fmt(_median(bare)) + _count(bare, runs),
                     report.fmt(_median(direct)) + _count(direct, runs),
                     report.fmt(_median(nginx)) + _count(nginx, runs),
                     report.THRESHOLDS[metric].target,
                     report.verdict(metric, _median(gateway))])
    return rows


def markdown(paths: list[Path], runs: list[dict[str, Any]]) -> str:
    meta = runs[0].get("meta", {})
    head = ["metric", "gateway: median [min–max]", "bare relay", "mock direct", "nginx",
            "target", "result (median)"]
    md = [f"# Gateway benchmark — median of {len(runs)} {meta.get('mode')} runs", ""]
    if meta.get("variant"):
        md += [f"EXPERIMENT: variant '{meta['variant']}' (see bench/variants.py).", ""]
    md += report.table(["run", "started", "git"],
                       [[p.name, r.get("meta", {}).get("started"), r.get("meta", {}).get("git")]
                        for p, r in zip(paths, runs, strict=True)])
    md += ["Gateway: median [min–max] over the runs that have the metric (n= when fewer than "
           "all); bare relay, mock direct and nginx: median. PASS/MISS judges the median. "
           "The rows marked ÷ bare relay (or − bare relay's) are the ratio (difference) of "
           "each run, measured side by side: issue 17's targets.", ""]
    md += ["## Targets", "", *report.table(head, _rows(runs, len(runs)))]
    backends = [b for r in runs if (b := r.get("backends")) and not b.get("skipped")]
    if backends:
        md += [f"## Same with {backends[0].get('label')}", "",
               "The targets are set for SQLite + the memory limiter; shown here to compare.", ""]
        md += report.table(head, _rows(backends, len(runs), backends=True))
    return "\n".join(md)


def run(paths: list[Path], out: Path | None = None) -> Path:
    """Write (and print) the Markdown median of the result files; return its path."""
    runs = load(paths)
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-median-of-{len(runs)}.md"
    if out is None or out.is_dir():
        out = (out or RESULTS) / name
    md = markdown(paths, runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    print(md)
    print(f"wrote {out}")
    return out
