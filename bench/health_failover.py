"""DIP health failover in the lab: time from a backend VM's server dying (SIGKILL) to its
removal from every Mux's select group, and from its restart to its return, over several
rounds. The probe settings are the demo VIP's (TCP connect every 500 ms, timeout 300 ms,
fall 2, rise 2).

    .venv/bin/python bench/health_failover.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ananta.topologies import configs, lab  # noqa: E402
from ananta.topologies.chaos import start_again  # noqa: E402
from bench.common import lab_plan, metric, percentile, write_result  # noqa: E402

VM, DIP = "vm4", "10.2.0.12"


def in_every_mux(plan: lab.LabPlan) -> bool | None:
    """Does every Mux send new connections to DIP? (None: the Muxes disagree)"""
    return lab.dip_in_every_mux(plan, DIP)


def wait_for(plan: lab.LabPlan, want: bool, since: float, limit: float = 15) -> float:
    while in_every_mux(plan) is not want:
        if time.monotonic() - since > limit:
            raise RuntimeError(f"{DIP} not {'back' if want else 'out'} after {limit} s")
        time.sleep(0.02)
    return time.monotonic() - since


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    removed: list[float] = []
    restored: list[float] = []
    with lab_plan() as plan:
        wait_for(plan, True, time.monotonic())
        for _ in range(args.rounds):
            with open(f"{configs.node_dir(lab.RUN_DIR, VM)}/http-server.pid") as fh:
                os.kill(int(fh.read()), signal.SIGKILL)
            removed.append(wait_for(plan, False, time.monotonic()))
            start_again(plan, VM, "http-server")
            restored.append(wait_for(plan, True, time.monotonic()))
            time.sleep(1.0)
            print(f"out {removed[-1]:.2f} s, back {restored[-1]:.2f} s", file=sys.stderr)
    metrics = [
        metric("dip_failure_to_removed_p50", percentile(removed, 50), "s", None, None),
        metric("dip_failure_to_removed_max", max(removed), "s", "<= 2", max(removed) <= 2,
               reference="probe 500 ms x fall 2, plus Raft and reprogramming",
               rounds=removed),
        metric("dip_restart_to_restored_p50", percentile(restored, 50), "s", None, None,
               rounds=restored),
    ]
    write_result("health_failover", metrics)


if __name__ == "__main__":
    main()
