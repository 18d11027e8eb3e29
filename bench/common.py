"""Shared by the benchmarks: percentiles and the result document of ../shared TARGETS.md.

Every benchmark writes bench/results/<name>.json (and prints it):
{"benchmark", "command", "when", "machine": {"cores", "kernel"}, "metrics": [{"name",
"value", "unit", "baseline", "ratio", "reference", "goal", "met"}]}
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ananta.topologies.spec import LabPlan

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def metric(name: str, value: float, unit: str, goal: str | None = None,
           met: bool | None = None, reference: str | None = None,
           baseline: float | None = None, ratio: float | None = None,
           **extra: Any) -> dict[str, Any]:
    """`ratio`: value / baseline unless given (e.g. the median of paired per-round ratios)."""
    if ratio is None and baseline:
        ratio = value / baseline
    return {"name": name, "value": round(value, 3), "unit": unit, "baseline": baseline,
            "ratio": round(ratio, 3) if ratio is not None else None,
            "reference": reference, "goal": goal, "met": met, **extra}


def write_result(name: str, metrics: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    doc = {
        "benchmark": name,
        "command": " ".join(["python", *sys.argv]),
        "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cores": os.cpu_count(), "kernel": platform.release()},
        "metrics": metrics,
        **extra,
    }
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as fh:
        json.dump(doc, fh, indent=1)
    print(json.dumps(doc, indent=1))
    return doc


@contextlib.contextmanager
def lab_plan() -> Iterator[LabPlan]:
    """The running lab's plan. A lab brought up for the benchmark goes down after it; one
    that was already up (`make bench` shares one) is left as it was."""
    from ananta.topologies import lab

    brought_up = not lab.is_up()
    if brought_up:
        lab.up(None, None, timeout=120)
    try:
        yield lab.load_plan()[0]
    finally:
        if brought_up:
            lab.down()
