"""VIP configuration latency: REST write -> programmed on every affected Mux and host, and
Manager failover (leader SIGKILL -> first committed write), with 3 Manager replicas in the lab.

Each write changes a backend's weight of the demo VIP (2 Muxes and 2 hosts are affected).
"Programmed" is the Manager's own record: the time the last affected switch answered the
barrier that closed a sync at (or past) the write's generation, minus the time the API
accepted the write. Writes go round-robin to the 3 replicas (followers forward to the leader).

    .venv/bin/python bench/config_latency.py [--slow-count 20] [--fast-count 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ananta.topologies import configs, lab  # noqa: E402
from ananta.topologies.chaos import start_again  # noqa: E402
from bench.common import lab_plan, metric, percentile, write_result  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def secret(name: str) -> str:
    with open(configs.secret_path(lab.RUN_DIR, name)) as fh:
        return fh.read().strip()


def driver(plan: lab.LabPlan, *args: str) -> dict:  # type: ignore[type-arg]
    env = {**os.environ, "ANANTA_TOKEN": secret("demo.token"),
           "ANANTA_URLS": ",".join(configs.api_url(m) for m in plan.by_role("manager"))}
    out = subprocess.run(["ip", "netns", "exec", plan.by_role("manager")[0].namespace,
                          sys.executable, os.path.join(HERE, "config_driver.py"), *args],
                         env=env, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout)


def leader_name(plan: lab.LabPlan) -> str:
    st = json.loads(lab.api(plan, "cluster", "--json"))
    return next(m.name for m in plan.by_role("manager")
                if st["leader"].startswith(f"{m.address_of('mgmt0')}:"))


def healthy(plan: lab.LabPlan) -> bool:
    """Every replica answers, with the same generation and a leader."""
    seen = set()
    for m in plan.by_role("manager"):
        try:
            out = subprocess.run(
                ["ip", "netns", "exec", m.namespace, sys.executable, "-m", "ananta.cli",
                 "cluster", "--json", "--url", configs.api_url(m)], capture_output=True,
                text=True, timeout=10, env={**os.environ, "ANANTA_TOKEN": secret("admin.token")})
            st = json.loads(out.stdout)
        except (ValueError, subprocess.TimeoutExpired):
            return False
        if not st["leader"] or not st["has_quorum"]:
            return False
        seen.add(st["generation"])
    return len(seen) == 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slow-count", type=int, default=20, help="writes at 1/s")
    ap.add_argument("--fast-count", type=int, default=500, help="writes at 100/s")
    ap.add_argument("--rounds", type=int, default=3, help="leader kills")
    args = ap.parse_args()
    with lab_plan() as plan:
        slow = driver(plan, "latency", "--rate", "1", "--count", str(args.slow_count))
        fast = driver(plan, "latency", "--rate", "100", "--count", str(args.fast_count))
        failovers = []
        for _ in range(args.rounds):
            name = leader_name(plan)
            with open(f"{configs.node_dir(lab.RUN_DIR, name)}/ananta-manager.pid") as fh:
                pid = int(fh.read())
            result = driver(plan, "failover", "--pid", str(pid))
            failovers.append(result["failover_s"])
            start_again(plan, name, "ananta-manager")
            deadline = time.monotonic() + 60
            while not healthy(plan):
                assert time.monotonic() < deadline, "the cluster did not heal"
                time.sleep(0.5)
    metrics = []
    for label, run in (("1_per_s", slow), ("100_per_s", fast)):
        prog, commit = run["programmed_ms"], run["commit_ms"]
        metrics += [
            metric(f"config_latency_p50_{label}", percentile(prog, 50), "ms", goal="<= 20",
                   met=percentile(prog, 50) <= 20, reference="Ananta: median 75 ms",
                   samples=len(prog), failed_writes=run["failed"]),
            metric(f"config_latency_p99_{label}", percentile(prog, 99), "ms", goal="<= 100",
                   met=percentile(prog, 99) <= 100, reference="Ananta: max 200 s",
                   samples=len(prog)),
            metric(f"commit_latency_p50_{label}", percentile(commit, 50), "ms",
                   reference="client-observed REST write -> committed"),
            metric(f"commit_latency_p99_{label}", percentile(commit, 99), "ms"),
        ]
        if label == "100_per_s":
            metrics.append(metric("achieved_write_rate", run["count"] / run["elapsed_s"],
                                  "writes/s", goal=">= 95", met=run["count"] / run["elapsed_s"]
                                  >= 95))
    ok = [f for f in failovers if f is not None]
    metrics += [
        metric("manager_failover_median", sorted(ok)[len(ok) // 2] if ok else -1, "s",
               goal="<= 1", met=bool(ok) and sorted(ok)[len(ok) // 2] <= 1.0,
               reference="pysyncobj here: 0.3-1.8 s", samples=failovers),
        metric("manager_failover_max", max(ok) if ok else -1, "s", goal="<= 1",
               met=bool(ok) and len(ok) == len(failovers) and max(ok) <= 1.0),
    ]
    write_result("config_latency", metrics,
                 distributions={"programmed_ms_1_per_s": slow["programmed_ms"],
                                "programmed_ms_100_per_s": fast["programmed_ms"]})


if __name__ == "__main__":
    main()
