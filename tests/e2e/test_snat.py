"""SNAT in the lab: a VM's outbound connections to an outside server leave as VIP:port of
its block, their return traffic comes back through a Mux, and a burst of 1,000 succeeds
without a SYN retransmission: a connection that found no free port waited at the Manager
for the next block (controller/snat_hold.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from ananta.controller.flows import FlowKind
from ananta.topologies import lab
from ananta.topologies.checks import UplinkCapture, kind_packets

VIP, DIP, OUTSIDE, PORT = "203.0.113.10", "10.1.0.11", "198.51.100.2", 9000


def test_outbound_connections_leave_as_vip_ports_and_come_back_through_a_mux(
        running_lab: None) -> None:
    plan, _ = lab.load_plan()
    first = next(b for b in json.loads(lab.api(plan, "snat", "--json")) if b["dip"] == DIP)
    server = subprocess.Popen(["ip", "netns", "exec", plan.nodes["client1"].namespace,
                               sys.executable, "-m", "ananta.topologies.snatcheck", "serve",
                               "--port", str(PORT)])
    leaks = UplinkCapture(plan, "hv1", DIP)  # a DIP source must never leave the host
    try:
        time.sleep(0.5)
        out = lab.ns_run(plan, "vm1", [sys.executable, "-m", "ananta.topologies.snatcheck",
                                       "connect", "--host", OUTSIDE, "--port", str(PORT),
                                       "--count", "1000", "--parallel", "50", "--timeout", "15",
                                       "--times"],
                         timeout=300)
        result = json.loads(out)
        print({k: v for k, v in result.items() if k not in ("ports", "times_ms")})
        assert result["failures"] == [], result["failures"][:5]
        assert result["seen_from"] == {VIP: 1000}
        # a SYN retransmission (1 s) means a connection's first packet was dropped, not held
        retransmitted = [round(t) for t in result["times_ms"] if t >= 900]
        assert retransmitted == [], retransmitted
        blocks = [b for b in json.loads(lab.api(plan, "snat", "--json")) if b["dip"] == DIP]
        print(f"{DIP}: SNAT blocks {[(b['start'], b['end']) for b in blocks]}")
        assert first in blocks and len(blocks) >= 4  # 1,000 connections: the agent asked
        assert all(any(b["start"] <= p <= b["end"] for b in blocks) for p in result["ports"])
        # the return traffic came through the Muxes' SNAT return flows
        returned = sum(kind_packets(plan, m, FlowKind.SNAT_RETURN) for m in ("mux1", "mux2"))
        assert returned >= 1000, returned
        assert leaks.stop() == 0  # packets that waited for a port were held, never leaked
    finally:
        server.kill()
        leaks.proc.kill()
