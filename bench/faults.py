"""Every fault scenario of `ananta chaos` on the lab under load: what each costs.

Brings the lab up if none is (and takes it down again at the end), runs each scenario
(topologies/chaos.py) once, writes bench/results/faults.json and the results table of
docs/reliability.md.

    .venv/bin/python bench/faults.py [--scenario NAME ...]
    .venv/bin/python bench/faults.py --from-jsonl FILE   # from `ananta chaos run all --json`
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ananta.topologies import chaos  # noqa: E402
from ananta.topologies.faultreport import render_table, replace_between  # noqa: E402
from bench.common import lab_plan, metric, write_result  # noqa: E402

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "reliability.md")
BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"


def metrics_of(result: dict) -> list[dict]:  # type: ignore[type-arg]
    name, cost, goal = result["scenario"], result["cost"], result["recovery_goal_s"]
    out = [
        metric(f"{name}_recovery", cost["recovery_s"], "s",
               goal=f"<= {goal}" if goal is not None else None,
               met=cost["recovery_s"] <= goal if goal is not None else None),
        metric(f"{name}_committed_lost", len(cost["committed_lost"]), "writes", goal="0",
               met=not cost["committed_lost"]),
        metric(f"{name}_new_failed", cost["new_failed"], "connections",
               attempted=cost["new_attempted"]),
    ]
    if result["dip_set_unchanged"]:
        out.append(metric(f"{name}_established_broken", cost["established_broken"],
                          "connections", goal="0", met=cost["established_broken"] == 0,
                          established=cost["established"]))
    before, during = cost["new_before"], cost["new_during"]
    if name.startswith("syn-flood") and before["p50_ms"] and during["p50_ms"]:
        out.append(metric(f"{name}_neighbour_p50", during["p50_ms"], "ms",
                          baseline=before["p50_ms"], goal="<= 1.05 x before the flood",
                          met=during["p50_ms"] <= 1.05 * before["p50_ms"]))
        out.append(metric(f"{name}_neighbour_success", 100 * during["success_rate"], "%",
                          baseline=100 * before["success_rate"], goal=">= 0.95 x before",
                          met=during["success_rate"] >= 0.95 * before["success_rate"]))
    if name == "manager-leader-kill":
        out.append(metric("manager_failover_writes_gap", cost["longest_write_gap_s"] or 0,
                          "s", goal="<= 1", met=(cost["longest_write_gap_s"] or 0) <= 1,
                          reference="Raft here: 0.3-1.8 s"))
    return out


def run_scenarios(names: list[str]) -> list[dict]:  # type: ignore[type-arg]
    with lab_plan():
        return [chaos.run(name) for name in names]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", action="append", choices=list(chaos.SCENARIOS))
    ap.add_argument("--from-jsonl", help="the output of `ananta chaos run all --json`")
    args = ap.parse_args()
    if args.from_jsonl:
        with open(args.from_jsonl, encoding="utf-8") as fh:
            results = [json.loads(line) for line in fh if line.strip()]
    else:
        results = run_scenarios(args.scenario or list(chaos.SCENARIOS))
    for r in results:
        r["failures"], r["stalls"] = r["failures"][:5], r["stalls"][:5]
    write_result("faults", [m for r in results for m in metrics_of(r)], scenarios=results)
    if not args.scenario:
        with open(DOC, encoding="utf-8") as fh:
            text = fh.read()
        with open(DOC, "w", encoding="utf-8") as fh:
            fh.write(replace_between(text, BEGIN, END, render_table(results)))


if __name__ == "__main__":
    main()
