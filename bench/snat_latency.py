"""SNAT: connect latency of a VM's outbound connections (SYN -> SYN-ACK at the VM), with a
preallocated block, and in a burst that makes its host agent ask the Manager for blocks.

In the lab: an outside TCP server on client1; vm3 opens connections one at a time, fewer
than its first block holds (preallocated); vm4 opens 1,000 at once, 50 at a time, which its
first 256-port block cannot hold (allocating). Every connection is checked to have left as
VIP:port.

    .venv/bin/python bench/snat_latency.py [--sequential 150] [--burst 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ananta.topologies import lab  # noqa: E402
from bench.common import lab_plan, metric, percentile, write_result  # noqa: E402

OUTSIDE, PORT, VIP = "198.51.100.2", 9100, "203.0.113.10"


def connect(plan: lab.LabPlan, vm: str, count: int, parallel: int) -> dict:  # type: ignore[type-arg]
    out = lab.ns_run(plan, vm, [sys.executable, "-m", "ananta.topologies.snatcheck", "connect",
                                "--host", OUTSIDE, "--port", str(PORT), "--count", str(count),
                                "--parallel", str(parallel), "--timeout", "30", "--times"],
                     timeout=600)
    result = json.loads(out)
    if result["failures"] or result["seen_from"] != {VIP: count}:
        raise RuntimeError(f"{vm}: {result['failures'][:3]} {result['seen_from']}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequential", type=int, default=150)
    ap.add_argument("--burst", type=int, default=1000)
    args = ap.parse_args()
    with lab_plan() as plan:
        server = subprocess.Popen(["ip", "netns", "exec", plan.nodes["client1"].namespace,
                                   sys.executable, "-m", "ananta.topologies.snatcheck", "serve",
                                   "--port", str(PORT)])
        try:
            time.sleep(0.5)
            pre = connect(plan, "vm3", args.sequential, 1)["times_ms"]
            burst = connect(plan, "vm4", args.burst, 50)["times_ms"]
            blocks = [b for b in json.loads(lab.api(plan, "snat", "--json"))
                      if b["dip"] == "10.2.0.12"]
        finally:
            server.kill()
    waited = [t for t in burst if t > 500]  # their SYN was retransmitted
    metrics = [
        metric("snat_connect_preallocated_p50", percentile(pre, 50), "ms", None, None),
        metric("snat_connect_preallocated_p99", percentile(pre, 99), "ms", "<= 5",
               percentile(pre, 99) <= 5, reference="Ananta: 99% of SNAT served locally",
               connections=len(pre)),
        metric("snat_connect_burst_p50", percentile(burst, 50), "ms", None, None,
               connections=len(burst)),
        metric("snat_connect_allocating_p99", percentile(burst, 99), "ms", "<= 50",
               percentile(burst, 99) <= 50,
               reference="Ananta: 75 ms floor when the AM allocates; 70% < 200 ms",
               waited_for_a_block=len(waited), blocks_after=len(blocks)),
    ]
    write_result("snat_latency", metrics, distributions={"preallocated_ms": pre,
                                                         "burst_ms": burst})


if __name__ == "__main__":
    main()
