"""DIP health in the lab: a dead backend leaves every Mux within 2 s and comes back."""

from __future__ import annotations

import os
import signal
import time

from ananta.topologies import chaos, configs, lab
from ananta.topologies.checks import serve_check

VIP, DIP = "203.0.113.10", "10.2.0.12"  # vm4, on hv2


def in_every_mux(plan: lab.LabPlan) -> bool | None:
    """Does every Mux send new connections to DIP? (None: the Muxes disagree)"""
    return lab.dip_in_every_mux(plan, DIP)


def test_a_dead_backend_is_removed_within_2s_and_restored(running_lab: None) -> None:
    plan, _ = lab.load_plan()
    assert in_every_mux(plan) is True
    with open(f"{configs.node_dir(lab.RUN_DIR, 'vm4')}/http-server.pid") as fh:
        os.kill(int(fh.read()), signal.SIGKILL)
    killed = time.monotonic()
    try:
        while in_every_mux(plan) is not False:
            assert time.monotonic() - killed < 10, lab.log_tails(10)
            time.sleep(0.02)
        removed_after = time.monotonic() - killed
        print(f"vm4 out of every Mux {removed_after:.2f} s after its server died")
        assert removed_after <= 2.0
        report = serve_check(VIP, count=60)
        assert report.failures == [] and "vm4" not in report.served_by, (
            report.served_by, report.failures)
    finally:  # the next tests need vm4 serving, whatever happened here
        chaos.start_again(plan, "vm4", "http-server")
    restarted = time.monotonic()
    while in_every_mux(plan) is not True:
        assert time.monotonic() - restarted < 10, lab.log_tails(10)
        time.sleep(0.05)
    print(f"vm4 back in every Mux {time.monotonic() - restarted:.2f} s after its restart")
    report = serve_check(VIP, count=80)
    assert report.failures == [] and report.served_by.get("vm4", 0) > 0, report.served_by
